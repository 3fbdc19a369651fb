{#- signal
name: mean_reversion
class: MeanReversionSignalGenerator
order: 2
description: Bollinger %B and z-score reversals confirmed by RSI in the right direction (long only when oversold, short only when overbought)
param  | pctb_low       | double | 0.0 | long needs bb_pctb_20 < pctb_low (close below the lower 2-sd band)
param  | pctb_high      | double | 1.0 | short needs bb_pctb_20 > pctb_high (close above the upper band)
param  | z_entry        | double | 2.0 | long needs zscore_close_20 < -z_entry, short zscore_close_20 > z_entry
param  | z_full         | double | 3.0 | |signal| = min(1, |zscore_close_20| / z_full)
param  | rsi_oversold   | double | 30  | long needs rsi_14 < rsi_oversold
param  | rsi_overbought | double | 70  | short needs rsi_14 > rsi_overbought
output | pctb           | double | bb_pctb_20: (close - lower band) / (upper - lower), bands = SMA_20 -/+ 2 population sd
output | zscore         | double | zscore_close_20: (close - SMA_20) / sample sd of the 20 closes
output | rsi            | double | rsi_14 (Wilder RSI, 0..100)
output | bb_width       | double | bb_width_20: (upper - lower) / SMA_20 (0 on a flat window; NULL only in warm-up)
-#}
{#-
  Fade a stretched close, with RSI confirming the exhaustion on the same side:
    long  (+) when bb_pctb_20 < pctb_low  AND zscore_close_20 < -z_entry AND rsi_14 < rsi_oversold
    short (-) when bb_pctb_20 > pctb_high AND zscore_close_20 >  z_entry AND rsi_14 > rsi_overbought
    0 otherwise; |signal| = min(1, |z| / z_full).
  So a long never comes with an overbought RSI, nor a short with an oversold one (rsi_oversold < rsi_overbought).
  NULL during warm-up: while bb_width_20 (first row 19) or rsi_14 (first row 14) is NULL. A NULL %B or z-score
  after warm-up (a flat 20-bar window: nothing to fade) gives 0.
-#}
{% import 'signals/_common.sql' as s with context %}
{% macro core(p, timeframe, symbols) -%}
{%- if not (p.pctb_low <= p.pctb_high) %}{{ fail('mean_reversion: need pctb_low <= pctb_high, got %s and %s' % (p.pctb_low, p.pctb_high)) }}{% endif %}
{%- if not (p.rsi_oversold < p.rsi_overbought) %}{{ fail('mean_reversion: need rsi_oversold < rsi_overbought, got %s and %s' % (p.rsi_oversold, p.rsi_overbought)) }}{% endif %}
{%- if p.z_entry < 0 or p.z_full <= 0 %}{{ fail('mean_reversion: need z_entry >= 0 and z_full > 0, got %s and %s' % (p.z_entry, p.z_full)) }}{% endif %}
SELECT
    symbol, ts,
    CASE
        WHEN bb_width IS NULL OR rsi IS NULL THEN NULL
        WHEN pctb < {{ p.pctb_low | double }} AND zscore < {{ (0 - p.z_entry) | double }} AND rsi < {{ p.rsi_oversold | double }}
            THEN least(1.0, abs(zscore) / {{ p.z_full | double }})
        WHEN pctb > {{ p.pctb_high | double }} AND zscore > {{ p.z_entry | double }} AND rsi > {{ p.rsi_overbought | double }}
            THEN -least(1.0, abs(zscore) / {{ p.z_full | double }})
        ELSE 0.0
    END AS signal,
    pctb, zscore, rsi, bb_width
FROM (
    SELECT symbol, ts, bb_pctb_20 AS pctb, zscore_close_20 AS zscore, rsi_14 AS rsi, bb_width_20 AS bb_width
    FROM features_{{ timeframe }}
    WHERE {{ s.symbol_in('symbol', symbols) }}
)
{%- endmacro %}
{%- if generator == 'mean_reversion' %}
{{ s.wrap(core(params, timeframe, symbols), outputs, params, timeframe, symbols) }}
{%- endif %}
