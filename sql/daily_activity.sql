{#-
  Daily activity per contract, the input of roll decisions: volume summed over the CME trading date, and the
  last open interest seen that day (from the open_interest table and from bars that carry it).
  Parameters: timeframe (bars to aggregate), seconds (its length), symbol (bound as $symbol).
  known_at = when the day's last bar had closed (max ts + timeframe): a decision taken on the day's figures
  can take effect no earlier than that.
  For vendor daily bars stamped 00:00 UTC the trading date equals the bar's date (00:00 UTC is 19:00 or
  20:00 ET of the previous evening, which the 18:00 rule moves to the next date).
-#}
{% import 'macros.sql' as m %}
WITH volume_by_day AS (
    SELECT contract, {{ m.trading_date('ts') }} AS trading_date, CAST(sum(volume) AS BIGINT) AS volume,
           max(ts) + INTERVAL {{ seconds }} SECOND AS known_at
    FROM contract_bars_{{ timeframe }}
    WHERE symbol = $symbol AND contract IS NOT NULL
    GROUP BY ALL
),
oi_samples AS (
    SELECT contract, ts, open_interest FROM open_interest WHERE symbol = $symbol
    UNION ALL
    SELECT contract, ts, open_interest FROM contract_bars_{{ timeframe }}
    WHERE symbol = $symbol AND open_interest IS NOT NULL AND contract IS NOT NULL
),
oi_by_day AS (
    SELECT contract, {{ m.trading_date('ts') }} AS trading_date, arg_max(open_interest, ts) AS open_interest,
           max(ts) AS known_at
    FROM oi_samples
    GROUP BY ALL
)
SELECT
    coalesce(v.contract, o.contract) AS contract,
    coalesce(v.trading_date, o.trading_date) AS trading_date,
    v.volume,  -- NULL when the contract has no bar that day (only an open-interest sample)
    o.open_interest,
    greatest(v.known_at, o.known_at) AS known_at
FROM volume_by_day AS v
FULL OUTER JOIN oi_by_day AS o USING (contract, trading_date)
ORDER BY trading_date, contract
