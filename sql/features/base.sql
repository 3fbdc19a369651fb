{#-
  Shared intermediates of every feature family (catalog sections 1, 3 and 7), computed once per bar.
  Parameter: source = a bar relation (symbol, ts, open, high, low, close, volume) ordered by ts per symbol.
  Columns: o h l c v; rn (0-based row in the partition); c1 (previous close); r = ln(c / c1); tr (TA-Lib
  TRANGE, NULL at t = 0); tp = (h + l + c) / 3; s = sign(c - c1) (NULL at t = 0), sv = s*v, v_s = v where s is
  not NULL; mfm (0 on zero-range bars); trading_date (ET date, +1 day from 18:00 ET); sid (0-based rank of the
  trading date in the partition); minute_of_day (ET).
-#}
{% import 'macros.sql' as m %}
SELECT
    symbol,
    ts,
    open AS o,
    high AS h,
    low AS l,
    close AS c,
    CAST(volume AS DOUBLE) AS v,
    row_number() OVER w - 1 AS rn,
    lag(close) OVER w AS c1,
    CASE WHEN close > 0 AND lag(close) OVER w > 0 THEN ln(close / lag(close) OVER w) END AS r,
    -- greatest() skips NULLs in DuckDB, so t = 0 is NULL explicitly (TA-Lib TRANGE).
    CASE WHEN lag(close) OVER w IS NOT NULL THEN
        greatest(high - low, abs(high - lag(close) OVER w), abs(low - lag(close) OVER w)) END AS tr,
    (high + low + close) / 3 AS tp,
    sign(close - lag(close) OVER w) AS s,
    sign(close - lag(close) OVER w) * volume AS sv,
    CASE WHEN lag(close) OVER w IS NOT NULL THEN CAST(volume AS DOUBLE) END AS v_s,
    CASE WHEN high = low THEN 0.0 ELSE ((close - low) - (high - close)) / (high - low) END AS mfm,
    {{ m.trading_date('ts') }} AS trading_date,
    dense_rank() OVER (PARTITION BY symbol ORDER BY {{ m.trading_date('ts') }}) - 1 AS sid,
    CAST(hour(timezone('America/New_York', ts)) * 60 + minute(timezone('America/New_York', ts)) AS INTEGER) AS minute_of_day
FROM {{ source }}
WINDOW w AS (PARTITION BY symbol ORDER BY ts)
