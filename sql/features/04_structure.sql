{#- features
family: structure
category: structure
dist_high_20            | double | n=20    | first=19    | ln(c / HH_20), HH_20 = max(h) of rows t-19..t (current bar included; <= 0), log units
dist_low_20             | double | n=20    | first=19    | ln(c / LL_20), LL_20 = min(l) of rows t-19..t (>= 0), log units
dist_high_240           | double | n=240   | first=239   | ln(c / HH_240), log units
dist_low_240            | double | n=240   | first=239   | ln(c / LL_240), log units
donchian_pos_55         | double | n=55    | first=54    | (c - LL_55) / (HH_55 - LL_55), position in the 55-bar channel in [0, 1]; plain guarded division
breakout_high_20        | int    | n=20    | first=20    | 1 if c > max(h) of rows t-20..t-1 (close above the previous 20 bars' high), else 0
breakout_low_20         | int    | n=20    | first=20    | 1 if c < min(l) of rows t-20..t-1, else 0
hh_count_10             | int    | n=10    | first=10    | number of rows k in t-9..t with h[k] > h[k-1] (higher highs)
ll_count_10             | int    | n=10    | first=10    | number of rows k in t-9..t with l[k] < l[k-1] (lower lows)
inside_bar              | int    | n=2     | first=1     | 1 if h <= h[t-1] and l >= l[t-1] (non-strict), else 0
outside_bar             | int    | n=2     | first=1     | 1 if h > h[t-1] and l < l[t-1] (strict), else 0
adx_14                  | double | n=14    | first=27    | WILDER_14(DX), DX = 100*abs(+DI - -DI) / (+DI + -DI); NULL DX rows skipped (0-100)
plus_di_14              | double | n=14    | first=14    | 100*WILDER_14(+DM) / WILDER_14(TR), plain guarded division (no price floor: both sums decay together), 0-100
minus_di_14             | double | n=14    | first=14    | 100*WILDER_14(-DM) / WILDER_14(TR), plain guarded division as plus_di_14, 0-100
linreg_slope_20         | double | n=20    | first=19    | OLS slope of ln c on the bar offset over 20 rows (log units per bar)
linreg_r2_20            | double | n=20    | first=19    | R^2 of that regression (0-1); NULL on a flat window
linreg_slope_60         | double | n=60    | first=59    | OLS slope of ln c on the bar offset over 60 rows (log units per bar)
linreg_r2_60            | double | n=60    | first=59    | R^2 of that regression (0-1); NULL on a flat window
variance_ratio_5_120    | double | n=5,120 | first=124   | VAR_120(ln(c/c[t-5])) / (5*VAR_120(r)), sample variances, overlapping 5-bar returns (Lo-MacKinlay)
autocorr_1_60           | double | n=60    | first=61    | Pearson CORR_60(r, r[t-1]); NULL when either window is flat
skew_60                 | double | n=60    | first=60    | sample skewness G1 = sqrt(n(n-1))/(n-2)*m3/m2^1.5 of r over 60 rows (pandas rolling skew); NULL when flat
kurt_60                 | double | n=60    | first=60    | excess kurtosis G2 = (n-1)/((n-2)(n-3))*((n+1)(m4/m2^2 - 3) + 6) of r over 60 rows (pandas rolling kurt); NULL when flat
efficiency_ratio_10     | double | n=10    | first=10    | Kaufman abs(c - c[t-10]) / SUM_10(abs(c - c[t-1])) in [0, 1]
dist_prev_session_high  | double | session | first=D2    | ln(c / max(h) of the prior session), log units
dist_prev_session_low   | double | session | first=D2    | ln(c / min(l) of the prior session), log units
dist_prev_session_close | double | session | first=D2    | ln(c / last close of the prior session), log units
session_gap             | double | session | first=D2    | ln(first open of the session / last close of the prior session), across the halt or weekend, log units
overnight_gap           | double | session | first=D2rth | ln(open of D's first RTH row / close of the last RTH row of the latest earlier date with RTH rows), on rows of D from its first RTH row on, log units
dist_session_open       | double | session | first=D1    | ln(c / first open of the current session), log units
session_range_pos       | double | session | first=D1    | (c - min l) / (max h - min l) over the session's rows up to t, in [0, 1]; plain guarded division
-#}
{#-
  Readings (catalog sections 3-6; tests/features_oracle/structure.py makes the same choices):
  * +DI / -DI use plain ÷ (NULL rule 4: only ÷p rows get the price floor). In a stale feed the Wilder sums of
    +DM, -DM and TR decay by the same factor, so the DI (hence DX and ADX) keep their values, as in TA-Lib;
    DX is NULL only where a DI is NULL or +DI + -DI = 0, and ADX's Wilder filter skips those rows (state kept).
  * donchian_pos_55 and session_range_pos divide by max - min of raw prices: plain ÷ (exact denominators).
  * kurt_60 is NULL on a flat window like skew_60.
  * autocorr_1_60 needs 60 rows where r and r[t-1] are both non-NULL (first row 61).
  * overnight_gap: defined on every row of D at or after D's first RTH row (post-RTH rows of D included); the
    latest earlier date with RTH rows may be any earlier date, sid 0 included; only the current sid must be >= 2.
    RTH membership is by the bar's open minute of day, rth_open <= minute_of_day < rth_close.
  * No feature here is annualized: the timeframe does not change any formula (on 1d bars a session is one bar).

  How (measured on 1M one-minute bars of one symbol: a window aggregate costs ~0.1-0.3 s of CPU per 1M rows, a lag a
  few hundredths; every column carried through a window sort, a materialized CTE or a hash join costs time and
  memory; so: few aggregates, cheap lags, narrow sorts, no wide intermediate read twice):
  * Two chains over the base. The wide chain sorts the narrow bar columns twice: level 0 takes the lags the window
    inputs of level 1 need (h[t-1], l[t-1], ln c[t-1], r[t-1], r[t-2], c[t-5], c[t-6]) and the aggregates level 1
    lags (HH_20, LL_20, the power sums of r); level 1 takes every other lag and aggregate, and one projection
    finishes all features but the DMI. The DMI chain (+DI, -DI, ADX) runs on h, l, TR alone and is joined once
    at the end (narrow build side).
  * NULL rule 1: o, h, l, c are never NULL in validated bars, so a window of h, l or c is full exactly when
    rn >= n - 1; windows of ln c, r and ln(c / c[t-5]) are NULL when a close they read is <= 0 (counted per window).
  * HH_20 / LL_20 are max / min window aggregates of level 0; HH_20[t-1] (breakouts) and the 55- and 240-row
    extremes are lags of them taken 1, 20 and 35 rows apart. Higher-high / lower-low flags are packed into one
    integer and summed over 10 lags; SUM_10(abs(c - c[t-1])) from lags of c.
  * FLAT_n(x) (R^2, skew, kurt, autocorr, variance ratio) is decided exactly by counting the rows of t-n+2..t where
    x differs from the row before (change and bad-close counts packed into one integer sum per window length; the
    sums are cast to INTEGER at once: DuckDB's HUGEINT sum result is slow to unpack).
  * Moments of r from power sums (log returns have |mean| << sd, so nothing cancels), S_1 telescoped to
    ln(c / c[t-n]), SUM_120(r^2) as two consecutive SUM_60; 60-row regressions with DuckDB's regr_slope / var_samp
    (Welford states, on the row number); the 20-row regression two-pass from lags, relative to ln c[t].
  * +DM, -DM and TR share one exact WILDER_14 (the block method of _filters.sql with the SMA seed folded into the
    weights, index rn - 1 since they are non-NULL from row 1 on); the carry into a block comes from the last block
    with a non-zero TR total, so a stale feed longer than two blocks keeps the DI (ratios of sums that decay
    together) instead of truncating all three sums to 0. ADX, whose DX has NULL rows, runs the same
    folded-seed block method with the number of earlier non-NULL DX rows as index (blocks of L non-NULL rows):
    one narrow window for the index, one for the in-block sums; no filtered copy and no join back.
  * Session aggregates are read only by later sessions (high, low, last close) or by rows at or after the row
    they come from (first open, first RTH row and its open).
-#}
{% import 'macros.sql' as m %}
{#- Carried session state (the live path, warehouse/features/live.py; only with `session_seeds`, left undefined the
    render is the full build's). The tail may then start anywhere in a session, and the source has a column
    seed_<name> per name of SSTATES, constant per symbol: the state of the session features just before the tail's
    first row F, whose session (sid s0) is the tail's first (s_rn = 0):
    sess_open, sess_hi, sess_lo, sess_rth_open, sess_rth_close: s0's first open, max h, min l, first RTH open and
    last RTH close over s0's rows before F (all NULL when F is s0's first row; the RTH ones when no RTH row of s0
    precedes F); sess_p_high, sess_p_low, sess_p_close: the whole session s0 - 1; sess_p_rth_close: the last RTH
    close of the latest session before s0 with RTH rows. All are the full build's own values (extrema, first and
    last prices), so the continued sessions equal it bit for bit. With `filter_states` the family also outputs
    __state__<name>: the state a tail whose first row is this row needs (read at a load and a trim only). -#}
{%- set sseeded = session_seeds is defined and session_seeds %}
{%- set sstates = sseeded and filter_states is defined and filter_states %}
{#- Carried filter state (only with `filter_seeds`; left undefined the render is the full build's): the source then
    has a column seed_<name> per filter of FSTATES, constant per symbol: the WILDER_14 sums of +DM, -DM and TR at
    the tail's row 0 (their first tail input is row 1) and ADX after the tail's row 0 (its first tail input is the
    first non-NULL DX of the tail). A seed S continues the recursion: w = alpha*x + (1 - alpha)*S at the first
    input and alpha*x after, so y_t = sum_k alpha*x_k*beta^(t-k) + beta^(t+1)*S (NULL: no state, the folded SMA
    seed as in the full build; all four are set together). With `filter_states` the family also outputs
    __state__<name>: the seed a tail whose first row is this row needs. -#}
{%- set fseeded = filter_seeds is defined and filter_seeds %}
{%- set fstates = fseeded and filter_states is defined and filter_states %}
{%- set FSTATES = ['dmp', 'dmm', 'dmt', 'adx'] %}
{#- The filter seed columns, carried along the DMI chain (" seed_dmp, ..., seed_adx,"; empty without seeds). -#}
{%- set fseedcols = namespace(v='') %}
{%- if fseeded %}{% for name in FSTATES %}{% set fseedcols.v = fseedcols.v ~ ' seed_' ~ name ~ ',' %}{% endfor %}{% endif %}
{%- set fseedcols = fseedcols.v %}
{%- set SSTATES = ['sess_open', 'sess_hi', 'sess_lo', 'sess_rth_open', 'sess_rth_close', 'sess_p_high', 'sess_p_low',
                   'sess_p_close', 'sess_p_rth_close'] %}
{#- WILDER_14 block constants (same method and block length as _filters.sql; one block in the live per-bar form). -#}
{%- set lam = -ln(13.0 / 14.0) %}
{%- set L = (40.0 / lam) | round(0, 'floor') | int %}
{#- The live per-bar form (`running_rows`: a tail of at most that many rows per symbol, see
    warehouse/features/live.py): the filters run as one block, their sums running sums from the tail's first row,
    so the block carries (dm_blk, dm_carry, adx_carry and their joins) are left out; exp(lam*o) stays below e^600. -#}
{%- set one_block = running_rows is defined and running_rows and lam * (running_rows + 1) <= 600 %}
{%- if one_block %}{% set L = running_rows + 1 %}{% endif %}
{#- The distinct RTH windows of the table: sessions aggregate each with integer filters, and the small session
    table picks the symbol's window (no string matching per bar). -#}
{%- set rth_windows = [] %}
{%- for key, open, close in rth + [('', rth_default[0], rth_default[1])] %}
{%- if (open, close) not in rth_windows %}{% set _ = rth_windows.append((open, close)) %}{% endif %}
{%- endfor %}
{%- set bo = '(greatest(rn, 1) - 1) % ' ~ L %}
{#- Folded-seed Wilder weight times exp(lam * offset in the block) for the 0-based filter index i: rows 0..13 get
    x/14 * beta^-(13 - i) (so the decayed sum equals their mean at index 13), later rows alpha * x. -#}
{%- macro wscale(i, o) -%}
CASE WHEN {{ i }} <= 13 THEN {{ (exp(13 * lam) / 14) | double }} ELSE {{ (1.0 / 14) | double }} * exp({{ lam | double }} * ({{ o }})) END
{%- endmacro %}
{%- set dm_scale = wscale('rn - 1', bo) %}
{#- The weight of input x (0-based filter index i, block offset o) with a seed column: alpha*x, plus (1-alpha)*S at
    the first input, times exp(lam * o); the folded SMA seed without one. -#}
{%- macro wterm(x, i, o, seed) -%}
{%- if fseeded -%}
CASE WHEN {{ seed }} IS NOT NULL THEN ({{ (1.0 / 14) | double }} * {{ x }} + CASE WHEN {{ i }} = 0 THEN {{ (13.0 / 14) | double }} * {{ seed }} ELSE 0.0 END) * exp({{ lam | double }} * ({{ o }}))
            ELSE {{ wscale(i, o) }} * {{ x }} END
{%- else -%}
{{ wscale(i, o) }} * {{ x }}
{%- endif -%}
{%- endmacro %}
{#- ln(a / b), NULL unless both are positive (catalog section 3). -#}
{%- macro lnq(a, b) -%}
CASE WHEN {{ a }} > 0 AND {{ b }} > 0 THEN ln({{ a }} / {{ b }}) END
{%- endmacro %}
{#- Rows t-n+1 .. t of the symbol (the lint wants ORDER BY in every named window, so no window inheritance). -#}
{%- macro rows(n) -%}
PARTITION BY symbol ORDER BY ts ROWS BETWEEN {{ n - 1 }} PRECEDING AND CURRENT ROW
{%- endmacro %}
WITH
-- One row per (symbol, session). The whole-session high, low and last close are read only by the next session;
-- the first open and row, the first RTH row and its open only by rows at or after them.
sess AS (
    SELECT symbol, sid, min(rn) AS s_rn, arg_min(o, ts) AS s_open, max(h) AS s_high, min(l) AS s_low,
        arg_max(c, ts) AS s_close
        {%- for open, close in rth_windows %},
        min(ts) FILTER (WHERE minute_of_day >= {{ open }} AND minute_of_day < {{ close }}) AS rth_ts_{{ loop.index0 }},
        arg_min(o, ts) FILTER (WHERE minute_of_day >= {{ open }} AND minute_of_day < {{ close }}) AS rth_open_{{ loop.index0 }},
        arg_max(c, ts) FILTER (WHERE minute_of_day >= {{ open }} AND minute_of_day < {{ close }}) AS rth_close_{{ loop.index0 }}
        {%- endfor %}
        {%- if sseeded %},
        min(ts) AS s_ts{% for name in SSTATES %}, any_value(seed_{{ name }}) AS seed_{{ name }}{% endfor %}
        {%- endif %}
    FROM {{ source }}
    GROUP BY symbol, sid
),
sess_rth AS (
    SELECT symbol, sid, s_rn, s_open, s_high, s_low, s_close,
        {%- for col in ['rth_ts', 'rth_open', 'rth_close'] %}
        CASE
            {%- for open, close in rth_windows %}
            WHEN {{ m.rth_open('symbol', rth, rth_default) }} = {{ open }} AND {{ m.rth_close('symbol', rth, rth_default) }} = {{ close }} THEN {{ col }}_{{ loop.index0 }}
            {%- endfor %}
        END AS {{ col }}{{ ',' if not loop.last }}
        {%- endfor %}
        {%- if sseeded %},
        s_ts{% for name in SSTATES %}, seed_{{ name }}{% endfor %}
        {%- endif %}
    FROM sess
),
{%- if sseeded %}
-- The tail's first session (s_rn = 0) continues the carried state of its rows before the tail (rth_ts: the RTH
-- session began before the tail, so every tail row of it is at or after it). c_* are the carried parts the rows
-- need; the states of a later row are its running values (the final SELECT).
sess_c AS (
    SELECT symbol, sid, s_rn,
        CASE WHEN s_rn = 0 AND seed_sess_open IS NOT NULL THEN seed_sess_open ELSE s_open END AS s_open,
        CASE WHEN s_rn = 0 THEN greatest(s_high, seed_sess_hi) ELSE s_high END AS s_high,
        CASE WHEN s_rn = 0 THEN least(s_low, seed_sess_lo) ELSE s_low END AS s_low,
        s_close,
        s_rn = 0 AND seed_sess_rth_open IS NOT NULL AS rth_carried,
        CASE WHEN s_rn = 0 AND seed_sess_rth_open IS NOT NULL THEN s_ts ELSE rth_ts END AS rth_ts,
        CASE WHEN s_rn = 0 AND seed_sess_rth_open IS NOT NULL THEN seed_sess_rth_open ELSE rth_open END AS rth_open,
        CASE WHEN s_rn = 0 THEN coalesce(rth_close, seed_sess_rth_close) ELSE rth_close END AS rth_close,
        s_rn = 0 AND seed_sess_open IS NOT NULL AS s_cont,
        CASE WHEN s_rn = 0 THEN seed_sess_hi END AS c_hi,
        CASE WHEN s_rn = 0 THEN seed_sess_lo END AS c_lo,
        CASE WHEN s_rn = 0 THEN seed_sess_rth_close END AS c_rth_close,
        seed_sess_p_high, seed_sess_p_low, seed_sess_p_close, seed_sess_p_rth_close
    FROM sess_rth
),
{%- endif %}
sessx AS (
    SELECT cur.symbol, cur.sid, cur.s_rn, cur.s_open, cur.rth_ts, cur.rth_open,
{%- if sseeded %}
        -- the session before the tail's first one is the carried one
        CASE WHEN cur.s_rn = 0 THEN cur.seed_sess_p_high ELSE prev.s_high END AS p_high,
        CASE WHEN cur.s_rn = 0 THEN cur.seed_sess_p_low ELSE prev.s_low END AS p_low,
        CASE WHEN cur.s_rn = 0 THEN cur.seed_sess_p_close ELSE prev.s_close END AS p_close,
        cur.rth_carried, cur.s_cont, cur.c_rth_close,
        -- the latest earlier session with RTH rows, in the tail or else the carried one
        coalesce(arg_max(cur.rth_close, CASE WHEN cur.rth_close IS NOT NULL THEN cur.sid END) OVER (PARTITION BY cur.symbol
            ORDER BY cur.sid ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), cur.seed_sess_p_rth_close) AS p_rth_close
    FROM sess_c AS cur
    LEFT JOIN sess_c AS prev ON prev.symbol = cur.symbol AND prev.sid = cur.sid - 1
{%- else %}
        prev.s_high AS p_high, prev.s_low AS p_low, prev.s_close AS p_close,
        -- the latest earlier session with RTH rows, which need not be sid - 1
        arg_max(cur.rth_close, CASE WHEN cur.rth_close IS NOT NULL THEN cur.sid END) OVER (PARTITION BY cur.symbol
            ORDER BY cur.sid ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS p_rth_close
    FROM sess_rth AS cur
    LEFT JOIN sess_rth AS prev ON prev.symbol = cur.symbol AND prev.sid = cur.sid - 1
{%- endif %}
),
-- +DI, -DI and ADX run in a narrow chain of their own (h, l, TR), joined to the wide chain at the end.
-- Level 1 of the DMI chain: h[t-1], l[t-1] and the Wilder weights of +DM, -DM and TR (index rn - 1, folded seed).
dm0 AS (
    SELECT symbol, ts, rn, (greatest(rn, 1) - 1) // {{ L }} AS blk, {{ bo }} AS bo,
{%- if fseeded %}
        CASE WHEN rn >= 1 THEN {{ wterm('CASE WHEN h - h1 > l1 - l AND h - h1 > 0 THEN h - h1 ELSE 0.0 END', 'rn - 1', bo, 'seed_dmp') }} END AS dm_wp,
        CASE WHEN rn >= 1 THEN {{ wterm('CASE WHEN l1 - l > h - h1 AND l1 - l > 0 THEN l1 - l ELSE 0.0 END', 'rn - 1', bo, 'seed_dmm') }} END AS dm_wm,
        CASE WHEN rn >= 1 THEN {{ wterm('tr', 'rn - 1', bo, 'seed_dmt') }} END AS dm_wt,{{ fseedcols[:-1] }}
{%- else %}
        CASE WHEN rn >= 1 THEN {{ dm_scale }} * CASE WHEN h - h1 > l1 - l AND h - h1 > 0 THEN h - h1 ELSE 0.0 END END AS dm_wp,
        CASE WHEN rn >= 1 THEN {{ dm_scale }} * CASE WHEN l1 - l > h - h1 AND l1 - l > 0 THEN l1 - l ELSE 0.0 END END AS dm_wm,
        CASE WHEN rn >= 1 THEN {{ dm_scale }} * tr END AS dm_wt
{%- endif %}
    FROM (
        SELECT symbol, ts, rn, h, l, tr,{{ fseedcols }} lag(h) OVER w AS h1, lag(l) OVER w AS l1
        FROM {{ source }}
        WINDOW w AS (PARTITION BY symbol ORDER BY ts)
    )
),
{%- if not one_block %}
dm_blk AS (
    SELECT symbol, blk,
        {{ exp(-lam * (L - 1)) | double }} * sum(dm_wp) AS tp,
        {{ exp(-lam * (L - 1)) | double }} * sum(dm_wm) AS tm,
        {{ exp(-lam * (L - 1)) | double }} * sum(dm_wt) AS tt
    FROM dm0
    GROUP BY symbol, blk
),
-- The filter value at the end of the previous block: the end value of the last earlier block k0 with a non-zero
-- TR total (its total plus beta^L times the one before), decayed by beta^(L*(blk-1-k0)) over the zero blocks after
-- it. Usually k0 = blk - 1. Through a stale feed (TR = 0, hence +DM = -DM = 0) the three sums decay together, so
-- +DI and -DI keep their values however long it lasts (a two-block carry would drop them to 0 / 0).
dm_carry AS (
    SELECT symbol, blk,
        coalesce(exp({{ (-lam * L) | double }} * (blk - 1 - k0)) * ep, 0.0) AS cp,
        coalesce(exp({{ (-lam * L) | double }} * (blk - 1 - k0)) * em, 0.0) AS cm,
        coalesce(exp({{ (-lam * L) | double }} * (blk - 1 - k0)) * et, 0.0) AS ct
    FROM (
        SELECT symbol, blk,
            last_value(CASE WHEN tt <> 0 THEN blk END IGNORE NULLS) OVER bp AS k0,
            last_value(CASE WHEN tt <> 0 THEN ep END IGNORE NULLS) OVER bp AS ep,
            last_value(CASE WHEN tt <> 0 THEN em END IGNORE NULLS) OVER bp AS em,
            last_value(CASE WHEN tt <> 0 THEN et END IGNORE NULLS) OVER bp AS et
        FROM (
            SELECT symbol, blk, tt,
                tp + {{ exp(-lam * L) | double }} * coalesce(lag(tp) OVER b, 0.0) AS ep,
                tm + {{ exp(-lam * L) | double }} * coalesce(lag(tm) OVER b, 0.0) AS em,
                tt + {{ exp(-lam * L) | double }} * coalesce(lag(tt) OVER b, 0.0) AS et
            FROM dm_blk
            WINDOW b AS (PARTITION BY symbol ORDER BY blk)
        )
        WINDOW bp AS (PARTITION BY symbol ORDER BY blk ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
    )
),
{%- endif %}
-- Level 2 of the DMI chain: the in-block sums, the filter values (block method) and +DI, -DI, DX.
dmi AS (
    SELECT symbol, ts, pdi, mdi, 100.0 * abs(pdi - mdi) / NULLIF(pdi + mdi, 0) AS dx{{ ',' ~ fseedcols[:-1] if fseeded }}
    {%- if fstates %}, dmp, dmm, dmt{% endif %}
    FROM (
        SELECT symbol, ts,{{ fseedcols }}
{%- if fseeded %}
            -- seeded: from the tail's row 1 (its first input)
            CASE WHEN (rn >= 14 OR (seed_dmt IS NOT NULL AND rn >= 1)) AND tr14 <> 0 THEN 100.0 * (pdm14 / tr14) END AS pdi,
            CASE WHEN (rn >= 14 OR (seed_dmt IS NOT NULL AND rn >= 1)) AND tr14 <> 0 THEN 100.0 * (mdm14 / tr14) END AS mdi
            {%- if fstates %},
            -- the sums at this row (at the tail's row 0, the seeds; before the folded SMA seed's row, no state)
            {%- for name, col in [('dmp', 'pdm14'), ('dmm', 'mdm14'), ('dmt', 'tr14')] %}
            CASE WHEN rn >= 14 OR seed_dmt IS NOT NULL THEN coalesce({{ col }}, seed_{{ name }}) END AS {{ name }}{{ ',' if not loop.last }}
            {%- endfor %}
            {%- endif %}
{%- else %}
            CASE WHEN rn >= 14 AND tr14 <> 0 THEN 100.0 * (pdm14 / tr14) END AS pdi,
            CASE WHEN rn >= 14 AND tr14 <> 0 THEN 100.0 * (mdm14 / tr14) END AS mdi
{%- endif %}
        FROM (
            SELECT symbol, ts, rn,{{ fseedcols }}
{%- for x, cx, out in [('sp', 'cp', 'pdm14'), ('sm', 'cm', 'mdm14'), ('st', 'ct', 'tr14')] %}
                exp({{ -lam | double }} * bo) * {% if one_block %}{{ x }}{% else %}({{ x }} + {{ exp(-lam) | double }} * {{ cx }}){% endif %} AS {{ out }}{{ ',' if not loop.last }}
{%- endfor %}
            FROM (
                SELECT symbol, ts, rn, blk, bo,{{ fseedcols }}
                    sum(dm_wp) OVER wb AS sp, sum(dm_wm) OVER wb AS sm, sum(dm_wt) OVER wb AS st
                FROM dm0
                WINDOW wb AS (PARTITION BY symbol ORDER BY ts ROWS BETWEEN {{ 'UNBOUNDED' if one_block else 'bo' }} PRECEDING AND CURRENT ROW)
            )
{%- if not one_block %}
            LEFT JOIN dm_carry USING (symbol, blk)
{%- endif %}
        )
    )
),
-- WILDER_14(DX) skipping the NULL DX rows (catalog section 4): the filter index of a row is the number of non-NULL
-- DX rows before it; the same block method and folded seed as +DM / -DM / TR, blocks of L non-NULL rows.
adx_w AS (
    SELECT symbol, ts, pdi, mdi, ai, ai // {{ L }} AS ablk, ai % {{ L }} AS ao,{{ fseedcols }}{{ ' dmp, dmm, dmt,' if fstates }}
        CASE WHEN dx IS NOT NULL THEN {{ wterm('dx', 'ai', 'ai % ' ~ L, 'seed_adx') }} END AS aw
    FROM (
        SELECT symbol, ts, pdi, mdi, dx,{{ fseedcols }}{{ ' dmp, dmm, dmt,' if fstates }}
            count(dx) OVER (PARTITION BY symbol ORDER BY ts ROWS UNBOUNDED PRECEDING) - 1 AS ai
        FROM dmi
    )
),
{%- if not one_block %}
adx_carry AS (
    SELECT symbol, ablk,
        coalesce(lag(total) OVER b, 0.0) + {{ exp(-lam * L) | double }} * coalesce(lag(total, 2) OVER b, 0.0) AS carry
    FROM (
        SELECT symbol, ablk, {{ exp(-lam * (L - 1)) | double }} * sum(aw) AS total
        FROM adx_w
        GROUP BY symbol, ablk
    )
    WINDOW b AS (PARTITION BY symbol ORDER BY ablk)
),
{%- endif %}
adx AS (
    SELECT symbol, ts, pdi, mdi,{{ ' seed_adx, dmp, dmm, dmt,' if fstates }}
        CASE WHEN aw IS NOT NULL AND {{ '(ai >= 13 OR seed_adx IS NOT NULL)' if fseeded else 'ai >= 13' }} THEN
            exp({{ -lam | double }} * ao) * (sum(aw) OVER (PARTITION BY symbol{{ ', ablk' if not one_block }} ORDER BY ts ROWS UNBOUNDED PRECEDING)
{%- if not one_block %}
                + {{ exp(-lam) | double }} * carry
{%- endif %})
        END AS adx_14
    FROM adx_w
{%- if not one_block %}
    LEFT JOIN adx_carry USING (symbol, ablk)
{%- endif %}
),
-- Level 0 of the wide chain, one sort of the narrow bar columns: the lags the window inputs of level 1 need, and
-- the window aggregates that level 1 lags: HH_20 / LL_20 (HH_20[t-1] and the 55- and 240-row extremes) and the
-- power sums of r (SUM_120(r^2) as two consecutive SUM_60).
x0 AS (
    SELECT symbol, ts, rn, sid, h, l, c, c1, r, lnc,
        lag(h) OVER w AS h1, lag(l) OVER w AS l1, lag(lnc) OVER w AS lnc1, lag(r) OVER w AS r1, lag(r, 2) OVER w AS r2,
        lag(c, 5) OVER w AS c5, lag(c, 6) OVER w AS c6,
        max(h) OVER w20 AS hh20, min(l) OVER w20 AS ll20,
        sum(r * r) OVER w60 AS s2, sum(r * r * r) OVER w60 AS s3, sum((r * r) * (r * r)) OVER w60 AS s4
    FROM (SELECT symbol, ts, rn, sid, h, l, c, c1, r, CASE WHEN c > 0 THEN ln(c) END AS lnc FROM {{ source }})
    WINDOW w AS (PARTITION BY symbol ORDER BY ts), w20 AS ({{ rows(20) }}), w60 AS ({{ rows(60) }})
),
x0p AS (
    SELECT symbol, ts, rn, sid, c, c1, r, r1, lnc, hh20, ll20, s2, s3, s4,
        {{ lnq('c', 'c5') }} AS lr5,
        -- Changes and bad closes packed into one integer per row, counted over 59 and 119 rows in level 1.
        -- FLAT_n(x) over rows t-n+1..t <=> x equals the row before on every row of t-n+2..t.
        CAST(lnc IS DISTINCT FROM lnc1 AS INTEGER) + 64 * CAST(r IS DISTINCT FROM r1 AS INTEGER)
            + 4096 * CAST(r1 IS DISTINCT FROM r2 AS INTEGER) + 262144 * CAST(lnc IS NULL AS INTEGER) AS pk59,
        CAST(r IS DISTINCT FROM r1 AS INTEGER)
            + 128 * CAST({{ lnq('c', 'c5') }} IS DISTINCT FROM {{ lnq('c1', 'c6') }} AS INTEGER)
            + 16384 * CAST(lnc IS NULL AS INTEGER) AS pk119,
        -- higher high and lower low flags (NULL on row 0), summed over 10 rows from lags in level 1
        CAST(h > h1 AS INTEGER) + 16 * CAST(l < l1 AS INTEGER) AS hl,
        CASE WHEN rn >= 1 THEN CAST(h <= h1 AND l >= l1 AS INTEGER) END AS inside_bar,
        CASE WHEN rn >= 1 THEN CAST(h > h1 AND l < l1 AS INTEGER) END AS outside_bar,
        h, l
    FROM x0
),
-- Level 1, one sort: the remaining lags and every window aggregate.
x AS (
    SELECT symbol, ts, rn, sid, c, c1, r, lnc, hh20, ll20, s2, s3, s4, inside_bar, outside_bar,
        {%- for k in [2, 3, 4, 5, 6, 7, 8, 9, 10, 59, 60, 61, 119, 120, 121, 122, 123, 124] %}
        lag(c, {{ k }}) OVER w AS c{{ k }},
        {%- endfor %}
        {%- for k in range(1, 20) %}
        lag(lnc, {{ k }}) OVER w AS lnc{{ k }},
        {%- endfor %}
        -- HH_20[t-1] = max(h) of rows t-20..t-1; HH_55 and HH_240 from HH_20 taken 20 (and 35) rows apart
        lag(hh20) OVER w AS hh20p, lag(ll20) OVER w AS ll20p,
        greatest(hh20, lag(hh20, 20) OVER w, lag(hh20, 35) OVER w) AS hh55,
        least(ll20, lag(ll20, 20) OVER w, lag(ll20, 35) OVER w) AS ll55,
        greatest(hh20{% for k in range(20, 240, 20) %}, lag(hh20, {{ k }}) OVER w{% endfor %}) AS hh240,
        least(ll20{% for k in range(20, 240, 20) %}, lag(ll20, {{ k }}) OVER w{% endfor %}) AS ll240,
        s2 + lag(s2, 60) OVER w AS s2_120,
        hl{% for k in range(1, 10) %} + lag(hl, {{ k }}) OVER w{% endfor %} AS nhl,
        sum(r * r1) OVER w60 AS srr,
        sum(lr5 * lr5) OVER w120 AS q2,
        regr_slope(lnc, rn) OVER w60 AS slope60, var_samp(lnc) OVER w60 AS var60,
{%- if sseeded %}
        -- the session so far, continued from the carried extrema in the tail's first session
        greatest(max(h) OVER ws, c_hi) AS s_hi, least(min(l) OVER ws, c_lo) AS s_lo,
        {%- if sstates %}
        s_rn, c_hi, c_lo,
        {%- endif %}
{%- else %}
        max(h) OVER ws AS s_hi, min(l) OVER ws AS s_lo,
{%- endif %}
        -- integer window sums are HUGEINT in DuckDB: cast at once
        CAST(sum(pk59) OVER w59 AS INTEGER) AS n59,
        CAST(sum(pk119) OVER w119 AS INTEGER) AS n119
    FROM x0p
    LEFT JOIN (SELECT symbol, sid, s_rn{{ ', c_hi, c_lo FROM sess_c' if sseeded else ' FROM sess' }}) USING (symbol, sid)
    WINDOW w AS (PARTITION BY symbol ORDER BY ts), w59 AS ({{ rows(59) }}),
        w60 AS ({{ rows(60) }}), w119 AS ({{ rows(119) }}), w120 AS ({{ rows(120) }}),
        -- the session so far, as a row frame of the same sort
        ws AS (PARTITION BY symbol ORDER BY ts ROWS BETWEEN rn - s_rn PRECEDING AND CURRENT ROW)
),
xm AS (
    SELECT *,
        s2 / 60.0 - mu * mu AS m2,
        s3 / 60.0 - 3.0 * mu * (s2 / 60.0) + 2.0 * mu * mu * mu AS m3,
        s4 / 60.0 - 4.0 * mu * (s3 / 60.0) + 6.0 * (mu * mu) * (s2 / 60.0) - 3.0 * (mu * mu) * (mu * mu) AS m4,
        -- the sums of r[t-1] over the window are those of r over the window shifted by one row
        (s2 - r * r + r60 * r60) / 60.0 - mup * mup AS m2p,
        n59 % 64 AS lnc_chg59, (n59 // 64) % 64 AS r_chg59, (n59 // 4096) % 64 AS r1_chg59, n59 // 262144 AS bad59,
        n119 % 128 AS r_chg119, (n119 // 128) % 128 AS lr5_chg119, n119 // 16384 AS bad119,
        -- rows whose window reads a NULL ln c / r / r and r[t-1] / ln(c / c[t-5]) (NULL rule 1)
        rn >= 59 AND c59 > 0 AS full60,
        rn >= 60 AND c59 > 0 AND c60 > 0 AS full60r,
        rn >= 61 AND c59 > 0 AND c60 > 0 AND c61 > 0 AS full61,
        rn >= 124 AND c119 > 0 AND c120 > 0 AND c121 > 0 AND c122 > 0 AND c123 > 0 AND c124 > 0 AS full124,
        -- 20-row regression of ln c on the bar offset j = 0..19 from d_k = ln c[t-k] - ln c (one pass on d: d[0] = 0
        -- bounds the cancellation by n + 1, and a flat window gives exactly 0); Sxx = 665.
        CASE WHEN rn >= 19 THEN ({% for k in range(1, 20) %}{% if k > 1 %} + {% endif %}{{ (9.5 - k) | double }} * (lnc{{ k }} - lnc){% endfor %}) / {{ 665.0 | double }} END AS linreg_slope_20,
        CASE WHEN rn >= 19 THEN
            ({% for k in range(1, 20) %}{% if k > 1 %} + {% endif %}(lnc{{ k }} - lnc) * (lnc{{ k }} - lnc){% endfor %})
            - ({% for k in range(1, 20) %}{% if k > 1 %} + {% endif %}(lnc{{ k }} - lnc){% endfor %})
            * ({% for k in range(1, 20) %}{% if k > 1 %} + {% endif %}(lnc{{ k }} - lnc){% endfor %}) / 20.0 END AS syy20,
        -- telescoped sums: SUM_120 of ln(c / c[t-5]) and the S_1 of r over 120 rows
        {% for j in range(5) %}{% if j %} + {% endif %}{{ lnq('c' ~ (j if j else ''), 'c' ~ (120 + j)) }}{% endfor %} AS q1,
        {{ lnq('c', 'c120') }} AS r_sum120
    FROM (
        -- S_1 of r over 60 rows and of r[t-1] over 60 rows, telescoped
        SELECT *,
            {{ lnq('c', 'c60') }} / 60.0 AS mu,
            {{ lnq('c1', 'c61') }} / 60.0 AS mup,
            {{ lnq('c60', 'c61') }} AS r60
        FROM x
    )
    LEFT JOIN (SELECT symbol, sid, s_open, rth_ts, rth_open, p_high, p_low, p_close, p_rth_close{{ ', rth_carried, s_cont, c_rth_close' if sstates }} FROM sessx) USING (symbol, sid)
){%- if sstates %},
-- The last RTH close of the row's session before the row (the states only).
sst AS (
    SELECT symbol, ts,
        last_value(CASE WHEN minute_of_day >= {{ m.rth_open('symbol', rth, rth_default) }}
            AND minute_of_day < {{ m.rth_close('symbol', rth, rth_default) }} THEN c END IGNORE NULLS)
            OVER (PARTITION BY symbol, sid ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS rth_close_before
    FROM {{ source }}
)
{%- endif %}
SELECT
    xm.symbol,
    xm.ts,
    CASE WHEN rn >= 19 THEN {{ lnq('c', 'hh20') }} END AS dist_high_20,
    CASE WHEN rn >= 19 THEN {{ lnq('c', 'll20') }} END AS dist_low_20,
    CASE WHEN rn >= 239 THEN {{ lnq('c', 'hh240') }} END AS dist_high_240,
    CASE WHEN rn >= 239 THEN {{ lnq('c', 'll240') }} END AS dist_low_240,
    CASE WHEN rn >= 54 THEN (c - ll55) / NULLIF(hh55 - ll55, 0) END AS donchian_pos_55,
    CASE WHEN rn >= 20 THEN CAST(c > hh20p AS INTEGER) END AS breakout_high_20,
    CASE WHEN rn >= 20 THEN CAST(c < ll20p AS INTEGER) END AS breakout_low_20,
    CASE WHEN rn >= 10 THEN nhl % 16 END AS hh_count_10,
    CASE WHEN rn >= 10 THEN nhl // 16 END AS ll_count_10,
    inside_bar,
    outside_bar,
    adx_14,
    pdi AS plus_di_14,
    mdi AS minus_di_14,
    linreg_slope_20,
    CASE WHEN syy20 > 0 THEN linreg_slope_20 * linreg_slope_20 * {{ 665.0 | double }} / syy20 END AS linreg_r2_20,
    CASE WHEN full60 AND bad59 = 0 THEN slope60 END AS linreg_slope_60,
    CASE WHEN full60 AND bad59 = 0 AND lnc_chg59 > 0 AND var60 > 0 THEN
        slope60 * slope60 * {{ 17995.0 | double }} / (59.0 * var60) END AS linreg_r2_60,
    CASE WHEN full124 AND bad119 = 0 AND r_chg119 > 0 THEN
        (CASE WHEN lr5_chg119 > 0 THEN q2 - q1 * q1 / 120.0 ELSE 0.0 END)
        / NULLIF(5.0 * (s2_120 - r_sum120 * r_sum120 / 120.0), 0) END AS variance_ratio_5_120,
    CASE WHEN full61 AND bad59 = 0 AND r_chg59 > 0 AND r1_chg59 > 0 AND m2 > 0 AND m2p > 0 THEN
        (srr / 60.0 - mu * mup) / sqrt(m2 * m2p) END AS autocorr_1_60,
    CASE WHEN full60r AND bad59 = 0 AND r_chg59 > 0 AND m2 > 0 THEN
        {{ (sqrt(60.0 * 59.0) / 58.0) | double }} * m3 / (m2 * sqrt(m2)) END AS skew_60,
    CASE WHEN full60r AND bad59 = 0 AND r_chg59 > 0 AND m2 > 0 THEN
        {{ (59.0 / (58.0 * 57.0)) | double }} * (61.0 * (m4 / (m2 * m2) - 3.0) + 6.0) END AS kurt_60,
    CASE WHEN rn >= 10 THEN abs(c - c10) / NULLIF({% for k in range(10) %}{% if k %} + {% endif %}abs(c{{ k if k else '' }} - c{{ k + 1 }}){% endfor %}, 0) END AS efficiency_ratio_10,
    CASE WHEN sid >= 2 THEN {{ lnq('c', 'p_high') }} END AS dist_prev_session_high,
    CASE WHEN sid >= 2 THEN {{ lnq('c', 'p_low') }} END AS dist_prev_session_low,
    CASE WHEN sid >= 2 THEN {{ lnq('c', 'p_close') }} END AS dist_prev_session_close,
    CASE WHEN sid >= 2 THEN {{ lnq('s_open', 'p_close') }} END AS session_gap,
    CASE WHEN sid >= 2 AND xm.ts >= rth_ts THEN {{ lnq('rth_open', 'p_rth_close') }} END AS overnight_gap,
    CASE WHEN sid >= 1 THEN {{ lnq('c', 's_open') }} END AS dist_session_open,
    CASE WHEN sid >= 1 THEN (c - s_lo) / NULLIF(s_hi - s_lo, 0) END AS session_range_pos
{%- if fstates %},
    dmp AS __state__dmp,
    dmm AS __state__dmm,
    dmt AS __state__dmt,
    -- ADX after this row's DX: the last ADX so far (the seed before the tail's first DX)
    coalesce(last_value(adx_14 IGNORE NULLS) OVER (PARTITION BY xm.symbol ORDER BY xm.ts ROWS UNBOUNDED PRECEDING),
        seed_adx) AS __state__adx
{%- endif %}
{%- if sstates %},
    -- The session state before this row: its session's values over the rows before it (the running extrema of the
    -- row before; the carried ones at the tail's first row) and the earlier sessions' values.
    CASE WHEN rn > s_rn OR s_cont THEN s_open END AS __state__sess_open,
    CASE WHEN rn > s_rn THEN lag(s_hi) OVER (PARTITION BY xm.symbol ORDER BY xm.ts) ELSE c_hi END AS __state__sess_hi,
    CASE WHEN rn > s_rn THEN lag(s_lo) OVER (PARTITION BY xm.symbol ORDER BY xm.ts) ELSE c_lo END AS __state__sess_lo,
    CASE WHEN xm.ts > rth_ts OR rth_carried THEN rth_open END AS __state__sess_rth_open,
    coalesce(sst.rth_close_before, c_rth_close) AS __state__sess_rth_close,
    p_high AS __state__sess_p_high,
    p_low AS __state__sess_p_low,
    p_close AS __state__sess_p_close,
    p_rth_close AS __state__sess_p_rth_close
{%- endif %}
FROM xm
LEFT JOIN adx USING (symbol, ts)
{%- if sstates %}
LEFT JOIN sst USING (symbol, ts)
{%- endif %}
