{#-
  Front-contract changes of continuous DBN data (ES.v.0 ...), derived from the stored instrument runs of every
  file together, so that a change falling between two files (e.g. monthly chunks) is found like any other.
  ts = the first bar of the new instrument. Runs of the same instrument from overlapping files merge.
-#}
WITH ordered AS (
    SELECT
        symbol,
        continuous_symbol,
        instrument_id,
        first_ts,
        LAG(instrument_id) OVER (PARTITION BY symbol, continuous_symbol ORDER BY first_ts, last_ts) AS previous_id
    FROM instrument_runs
)
SELECT
    symbol,
    continuous_symbol,
    first_ts AS ts,
    previous_id AS from_instrument_id,
    instrument_id AS to_instrument_id
FROM ordered
WHERE previous_id IS NOT NULL AND previous_id <> instrument_id
