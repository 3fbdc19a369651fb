{#-
  Resample 1-minute bars to N-minute bars (N divides 60, so a bucket never crosses the 17:00-18:00 ET halt:
  session bounds are whole hours). Parameters: source (a 1m view), minutes (N). ts = bucket open time (UTC);
  bar_count = 1m bars in it. open = open of the first bar, close = close of the last, high = max, low = min,
  volume = sum.
  A bar never mixes two contracts' prices: where the front changes inside a bucket (a continuous DBN file's
  change can fall anywhere), the bucket's bar is the contract that is front at its last bar, from that
  contract's bars only, so the view has one row per (symbol, ts).
-#}
{% import 'macros.sql' as m %}
WITH per_contract AS (
    SELECT
        symbol,
        contract,
        time_bucket(INTERVAL '{{ minutes }} minutes', ts) AS ts,
        {{ m.ohlcv_of_group() }},
        max(ts) AS last_bar_ts
    FROM {{ source }}
    GROUP BY symbol, contract, time_bucket(INTERVAL '{{ minutes }} minutes', ts)
)
SELECT * EXCLUDE (last_bar_ts)
FROM per_contract
QUALIFY row_number() OVER (PARTITION BY symbol, ts ORDER BY last_bar_ts DESC) = 1
