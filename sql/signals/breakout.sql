{#- signal
name: breakout
class: BreakoutSignalGenerator
order: 3
description: Donchian channel breakouts (close beyond the high/low of the previous N bars, current bar excluded) confirmed by relative volume
param  | channel       | int    | 20  | Donchian channel length N: highest high / lowest low of the N bars before the current one
param  | vol_threshold | double | 1.5 | volume confirmation: rel_volume_20 >= vol_threshold on the breakout bar
param  | vol_full      | double | 3.0 | |signal| = min(1, rel_volume_20 / vol_full) on a confirmed breakout
param  | hold          | int    | 10  | bars a confirmed breakout is held after its bar (0 = the breakout bar only); a newer breakout replaces it
output | close_adj     | double | close of the ratio-adjusted series (the prices the features run on)
output | channel_high  | double | max(high) over rows t-N..t-1 (adjusted; NULL until N earlier bars exist)
output | channel_low   | double | min(low) over rows t-N..t-1 (adjusted)
output | rel_volume    | double | rel_volume_20: volume / mean volume of the 20 previous bars
output | breakout      | int    | +1 close_adj > channel_high, -1 close_adj < channel_low, 0 inside (before volume confirmation)
output | event         | double | the breakout bar's own signal: breakout * min(1, rel_volume / vol_full) when rel_volume >= vol_threshold, else 0
-#}
{#-
  No look-ahead: the channel is max(high) / min(low) over ROWS BETWEEN N PRECEDING AND 1 PRECEDING, so the bar
  being tested is never part of its own channel (with N = 20 `breakout` equals the catalog's breakout_high_20 /
  breakout_low_20). It runs on the ratio-adjusted prices (raw prices times the contract's ratio_factor, as
  bars_<tf>_adj_ratio and the features) so a roll gap is not a breakout. Volume confirmation uses the catalog's
  rel_volume_20, whose mean excludes the current bar.
  event = breakout * min(1, rel_volume_20 / vol_full) when rel_volume_20 >= vol_threshold, else 0;
  signal = the most recent non-zero event among the rows t-hold..t, else 0.
  NULL during warm-up: rows before max(N, 20) (the channel and the 20-bar volume mean need that many earlier
  bars). A NULL rel_volume_20 after warm-up (20 bars without volume) is no confirmation: 0.
-#}
{% import 'signals/_common.sql' as s with context %}
{% macro core(p, timeframe, symbols) -%}
{%- if p.channel < 1 or p.hold < 0 %}{{ fail('breakout: need channel >= 1 and hold >= 0, got channel=%s, hold=%s' % (p.channel, p.hold)) }}{% endif %}
{%- if p.vol_full <= 0 %}{{ fail('breakout: vol_full must be > 0, got %s' % p.vol_full) }}{% endif %}
SELECT
    symbol, ts,
{%- if p.hold == 0 %}
    event AS signal,
{%- else %}
    CASE WHEN event IS NOT NULL THEN
        coalesce(arg_max(event, CASE WHEN event <> 0 THEN ts END) OVER (
            PARTITION BY symbol ORDER BY ts ROWS BETWEEN {{ p.hold }} PRECEDING AND CURRENT ROW), 0.0)
    END AS signal,
{%- endif %}
    close_adj, channel_high, channel_low, rel_volume, breakout, event
FROM (
    SELECT
        c.symbol, c.ts, c.close_adj, c.channel_high, c.channel_low, f.rel_volume_20 AS rel_volume, c.breakout,
        CASE
            WHEN c.rn < {{ [p.channel, 20] | max }} THEN NULL
            WHEN c.breakout <> 0 AND f.rel_volume_20 >= {{ p.vol_threshold | double }}
                THEN c.breakout * least(1.0, f.rel_volume_20 / {{ p.vol_full | double }})
            ELSE 0.0
        END AS event
    FROM (
        SELECT
            symbol, ts, close_adj, channel_high, channel_low, rn,
            CAST(CASE
                WHEN channel_high IS NULL THEN NULL
                WHEN close_adj > channel_high THEN 1
                WHEN close_adj < channel_low THEN -1
                ELSE 0
            END AS INTEGER) AS breakout
        FROM (
            SELECT
                symbol, ts, close AS close_adj,
                CASE WHEN count(high) OVER prior = {{ p.channel }} THEN max(high) OVER prior END AS channel_high,
                CASE WHEN count(low) OVER prior = {{ p.channel }} THEN min(low) OVER prior END AS channel_low,
                row_number() OVER bars - 1 AS rn
            FROM ({{ s.adjusted_bars(timeframe, symbols) }}) AS a
            WINDOW bars AS (PARTITION BY symbol ORDER BY ts),
                   prior AS (PARTITION BY symbol ORDER BY ts ROWS BETWEEN {{ p.channel }} PRECEDING AND 1 PRECEDING)
        )
    ) AS c
    JOIN features_{{ timeframe }} AS f ON f.symbol = c.symbol AND f.ts = c.ts
)
{%- endmacro %}
{%- if generator == 'breakout' %}
{{ s.wrap(core(params, timeframe, symbols), outputs, params, timeframe, symbols) }}
{%- endif %}
