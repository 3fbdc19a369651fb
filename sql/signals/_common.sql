{#- signal-sizing
param | sizing             | str in vol,fixed                                          | vol     | vol: volatility-scaled contracts (formula below); fixed: round(signal * max_contracts)
param | capital            | double                                                    | 1000000 | account capital the vol sizing spends (currency)
param | target_vol         | double                                                    | 0.15    | annualized volatility target of one position at abs(signal) = 1
param | min_vol_scale      | double                                                    | 0.25    | lower clip of target_vol / instrument vol (also used when the vol is missing or <= 0)
param | max_vol_scale      | double                                                    | 2.0     | upper clip of target_vol / instrument vol
param | max_contracts      | int                                                       | 10      | abs(target) never exceeds this (the risk manager applies its own limits later)
param | vol_column         | str in rv_cc_20,rv_cc_60,rv_cc_240,ewma_vol_32,vol_yz_20,vol_parkinson_20,vol_gk_20 | rv_cc_20 | feature column with the instrument's annualized volatility
param | default_multiplier | double                                                    | 1.0     | contract multiplier of a symbol that is not a root of the contracts table
-#}
{#-
  Shared by every signal generator (sql/signals/<name>.sql): the bars a signal is joined to, the symbol filter,
  the back-adjusted bars, and the sizing of the signal to an integer target position.

  Bars. The query returns the raw front-contract bars with their `contract` (what the backtester trades and
  rolls), for the same rows the features of the timeframe were computed on (sql/features/_source.sql):
    1m: bars_1m.
    1h: bars_1h where a symbol has stored hourly bars, else bars_1h_from_1m (hourly buckets of bars_1m).
    1d: session_bars_1d (CME session bars from bars_1m) where a symbol has 1m bars, else bars_1d.
  Back-adjusted prices (used by the breakout channel, like the features) are the raw prices times the
  ratio_factor of the contract's front segment (1 for plain series): the same numbers as bars_<tf>_adj_ratio.

  Sizing (target, INTEGER contracts; NULL exactly where the signal is NULL):
    sizing = vol (default), the risk manager's volatility_scaled_contracts (engine/risk.py), then a clip:
        scale     = clip(target_vol / vol, min_vol_scale, max_vol_scale)   (vol missing or <= 0: min_vol_scale)
        contracts = sign(signal) * min(max_contracts, floor(|signal| * capital * scale / (close * multiplier) + 1e-9))
      i.e. signal * capital * target_vol / (vol * close * multiplier) inside the scale clips, rounded toward 0;
      vol = the feature `vol_column` (annualized, default rv_cc_20), close = the raw close of the bar,
      multiplier = contracts.multiplier of the symbol's root (default_multiplier when the root is unknown).
      A non-positive close gives 0.
    sizing = fixed: round(signal * max_contracts) (half away from zero).
  Example: signal 1, capital 1,000,000, ES at 4,000 (multiplier 50: 200,000 per contract), vol 0.30:
  scale 0.5, floor(1,000,000 * 0.5 / 200,000) = 2 contracts.
-#}
{% macro symbol_in(column, symbols) -%}
{%- if symbols %}{{ column }} IN ({% for s in symbols %}{{ ', ' if not loop.first else '' }}'{{ s }}'{% endfor %}){% else %}TRUE{% endif -%}
{%- endmacro %}

{#- Raw front-contract bars of the timeframe (see above): symbol, contract, ts, open, high, low, close, volume. -#}
{% macro raw_bars(timeframe, symbols) -%}
{%- if timeframe == '1m' -%}
SELECT symbol, contract, ts, open, high, low, close, volume FROM bars_1m WHERE {{ symbol_in('symbol', symbols) }}
{%- elif timeframe == '1h' -%}
SELECT symbol, contract, ts, open, high, low, close, volume FROM bars_1h WHERE {{ symbol_in('symbol', symbols) }}
UNION ALL
SELECT symbol, contract, ts, open, high, low, close, volume FROM bars_1h_from_1m
WHERE {{ symbol_in('symbol', symbols) }} AND symbol NOT IN (SELECT DISTINCT symbol FROM bars_1h)
{%- else -%}
SELECT symbol, contract, ts, open, high, low, close, volume FROM session_bars_1d WHERE {{ symbol_in('symbol', symbols) }}
UNION ALL
SELECT symbol, contract, ts, open, high, low, close, volume FROM bars_1d
WHERE {{ symbol_in('symbol', symbols) }} AND symbol NOT IN (SELECT DISTINCT symbol FROM session_bars_1d)
{%- endif -%}
{%- endmacro %}

{#- The same bars back-adjusted by ratio (the prices the features run on), plus rn = 0-based row per symbol. -#}
{% macro adjusted_bars(timeframe, symbols) -%}
SELECT
    b.symbol, b.contract, b.ts,
    b.open * coalesce(seg.factor, 1.0) AS open,
    b.high * coalesce(seg.factor, 1.0) AS high,
    b.low * coalesce(seg.factor, 1.0) AS low,
    b.close * coalesce(seg.factor, 1.0) AS close,
    b.volume
FROM ({{ raw_bars(timeframe, symbols) }}) AS b
LEFT JOIN (
    SELECT symbol, contract, any_value(ratio_factor) AS factor FROM front_segments GROUP BY symbol, contract
) AS seg ON seg.symbol = b.symbol AND seg.contract = b.contract
{%- endmacro %}

{#- The whole generator query: bars + the generator's core (symbol, ts, signal, declared outputs) + sizing. -#}
{% macro wrap(core_sql, outputs, p, timeframe, symbols) -%}
{%- if p.capital <= 0 or p.target_vol <= 0 or p.default_multiplier <= 0 or p.max_contracts < 0 %}{{ fail('sizing: capital, target_vol and default_multiplier must be > 0 and max_contracts >= 0') }}{% endif %}
{%- if not (0 < p.min_vol_scale <= p.max_vol_scale) %}{{ fail('sizing: need 0 < min_vol_scale <= max_vol_scale, got %s and %s' % (p.min_vol_scale, p.max_vol_scale)) }}{% endif %}
WITH signal_core AS (
{{ core_sql | trim }}
),
signal_bars AS (
{{ raw_bars(timeframe, symbols) }}
),
signal_vol AS (
    SELECT symbol, ts, {{ p.vol_column }} AS sizing_vol FROM features_{{ timeframe }} WHERE {{ symbol_in('symbol', symbols) }}
),
signal_sized AS (
    SELECT
        b.symbol, b.ts, b.open, b.high, b.low, b.close, b.volume, b.contract,
        CAST(k.signal AS DOUBLE) AS signal,
        coalesce(ct.multiplier, {{ p.default_multiplier | double }}) AS multiplier,
        v.sizing_vol,
        CASE
            WHEN v.sizing_vol > 0 THEN least(greatest({{ p.target_vol | double }} / v.sizing_vol, {{ p.min_vol_scale | double }}), {{ p.max_vol_scale | double }})
            ELSE {{ p.min_vol_scale | double }}
        END AS vol_scale
{%- for o in outputs %},
        k.{{ o }}
{%- endfor %}
    FROM signal_bars AS b
    JOIN signal_core AS k ON k.symbol = b.symbol AND k.ts = b.ts
    LEFT JOIN signal_vol AS v ON v.symbol = b.symbol AND v.ts = b.ts
    LEFT JOIN contracts AS ct ON ct.root = b.symbol
)
SELECT
    symbol, ts, open, high, low, close, volume, contract, signal,
{%- if p.sizing == 'fixed' %}
    CAST(round(signal * {{ p.max_contracts }}) AS INTEGER) AS target,
{%- else %}
    CAST(CASE
        WHEN signal IS NULL THEN NULL
        WHEN signal = 0 OR close <= 0 THEN 0
        ELSE sign(signal) * least({{ p.max_contracts }},
            floor(abs(signal) * {{ p.capital | double }} * vol_scale / (close * multiplier) + {{ 1e-9 | double }}))
    END AS INTEGER) AS target,
{%- endif %}
    multiplier, sizing_vol, vol_scale
{%- for o in outputs %},
    {{ o }}
{%- endfor %}
FROM signal_sized
ORDER BY ts, symbol
{%- endmacro %}
