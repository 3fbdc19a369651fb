{#-
  CME session bars from intraday bars: one bar per (symbol, trading date), where the trading date is the ET
  date, +1 day from 18:00 ET (the Globex session opening at 18:00 ET belongs to the next day). ts = the
  session open (18:00 ET the previous calendar day, in UTC), as every bar's ts is its open.
  A bar never mixes two contracts' prices: where the front changes inside a session (a continuous DBN file's
  change can fall mid-session), the session's bar is the contract that is front at its last bar, from that
  contract's bars only.
  Parameter: source (an intraday view).
-#}
{% import 'macros.sql' as m %}
WITH tagged AS (
    SELECT *, {{ m.trading_date('ts') }} AS trading_date FROM {{ source }}
),
per_contract AS (
    SELECT
        symbol,
        contract,
        trading_date,
        {{ m.session_open('trading_date') }} AS ts,
        {{ m.ohlcv_of_group() }},
        min(ts) AS first_bar_ts,
        max(ts) AS last_bar_ts
    FROM tagged
    GROUP BY symbol, contract, trading_date
)
SELECT *
FROM per_contract
QUALIFY row_number() OVER (PARTITION BY symbol, trading_date ORDER BY last_bar_ts DESC) = 1
