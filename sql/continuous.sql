{#-
  Continuous front-contract series for one timeframe.
  Parameters: timeframe (1s|1m|1h|1d), adjust (none | 'ratio' | 'diff'), contractless (the symbols whose
  stored bars include contract-less rows; only they need the per-session choice below).
  Futures bars are kept where their contract is the front contract, i.e. inside that contract's segment
  [valid_from, valid_to) of `front_segments` (NULL bounds are open). Back adjustment multiplies prices by the
  segment's ratio_factor (product of to/from price ratios of every later roll) or adds its diff_offset (sum of
  to - from price differences of every later roll), so the latest contract keeps its raw prices.
  Bars with no contract (plain symbols, or a contract-less file of a root) pass through unchanged, except on a
  CME trading date where the root's per-contract front bars exist: those define the series that session, and
  the contract-less rows of that session are left out (one source per session, never two rows per ts, never a
  session stitched from two vendors' prices).
-#}
{% import 'macros.sql' as m %}
{%- set cols = ['open', 'high', 'low', 'close'] -%}
{%- set front_join -%}
JOIN front_segments AS f
    ON f.symbol = b.symbol
   AND f.contract = b.contract
   AND (f.valid_from IS NULL OR b.ts >= f.valid_from)
   AND (f.valid_to IS NULL OR b.ts < f.valid_to)
{%- endset %}
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
{{ front_join }}
UNION ALL
SELECT p.symbol, p.contract, p.ts, p.open, p.high, p.low, p.close, p.volume, p.open_interest, p.instrument_id
FROM contract_bars_{{ timeframe }} AS p
WHERE p.contract IS NULL
{%- if contractless %}
  AND NOT EXISTS (
    SELECT 1
    FROM contract_bars_{{ timeframe }} AS b
    {{ front_join }}
    WHERE b.symbol IN ({% for s in contractless %}'{{ s | replace("'", "''") }}'{{ ", " if not loop.last }}{% endfor %})
      AND b.symbol = p.symbol
      AND {{ m.trading_date('b.ts') }} = {{ m.trading_date('p.ts') }}
  )
{%- endif %}
