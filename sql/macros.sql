{#- Shared expressions. Import with {% import 'macros.sql' as m %}. -#}

{#- CME trading date of a UTC timestamp: the America/New_York date, plus one day from 18:00 ET on.
    Adding 6 hours to the ET wall time moves exactly the 18:00-24:00 part onto the next date. -#}
{% macro trading_date(ts) -%}
CAST(timezone('America/New_York', {{ ts }}) + INTERVAL 6 HOUR AS DATE)
{%- endmacro %}

{#- Session open (18:00 ET on the previous calendar day) of a trading date, as TIMESTAMPTZ (UTC). -#}
{% macro session_open(trading_date) -%}
timezone('America/New_York', CAST({{ trading_date }} AS TIMESTAMP) - INTERVAL 6 HOUR)
{%- endmacro %}

{#- Text timestamp to TIMESTAMPTZ (UTC), row by row:
    - 10/13/16/19 digits: epoch seconds / milliseconds / microseconds / nanoseconds;
    - a time followed by Z, an offset (+hh:mm) or a zone name (America/New_York, UTC): that zone;
    - anything else is naive and read as UTC. Naive text is parsed as TIMESTAMP and then placed in UTC
      explicitly: DuckDB's text-to-TIMESTAMPTZ cast can carry a zone name from an earlier row over to
      later naive rows of the same column, which would shift them by hours. -#}
{% macro parse_ts(col) -%}
CASE
    WHEN regexp_full_match({{ col }}, '\s*\d{10}\s*') THEN to_timestamp(CAST(trim({{ col }}) AS BIGINT))
    WHEN regexp_full_match({{ col }}, '\s*\d{13}\s*') THEN epoch_ms(CAST(trim({{ col }}) AS BIGINT))
    WHEN regexp_full_match({{ col }}, '\s*\d{16}\s*') THEN make_timestamptz(CAST(trim({{ col }}) AS BIGINT))
    WHEN regexp_full_match({{ col }}, '\s*\d{19}\s*') THEN make_timestamptz(CAST(trim({{ col }}) AS BIGINT) // 1000)
    WHEN regexp_matches({{ col }}, '(\d:\d\d(:\d\d(\.\d+)?)?\s*(Z|[+-]\d\d(:?\d\d)?|UTC|GMT)|[A-Za-z_]+/[A-Za-z_]+)\s*$')
        THEN TRY_CAST({{ col }} AS TIMESTAMPTZ)
    ELSE timezone('UTC', TRY_CAST({{ col }} AS TIMESTAMP))
END
{%- endmacro %}

{#- RTH window bounds (ET minute of day) of a symbol: the longest key of the RTH table that prefixes it.
    Parameters rth (list of (key, open, close), longest key first) and default ((open, close)). -#}
{% macro rth_open(symbol, rth, default) -%}
CASE{% for key, open, close in rth %} WHEN starts_with({{ symbol }}, '{{ key }}') THEN {{ open }}{% endfor %} ELSE {{ default[0] }} END
{%- endmacro %}
{% macro rth_close(symbol, rth, default) -%}
CASE{% for key, open, close in rth %} WHEN starts_with({{ symbol }}, '{{ key }}') THEN {{ close }}{% endfor %} ELSE {{ default[1] }} END
{%- endmacro %}

{#- OHLCV of a group of bars (resampling): open of the first bar, highest high, lowest low, close of the last
    bar, summed volume, and how many bars the group holds. -#}
{% macro ohlcv_of_group() -%}
arg_min(open, ts) AS open,
        max(high) AS high,
        min(low) AS low,
        arg_max(close, ts) AS close,
        CAST(sum(volume) AS BIGINT) AS volume,
        CAST(count(*) AS INTEGER) AS bar_count
{%- endmacro %}
