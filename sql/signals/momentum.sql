{#- signal
name: momentum
class: MomentumSignalGenerator
order: 1
description: multi-timeframe momentum (log returns over a short, medium and long lookback) taken only when all three agree with the trend (close vs EMA_50, ADX strength)
param  | short      | int in 1,5,15,60,240 | 5    | short lookback in bars: catalog column logret_<short>
param  | medium     | int in 1,5,15,60,240 | 15   | medium lookback in bars: logret_<medium>
param  | long       | int in 1,5,15,60,240 | 60   | long lookback in bars: logret_<long> (short < medium < long)
param  | adx_min    | double               | 20   | trend strength required: adx_14 >= adx_min (0 switches the filter off)
param  | z_scale    | double               | 1.0  | strength = mean over the lookbacks k of tanh(|z_k| / z_scale), z_k = logret_k / (natr_14 / 100 * sqrt(k))
output | ret_short  | double | logret_<short>
output | ret_medium | double | logret_<medium>
output | ret_long   | double | logret_<long>
output | trend_dist | double | dist_ema_50_atr = (close - EMA_50) / atr_14: > 0 close above its 50-bar EMA (uptrend), < 0 below
output | adx        | double | adx_14 (trend strength, 0..100)
output | natr       | double | natr_14 = 100 * atr_14 / close, the per-bar volatility the returns are scaled by
-#}
{#-
  signal = +strength when logret_<short>, logret_<medium>, logret_<long> are all > 0, the close is above its
  EMA_50 (trend_dist > 0) and adx_14 >= adx_min; -strength when all three are < 0 and the close is below its
  EMA_50 (same ADX rule); 0 otherwise (the timeframes disagree, or disagree with the trend).
  strength = (tanh(|z_short| / z_scale) + tanh(|z_medium| / z_scale) + tanh(|z_long| / z_scale)) / 3 in [0, 1),
  z_k = logret_k / (natr_14 / 100 * sqrt(k)): the k-bar return in units of the ATR-implied k-bar move.
  NULL during warm-up: while any of the three returns or adx_14 is NULL (from row `long`, and adx from row 27).
  A NULL trend_dist after warm-up (ATR below the price floor in a stale flat stretch) counts as "no trend": 0.
  Reads only features at ts (no look-ahead): the signal at ts may be traded from ts + timeframe.
-#}
{% import 'signals/_common.sql' as s with context %}
{% macro core(p, timeframe, symbols) -%}
{%- if not (p.short < p.medium < p.long) %}{{ fail('momentum: lookbacks must satisfy short < medium < long, got short=%s, medium=%s, long=%s' % (p.short, p.medium, p.long)) }}{% endif %}
{%- if p.z_scale <= 0 %}{{ fail('momentum: z_scale must be > 0, got %s' % p.z_scale) }}{% endif %}
SELECT
    symbol, ts,
    CASE
        WHEN ret_short IS NULL OR ret_medium IS NULL OR ret_long IS NULL OR adx IS NULL THEN NULL
        WHEN ret_short > 0 AND ret_medium > 0 AND ret_long > 0 AND coalesce(trend_dist > 0, false)
             AND adx >= {{ p.adx_min | double }} THEN strength
        WHEN ret_short < 0 AND ret_medium < 0 AND ret_long < 0 AND coalesce(trend_dist < 0, false)
             AND adx >= {{ p.adx_min | double }} THEN -strength
        ELSE 0.0
    END AS signal,
    ret_short, ret_medium, ret_long, trend_dist, adx, natr
FROM (
    SELECT
        symbol, ts,
        logret_{{ p.short }} AS ret_short,
        logret_{{ p.medium }} AS ret_medium,
        logret_{{ p.long }} AS ret_long,
        dist_ema_50_atr AS trend_dist,
        adx_14 AS adx,
        natr_14 AS natr,
        (
{%- for k in (p.short, p.medium, p.long) %}
            {{ '+ ' if not loop.first else '' }}tanh(abs(logret_{{ k }}) / nullif(natr_14 / 100 * {{ sqrt(k) | double }} * {{ p.z_scale | double }}, 0))
{%- endfor %}
        ) / 3 AS strength
    FROM features_{{ timeframe }}
    WHERE {{ s.symbol_in('symbol', symbols) }}
)
{%- endmacro %}
{%- if generator == 'momentum' %}
{{ s.wrap(core(params, timeframe, symbols), outputs, params, timeframe, symbols) }}
{%- endif %}
