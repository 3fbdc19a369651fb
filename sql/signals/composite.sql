{#- signal
name: composite
class: CompositeSignalGenerator
order: 5
description: weighted combination of the momentum, mean-reversion, breakout and volatility-regime signals, normalized by the sum of |weights| so it stays in [-1, 1]
uses: momentum, mean_reversion, breakout, volatility_regime
param  | w_momentum          | double | 1.0 | weight of the momentum signal (0 leaves it out)
param  | w_mean_reversion    | double | 1.0 | weight of the mean_reversion signal
param  | w_breakout          | double | 1.0 | weight of the breakout signal
param  | w_volatility_regime | double | 1.0 | weight of the volatility_regime signal
output | momentum_signal          | double | momentum signal (parameters momentum.*; NULL when its weight is 0)
output | mean_reversion_signal    | double | mean_reversion signal (parameters mean_reversion.*)
output | breakout_signal          | double | breakout signal (parameters breakout.*)
output | volatility_regime_signal | double | volatility_regime signal (parameters volatility_regime.*, its own momentum/mean_reversion under volatility_regime.momentum.* ...)
-#}
{#-
  signal = (w_momentum * momentum + w_mean_reversion * mean_reversion + w_breakout * breakout
            + w_volatility_regime * volatility_regime) / (|w_momentum| + |w_mean_reversion| + |w_breakout| + |w_volatility_regime|)
  Every sub-signal is in [-1, 1], so the result is too (clipped to [-1, 1] against rounding). Weights may be
  negative (fade a generator); a weight of 0 leaves the generator out (not computed, its column NULL); at least
  one weight must be non-zero. NULL while any generator with a non-zero weight is NULL (warm-up: the longest
  one, the volatility regime's rv_pctrank_20_240).
-#}
{% import 'signals/_common.sql' as s with context %}
{% import 'signals/momentum.sql' as momentum with context %}
{% import 'signals/mean_reversion.sql' as mean_reversion with context %}
{% import 'signals/breakout.sql' as breakout with context %}
{% import 'signals/volatility_regime.sql' as volatility_regime with context %}
{% set PARTS = [('momentum', momentum), ('mean_reversion', mean_reversion), ('breakout', breakout), ('volatility_regime', volatility_regime)] %}
{% macro core(p, timeframe, symbols) -%}
{%- set ns = namespace(total=0.0, used=[]) %}
{%- for name, module in PARTS %}{% set w = p['w_' ~ name] %}{% if w != 0 %}{% set ns.total = ns.total + (w if w > 0 else -w) %}{% set ns.used = ns.used + [name] %}{% endif %}{% endfor %}
{%- if not ns.used %}{{ fail('composite: at least one weight must be non-zero') }}{% endif %}
SELECT
    symbol, ts,
    CASE WHEN {% for name in ns.used %}{{ ' OR ' if not loop.first else '' }}{{ name }}_signal IS NULL{% endfor %} THEN NULL
    ELSE greatest(-1.0, least(1.0, (
{%- for name in ns.used %}
        {{ '+ ' if not loop.first else '' }}{{ p['w_' ~ name] | double }} * {{ name }}_signal
{%- endfor %}
    ) / {{ ns.total | double }}))
    END AS signal,
    momentum_signal, mean_reversion_signal, breakout_signal, volatility_regime_signal
FROM (
    SELECT
        k.symbol, k.ts
{%- for name, module in PARTS %},
        {% if name in ns.used %}{{ name }}.signal{% else %}CAST(NULL AS DOUBLE){% endif %} AS {{ name }}_signal
{%- endfor %}
    FROM (SELECT symbol, ts FROM features_{{ timeframe }} WHERE {{ s.symbol_in('symbol', symbols) }}) AS k
{%- for name, module in PARTS %}{% if name in ns.used %}
    LEFT JOIN ({{ module.core(p[name], timeframe, symbols) }}) AS {{ name }} ON {{ name }}.symbol = k.symbol AND {{ name }}.ts = k.ts
{%- endif %}{% endfor %}
)
{%- endmacro %}
{%- if generator == 'composite' %}
{{ s.wrap(core(params, timeframe, symbols), outputs, params, timeframe, symbols) }}
{%- endif %}
