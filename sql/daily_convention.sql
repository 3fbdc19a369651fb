{#-
  How a daily file stamps its bars: counts over the raw rows (relation `raw`) of
    n            rows with a readable timestamp,
    date_only    rows whose ts text is a bare date (YYYY-MM-DD): a trading date,
    utc_day      rows at 00:00 UTC (vendor UTC days, e.g. Databento ohlcv-1d),
    session      rows at a CME session open, 18:00 ET the evening before their trading date (22:00 or
                 23:00 UTC with daylight saving), as `session_bars_1d` stamps them.
  00:00 UTC is 19:00 or 20:00 ET, never 18:00 ET, so no row counts as both utc_day and session.
  Parameter: ts_is_text (parse `ts` from text with macros.parse_ts).
-#}
{% import 'macros.sql' as m %}
WITH parsed AS (
    SELECT
{%- if ts_is_text %}
        {{ m.parse_ts('ts') }} AS t,
        regexp_full_match(coalesce(ts, ''), '\s*\d{4}-\d{2}-\d{2}\s*') AS date_only
{%- else %}
        TRY_CAST(ts AS TIMESTAMPTZ) AS t,
        false AS date_only
{%- endif %}
    FROM raw
)
SELECT
    count(t) AS n,
    count(t) FILTER (date_only) AS date_only,
    count(t) FILTER (epoch_us(t) % 86400000000 = 0) AS utc_day,
    count(t) FILTER (t = {{ m.session_open(m.trading_date('t')) }}) AS session
FROM parsed
