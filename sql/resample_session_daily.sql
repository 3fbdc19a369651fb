{#-
  CME session bars from intraday bars: one bar per (symbol, contract, trading date), where the trading
  date is the ET date, +1 day from 18:00 ET (the Globex session opening at 18:00 ET belongs to the next
  day). ts = the session open (18:00 ET the previous calendar day, in UTC), as every bar's ts is its open.
  Parameter: source (an intraday view).
-#}
{% import 'macros.sql' as m %}
WITH tagged AS (
    SELECT *, {{ m.trading_date('ts') }} AS trading_date FROM {{ source }}
)
SELECT
    symbol,
    contract,
    trading_date,
    {{ m.session_open('trading_date') }} AS ts,
    arg_min(open, ts) AS open,
    max(high) AS high,
    min(low) AS low,
    arg_max(close, ts) AS close,
    CAST(sum(volume) AS BIGINT) AS volume,
    CAST(count(*) AS INTEGER) AS bar_count,
    min(ts) AS first_bar_ts,
    max(ts) AS last_bar_ts
FROM tagged
GROUP BY symbol, contract, trading_date
