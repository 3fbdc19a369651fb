{#- features
family: volume
category: volume
log_volume              | double | n=1         | first=0          | ln(1 + v), v in contracts
rel_volume_20           | double | n=20        | first=20         | v / mean v of the previous 20 bars (current bar excluded)
rel_volume_tod_20       | double | 20 sessions | first=tod20      | v / mean v of the 20 most recent earlier rows at the same ET minute of day
volume_z_20             | double | n=20        | first=19         | (v - MEAN_20(v)) / STD_20(v), sample sd (ddof 1)
log_volume_z_60         | double | n=60        | first=59         | (x - MEAN_60(x)) / STD_60(x) with x = ln(1 + v), sample sd
volume_ma_ratio_5_20    | double | n=5,20      | first=19         | ln(MEAN_5(v) / MEAN_20(v)); NULL if either mean is 0
pvo_12_26               | double | n=12,26     | first=25         | percentage volume oscillator 100*(EMA_12(v) - EMA_26(v)) / EMA_26(v), percent
volume_pctrank_60       | double | n=60        | first=59         | share of the last 60 bars (current included) with volume <= v, in (0, 1]
volume_conc_20          | double | n=20        | first=19         | Herfindahl concentration SUM_20(v^2) / SUM_20(v)^2, in [1/20, 1]
obv_z_60                | double | n=60        | first=59         | (OBV - MEAN_60(OBV)) / STD_60(OBV), OBV = running sum of s*v from row 1 (OBV_0 = 0)
obv_slope_20            | double | n=20        | first=19         | OLS slope of OBV on the bar offset over 20 bars / MEAN_20(v), average bar volumes per bar
tick_vol_imbalance_20   | double | n=20        | first=20         | SUM_20(s*v) / SUM_20(v_s), tick-rule signed volume share in [-1, 1]
tick_imbalance_ema_20   | double | n=20        | first=20         | EMA_20(s*v) / EMA_20(v_s), both over the rows with a tick sign (from row 1), in [-1, 1]
candle_vol_imbalance_20 | double | n=20        | first=19         | SUM_20(sign(c - o)*v) / SUM_20(v), in [-1, 1]
session_tick_imbalance  | double | session     | first=D1         | sum(s*v) / sum(v_s) over the current trading date up to t, in [-1, 1]
cmf_20                  | double | n=20        | first=19         | Chaikin money flow SUM_20(mfm*v) / SUM_20(v) (zero-range bars count 0), in [-1, 1]
adosc_3_10_norm         | double | n=3,10      | first=9          | Chaikin oscillator (EMA_3(AD) - EMA_10(AD)) / MEAN_10(v), AD = running sum of mfm*v; bar volumes
mfi_14                  | double | n=14        | first=14         | money flow index 100*P / (P + M), P/M = SUM_14(tp*v) over bars whose tp rose/fell (ties 1e-10 relative)
vwap_session_dist       | double | session     | first=D1         | ln(c / VWAP), VWAP = sum(tp*v) / sum(v) over the trading date from its 18:00 ET open
vwap_session_dist_atr   | double | session,14  | first=max(D1,14) | (c - session VWAP) / atr_14 (Wilder ATR; NULL below 1e-7*abs(c)), ATRs
vwap_session_z          | double | session     | first=D1+1       | (c - session VWAP) / sigma, sigma = volume-weighted sd of tp in the session (NULL below 1e-7*abs(c))
vwap_roll_dist_20       | double | n=20        | first=19         | ln(c / (SUM_20(tp*v) / SUM_20(v)))
vwap_roll_dist_60       | double | n=60        | first=59         | ln(c / (SUM_60(tp*v) / SUM_60(v)))
dist_prev_session_vwap  | double | session     | first=D2         | ln(c / VWAP of the whole previous trading date present in the data)
pv_corr_20              | double | n=20        | first=19         | Pearson correlation of c and v over 20 bars; NULL if either is flat
absret_vol_corr_60      | double | n=60        | first=60         | Pearson correlation of abs(r) and v over 60 bars; NULL if either is flat
amihud_20               | double | n=20        | first=20         | Amihud illiquidity SUM_20(abs(r)) / SUM_20(v), log return per contract
kyle_lambda_60          | double | n=60        | first=60         | OLS slope of r on s*v over 60 bars, log return per signed contract; NULL if s*v is flat
session_volume_frac_20  | double | 20 sessions | first=D21        | session-to-date sum(v) / mean total volume of the 20 previous sessions (sids s-20..s-1)
vwret_20                | double | n=20        | first=20         | volume-weighted mean log return SUM_20(r*v) / SUM_20(v)
-#}
{#-
  Catalog #31-#60 (shared/FEATURES.md). Readings where the text leaves room (the oracle's, documented in
  tests/features_oracle/volume.py): s, sv and v_s are NULL on row 0, so windows over them start at row n; OBV_0 = 0;
  the MFI flow of row 0 is NULL; session-so-far features are NULL on sid 0, the prior-session VWAP on sid < 2 and
  the 20-session volume fraction on sid < 21; a zero volume denominator (window, session or prior sessions) gives
  NULL; vwap_session_z has VWAP itself in the numerator (sum(tp*v) / sum(v), evaluated as a + sum(v*d) / sum(v),
  the same number to an ulp of the price) and sigma from the moments of d = tp - a, a = first open of the session.

  Which inputs can be NULL. o, h, l, c, v are NOT NULL (validate_bars quarantines rows with a missing value), so a
  window over them is full (NULL rule 1) exactly when it holds n rows: rn >= n - 1. sv, v_s, tr and lag(tp) are
  NULL only where there is no previous close, i.e. on row 0. r is also NULL where a (difference-adjusted) price is
  <= 0, anywhere in the series, so windows over r check every row.

  Speed. Nearly all the time goes into window aggregates, each about 0.04-0.15 s per 1M rows (a sum is the
  cheapest; corr, regr_slope, stddev and cume_dist cost two to three sums; a lag is nearly free), so the template
  keeps their number down (29 in the main window):
  * volumes are integers, so exact running sums (volume, OBV; below 2^53), differenced with lag() or with their
    value at the session start, give the sums of v and s*v over every fixed, previous-bar and session frame;
  * flatness (NULL rule 3) and NULL checks count changes / NULLs between consecutive rows, several counts packed
    into one exact integer sum, instead of max/min/count windows (max and min cost two sums each);
  * the seven recursive filters share one block layout (below) and the main window, with no join per filter
    (the per-filter chains of sql/features/_filters.sql cost about 0.7 s each per 1M rows);
  * everything the main window needs from sessions and blocks is joined on small tables, before it or after it.

  Optional parameters for the live path (warehouse/features/live.py), which runs this template over a short tail
  of bars (starting at a session open, or anywhere with session_seeds) and carries the longer history of two features as state; left undefined,
  the template is the full build's:
  * tod_history: relation (symbol, ts, minute_of_day, v) of earlier rows, before the tail, at the minutes of day
    of the new rows: rel_volume_tod_20's window runs over them and the tail's rows together;
  * session_history: relation (symbol, sid, total) of the total volumes of the sessions before the tail, sid = -1
    for the one just before it, -2 ... (at most 21): session_volume_frac_20's 20-session mean runs over them and
    the tail's sessions together, and "sid >= 21" becomes "the 21 sessions before this one are present" (the same
    rule: the full build's sids are consecutive from 0); with session_seeds, the tail's first session's total
    adds its carried part;
  * session_seeds: the tail may start anywhere in a session; the source then has a column seed_<name> per carried
    session state, constant per symbol: the state of the session features at the tail's first row F, whose session
    (sid s0) is the tail's first (first_rn = 0): sess_open, s0's first open (NULL when F is s0's first row);
    sess_v, sess_vd, sess_vdd, sess_tpv: s0's sums of v, v*d, v*d^2 (d = tp - first open) and tp*v over its rows
    before F; sess_sv: s0's sum of s*v up to and including F (F's tick sign reads the close before the tail);
    sess_p_vwap: the VWAP of the whole session s0 - 1. Volumes are integers, so the carried sums of v and s*v
    continue the full build's exactly; the three price sums are continued in another order of addition than the
    full build's window sums (an ulp of their size). The session totals of session_history are then the complete
    sessions before s0. With `filter_states` the family also outputs __state__<name>: the state a tail whose
    first row is this row needs (read at a load and a trim only).
-#}
{%- set sseeded = session_seeds is defined and session_seeds %}
{%- set with_states = sseeded and filter_states is defined and filter_states %}
{#- The tail's first session's carried part of a session sum (0 on every other session: nothing is carried). -#}
{%- macro carried(name) -%}
CASE WHEN min(rn) = 0 THEN coalesce(any_value(seed_{{ name }}), 0) ELSE 0 END
{%- endmacro %}
{%- set W = 'PARTITION BY symbol ORDER BY ts' -%}
{%- set WX = 'PARTITION BY x.symbol ORDER BY x.ts' -%}
{%- set FLOOR = 1e-7 | double -%}
{%- set TIE = 1e-10 | double -%}
{#-
  Recursive filters (catalog section 4: SMA seed of the first n inputs, then y = alpha*x + beta*y[-1]) by the
  DESIGN's block method of sql/features/_filters.sql, fused: all filters use one block length L (L*lam >= 40 for
  the slowest decay, so the two carried blocks leave < e^-80 of the history out - counted from the last block
  with a non-zero input, so a long run of zero inputs only decays the state; the fastest, EMA_3, keeps
  exp(lam*(L-1)) < 1e163), one GROUP BY for the block totals and one framed sum each in the main window. Per row
  z = w*exp(lam*o) with o = rn % L and w = alpha*x after the seed row; the seed row's SMA is spread over the n
  seed inputs as (x/n)*exp(lam*o_seed), so the in-block sum reaches SMA*exp(lam*o_seed) at the seed row and holds
  nothing before it. These inputs are NULL only on leading rows (`lead`: no previous close on row 0), so the n-th
  non-NULL input is row lead + n - 1 and no NULL row follows it: skipping NULLs = starting at row lead.
  Fields: (name, input expression over the base relation, n, alpha, lead).
  u3/u10: u := EMA_n(AD) - AD obeys u_t = beta*u[t-1] - beta*x_t (x = mfm*v) from the seed
  u_{n-1} = mean(AD_0..AD_{n-1}) - AD_{n-1} = -(1/n)*sum_k k*x_k, i.e. u is the same filter run on -k*x_k (k < n)
  and then -(beta/alpha)*x_k. AD cancels exactly in EMA_3(AD) - EMA_10(AD) = u3 - u10, so the oscillator never
  carries the drifting cumulative sum and keeps its digits on any history length.
-#}
{%- set FILTERS = [
    ('e12', 'v', 12, 2.0 / 13, 0),
    ('e26', 'v', 26, 2.0 / 27, 0),
    ('esv', 'sv', 20, 2.0 / 21, 1),
    ('evs', 'v_s', 20, 2.0 / 21, 1),
    ('u3', 'CASE WHEN rn < 3 THEN -rn * (mfm * v) ELSE ' ~ (-1.0 | double) ~ ' * (mfm * v) END', 3, 2.0 / 4, 0),
    ('u10', 'CASE WHEN rn < 10 THEN -rn * (mfm * v) ELSE ' ~ (-4.5 | double) ~ ' * (mfm * v) END', 10, 2.0 / 11, 0),
    ('atr', 'tr', 14, 1.0 / 14, 1),
] -%}
{%- set L = ((40.0 / -ln(1.0 - (FILTERS | map(attribute=3) | min))) | round(0, 'ceil') | int) -%}
{#- Carried filter state (the live path; only with `filter_seeds`, left undefined the render is the full build's):
    the source then has a column seed_<name> per filter, constant per symbol: the filter's value before the tail's
    first input (the value at the row before the tail for the filters with lead 0, at the tail's row 0 for those
    with lead 1, whose first tail input is row 1). A seed S continues the recursion: w = alpha*x + (1 - alpha)*S at
    the first input and alpha*x after (u3/u10 take their steady input -(beta/alpha)*x from the first row: the SMA
    seed's ramp belongs to the series' first rows), so y_t = sum_k alpha*x_k*beta^(t-k) + beta^(t+1)*S (NULL: no
    state, the SMA seed as in the full build; all seven are set together). With `filter_states` the family also
    outputs __state__<name>: the seed a tail whose first row is this row needs. -#}
{%- set fseeded = filter_seeds is defined and filter_seeds %}
{%- set fstates = fseeded and filter_states is defined and filter_states %}
{%- set STEADY = {'u3': (-1.0 | double) ~ ' * (mfm * v)', 'u10': (-4.5 | double) ~ ' * (mfm * v)'} %}
{%- set fseedcols = namespace(v='') %}
{%- if fseeded %}{% for fl in FILTERS %}{% set fseedcols.v = fseedcols.v ~ ' seed_' ~ fl[0] ~ ',' %}{% endfor %}{% endif %}
{%- set fseedcols = fseedcols.v %}
{#- z = w * exp(lam * o) of one filter, an expression over the base relation's columns. -#}
{%- macro z(fl) -%}
{%- set name, x, n, alpha, lead = fl -%}
{%- if fseeded -%}
CASE WHEN seed_{{ name }} IS NOT NULL THEN CASE WHEN rn < {{ lead }} THEN 0.0
     ELSE ({{ alpha | double }} * ({{ STEADY.get(name, x) }}) + CASE WHEN rn = {{ lead }} THEN {{ (1.0 - alpha) | double }} * seed_{{ name }} ELSE 0.0 END)
          * exp({{ -ln(1.0 - alpha) | double }} * (rn % {{ L }})) END
ELSE {{ z_unseeded(fl) }} END
{%- else -%}
{{ z_unseeded(fl) }}
{%- endif -%}
{%- endmacro -%}
{%- macro z_unseeded(fl) -%}
{%- set name, x, n, alpha, lead = fl -%}
CASE WHEN rn < {{ lead }} THEN 0.0
     WHEN rn <= {{ lead + n - 1 }} THEN ({{ x }}) * {{ (exp(-ln(1.0 - alpha) * ((lead + n - 1) % L)) / n) | double }}
     ELSE ({{ x }}) * ({{ alpha | double }} * exp({{ -ln(1.0 - alpha) | double }} * (rn % {{ L }}))) END
{%- endmacro -%}
{#- Rule 4 (÷p): a price-unit denominator below 1e-7*abs(c) counts as zero. -#}
{%- macro pdiv(a, b, c) -%}
({{ a }}) / CASE WHEN abs({{ b }}) >= {{ FLOOR }} * abs({{ c }}) THEN NULLIF({{ b }}, 0) END
{%- endmacro -%}
{%- macro lnq(a, b) -%}CASE WHEN ({{ a }}) > 0 AND ({{ b }}) > 0 THEN ln(({{ a }}) / ({{ b }})) END{%- endmacro -%}
{#- Field k (0-based, 6 bits) of a packed count: every count is <= 59 < 64 and the sum is an exact integer. -#}
{%- macro field(packed, k) -%}(CAST({{ packed }} AS BIGINT) // {{ 64 ** k }} % 64){%- endmacro -%}
{#- Sum of x over the last n rows (n-1 PRECEDING .. CURRENT ROW) from an exact running sum `run`. -#}
{%- macro rsum(run, n) -%}({{ run }} - lag({{ run }}, {{ n }}, 0) OVER wx){%- endmacro -%}
WITH
vol_sess AS (
    -- One row per trading date: where it starts (row, open, and the volume and OBV of all earlier sessions), its
    -- whole-session VWAP and the mean total volume of it and the 19 sessions before. A session's rows read only
    -- what is known at its start (its first row is never later than they are); the VWAP and the 20-session mean
    -- are read by the next session (joined on sid - 1).
    SELECT symbol, sid,
        min(rn) AS first_rn,
{%- if sseeded %}
        -- the tail's first session continues the carried one
        CASE WHEN min(rn) = 0 AND any_value(seed_sess_open) IS NOT NULL THEN any_value(seed_sess_open)
            ELSE arg_min(o, rn) END AS first_open,
        min(rn) = 0 AND any_value(seed_sess_open) IS NOT NULL AS s_cont,
        {{ carried('sess_v') }} AS c_v,
        {{ carried('sess_sv') }} AS c_sv,
        {{ carried('sess_vd') }} AS c_vd,
        {{ carried('sess_vdd') }} AS c_vdd,
        {{ carried('sess_tpv') }} AS c_tpv,
        CASE WHEN min(rn) = 0 THEN any_value(seed_sess_p_vwap) END AS c_p_vwap,
{%- else %}
        arg_min(o, rn) AS first_open,
{%- endif %}
        coalesce(sum(sum(v)) OVER before, 0) AS v_before,
        coalesce(sum(sum(coalesce(sv, 0))) OVER before, 0) AS obv_before,
{%- if sseeded %}
        (sum(tp * v) + {{ carried('sess_tpv') }}) / NULLIF(sum(v) + {{ carried('sess_v') }}, 0) AS vwap,
{%- else %}
        sum(tp * v) / NULLIF(sum(v), 0) AS vwap,
{%- endif %}
        avg(sum(v)) OVER (PARTITION BY symbol ORDER BY sid ROWS BETWEEN 19 PRECEDING AND CURRENT ROW) AS mean20
    FROM {{ source }}
    GROUP BY symbol, sid
    WINDOW before AS (PARTITION BY symbol ORDER BY sid ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
),
vol_blk AS (
    -- carry = the filter's value at the end of the previous block: the end value of the last earlier block k0 whose
    -- total is not 0 (that total plus beta^L times the one before), decayed by beta^(L*(blk-1-k0)) over the zero
    -- blocks after it; usually k0 = blk - 1. Through a long stretch of zero volume (or of zero TR) the filters
    -- decay instead of dropping to 0 after two blocks, so ratios of filters that decay together
    -- (tick_imbalance_ema_20) and pvo_12_26 keep their values.
    SELECT symbol, blk
{%- for fl in FILTERS %},
        coalesce(exp({{ (ln(1.0 - fl[3]) * L) | double }} * (blk - 1 - k_{{ fl[0] }})) * e_{{ fl[0] }}, 0.0) AS carry_{{ fl[0] }}
{%- endfor %}
    FROM (
        SELECT symbol, blk
{%- for fl in FILTERS %},
            last_value(CASE WHEN t_{{ fl[0] }} <> 0 THEN blk END IGNORE NULLS) OVER bp AS k_{{ fl[0] }},
            last_value(CASE WHEN t_{{ fl[0] }} <> 0 THEN e_{{ fl[0] }} END IGNORE NULLS) OVER bp AS e_{{ fl[0] }}
{%- endfor %}
        FROM (
            SELECT symbol, blk
{%- for fl in FILTERS %},
                t_{{ fl[0] }},
                t_{{ fl[0] }} + {{ exp(ln(1.0 - fl[3]) * L) | double }} * coalesce(lag(t_{{ fl[0] }}) OVER wb, 0.0) AS e_{{ fl[0] }}
{%- endfor %}
            FROM (
                SELECT symbol, rn // {{ L }} AS blk
{%- for fl in FILTERS %},
                    {{ exp(ln(1.0 - fl[3]) * (L - 1)) | double }} * sum({{ z(fl) }}) AS t_{{ fl[0] }}
{%- endfor %}
                FROM {{ source }}
                GROUP BY symbol, blk
            )
            WINDOW wb AS (PARTITION BY symbol ORDER BY blk)
        )
        WINDOW bp AS (PARTITION BY symbol ORDER BY blk ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
    )
),
vol_tod AS (
    -- Its own narrow pass: a window partitioned by minute of day sorts every column it carries.
    SELECT symbol, ts,
        -- v is never NULL, so the window is full when it has 20 rows.
        CASE WHEN count(*) OVER wtod = 20 THEN v / NULLIF(avg(v) OVER wtod, 0) END AS rel_volume_tod_20
{%- if tod_history is defined %}
    -- The history rows drop out at the inner join with the tail's rows (vol_x).
    FROM (SELECT symbol, ts, minute_of_day, v FROM {{ source }}
          UNION ALL SELECT symbol, ts, minute_of_day, v FROM {{ tod_history }})
{%- else %}
    FROM {{ source }}
{%- endif %}
    WINDOW wtod AS (PARTITION BY symbol, minute_of_day ORDER BY ts ROWS BETWEEN 20 PRECEDING AND 1 PRECEDING)
),
{%- if session_history is defined %}
vol_prior AS (
    -- Mean total volume of each session and the 19 before it, and how many of it and the 20 before it exist,
    -- over the carried sessions (sid < 0) and the tail's (the tail starts at a session open: whole totals).
    SELECT symbol, sid,
        avg(total) OVER (PARTITION BY symbol ORDER BY sid ROWS BETWEEN 19 PRECEDING AND CURRENT ROW) AS mean20,
        count(*) OVER (PARTITION BY symbol ORDER BY sid ROWS BETWEEN 20 PRECEDING AND CURRENT ROW) AS n21
    FROM (SELECT symbol, sid, sum(v){{ ' + ' ~ carried('sess_v') if sseeded }} AS total FROM {{ source }} GROUP BY symbol, sid
          UNION ALL SELECT symbol, sid, total FROM {{ session_history }})
),
{%- endif %}
vol_x AS (
    -- Per-row inputs that need a window of their own (running sums, lags) before the windows over them.
    SELECT
        symbol, ts, rn, o, c, v, tp, r, sv, v_s, mfm, tr, sid,{{ fseedcols }}
        -- Exact integer running sums: v is an integer volume, sv = sign * volume a BIGINT (OBV_0 = 0).
        sum(v) OVER wu AS cum_v,
        CAST(sum(coalesce(sv, 0)) OVER wu AS DOUBLE) AS obv,
        lag(tp) OVER w AS tp1,
        -- Per-row flags, summed over the last n - 1 rows in vol_w, 6 bits each (every count <= 59 < 64):
        -- a change from the previous row (or a NULL on either) - FLAT_n(x) = no change in its last n - 1 rows -
        -- and NULL r. cnt19: c, NULL r; cnt59: v, abs(r), s*v, OBV (changes where s*v is not 0), NULL r.
        CASE WHEN c = c1 THEN 0 ELSE 1 END
            + 64 * CASE WHEN r IS NULL THEN 1 ELSE 0 END AS flags19,
        CASE WHEN v = lag(v) OVER w THEN 0 ELSE 1 END
            + 64 * CASE WHEN abs(r) = abs(lag(r) OVER w) THEN 0 ELSE 1 END
            + 4096 * CASE WHEN sv = lag(sv) OVER w THEN 0 ELSE 1 END
            + 262144 * CASE WHEN sv = 0 THEN 0 ELSE 1 END
            + 16777216 * CASE WHEN r IS NULL THEN 1 ELSE 0 END AS flags59,
        -- r is non-NULL on all of rows t-n+1..t iff on row t-n+1 and on the n-1 rows after it.
        lag(r, 19) OVER w IS NOT NULL AS r_back19,
        lag(r, 59) OVER w IS NOT NULL AS r_back59,
        rel_volume_tod_20
    FROM {{ source }} JOIN vol_tod USING (symbol, ts)
    WINDOW
        w AS ({{ W }}),
        wu AS ({{ W }} ROWS UNBOUNDED PRECEDING)
),
vol_w AS (
    SELECT
        x.symbol, x.ts, x.rn, x.c, x.v, x.sid, x.obv, x.r_back19, x.r_back59, x.rel_volume_tod_20,
{%- for fl in FILTERS if fseeded %} x.seed_{{ fl[0] }},{% endfor %}
{%- if sseeded %}
        -- the session before the tail's first one is the carried one
        CASE WHEN cur.first_rn = 0 THEN cur.c_p_vwap ELSE prev.vwap END AS prev_vwap,
{%- else %}
        prev.vwap AS prev_vwap,
{%- endif %}
{%- if session_history is defined %}
        prior.mean20 AS prev_mean20,
        prior.n21 AS prev_n21,
{%- else %}
        prev.mean20 AS prev_mean20,
{%- endif %}
{%- for fl in FILTERS %}
        sum({{ z(fl) }}) OVER wblk AS in_{{ fl[0] }},
{%- endfor %}
        {{ rsum('cum_v', 5) }} AS s5_v,
        {{ rsum('cum_v', 10) }} AS s10_v,
        {{ rsum('cum_v', 20) }} AS s20_v,
        {{ rsum('cum_v', 60) }} AS s60_v,
        lag(cum_v, 1, 0) OVER wx - lag(cum_v, 21, 0) OVER wx AS s20p_v,
        {{ rsum('obv', 20) }} AS s20_sv,
        -- Session to date: the running sums minus their value before the session's first row.
{%- if sseeded %}
        -- (plus the carried part of the tail's first session)
        cum_v - cur.v_before + cur.c_v AS ss_v,
        obv - cur.obv_before + cur.c_sv AS ss_sv,
        cur.first_open,
        sum(v * (tp - cur.first_open)) OVER wsess + cur.c_vd AS ss_vd,
        sum(v * (tp - cur.first_open) * (tp - cur.first_open)) OVER wsess + cur.c_vdd AS ss_vdd,
        {%- if with_states %}
        sum(tp * v) OVER wsess + cur.c_tpv AS ss_tpv,
        cur.first_rn, cur.s_cont, cur.c_v, cur.c_vd, cur.c_vdd, cur.c_tpv,
        {%- endif %}
{%- else %}
        cum_v - cur.v_before AS ss_v,
        obv - cur.obv_before AS ss_sv,
        -- Moments of d = tp - (first open a), not of tp, so that m2 - m1^2 keeps its digits; VWAP = a + m1.
        cur.first_open,
        sum(v * (tp - cur.first_open)) OVER wsess AS ss_vd,
        sum(v * (tp - cur.first_open) * (tp - cur.first_open)) OVER wsess AS ss_vdd,
{%- endif %}
        sum(ln(1 + v)) OVER w60 AS s60_lnv,
        stddev_samp(ln(1 + v)) OVER w60 AS sd60_lnv,
        cume_dist(ORDER BY v) OVER w60 AS pr60_v,
        -- Volumes are integers: an exact BIGINT -> HUGEINT sum of v^2.
        sum(CAST(v AS BIGINT) * CAST(v AS BIGINT)) OVER w20 AS s20_vv,
        sum(sign(c - o) * v) OVER w20 AS s20_cv,
        sum(mfm * v) OVER w20 AS s20_mfv,
        sum(tp * v) OVER w20 AS s20_tpv,
        sum(tp * v) OVER w60 AS s60_tpv,
        corr(c, v) OVER w20 AS corr20_cv,
        corr(abs(r), v) OVER w60 AS corr60_rv,
        regr_slope(r, sv) OVER w60 AS beta60_r_sv,
        sum(abs(r)) OVER w20 AS s20_absr,
        sum(r * v) OVER w20 AS s20_rv,
        avg(obv) OVER w60 AS mean60_obv,
        stddev_samp(obv) OVER w60 AS sd60_obv,
        -- Slope and co-moments are taken about the window means, so neither the OBV level nor the partition row
        -- number costs digits.
        regr_slope(obv, x.rn) OVER w20 AS slope20_obv,
        sum(CASE WHEN tp - tp1 > {{ TIE }} * abs(tp1) THEN tp * v ELSE 0 END) OVER w14 AS s14_pos,
        sum(CASE WHEN tp - tp1 < -{{ TIE }} * abs(tp1) THEN tp * v ELSE 0 END) OVER w14 AS s14_neg,
        sum(CAST(flags19 AS DOUBLE)) OVER w19 AS cnt19,
        sum(CAST(flags59 AS DOUBLE)) OVER w59 AS cnt59
    FROM vol_x AS x
    JOIN vol_sess AS cur ON cur.symbol = x.symbol AND cur.sid = x.sid
    LEFT JOIN vol_sess AS prev ON prev.symbol = x.symbol AND prev.sid = x.sid - 1
{%- if session_history is defined %}
    LEFT JOIN vol_prior AS prior ON prior.symbol = x.symbol AND prior.sid = x.sid - 1
{%- endif %}
    WINDOW
        wx AS ({{ WX }}),
        w14 AS ({{ WX }} ROWS BETWEEN 13 PRECEDING AND CURRENT ROW),
        w19 AS ({{ WX }} ROWS BETWEEN 18 PRECEDING AND CURRENT ROW),
        w20 AS ({{ WX }} ROWS BETWEEN 19 PRECEDING AND CURRENT ROW),
        w59 AS ({{ WX }} ROWS BETWEEN 58 PRECEDING AND CURRENT ROW),
        w60 AS ({{ WX }} ROWS BETWEEN 59 PRECEDING AND CURRENT ROW),
        wblk AS ({{ WX }} ROWS BETWEEN x.rn % {{ L }} PRECEDING AND CURRENT ROW),
        wsess AS ({{ WX }} ROWS BETWEEN x.rn - cur.first_rn PRECEDING AND CURRENT ROW)
),
vol_v AS (
    SELECT w.*,
{%- for name, x, n, alpha, lead in FILTERS %}
        CASE WHEN w.rn >= {{ lead + n - 1 }}{% if fseeded %} OR (seed_{{ name }} IS NOT NULL AND w.rn >= {{ lead }}){% endif %} THEN
            (in_{{ name }} + {{ (1.0 - alpha) | double }} * carry_{{ name }}) * exp({{ ln(1.0 - alpha) | double }} * (w.rn % {{ L }})) END AS {{ name }},
{%- endfor %}
        -- sum(tp*v) / sum(v) evaluated as a + sum(v*d) / sum(v): the same number to an ulp of the price.
        CASE WHEN w.sid >= 1 THEN w.first_open + ss_vd / NULLIF(ss_v, 0) END AS vwap,
        ss_vd / NULLIF(ss_v, 0) AS m1,
        ss_vdd / NULLIF(ss_v, 0) AS m2,
        r_back19 AND {{ field('cnt19', 1) }} = 0 AS full20_r,
        -- 20*sum(v^2) - sum(v)^2 = 20*19*VAR_20(v) in exact integer arithmetic: no rounding at all, and 0 exactly
        -- when the window is flat.
        20 * s20_vv - CAST(s20_v AS HUGEINT) * CAST(s20_v AS HUGEINT) AS var20_v_380,
        r_back59 AND {{ field('cnt59', 4) }} = 0 AS full60_r
    FROM vol_w AS w
    JOIN vol_blk AS bk ON bk.symbol = w.symbol AND bk.blk = w.rn // {{ L }}
)
SELECT
    symbol,
    ts,
    CASE WHEN v > -1 THEN ln(1 + v) END AS log_volume,
    CASE WHEN rn >= 20 THEN v / NULLIF(s20p_v / 20, 0) END AS rel_volume_20,
    rel_volume_tod_20,
    CASE WHEN rn >= 19 THEN
        (v - s20_v / 20) / NULLIF(sqrt(CAST(var20_v_380 AS DOUBLE) / 380), 0) END AS volume_z_20,
    -- ln(1 + v) is strictly increasing, so its window is flat exactly when v's is.
    CASE WHEN rn >= 59 THEN
        (ln(1 + v) - s60_lnv / 60) / NULLIF(CASE WHEN {{ field('cnt59', 0) }} = 0 THEN 0 ELSE sd60_lnv END, 0) END AS log_volume_z_60,
    CASE WHEN rn >= 19 THEN {{ lnq('s5_v / 5', 's20_v / 20') }} END AS volume_ma_ratio_5_20,
    100 * ((e12 - e26) / NULLIF(e26, 0)) AS pvo_12_26,
    CASE WHEN rn >= 59 THEN pr60_v END AS volume_pctrank_60,
    CASE WHEN rn >= 19 THEN CAST(s20_vv AS DOUBLE) / NULLIF(s20_v * s20_v, 0) END AS volume_conc_20,
    CASE WHEN rn >= 59 THEN
        (obv - mean60_obv) / NULLIF(CASE WHEN {{ field('cnt59', 3) }} = 0 THEN 0 ELSE sd60_obv END, 0) END AS obv_z_60,
    CASE WHEN rn >= 19 THEN slope20_obv / NULLIF(s20_v / 20, 0) END AS obv_slope_20,
    -- From row 20 on every row of the window has a tick sign, so SUM_20(v_s) = SUM_20(v).
    CASE WHEN rn >= 20 THEN s20_sv / NULLIF(s20_v, 0) END AS tick_vol_imbalance_20,
    esv / NULLIF(evs, 0) AS tick_imbalance_ema_20,
    CASE WHEN rn >= 19 THEN s20_cv / NULLIF(s20_v, 0) END AS candle_vol_imbalance_20,
    -- Rows of sid >= 1 are past row 0, so v_s = v on them.
    CASE WHEN sid >= 1 THEN ss_sv / NULLIF(ss_v, 0) END AS session_tick_imbalance,
    CASE WHEN rn >= 19 THEN s20_mfv / NULLIF(s20_v, 0) END AS cmf_20,
    (u3 - u10) / NULLIF(CASE WHEN rn >= 9 THEN s10_v / 10 END, 0) AS adosc_3_10_norm,
    CASE WHEN rn >= 14 THEN 100 * (s14_pos / NULLIF(s14_pos + s14_neg, 0)) END AS mfi_14,
    {{ lnq('c', 'vwap') }} AS vwap_session_dist,
    {{ pdiv('c - vwap', 'atr', 'c') }} AS vwap_session_dist_atr,
    {{ pdiv('c - vwap', 'sqrt(CASE WHEN m2 - m1 * m1 > 0 THEN m2 - m1 * m1 ELSE 0 END)', 'c') }} AS vwap_session_z,
    CASE WHEN rn >= 19 THEN {{ lnq('c', 's20_tpv / NULLIF(s20_v, 0)') }} END AS vwap_roll_dist_20,
    CASE WHEN rn >= 59 THEN {{ lnq('c', 's60_tpv / NULLIF(s60_v, 0)') }} END AS vwap_roll_dist_60,
    CASE WHEN sid >= 2 THEN {{ lnq('c', 'prev_vwap') }} END AS dist_prev_session_vwap,
    CASE WHEN rn >= 19 AND {{ field('cnt19', 0) }} > 0 AND var20_v_380 > 0 THEN corr20_cv END AS pv_corr_20,
    CASE WHEN full60_r AND {{ field('cnt59', 1) }} > 0 AND {{ field('cnt59', 0) }} > 0 THEN corr60_rv END AS absret_vol_corr_60,
    CASE WHEN full20_r THEN s20_absr / NULLIF(s20_v, 0) END AS amihud_20,
    -- r non-NULL implies a previous close, hence s*v non-NULL: the check on r covers both inputs.
    CASE WHEN full60_r AND {{ field('cnt59', 2) }} > 0 THEN beta60_r_sv END AS kyle_lambda_60,
    CASE WHEN {% if session_history is defined %}prev_n21 = 21{% else %}sid >= 21{% endif %} THEN ss_v / NULLIF(prev_mean20, 0) END AS session_volume_frac_20,
    CASE WHEN full20_r THEN s20_rv / NULLIF(s20_v, 0) END AS vwret_20
{%- if fstates %},
    {%- for name, x, n, alpha, lead in FILTERS %}
    {%- if lead == 0 %}
    coalesce(lag({{ name }}) OVER (PARTITION BY symbol ORDER BY ts), seed_{{ name }}) AS __state__{{ name }}{{ ',' if not loop.last }}
    {%- else %}
    coalesce({{ name }}, seed_{{ name }}) AS __state__{{ name }}{{ ',' if not loop.last }}
    {%- endif %}
    {%- endfor %}
{%- endif %}
{%- if with_states %},
    -- The session state before this row: its session's sums over the rows before it (the row before's running
    -- sums; the carried ones at the tail's first row), s*v through this row, the previous session's VWAP.
    CASE WHEN rn > first_rn OR s_cont THEN first_open END AS __state__sess_open,
    {%- for name, carry in [('ss_v', 'c_v'), ('ss_vd', 'c_vd'), ('ss_vdd', 'c_vdd'), ('ss_tpv', 'c_tpv')] %}
    CASE WHEN rn > first_rn THEN lag({{ name }}) OVER (PARTITION BY symbol ORDER BY ts) ELSE {{ carry }} END AS __state__sess_{{ name[3:] }},
    {%- endfor %}
    ss_sv AS __state__sess_sv,
    prev_vwap AS __state__sess_p_vwap
{%- endif %}
FROM vol_v
