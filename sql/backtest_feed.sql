{#-
  The stream a backtest reads: the user's query, with `ts` as integer nanoseconds (cheap in the Python loop),
  prices as DOUBLE, volume as BIGINT (0 when the query has none) and the CME trading date of each bar as days
  since 1970-01-01 (`qe_trading_day`), in time order.
  Parameters: query (the user's SELECT, inserted verbatim), order_by (true unless the query orders itself),
  has_volume (the query returns a volume column).
-#}
{% import 'macros.sql' as m %}
SELECT
    q.* REPLACE (
        epoch_ns(q.ts) AS ts,
        CAST(q.open AS DOUBLE) AS open,
        CAST(q.high AS DOUBLE) AS high,
        CAST(q.low AS DOUBLE) AS low,
        CAST(q.close AS DOUBLE) AS close
{%- if has_volume %},
        CAST(coalesce(q.volume, 0) AS BIGINT) AS volume
{%- endif %}
    ),
{%- if not has_volume %}
    CAST(0 AS BIGINT) AS volume,
{%- endif %}
    CAST({{ m.trading_date('q.ts') }} - DATE '1970-01-01' AS INTEGER) AS qe_trading_day
FROM (
{{ query }}
) AS q
{%- if order_by %}
ORDER BY q.ts, q.symbol
{%- endif %}
