{#-
  Prices of both contracts at a roll: the closes of the latest bar that both contracts have, among all stored
  timeframes, that had closed by the roll time (bar close = ts + timeframe <= $roll_ts). Taking both prices at
  the same instant is what makes the back-adjusted series continuous across the roll.
  Parameters: timeframes (name -> seconds); binds $symbol, $from_contract, $to_contract, $roll_ts.
-#}
WITH candidates AS (
{%- for tf, seconds in timeframes.items() %}
    SELECT '{{ tf }}' AS timeframe, a.ts, a.ts + INTERVAL {{ seconds }} SECOND AS closed_at,
           a.close AS from_price, b.close AS to_price, {{ seconds }} AS seconds
    FROM contract_bars_{{ tf }} AS a
    JOIN contract_bars_{{ tf }} AS b ON b.symbol = a.symbol AND b.ts = a.ts
    WHERE a.symbol = $symbol AND a.contract = $from_contract AND b.contract = $to_contract
      AND a.ts + INTERVAL {{ seconds }} SECOND <= $roll_ts
    {{ "UNION ALL" if not loop.last }}
{%- endfor %}
)
SELECT timeframe, ts, from_price, to_price
FROM candidates
ORDER BY closed_at DESC, seconds ASC
LIMIT 1
