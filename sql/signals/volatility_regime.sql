{#- signal
name: volatility_regime
class: VolatilityRegimeSignalGenerator
order: 4
description: volatility regime from a short/long realized-vol ratio and the vol percentile rank: follows momentum in a high-vol/trending regime, mean reversion in a calm one
uses: momentum, mean_reversion
param  | short      | int in 5,20,60 | 20  | short realized vol: rv_cc_<short>
param  | long       | int in 60,240  | 240 | long realized vol: rv_cc_<long> (short < long)
param  | ratio_high | double         | 1.2 | high-vol/trending when rv_cc_<short> / rv_cc_<long> >= ratio_high (or the rank rule below)
param  | ratio_low  | double         | 1.0 | calm when rv_cc_<short> / rv_cc_<long> <= ratio_low and the rank is low too
param  | pct_high   | double         | 0.8 | high-vol/trending when rv_pctrank_20_240 >= pct_high
param  | pct_low    | double         | 0.5 | calm needs rv_pctrank_20_240 <= pct_low
param  | adx_trend  | double         | 0   | also trending when adx_14 >= adx_trend, whatever the vol (0 = off: the regime is read from volatility only)
output | vol_ratio             | double | rv_cc_<short> / rv_cc_<long> (NULL when the long vol is 0)
output | vol_pctrank           | double | rv_pctrank_20_240: rank of rv_cc_20 among its last 240 values, (0, 1]
output | adx                   | double | adx_14 (used only when adx_trend > 0)
output | regime                | int    | 1 high-vol/trending (follows momentum), -1 calm (follows mean reversion), 0 neither (flat)
output | momentum_signal       | double | signal of the momentum generator (parameters momentum.*)
output | mean_reversion_signal | double | signal of the mean_reversion generator (parameters mean_reversion.*)
-#}
{#-
  regime =  1 when vol_ratio >= ratio_high OR vol_pctrank >= pct_high   (volatility expanding or high: trend)
               OR (adx_trend > 0 AND adx_14 >= adx_trend)           (a strong trend, optional)
         = -1 when vol_ratio <= ratio_low AND vol_pctrank <= pct_low    (volatility contracting and low: calm)
         =  0 otherwise (and when vol_ratio is NULL unless the rank is high)
  signal = the momentum signal in regime 1, the mean-reversion signal in regime -1, 0 in regime 0.
  The two sub-signals are the momentum and mean_reversion templates themselves (their `core` macros, with their
  own parameters, overridable as momentum.<name> and mean_reversion.<name>).
  NULL during warm-up: while rv_cc_<long> or rv_pctrank_20_240 (first row 259) is NULL, or the followed
  sub-signal is NULL.
-#}
{% import 'signals/_common.sql' as s with context %}
{% import 'signals/momentum.sql' as momentum with context %}
{% import 'signals/mean_reversion.sql' as mean_reversion with context %}
{% macro core(p, timeframe, symbols) -%}
{%- if not (p.short < p.long) %}{{ fail('volatility_regime: need short < long, got short=%s, long=%s' % (p.short, p.long)) }}{% endif %}
{%- if not (p.ratio_low <= p.ratio_high) %}{{ fail('volatility_regime: need ratio_low <= ratio_high, got %s and %s' % (p.ratio_low, p.ratio_high)) }}{% endif %}
{%- if not (p.pct_low <= p.pct_high) %}{{ fail('volatility_regime: need pct_low <= pct_high, got %s and %s' % (p.pct_low, p.pct_high)) }}{% endif %}
SELECT
    symbol, ts,
    CASE
        WHEN rv_long IS NULL OR vol_pctrank IS NULL THEN NULL
        WHEN regime = 1 THEN momentum_signal
        WHEN regime = -1 THEN mean_reversion_signal
        ELSE 0.0
    END AS signal,
    vol_ratio, vol_pctrank, adx, regime, momentum_signal, mean_reversion_signal
FROM (
    SELECT
        v.symbol, v.ts, v.rv_long, v.vol_ratio, v.vol_pctrank, v.adx,
        CAST(CASE
            WHEN v.rv_long IS NULL OR v.vol_pctrank IS NULL THEN NULL
            WHEN v.vol_ratio >= {{ p.ratio_high | double }} OR v.vol_pctrank >= {{ p.pct_high | double }}
{%- if p.adx_trend > 0 %} OR v.adx >= {{ p.adx_trend | double }}{% endif %} THEN 1
            WHEN v.vol_ratio <= {{ p.ratio_low | double }} AND v.vol_pctrank <= {{ p.pct_low | double }} THEN -1
            ELSE 0
        END AS INTEGER) AS regime,
        m.signal AS momentum_signal,
        r.signal AS mean_reversion_signal
    FROM (
        SELECT symbol, ts, rv_cc_{{ p.long }} AS rv_long, rv_cc_{{ p.short }} / nullif(rv_cc_{{ p.long }}, 0) AS vol_ratio,
               rv_pctrank_20_240 AS vol_pctrank, adx_14 AS adx
        FROM features_{{ timeframe }}
        WHERE {{ s.symbol_in('symbol', symbols) }}
    ) AS v
    LEFT JOIN ({{ momentum.core(p.momentum, timeframe, symbols) }}) AS m ON m.symbol = v.symbol AND m.ts = v.ts
    LEFT JOIN ({{ mean_reversion.core(p.mean_reversion, timeframe, symbols) }}) AS r ON r.symbol = v.symbol AND r.ts = v.ts
)
{%- endmacro %}
{%- if generator == 'volatility_regime' %}
{{ s.wrap(core(params, timeframe, symbols), outputs, params, timeframe, symbols) }}
{%- endif %}
