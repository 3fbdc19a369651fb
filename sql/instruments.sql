{#-
  Every contract of one symbol seen in the bars, with its expiry and specs: the Databento definition where one
  exists (expiration, tick, multiplier), else the product's rule (expiry) and the contracts table (specs).
  Relations: contract_bars_<tf> views, definitions, contracts, rule_expiries (contract, expiry from the rule).
  Binds $symbol. Parameter: timeframes (names).
-#}
WITH seen AS (
{%- for tf in timeframes %}
    SELECT contract, any_value(instrument_id) AS instrument_id, min(ts) AS first_ts, max(ts) AS last_ts, count(*) AS bars
    FROM contract_bars_{{ tf }} WHERE symbol = $symbol AND contract IS NOT NULL GROUP BY contract
    {{ "UNION ALL" if not loop.last }}
{%- endfor %}
),
per_contract AS (
    SELECT contract, any_value(instrument_id) AS instrument_id, min(first_ts) AS first_ts, max(last_ts) AS last_ts,
           CAST(sum(bars) AS BIGINT) AS bars
    FROM seen GROUP BY contract
),
defined AS (
    SELECT raw_symbol, arg_max(expiration, ts_recv) AS expiration, arg_max(min_price_increment, ts_recv) AS tick_size,
           arg_max(multiplier, ts_recv) AS multiplier
    FROM definitions GROUP BY raw_symbol
)
SELECT
    $symbol AS symbol,
    p.contract,
    p.instrument_id,
    p.first_ts,
    p.last_ts,
    p.bars,
    coalesce(CAST(timezone('America/New_York', d.expiration) AS DATE), r.expiry) AS expiry,
    CASE WHEN d.expiration IS NOT NULL THEN 'definition' WHEN r.expiry IS NOT NULL THEN 'rule' END AS expiry_source,
    coalesce(d.tick_size, c.tick_size) AS tick_size,
    coalesce(d.multiplier, c.multiplier) AS multiplier,
    CASE WHEN d.raw_symbol IS NOT NULL THEN 'definition' WHEN c.root IS NOT NULL THEN 'contracts' END AS spec_source
FROM per_contract AS p
LEFT JOIN defined AS d ON d.raw_symbol = p.contract
LEFT JOIN rule_expiries AS r ON r.contract = p.contract
LEFT JOIN contracts AS c ON c.root = $symbol
ORDER BY expiry NULLS LAST, p.contract
