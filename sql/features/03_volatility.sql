{#- features
family: volatility
category: volatility
rv_cc_5            | double | n=5       | first=5   | close-to-close realized vol sqrt(N)*STD_5(r), annualized fraction (N = bars per year of the timeframe)
rv_cc_20           | double | n=20      | first=20  | sqrt(N)*STD_20(r), annualized fraction
rv_cc_60           | double | n=60      | first=60  | sqrt(N)*STD_60(r), annualized fraction
rv_cc_240          | double | n=240     | first=240 | sqrt(N)*STD_240(r), annualized fraction
rv_up_20           | double | n=20      | first=20  | upside semivol sqrt(N*MEAN_20(max(r,0)^2)), not demeaned, annualized fraction
rv_down_20         | double | n=20      | first=20  | downside semivol sqrt(N*MEAN_20(min(r,0)^2)), not demeaned, annualized fraction
ewma_vol_32        | double | n=32      | first=32  | sqrt(N*EMA_32(r^2)), alpha = 2/33, seeded with the mean of the first 32 r^2, annualized fraction
vol_parkinson_20   | double | n=20      | first=19  | Parkinson sqrt(N*MEAN_20(ln(h/l)^2)/(4 ln 2)), annualized fraction
vol_parkinson_60   | double | n=60      | first=59  | Parkinson over 60 bars, annualized fraction
vol_gk_20          | double | n=20      | first=19  | Garman-Klass sqrt(N*MEAN_20(0.5 ln(h/l)^2 - (2 ln 2 - 1) ln(c/o)^2)), annualized fraction
vol_gk_60          | double | n=60      | first=59  | Garman-Klass over 60 bars, annualized fraction
vol_rs_20          | double | n=20      | first=19  | Rogers-Satchell sqrt(N*MEAN_20(ln(h/c)ln(h/o) + ln(l/c)ln(l/o))), annualized fraction
vol_yz_20          | double | n=20      | first=20  | Yang-Zhang sqrt(N*(VAR_20(ln(o/c[t-1])) + k VAR_20(ln(c/o)) + (1-k) MEAN_20(rs))), k = 0.34/(1.34 + 21/19)
vol_yz_60          | double | n=60      | first=60  | Yang-Zhang over 60 bars, k = 0.34/(1.34 + 61/59)
atr_14             | double | n=14      | first=14  | WILDER_14(TR), seeded with the mean of TR rows 1..14 (TA-Lib ATR), price units
natr_14            | double | n=14      | first=14  | 100*atr_14 / c (percent of price; plain guarded division)
atr_ratio_5_50     | double | n=5,50    | first=50  | WILDER_5(TR) / WILDER_50(TR), NULL when WILDER_50(TR) < 1e-7*abs(c) (price floor)
hl_range_log       | double | n=1       | first=0   | ln(h/l) of the bar (log units)
range_expansion_14 | double | n=14      | first=15  | TR / atr_14[t-1]; price floor against the current close
donchian_width_20  | double | n=20      | first=19  | ln(HH_20 / LL_20) (log units)
bb_width_20        | double | n=20      | first=19  | Bollinger (U - L) / MEAN_20(c), U - L = 4*STDP_20(c) (population sd)
bb_pctb_20         | double | n=20      | first=19  | Bollinger %b (c - L) / (U - L), L = MEAN_20(c) - 2*STDP_20(c); NULL when U - L < 1e-7*abs(c)
kc_width_20        | double | n=20,10   | first=19  | Keltner width 4*WILDER_10(TR) / EMA_20(c)
kc_pos_20          | double | n=20,10   | first=19  | Keltner position (c - (EMA_20(c) - 2*WILDER_10(TR))) / (4*WILDER_10(TR)); price floor on the width
squeeze_on         | int    | n=20,10   | first=19  | 1 if U < EMA_20(c) + 1.5*WILDER_10(TR) and L > EMA_20(c) - 1.5*WILDER_10(TR) (strict), else 0; NULL where WILDER_10(TR) < 1e-7*abs(c)
vov_20_60          | double | n=20,60   | first=79  | vol of vol STD_60(rv_cc_20) / MEAN_60(rv_cc_20) (sample sd; coefficient of variation)
vol_ratio_20_240   | double | n=20,240  | first=240 | rv_cc_20 / rv_cc_240
vol_ratio_pk_cc_20 | double | n=20      | first=20  | vol_parkinson_20 / rv_cc_20 (range vs close vol)
rv_pctrank_20_240  | double | n=20,240  | first=259 | PCTRANK_240(rv_cc_20): share of the last 240 rows with rv_cc_20 <= current + 1e-9*abs(current), in (0, 1]
rj_bv_60           | double | n=60      | first=61  | relative jump share (RV - BV) / RV, RV = SUM_60(r^2), BV = (pi/2)*SUM_60(abs(r)*abs(r[t-1]))
-#}
{#-
  Readings (catalog sections 3-6; tests/features_oracle/volatility.py makes the same choices):
  * U - L is evaluated as 4*STDP_20(c): algebraically equal, exactly 0 on a flat window, no cancellation with the mean.
  * sqrt of a negative mean (GK / RS / YZ, only possible on inconsistent bars with o or c outside [l, h]) is NULL.
  * The ÷p floor compares with the current close c[t], also for range_expansion_14 (denominator atr_14[t-1]).
  * squeeze_on is NULL where WILDER_10(TR) < 1e-7*abs(c) (NULL rule 4): inside a long stale block both widths
    decay towards 0 and the comparison would be decided at the last ulp of EMA_20(c) against the decayed ATR.

  How it is computed. Cost model (DuckDB 1.5, per 1M rows, one thread; one symbol's window pass runs on one
  thread): a window pass sorts (~0.12 s) and carries its columns (~13 ms each); a lag costs ~6 ms, a frame
  aggregate ~0.06-0.15 s, cume_dist over 240 rows ~0.4 s; a lag offset or frame bound given as an expression
  instead of a column costs ~5x. Hence three passes built from lags:
  * Passes run per (symbol, chunk) with overlapping chunks (see C, W below), so one long symbol uses every core.
  * Window statistics are combined from blocks: 5-row blocks from lags 1..4 of each per-bar input, 20 rows = 4
    blocks of 5 (lags 5, 10, 15), 60 = 3 blocks of 20, 240 = 12 blocks of 20. Any NULL input makes the sum NULL,
    which is NULL rule 1 (the window must hold n non-NULL rows) without counting.
  * Dispersions are (mean, M2) states, M2 = sum of squared deviations from the window mean. A 5-row state is a
    two-pass sum shifted by the current value x[t]; blocks are merged by the shifted Chan formula
    M2 = sum(M2_i) + m*(sum(e_j^2) - (sum e_j)^2/k), e_j = mean_j - mean_0 (k blocks of m rows). On a flat window
    every shift difference is exactly 0, so VAR is exactly 0 there (NULL rule 3) without a max = min test, and no
    raw sum of squares of prices is formed. STD_60 and MEAN_60 of rv_cc_20 (vov_20_60) are DuckDB's window
    stddev_samp/avg (Welford states; exactly 0 on flat windows in practice, and a numerator only).
  * Recursive filters (section 4) use the block-exponential method of sql/features/_filters.sql, riding on the
    first window pass instead of separate CTE chains: the in-block sum of z = w*exp(lam*o) is a window sum with a
    per-row frame (o rows back to the block start), and the totals of the two previous blocks come from a GROUP BY
    on the block (a few thousand rows, joined back). The SMA seed enters as z = x*exp(lam*(n-1))/n on the first n
    inputs (all in the first block), which makes y = SMA at input n-1 and the recursion afterwards. TR is NULL only
    at a partition's first row and c never (bars have non-NULL prices), so their filter index is the row number.
    r is NULL also where a back-adjusted price is <= 0: EMA_32(r^2) uses the row index up to the first such row
    after row 0 and, in partitions that have one, the general NULL-skipping filter on the numbered non-NULL rows
    from that row on (vol_bad, vol_e1..vol_e).
  * PCTRANK_240: cume_dist(ORDER BY rv20) over the 240-row frame counts rv20[k] <= rv20[t] (ties included); the
    rows with rv20[t] < rv20[k] <= rv20[t] + 1e-9*rv20[t] (near-ties: equal windows summed in another order) are
    added by an equi-join on the FLOAT cell of rv20 inside 240-row time blocks (vol_near).
  * Plan shape. A CTE read twice is materialized with all its columns, so only vol_p3 (for vol_near) is: vol_p0
    is read once (the chunk copies come from an unnest, the filter block totals recompute their z terms from
    the source). A hash join builds on the side with the smaller estimate; vol_near is packed into one list row
    so that the final join builds on its few thousand rows (on vol_p3 it cost ~0.4 s and ~300 MB).
-#}
{%- set N = bars_per_year %}
{%- set sqrt_n = sqrt(N) | double %}
{%- set floor = 1e-7 | double %}
{%- set eps = 1e-9 | double %}
{%- set zero = 0.0 | double %}
{#- Window passes run per (symbol, chunk): chunk = rn // C, and the last W rows of every chunk are copied into the
    next one (1.6 % more rows), so a long partition is processed in parallel and every own row still sees W earlier
    rows. Deepest look-back inside a pass: 999 rows (the in-block frame of the TR filters, L = 1000), then 258
    (PCTRANK_240 of rv_cc_20); the filter carries come from a GROUP BY over the whole partition. (The live per-bar
    form below runs one chunk and one filter block.) -#}
{%- set C = 65536 %}
{%- set W = 1024 %}
{#- Recursive filters on the row index: TR (index rn - 1; NULL only at rn = 0) and c (index rn). The four Wilder
    filters of TR share one block length L (L*lam between 20 and 223: the dropped history is below e^-40 and
    exp stays far from overflow); EMA_20(c) uses floor(40/lam) like sql/features/_filters.sql. -#}
{%- set tr_L = 1000 %}
{%- set tr_filters = [('atr5', 5, 1.0 / 5), ('atr10', 10, 1.0 / 10), ('atr14', 14, 1.0 / 14), ('atr50', 50, 1.0 / 50)] %}
{%- set e20 = {'n': 20, 'a': 2.0 / 21} %}
{%- set _ = e20.update({'lam': -ln(1.0 - e20.a)}) %}
{%- set _ = e20.update({'L': (40.0 / e20.lam) | round(0, 'floor') | int}) %}
{%- set e32 = {'n': 32, 'a': 2.0 / 33} %}
{%- set _ = e32.update({'lam': -ln(1.0 - e32.a)}) %}
{%- set _ = e32.update({'L': (40.0 / e32.lam) | round(0, 'floor') | int}) %}
{#- The live per-bar form (`running_rows`: a tail of at most that many rows per symbol, see
    warehouse/features/live.py): every filter runs as one block, its sum a running sum from the tail's first row,
    so the block carries (a GROUP BY, a window and a join per filter) and the chunk copies are left out. Chosen only
    where every exp(lam*o) stays below e^600 (ATR_5: lam = 0.22, 2,690 rows). The exponents then reach ~580 instead
    of 223, so one rounding of lam*o costs up to ~6e-14 of a weight instead of ~2.5e-14: far inside the catalog
    tolerances (the live tests compare every row with the full build). -#}
{%- set one_block = running_rows is defined and running_rows
    and [-ln(1.0 - tr_filters[0][2]), e20.lam, e32.lam] | max * (running_rows + 1) <= 600 %}
{%- if one_block %}
{%- set tr_L = running_rows + 1 %}
{%- set _ = e20.update({'L': running_rows + 1}) %}
{%- set _ = e32.update({'L': running_rows + 1}) %}
{%- endif %}
{#- one block is one chunk: the windows are then partitioned by symbol alone (see warehouse/features/hash_groups.py) -#}
{%- set by = 'symbol' if one_block else 'symbol, chunk' %}
{#- a ÷p b: NULL when b = 0, either side NULL, or abs(b) below the price floor of the current close -#}
{%- macro pdiv(a, b) -%}
CASE WHEN abs({{ b }}) >= {{ floor }} * abs(c) AND {{ b }} <> 0 THEN ({{ a }}) / ({{ b }}) END
{%- endmacro %}
{%- macro nsqrt(x) -%}
CASE WHEN ({{ x }}) >= 0 THEN sqrt({{ x }}) END
{%- endmacro %}
{#- Carried filter state (the live path, warehouse/features/live.py; only with `filter_seeds`, left undefined the
    render is the full build's): the source then has a column seed_<name> per filter of STATES, constant per symbol,
    the filter's value just before the tail's first input (NULL: no state, the SMA seed as in the full build). A
    seed S continues the recursion: w = alpha*x + (1 - alpha)*S at input 0 and alpha*x after, so
    y_t = sum_k alpha*x_k*beta^(t-k) + beta^(t+1)*S. The family then also outputs __state__<name>: the seed a tail
    whose first row is this row needs (TR and r^2 filters, whose first tail input is the tail's row 1: the value
    at this row, the last non-NULL one for r^2; EMA_20(c): the value at the previous row). -#}
{%- set seeded = filter_seeds is defined and filter_seeds %}
{#- `filter_states` (with filter_seeds): output the states too (read at a load and a trim, not per bar). -#}
{%- set with_states = seeded and filter_states is defined and filter_states %}
{%- set STATES = ['atr5', 'atr10', 'atr14', 'atr50', 'ema20', 'r2'] %}
{%- set seedcols = namespace(v='') %}
{%- if seeded %}{% for name in STATES %}{% set seedcols.v = seedcols.v ~ ' seed_' ~ name ~ ',' %}{% endfor %}{% endif %}
{%- set seedcols = seedcols.v %}
{#- z = w*exp(lam*o) of a filter input x with index i, block offset o: the first n inputs carry the SMA seed
    (x*exp(lam*(n-1))/n sums to y = SMA at input n-1), later ones alpha*x; with a seed column, see above. -#}
{%- macro zterm(x, i, o, n, a, lam, seed=none) -%}
{%- if seeded and seed -%}
CASE WHEN {{ seed }} IS NOT NULL THEN ({{ a | double }} * {{ x }} + CASE WHEN {{ i }} = 0 THEN {{ (1.0 - a) | double }} * {{ seed }} ELSE {{ zero }} END) * exp({{ lam | double }} * {{ o }})
            ELSE {{ x }} * CASE WHEN {{ i }} < {{ n }} THEN {{ (exp(lam * (n - 1)) / n) | double }} ELSE {{ a | double }} * exp({{ lam | double }} * {{ o }}) END END
{%- else -%}
{{ x }} * CASE WHEN {{ i }} < {{ n }} THEN {{ (exp(lam * (n - 1)) / n) | double }} ELSE {{ a | double }} * exp({{ lam | double }} * {{ o }}) END
{%- endif -%}
{%- endmacro %}
{#- The filter's output gate: past the SMA seed, or seeded (`after`: the first row with an input). -#}
{%- macro gate(cond, seed, after='TRUE') -%}
{%- if seeded %}({{ cond }} OR ({{ seed }} IS NOT NULL AND {{ after }})){% else %}{{ cond }}{% endif -%}
{%- endmacro %}
{#- The filter input terms over the source columns (vol_p0 and the block totals use the same expressions). -#}
{%- macro z_r() -%}
CASE WHEN rn >= 1 THEN {{ zterm('r * r', 'rn - 1', '(greatest(rn - 1, 0) % ' ~ e32.L ~ ')', e32.n, e32.a, e32.lam, 'seed_r2') }} END
{%- endmacro %}
{%- macro z_tr(name, n, a) -%}
CASE WHEN rn >= 1 THEN {{ zterm('tr', 'rn - 1', '(greatest(rn - 1, 0) % ' ~ tr_L ~ ')', n, a, -ln(1.0 - a), 'seed_' ~ name) }} END
{%- endmacro %}
{%- macro z_c() -%}
{{ zterm('c', 'rn', '(rn % ' ~ e20.L ~ ')', e20.n, e20.a, e20.lam, 'seed_ema20') }}
{%- endmacro %}
{#- filter output from the in-block sum s, offset o and the two previous block totals t1, t2 (one block: none) -#}
{%- macro fvalue(s, o, t1, t2, lam, L) -%}
{%- if one_block -%}
exp({{ (-lam) | double }} * {{ o }}) * {{ s }}
{%- else -%}
exp({{ (-lam) | double }} * {{ o }}) * ({{ s }} + {{ exp(-lam * L) | double }}
            * (coalesce({{ t1 }}, {{ zero }}) + {{ exp(-lam * L) | double }} * coalesce({{ t2 }}, {{ zero }})))
{%- endif -%}
{%- endmacro %}
{#- The frame of an in-block sum: o rows back to the block start (one block: every row so far). -#}
{%- macro inblock(o) -%}
ROWS BETWEEN {{ 'UNBOUNDED' if one_block else o }} PRECEDING AND CURRENT ROW
{%- endmacro %}
{#- (mean, M2) states in three stacked projections (each subexpression evaluated once):
    a: differences to the shift, b: their sums, c: mean and M2, clamped at 0 (rounding can leave -1 ulp).
    5-row state of x from x, x_1..x_4 (lags), shifted by x[t]: exactly (x, 0) on a flat window. -#}
{%- macro st5_a(x) %}{% for j in range(1, 5) %}{{ x }}_{{ j }} - {{ x }} AS {{ x }}_5e{{ j }}{{ ', ' if not loop.last }}{% endfor %}{% endmacro %}
{%- macro st5_b(x) -%}
{% for j in range(1, 5) %}{{ x }}_5e{{ j }}{{ ' + ' if not loop.last }}{% endfor %} AS {{ x }}_5se,
        {% for j in range(1, 5) %}{{ x }}_5e{{ j }} * {{ x }}_5e{{ j }}{{ ' + ' if not loop.last }}{% endfor %} AS {{ x }}_5sq
{%- endmacro %}
{%- macro st5_c(x) -%}
{{ x }} + {{ x }}_5se / 5 AS {{ x }}_m5,
        {{ x }}_5sq - {{ x }}_5se * {{ x }}_5se / 5 AS {{ x }}_5qr
{%- endmacro %}
{%- macro st5_d(x) %}CASE WHEN {{ x }}_5qr < 0 THEN {{ zero }} ELSE {{ x }}_5qr END AS {{ x }}_q5{% endmacro %}
{#- Merge k states of m rows: <p>_m<lvl>/<p>_q<lvl> (current block) and the lagged blocks <p>_m<lvl>_<j>,
    <p>_q<lvl>_<j> (j = 1..k-1), shifted by the current block's mean (Chan's parallel formula):
    M2 = sum(M2_i) + m*(sum(e_j^2) - (sum e_j)^2/k), e_j = mean_j - mean_0. -#}
{%- macro mg_a(p, lvl, k, out) %}{% for j in range(1, k) %}{{ p }}_m{{ lvl }}_{{ j }} - {{ p }}_m{{ lvl }} AS {{ p }}_{{ out }}e{{ j }}{{ ', ' if not loop.last }}{% endfor %}{% endmacro %}
{%- macro mg_b(p, lvl, k, out) -%}
{% for j in range(1, k) %}{{ p }}_{{ out }}e{{ j }}{{ ' + ' if not loop.last }}{% endfor %} AS {{ p }}_{{ out }}se,
        {% for j in range(1, k) %}{{ p }}_{{ out }}e{{ j }} * {{ p }}_{{ out }}e{{ j }}{{ ' + ' if not loop.last }}{% endfor %} AS {{ p }}_{{ out }}sq,
        {{ p }}_q{{ lvl }}{% for j in range(1, k) %} + {{ p }}_q{{ lvl }}_{{ j }}{% endfor %} AS {{ p }}_{{ out }}sm
{%- endmacro %}
{%- macro mg_c(p, lvl, k, m, out) -%}
{{ p }}_m{{ lvl }} + {{ p }}_{{ out }}se / {{ k }} AS {{ p }}_m{{ out }},
        {{ p }}_{{ out }}sm + {{ m }} * ({{ p }}_{{ out }}sq - {{ p }}_{{ out }}se * {{ p }}_{{ out }}se / {{ k }}) AS {{ p }}_{{ out }}qr
{%- endmacro %}
{%- macro mg_d(p, out) %}CASE WHEN {{ p }}_{{ out }}qr < 0 THEN {{ zero }} ELSE {{ p }}_{{ out }}qr END AS {{ p }}_q{{ out }}{% endmacro %}
{%- macro lags(cols, step, k) %}
{%- for col in cols %}{% for j in range(1, k) %}
        lag({{ col }}, {{ step * j }}) OVER w AS {{ col }}_{{ j }},
{%- endfor %}{% endfor %}
{%- endmacro %}
{%- macro sums(cols, lvl, k, out) %}
{%- for p in cols %}
        {{ p }}_s{{ lvl }}{% for j in range(1, k) %} + {{ p }}_s{{ lvl }}_{{ j }}{% endfor %} AS {{ p }}_s{{ out }},
{%- endfor %}
{%- endmacro %}
{%- set win = 'WINDOW w AS (PARTITION BY ' ~ by ~ ' ORDER BY ts)' %}
{%- set own = 'rn // ' ~ C ~ ' = chunk' %}
{#- Stacked state projections over relation src: 5-row states of xs5, merges (p, lvl, k, m, out) of mgs. -#}
{%- macro states(src, xs5=[], mgs=[]) -%}
SELECT *
        {%- for x in xs5 %}, {{ st5_d(x) }}{% endfor %}
        {%- for p, lvl, k, m, out in mgs %}, {{ mg_d(p, out) }}{% endfor %}
    FROM (SELECT *
        {%- for x in xs5 %},
        {{ st5_c(x) }}{% endfor %}
        {%- for p, lvl, k, m, out in mgs %},
        {{ mg_c(p, lvl, k, m, out) }}{% endfor %}
    FROM (SELECT *
        {%- for x in xs5 %},
        {{ st5_b(x) }}{% endfor %}
        {%- for p, lvl, k, m, out in mgs %},
        {{ mg_b(p, lvl, k, out) }}{% endfor %}
    FROM (SELECT *
        {%- for x in xs5 %},
        {{ st5_a(x) }}{% endfor %}
        {%- for p, lvl, k, m, out in mgs %},
        {{ mg_a(p, lvl, k, out) }}{% endfor %}
    FROM {{ src }})))
{%- endmacro %}
WITH
vol_p0 AS (
    -- Per-bar inputs; a log is NULL unless both prices are positive (difference-adjusted series).
    SELECT symbol, ts, rn, h, l, c, r, tr,{{ seedcols }}
        CASE WHEN h > 0 AND l > 0 THEN ln(h / l) END AS hl,
        CASE WHEN c > 0 AND o > 0 THEN ln(c / o) END AS co,
        CASE WHEN o > 0 AND c1 > 0 THEN ln(o / c1) END AS ov,
        CASE WHEN o > 0 AND h > 0 AND l > 0 AND c > 0 THEN ln(h / c) * ln(h / o) + ln(l / c) * ln(l / o) END AS rs,
        greatest(rn - 1, 0) % {{ tr_L }} AS o_tr,
        rn % {{ e20.L }} AS o_c,
        greatest(rn - 1, 0) % {{ e32.L }} AS o_r,
        -- EMA_32(r^2) fast path: index rn - 1, exact when r is NULL only at rn = 0 (see vol_bad)
        {{ z_r() }} AS z_r,
        {%- for name, n, a in tr_filters %}
        {{ z_tr(name, n, a) }} AS z_{{ name }},
        {%- endfor %}
        {{ z_c() }} AS z_ema20
    FROM {{ source }}
),
{%- if not one_block %}
-- Block totals of the filter inputs and the carries of the two previous blocks (a few thousand rows). The z terms
-- are recomputed from the source (the same expressions as in vol_p0), so that vol_p0 is read once and not
-- materialized.
vol_tr_carry AS (
    SELECT symbol, blk_tr{% for name, n, a in tr_filters %},
        lag(b_{{ name }}) OVER b AS t1_{{ name }}, lag(b_{{ name }}, 2) OVER b AS t2_{{ name }}{% endfor %}
    FROM (SELECT symbol, greatest(rn - 1, 0) // {{ tr_L }} AS blk_tr{% for name, n, a in tr_filters %}, sum({{ z_tr(name, n, a) }}) AS b_{{ name }}{% endfor %}
          FROM {{ source }} WHERE rn >= 1 GROUP BY ALL)
    WINDOW b AS (PARTITION BY symbol ORDER BY blk_tr)
),
vol_c_carry AS (
    SELECT symbol, blk_c, lag(b) OVER b AS t1_ema20, lag(b, 2) OVER b AS t2_ema20
    FROM (SELECT symbol, rn // {{ e20.L }} AS blk_c, sum({{ z_c() }}) AS b FROM {{ source }} GROUP BY ALL)
    WINDOW b AS (PARTITION BY symbol ORDER BY blk_c)
),
vol_r_carry AS (
    SELECT symbol, blk_r, lag(b) OVER b AS t1_r, lag(b, 2) OVER b AS t2_r
    FROM (SELECT symbol, greatest(rn - 1, 0) // {{ e32.L }} AS blk_r, sum({{ z_r() }}) AS b FROM {{ source }} WHERE rn >= 1 GROUP BY ALL)
    WINDOW b AS (PARTITION BY symbol ORDER BY blk_r)
),
{%- endif %}
vol_x AS (
    -- rows in the last W of a chunk are also the first rows of the next chunk
    SELECT *, {% if one_block %}0{% else %}unnest(CASE WHEN rn % {{ C }} >= {{ C - W }} THEN [rn // {{ C }}, rn // {{ C }} + 1] ELSE [rn // {{ C }}] END){% endif %} AS chunk
    FROM vol_p0
),
vol_s1 AS (
    SELECT symbol, ts, rn, chunk, c, tr, hl, r, co, ov, rs, h, l, o_tr, o_c, o_r,{{ seedcols }}
        {{- lags(['r'], 1, 6) }}
        {{- lags(['hl', 'co', 'ov', 'rs', 'c', 'h', 'l'], 1, 5) }}
        {%- for name, n, a in tr_filters %}
        sum(z_{{ name }}) OVER wtr AS s_{{ name }},
        {%- endfor %}
        sum(z_ema20) OVER wc AS s_ema20,
        sum(z_r) OVER wr AS s_r
    FROM vol_x
    {{ win }},
        -- in-block frames of the recursive filters (o rows back to the block start)
        wtr AS (PARTITION BY {{ by }} ORDER BY ts {{ inblock('o_tr') }}),
        wc AS (PARTITION BY {{ by }} ORDER BY ts {{ inblock('o_c') }}),
        wr AS (PARTITION BY {{ by }} ORDER BY ts {{ inblock('o_r') }})
),
vol_p1 AS (
    -- 5-row blocks; the filters of TR and c.
    SELECT symbol, ts, rn, chunk, c, tr, hl, r_m5, r_q5, co_m5, co_q5, ov_m5, ov_q5, c_m5, c_q5,{{ seedcols }}
        {%- for name, n, a in tr_filters %}
        {%- set lam = -ln(1.0 - a) %}
        CASE WHEN {{ gate('rn - 1 >= ' ~ (n - 1), 'seed_' ~ name, 'rn >= 1') }} THEN {{ fvalue('s_' ~ name, 'o_tr', 't1_' ~ name, 't2_' ~ name, lam, tr_L) }} END AS {{ name }},
        {%- endfor %}
        CASE WHEN {{ gate('rn >= ' ~ (e20.n - 1), 'seed_ema20') }} THEN {{ fvalue('s_ema20', 'o_c', 't1_ema20', 't2_ema20', e20.lam, e20.L) }} END AS ema20,
        CASE WHEN r IS NOT NULL AND {{ gate('rn - 1 >= ' ~ (e32.n - 1), 'seed_r2') }} THEN {{ fvalue('s_r', 'o_r', 't1_r', 't2_r', e32.lam, e32.L) }} END AS ema_r2_fast,
        {%- set rl = ['r', 'r_1', 'r_2', 'r_3', 'r_4', 'r_5'] %}
        {%- for side, op in (('up', '>'), ('dn', '<')) %}
        {% for j in range(5) %}CASE WHEN {{ rl[j] }} {{ op }} 0 THEN {{ rl[j] }} * {{ rl[j] }} WHEN {{ rl[j] }} IS NOT NULL THEN {{ zero }} END{{ '\n            + ' if not loop.last }}{% endfor %} AS {{ side }}_s5,
        {%- endfor %}
        {% for j in range(5) %}abs({{ rl[j] }}) * abs({{ rl[j + 1] }}){{ ' + ' if not loop.last }}{% endfor %} AS bp_s5,
        hl * hl{% for j in range(1, 5) %} + hl_{{ j }} * hl_{{ j }}{% endfor %} AS hl2_s5,
        {%- set gk = (2 * ln(2.0) - 1) | double %}
        {%- set half = 0.5 | double %}
        {% for x in ('', '_1', '_2', '_3', '_4') %}({{ half }} * hl{{ x }} * hl{{ x }} - {{ gk }} * co{{ x }} * co{{ x }}){{ '\n            + ' if not loop.last }}{% endfor %} AS gk_s5,
        rs{% for j in range(1, 5) %} + rs_{{ j }}{% endfor %} AS rs_s5,
        -- greatest/least skip NULLs, so a window reaching before the partition start is NULL explicitly
        CASE WHEN h_4 IS NOT NULL THEN greatest(h, h_1, h_2, h_3, h_4) END AS hh_s5,
        CASE WHEN l_4 IS NOT NULL THEN least(l, l_1, l_2, l_3, l_4) END AS ll_s5
    FROM ({{ states('(SELECT *, greatest(rn - 1, 0) // ' ~ tr_L ~ ' AS blk_tr, rn // ' ~ e20.L ~ ' AS blk_c, greatest(rn - 1, 0) // ' ~ e32.L ~ ' AS blk_r FROM vol_s1)', xs5=['r', 'co', 'ov', 'c']) }})
{%- if not one_block %}
    LEFT JOIN vol_tr_carry USING (symbol, blk_tr)
    LEFT JOIN vol_c_carry USING (symbol, blk_c)
    LEFT JOIN vol_r_carry USING (symbol, blk_r)
{%- endif %}
),
{%- set cols5 = ['r_m5', 'r_q5', 'co_m5', 'co_q5', 'ov_m5', 'ov_q5', 'c_m5', 'c_q5', 'up_s5', 'dn_s5', 'bp_s5', 'hl2_s5', 'gk_s5', 'rs_s5', 'hh_s5', 'll_s5'] %}
vol_s2 AS (
    SELECT symbol, ts, rn, chunk, c, tr, hl, atr5, atr10, atr14, atr50, ema20, ema_r2_fast,{{ seedcols }}
        {{ cols5 | join(', ') }},
        {{- lags(cols5, 5, 4) }}
        lag(atr14) OVER w AS atr14_prev
    FROM vol_p1
    {{ win }}
),
vol_p2 AS (
    -- 20-row blocks.
    SELECT *,
        {{- sums(['up', 'dn', 'bp', 'hl2', 'gk', 'rs'], 5, 4, 20) }}
        CASE WHEN hh_s5_3 IS NOT NULL THEN greatest(hh_s5, hh_s5_1, hh_s5_2, hh_s5_3) END AS hh20,
        CASE WHEN ll_s5_3 IS NOT NULL THEN least(ll_s5, ll_s5_1, ll_s5_2, ll_s5_3) END AS ll20,
        {{ sqrt_n }} * sqrt(r_q20 / 19) AS rv20
    FROM ({{ states('vol_s2', mgs=[('r', 5, 4, 5, 20), ('co', 5, 4, 5, 20), ('ov', 5, 4, 5, 20), ('c', 5, 4, 5, 20)]) }})
),
{%- set cols20 = ['r_m20', 'r_q20', 'co_m20', 'co_q20', 'ov_m20', 'ov_q20', 'bp_s20', 'hl2_s20', 'gk_s20', 'rs_s20'] %}
vol_s3 AS (
    SELECT symbol, ts, rn, chunk, c, tr, hl, atr5, atr10, atr14, atr50, ema20, ema_r2_fast, atr14_prev, r_q5, rv20,{{ seedcols }}
        c_m20, c_q20, hh20, ll20, up_s20, dn_s20,
        {{ cols20 | join(', ') }},
        {{- lags(cols20, 20, 3) }}
        {%- for col in ('r_m20', 'r_q20') %}{% for j in range(3, 12) %}
        lag({{ col }}, {{ 20 * j }}) OVER w AS {{ col }}_{{ j }},
        {%- endfor %}{% endfor %}
        -- NULL rule 1 for windows over rv_cc_20 (r non-NULL on t-258..t, t-78..t) with the 240/60-row r states
        lag(r_m20, 239) OVER w AS r_m20_239,
        lag(r_m20, 59) OVER w AS r_m20_59,
        -- PCTRANK_240: cume_dist counts the rows with rv20 <= the current one, ties included.
        cume_dist(ORDER BY rv20) OVER w240 AS rv20_cd,
        -- vol of vol: window mean and sample sd (DuckDB's Welford states, no raw sum of squares).
        avg(rv20) OVER w60 AS rv20_avg60,
        stddev_samp(rv20) OVER w60 AS rv20_sd60
    FROM vol_p2
    {{ win }},
        w60 AS (PARTITION BY {{ by }} ORDER BY ts ROWS BETWEEN 59 PRECEDING AND CURRENT ROW),
        w240 AS (PARTITION BY {{ by }} ORDER BY ts ROWS BETWEEN 239 PRECEDING AND CURRENT ROW)
),
vol_p3 AS (
    -- 60- and 240-row blocks; own rows only from here on. (Read twice, so only what the output needs.)
    SELECT symbol, ts, rn, c, tr, hl, atr5, atr10, atr14, atr50, ema20, ema_r2_fast, atr14_prev, rv20, r_q5,{{ seedcols }}
        c_m20, c_q20, hh20, ll20, up_s20, dn_s20, hl2_s20, gk_s20, rs_s20, co_q20, ov_q20,
        r_m60, r_q60, co_q60, ov_q60, r_q240,
        {{- sums(['bp', 'hl2', 'gk', 'rs'], 20, 3, 60) }}
        CASE WHEN r_m20_239 IS NOT NULL AND r_q240 IS NOT NULL THEN round(240 * rv20_cd) END AS rv20_le,
        CASE WHEN r_m20_59 IS NOT NULL AND r_q60 IS NOT NULL THEN rv20_sd60 / NULLIF(rv20_avg60, 0) END AS vov
    FROM ({{ states('vol_s3', mgs=[('r', 20, 3, 20, 60), ('co', 20, 3, 20, 60), ('ov', 20, 3, 20, 60), ('r', 20, 12, 20, 240)]) }})
    WHERE {{ own }}
),
vol_pt AS (
    -- Candidates for a near-tie: rv20 > 0 (nothing lies strictly above 0 within 1e-9*0). A FLOAT cell is at least
    -- 6e-8 wide relative, so x < x' <= x*(1 + 1e-9) puts x' in the cell of x or the next one up; the window
    -- t-239..t lies in the 240-row blocks blk(t) - 1 and blk(t).
    SELECT symbol, rn, rv20 AS x, CAST(rv20 AS FLOAT) AS f, rn // 240 AS blk
    FROM vol_p3 WHERE rv20 > 0
),
vol_near_n AS (
    -- Rows k of the window t-239..t with x[t] < x[k] <= x[t] + 1e-9*abs(x[t]), which cume_dist does not count.
    SELECT p.symbol, p.rn, count(*) AS near
    FROM (SELECT symbol, rn, x, x + {{ eps }} * abs(x) AS y, blk,
              unnest([f, nextafter(f, CAST('inf' AS FLOAT))]) AS f
          FROM vol_pt) AS p
    JOIN (SELECT symbol, rn, x, f, unnest([blk, blk + 1]) AS vis_blk FROM vol_pt) AS k
        ON k.symbol = p.symbol AND k.f = p.f AND k.vis_blk = p.blk
    WHERE k.x > p.x AND k.x <= p.y AND k.rn <= p.rn AND k.rn >= p.rn - 239
    GROUP BY p.symbol, p.rn
),
vol_near AS (
    -- The same rows, packed into one list and unnested: the optimizer then estimates this side at 1 row and builds
    -- the final join's hash table on it (a few thousand rows), not on the 1M wide rows of vol_p3.
    SELECT struct_extract(u, 'symbol') AS symbol, struct_extract(u, 'rn') AS rn, struct_extract(u, 'near') AS near
    FROM (SELECT unnest(l) AS u FROM (SELECT list({'symbol': symbol, 'rn': rn, 'near': near}) AS l FROM vol_near_n))
),
-- EMA_32(r^2) skips NULL r. Where r is NULL after a partition's first row (non-positive back-adjusted prices), the
-- row index is not the filter index: those partitions run the filter on their non-NULL rows, numbered.
vol_bad AS (
    SELECT symbol, min(rn) AS rn_bad FROM {{ source }} WHERE r IS NULL AND rn >= 1 GROUP BY symbol
),
vol_e1 AS (
    SELECT symbol, ts, i, i % {{ e32.L }} AS o, i // {{ e32.L }} AS blk,
        {{ zterm('x', 'i', '(i % ' ~ e32.L ~ ')', e32.n, e32.a, e32.lam, 'seed_r2') }} AS z{{ ', seed_r2' if seeded }}
    FROM (SELECT symbol, ts,{{ seedcols }} r * r AS x, row_number() OVER w - 1 AS i
          FROM {{ source }} WHERE r IS NOT NULL AND symbol IN (SELECT symbol FROM vol_bad)
          WINDOW w AS (PARTITION BY symbol ORDER BY ts))
),
{%- if not one_block %}
vol_e_carry AS (
    SELECT symbol, blk, lag(b) OVER b AS t1, lag(b, 2) OVER b AS t2
    FROM (SELECT symbol, blk, sum(z) AS b FROM vol_e1 GROUP BY symbol, blk)
    WINDOW b AS (PARTITION BY symbol ORDER BY blk)
),
{%- endif %}
vol_e AS (
    SELECT symbol, ts, CASE WHEN {{ gate('i >= ' ~ (e32.n - 1), 'seed_r2') }} THEN {{ fvalue('s', 'o', 't1', 't2', e32.lam, e32.L) }} END AS ema_r2
    FROM (SELECT symbol, ts, i, o, blk,{{ ' seed_r2,' if seeded }} sum(z) OVER w AS s
          FROM vol_e1 WINDOW w AS (PARTITION BY symbol ORDER BY ts {{ inblock('o') }}))
{%- if not one_block %}
    LEFT JOIN vol_e_carry USING (symbol, blk)
{%- endif %}
)
SELECT
    symbol,
    ts,
    {{ sqrt_n }} * sqrt(r_q5 / 4) AS rv_cc_5,
    rv20 AS rv_cc_20,
    {{ sqrt_n }} * sqrt(r_q60 / 59) AS rv_cc_60,
    {{ sqrt_n }} * sqrt(r_q240 / 239) AS rv_cc_240,
    {{ nsqrt(N ~ ' * up_s20 / 20') }} AS rv_up_20,
    {{ nsqrt(N ~ ' * dn_s20 / 20') }} AS rv_down_20,
    -- the fast path is exact up to the first NULL r after row 0, the general path from there on
    {{ nsqrt(N ~ ' * CASE WHEN rn >= rn_bad THEN ema_r2 ELSE ema_r2_fast END') }} AS ewma_vol_32,
    {%- set park = (4 * ln(2.0)) | double %}
    {{ nsqrt(N ~ ' * (hl2_s20 / 20) / ' ~ park) }} AS vol_parkinson_20,
    {{ nsqrt(N ~ ' * (hl2_s60 / 60) / ' ~ park) }} AS vol_parkinson_60,
    {{ nsqrt(N ~ ' * gk_s20 / 20') }} AS vol_gk_20,
    {{ nsqrt(N ~ ' * gk_s60 / 60') }} AS vol_gk_60,
    {{ nsqrt(N ~ ' * rs_s20 / 20') }} AS vol_rs_20,
    {%- for n in (20, 60) %}
    {%- set k = 0.34 / (1.34 + (n + 1) / (n - 1)) %}
    {{ nsqrt(N ~ ' * (ov_q' ~ n ~ ' / ' ~ (n - 1) ~ ' + ' ~ (k | double) ~ ' * co_q' ~ n ~ ' / ' ~ (n - 1) ~ ' + ' ~ ((1 - k) | double) ~ ' * rs_s' ~ n ~ ' / ' ~ n ~ ')') }} AS vol_yz_{{ n }},
    {%- endfor %}
    atr14 AS atr_14,
    100 * (atr14 / NULLIF(c, 0)) AS natr_14,
    {{ pdiv('atr5', 'atr50') }} AS atr_ratio_5_50,
    hl AS hl_range_log,
    {{ pdiv('tr', 'atr14_prev') }} AS range_expansion_14,
    CASE WHEN hh20 > 0 AND ll20 > 0 THEN ln(hh20 / ll20) END AS donchian_width_20,
    {%- set sd = 'sqrt(c_q20 / 20)' %}
    4 * {{ sd }} / NULLIF(c_m20, 0) AS bb_width_20,
    {{ pdiv('c - (c_m20 - 2 * ' ~ sd ~ ')', '4 * ' ~ sd) }} AS bb_pctb_20,
    4 * atr10 / NULLIF(ema20, 0) AS kc_width_20,
    {{ pdiv('c - (ema20 - 2 * atr10)', '4 * atr10') }} AS kc_pos_20,
    {%- set w15 = (1.5 | double) ~ ' * atr10' %}
    -- NULL AND false is false in SQL, so the warm-up NULL is explicit; below the price floor the flag is NULL.
    CASE WHEN c_q20 IS NOT NULL AND ema20 IS NOT NULL AND atr10 >= {{ floor }} * abs(c) THEN
        CAST(c_m20 + 2 * {{ sd }} < ema20 + {{ w15 }} AND c_m20 - 2 * {{ sd }} > ema20 - {{ w15 }} AS INTEGER) END AS squeeze_on,
    vov AS vov_20_60,
    rv20 / NULLIF({{ sqrt_n }} * sqrt(r_q240 / 239), 0) AS vol_ratio_20_240,
    {{ nsqrt(N ~ ' * (hl2_s20 / 20) / ' ~ park) }} / NULLIF(rv20, 0) AS vol_ratio_pk_cc_20,
    -- near-ties within 1e-9 above rv20[t] count as <= (catalog PCTRANK epsilon)
    (rv20_le + coalesce(near, 0)) / 240 AS rv_pctrank_20_240,
    -- RV = SUM_60(r^2) = M2 + 60*mean^2 of r (both terms >= 0; exactly 0 when every r is 0)
    (r_q60 + 60 * r_m60 * r_m60 - {{ (pi / 2) | double }} * bp_s60) / NULLIF(r_q60 + 60 * r_m60 * r_m60, 0) AS rj_bv_60
{%- if with_states %},
    {%- for name, n, a in tr_filters %}
    coalesce({{ name }}, seed_{{ name }}) AS __state__{{ name }},
    {%- endfor %}
    coalesce(lag(ema20) OVER (PARTITION BY symbol ORDER BY ts), seed_ema20) AS __state__ema20,
    coalesce(last_value(CASE WHEN rn >= rn_bad THEN ema_r2 ELSE ema_r2_fast END IGNORE NULLS)
        OVER (PARTITION BY symbol ORDER BY ts ROWS UNBOUNDED PRECEDING), seed_r2) AS __state__r2
{%- endif %}
FROM vol_p3
LEFT JOIN vol_near USING (symbol, rn)
LEFT JOIN vol_e USING (symbol, ts)
LEFT JOIN vol_bad USING (symbol)
