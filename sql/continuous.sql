{#-
  Continuous front-contract series for one timeframe.
  Parameters: timeframe (1s|1m|1h|1d), adjust (none | 'ratio' | 'diff').
  Futures bars are kept where their contract is the front contract, i.e. inside that contract's segment
  [valid_from, valid_to) of `front_segments` (NULL bounds are open). Back adjustment multiplies prices by the
  segment's ratio_factor (product of to/from price ratios of every later roll) or adds its diff_offset (sum of
  to - from price differences of every later roll), so the latest contract keeps its raw prices.
  Series with no contract (plain symbols) pass through unchanged.
-#}
{%- set cols = ['open', 'high', 'low', 'close'] -%}
SELECT
    b.symbol,
    b.contract,
    b.ts,
{%- for c in cols %}
{%- if adjust == 'ratio' %}
    b.{{ c }} * f.ratio_factor AS {{ c }},
{%- elif adjust == 'diff' %}
    b.{{ c }} + f.diff_offset AS {{ c }},
{%- else %}
    b.{{ c }},
{%- endif %}
{%- endfor %}
    b.volume,
    b.open_interest,
    b.instrument_id
FROM contract_bars_{{ timeframe }} AS b
JOIN front_segments AS f
    ON f.symbol = b.symbol
   AND f.contract = b.contract
   AND (f.valid_from IS NULL OR b.ts >= f.valid_from)
   AND (f.valid_to IS NULL OR b.ts < f.valid_to)
UNION ALL
SELECT symbol, contract, ts, open, high, low, close, volume, open_interest, instrument_id
FROM contract_bars_{{ timeframe }}
WHERE contract IS NULL
