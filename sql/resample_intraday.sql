{#-
  Resample 1-minute bars to N-minute bars (N divides 60, so a bucket never crosses the 17:00-18:00 ET halt:
  session bounds are whole hours). Grouped by contract too, so no bucket mixes two contracts.
  Parameters: source (a 1m view), minutes (N). ts = bucket open time (UTC); bar_count = 1m bars in it.
  open = open of the first bar, close = close of the last, high = max, low = min, volume = sum.
-#}
SELECT
    symbol,
    contract,
    time_bucket(INTERVAL '{{ minutes }} minutes', ts) AS ts,
    arg_min(open, ts) AS open,
    max(high) AS high,
    min(low) AS low,
    arg_max(close, ts) AS close,
    CAST(sum(volume) AS BIGINT) AS volume,
    CAST(count(*) AS INTEGER) AS bar_count
FROM {{ source }}
GROUP BY symbol, contract, time_bucket(INTERVAL '{{ minutes }} minutes', ts)
