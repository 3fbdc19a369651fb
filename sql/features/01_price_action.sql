{#- features
family: price_action
category: price action
ret_1               | double | n=1      | first=1   | simple return c / c[t-1] - 1 (fraction; NULL when c[t-1] = 0)
logret_1            | double | n=1      | first=1   | log return ln(c / c[t-1]) (NULL unless both closes > 0)
logret_5            | double | n=5      | first=5   | ln(c / c[t-5])
logret_15           | double | n=15     | first=15  | ln(c / c[t-15])
logret_60           | double | n=60     | first=60  | ln(c / c[t-60])
logret_240          | double | n=240    | first=240 | ln(c / c[t-240])
mom_10              | double | n=10     | first=10  | momentum c - c[t-10] (price units)
roc_10              | double | n=10     | first=10  | rate of change 100*(c / c[t-10] - 1) (percent)
rsi_2               | double | n=2      | first=2   | Wilder RSI 100*W2(G) / (W2(G) + W2(L)), G = max(c - c[t-1], 0), L = max(c[t-1] - c, 0) from row 1, seed = mean of rows 1..2; NULL when both averages are 0
rsi_14              | double | n=14     | first=14  | Wilder RSI over 14 bars (TA-Lib RSI), seed = mean of G, L rows 1..14
stoch_k_14_3        | double | n=14,3   | first=15  | slow %K = MEAN_3(fast %K), fast %K = 100*(c - LL_14) / (HH_14 - LL_14) (0..100; a flat 14-bar window makes the 3 means over it NULL)
stoch_d_14_3_3      | double | n=14,3,3 | first=17  | slow %D = MEAN_3(stoch_k_14_3)
willr_14            | double | n=14     | first=13  | Williams %R -100*(HH_14 - c) / (HH_14 - LL_14) (-100..0)
cci_20              | double | n=20     | first=19  | CCI (tp - MEAN_20(tp)) / (0.015*MAD_20(tp)), tp = (h + l + c) / 3; NULL when MAD_20(tp) < 1e-7*abs(c) (floor on MAD itself)
macd_12_26          | double | n=12,26  | first=25  | MACD line EMA_12(c) - EMA_26(c), SMA-seeded EMAs (price units)
macd_signal_12_26_9 | double | n=9      | first=33  | EMA_9 of the MACD line, seeded with the mean of its rows 25..33 (price units)
macd_hist_12_26_9   | double | n=9      | first=33  | macd_12_26 - macd_signal_12_26_9 (price units)
ppo_12_26           | double | n=12,26  | first=25  | 100*(EMA_12(c) - EMA_26(c)) / EMA_26(c) (percent)
trix_15             | double | n=15     | first=43  | 100*(E / E[t-1] - 1), E = EMA_15(EMA_15(EMA_15(c))), each SMA-seeded (first E at row 42); percent per bar
aroon_up_25         | double | n=25     | first=25  | 100*(25 - bars since the most recent max of h over the 26 rows t-25..t) / 25 (0..100)
aroon_down_25       | double | n=25     | first=25  | 100*(25 - bars since the most recent min of l over the 26 rows t-25..t) / 25 (0..100)
zscore_close_20     | double | n=20     | first=19  | (c - MEAN_20(c)) / STD_20(c), sample sd; NULL when STD_20(c) < 1e-7*abs(c) (price floor)
dist_sma_20_atr     | double | n=20,14  | first=19  | (c - MEAN_20(c)) / atr_14, atr_14 = WILDER_14(TR) seeded on TR rows 1..14 (TA-Lib ATR); NULL when atr_14 < 1e-7*abs(c)
dist_ema_50_atr     | double | n=50,14  | first=49  | (c - EMA_50(c)) / atr_14; NULL when atr_14 < 1e-7*abs(c)
ret_sigma_20        | double | n=20     | first=21  | r / STD_20(r)[t-1] (sample sd of r over rows t-20..t-1; a flat window gives sd 0 and NULL; no price floor)
clv                 | double | n=1      | first=0   | close location value ((c - l) - (h - c)) / (h - l) (-1..1; NULL on zero-range bars)
body_ratio          | double | n=1      | first=0   | signed body (c - o) / (h - l) (NULL on zero-range bars)
upper_wick_ratio    | double | n=1      | first=0   | (h - max(o, c)) / (h - l) (NULL on zero-range bars)
lower_wick_ratio    | double | n=1      | first=0   | (min(o, c) - l) / (h - l) (NULL on zero-range bars)
gap_open            | double | n=1      | first=1   | ln(o / c[t-1]) (log units; at a session's first bar the halt/weekend gap)
-#}
{#-
  Price action (catalog #1-#30). Readings where the catalog leaves room, shared with the oracle
  tests/features_oracle/price_action.py: G and L are NULL at t = 0, so RSI seeds on rows 1..n; cci_20's floor
  tests MAD_20(tp) itself; E[t-1] of trix_15 is the previous row's E; ret_sigma_20 is a plain guarded division (a
  return dispersion is not a price); aroon needs all 26 rows; stoch means propagate a NULL fast %K.

  Window statistics. OHLC are never NULL (the loaders reject such bars), so a full window is "the lags exist".
  Every window statistic is built from LAG columns of one shared window, because DuckDB evaluates a LAG far
  cheaper than a min/max/list window aggregate (segment trees): a missing or NULL input makes a sum NULL (NULL
  rule 1 by itself); variances are shifted sums of deviations from a member of the window (c[t] for c, r[t-1]
  for r): no cancellation, and the sum of squares is exactly 0 on a flat window (rule 3); the 14/26-bar extremes
  share their pieces (max over rows t-13..t-4, suffix and prefix maxima); CCI runs on 3*tp (scale-free ratio).

  Recursive filters (catalog section 4) run on the same lags, in O(n), exactly:
  * LTI part. Each filter is a linear time-invariant filter of c (RSI: of dc = c - c[t-1] and |dc|, since
    W(G) = (W(dc) + W(|dc|)) / 2 and W(G) + W(L) = W(|dc|); ATR: of TR) started from 0 at row 0. The MACD signal
    (EMA9 of EMA12 - EMA26) and the TRIX cascade (EMA15 three times) are LTI filters of c as well, with
    closed-form kernels. Rows are cut into blocks of K = 16 rows; inside a block the filter is an inner product
    of the padded in-block input list (lags of this block, 0 for earlier rows) with the kernel, plus terms in
    the filter states at the end of the previous block. The block-end states follow a recursion over the
    blocks (n/16 rows), solved as a truncated sum of M block inputs with b^(16 M) < e^-40, one row per block.
  * Zero inputs. |dc| and TR are exactly 0 for long stretches in a stale feed: the truncated sum would then drop
    the whole state, which the recursion only decays (RSI must stay defined in a flat block). Those states are
    anchored on the last block whose input was non-zero: state_k = state_k0 * b^(16 (k - k0)).
  * Seeds. The SMA seed of the catalog (TA-Lib) differs from the LTI filter by a solution of the homogeneous
    recursion: EMA_t = K_t + b^(t-s)*d for t >= s, d = SMA - K_s; for the cascades the corrections are
    b^(t-s)*(polynomial in t) with constants d1, d2, d3 (TRIX) or a sum of b9/b12/b26 powers (signal). The d
    constants come from the first 50 rows of each symbol (whatever finite input row 0 gets, d absorbs it); they
    are folded into the block states ("formal" seeded values at row 16k - 1), so every row uses one formula.
    Checked against the oracle's recursion, TA-Lib-seeded, to ~1e-14.
  * TRIX needs E[t-1]: E_t = a*E2_t + b*E_{t-1} (t > 42) gives E/E[t-1] - 1 = a*(E2 - E) / (E - a*E2).
-#}
{%- set floor = 1e-7 | double %}
{%- set K = 16 %}
{#- A DOUBLE literal (scientific notation is DOUBLE in DuckDB; 17 significant digits round-trip). -#}
{%- macro num(x) -%}{{ '%.16e' | format(x) }}{%- endmacro %}
{#- Single-stage filters: id, period n, first non-NULL input row, alpha, input, anchored block state. -#}
{%- set SINGLE = [
    {'id': 'e12', 'n': 12, 'first': 0, 'alpha': 2.0 / 13, 'x': 'lc', 'row': 'c', 'anchor': false},
    {'id': 'e26', 'n': 26, 'first': 0, 'alpha': 2.0 / 27, 'x': 'lc', 'row': 'c', 'anchor': false},
    {'id': 'e50', 'n': 50, 'first': 0, 'alpha': 2.0 / 51, 'x': 'lc', 'row': 'c', 'anchor': false},
    {'id': 'wd2', 'n': 2, 'first': 1, 'alpha': 1.0 / 2, 'x': 'ldc', 'row': 'dc_0', 'anchor': 'wa2'},
    {'id': 'wa2', 'n': 2, 'first': 1, 'alpha': 1.0 / 2, 'x': 'lac', 'row': 'ac_0', 'anchor': 'wa2'},
    {'id': 'wd14', 'n': 14, 'first': 1, 'alpha': 1.0 / 14, 'x': 'ldc', 'row': 'dc_0', 'anchor': 'wa14'},
    {'id': 'wa14', 'n': 14, 'first': 1, 'alpha': 1.0 / 14, 'x': 'lac', 'row': 'ac_0', 'anchor': 'wa14'},
    {'id': 'atr', 'n': 14, 'first': 1, 'alpha': 1.0 / 14, 'x': 'ltr', 'row': 'tr', 'anchor': 'atr'},
] %}
{%- set ANCHORS = SINGLE | map(attribute='anchor') | select | unique | list %}
{#- TRIX cascade (EMA15 three times, seeds at rows 14, 28, 42) and the MACD signal (EMA9, seed at row 33). -#}
{%- set a = 2.0 / 16 %}{%- set b = 1 - a %}{%- set lam = -ln(b) %}
{%- set a9 = 2.0 / 10 %}{%- set b9 = 1 - a9 %}{%- set lam9 = -ln(b9) %}
{%- set a12 = 2.0 / 13 %}{%- set b12 = 1 - a12 %}{%- set lam12 = -ln(b12) %}
{%- set a26 = 2.0 / 27 %}{%- set b26 = 1 - a26 %}{%- set lam26 = -ln(b26) %}
{#- Terms M of the block-state sums: b^(K M) < e^-40. -#}
{%- macro nterms(beta) -%}{{ [1, (40.0 / (-ln(beta) * K)) | round(0, 'ceil') | int] | max }}{%- endmacro %}
{#- Column of input x at lag j (j = 0: the current row). -#}
{%- macro xl(x, j) -%}
{%- if x in ('c', 'h', 'l', 'r') -%}{{ x if j == 0 else x ~ j }}{%- else -%}{{ x }}_{{ j }}{%- endif -%}
{%- endmacro %}
{#- A kernel as a DOUBLE list literal, and the single-stage EMA/Wilder kernel a*b^j. -#}
{%- macro klist(values) -%}[{% for v in values %}{{ ', ' if not loop.first else '' }}{{ num(v) }}{% endfor %}]{%- endmacro %}
{%- macro kernel_list(f) -%}
{%- set ks = namespace(v=[]) -%}
{%- for j in range(K) %}{%- set ks.v = ks.v + [f.alpha * (1 - f.alpha) ** j] %}{%- endfor -%}
{{ klist(ks.v) }}
{%- endmacro %}
{#- b^e as SQL (e: SQL expression). -#}
{%- macro pw(lmb, e) -%}exp({{ num(-lmb) }} * ({{ e }})){%- endmacro %}
{#- kappa_n = (b9^(n+1) - bx^(n+1)) / (b9 - bx) = sum_i b9^i bx^(n-i) (n: SQL expression). -#}
{%- macro kappa(lmbx, bx, e) -%}
(({{ pw(lam9, '(' ~ e ~ ') + 1') }} - {{ pw(lmbx, '(' ~ e ~ ') + 1') }}) * {{ num(1.0 / (b9 - bx)) }})
{%- endmacro %}
{#- Running block sums (`running_rows`: the most rows per symbol the statement will read; the live path's per-bar
    statements, warehouse/features/live.py). A block-state sum of M lags costs one window function per lag, a fixed ~0.1 ms each however
    few the rows; over a bounded tail the same sum is one running sum, sum over j <= k - shift of
    B^(k - shift - j) * col_j (B = beta^K, lB = -ln B): exp(-lB*(k - shift)) * SUM(col_j * exp(lB*j)) over the rows
    up to k - shift. Chosen only where lB*(blocks + 1) <= 600 for the bound's number of blocks, so no weight
    overflows (e^600 times a price stays far below the largest double). The exponents reach ~600, where one
    rounding of lB*k would cost ~1e-13 of every weight (and MACD, PPO and TRIX, differences of filters, magnify
    it): lB is split into hi (on a 2^-32 grid, so hi*k is exact) and lo = lB - hi (|lo*k| < 1e-7), and each weight
    is exp(hi*k)*exp(lo*k), within a few ulps. It differs from the M-term sum by the terms the truncation drops
    (b^(K M) < e^-40 of the state). -#}
{%- set running_blocks = (running_rows // K + 2) if (running_rows is defined and running_rows) else 0 %}
{#- Truncated block-state sum: sum over m < M of beta^(K m) * lag(col, m + shift) (or its running form). -#}
{%- macro bsum(col, beta, shift=0) -%}
{%- set M = nterms(beta) | int -%}
{%- set lb = -ln(beta) * K -%}
{%- if running_blocks and lb * running_blocks <= 600 -%}
{%- set hi = (lb * 2 ** 32) | round / 2 ** 32 %}{% set lo = lb - hi -%}
exp({{ num(-hi) }} * (k - {{ shift }})) * exp({{ num(-lo) }} * (k - {{ shift }}))
            * coalesce(sum({{ col }} * (exp({{ num(hi) }} * k) * exp({{ num(lo) }} * k))) OVER rs{{ shift }}, 0)
{%- else -%}
{%- for m in range(M) %}{{ ' + ' if m else '' }}{% if m == 0 and shift == 0 %}{{ col }}{% else %}{{ num(beta ** (K * m)) }} * lag({{ col }}, {{ m + shift }}, 0) OVER sw{% endif %}{% endfor %}
{%- endif -%}
{%- endmacro %}
{#- The window clauses of the block-state sums. -#}
{%- macro swin(extra='') -%}
WINDOW sw AS (PARTITION BY symbol ORDER BY k){{ extra }}
{%- if running_blocks %}, rs0 AS (PARTITION BY symbol ORDER BY k ROWS UNBOUNDED PRECEDING),
        rs1 AS (PARTITION BY symbol ORDER BY k ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING){% endif %}
{%- endmacro %}
{#- Kernels (K coefficients) of the in-block FIRs of the LTI filters of c. -#}
{%- set ns = namespace(k1=[], k2=[], k3=[], sig=[]) %}
{%- for j in range(K) %}
{%- set ns.k1 = ns.k1 + [a * b ** j] %}
{%- set ns.k2 = ns.k2 + [a ** 2 * (j + 1) * b ** j] %}
{%- set ns.k3 = ns.k3 + [a ** 3 * (j + 1) * (j + 2) / 2 * b ** j] %}
{%- set ns.sig = ns.sig + [a9 * (a12 * (b9 ** (j + 1) - b12 ** (j + 1)) / (b9 - b12) - a26 * (b9 ** (j + 1) - b26 ** (j + 1)) / (b9 - b26))] %}
{%- endfor %}
{#- a ÷p b: NULL when b = 0, either side NULL, or |b| below the price floor of the current close. -#}
{%- macro pdiv(p, q) -%}
CASE WHEN abs({{ q }}) >= {{ floor }} * abs(c) AND {{ q }} <> 0 THEN ({{ p }}) / ({{ q }}) END
{%- endmacro %}
{#- Row values of the filters from the block states of prefix `s` (pure LTI states in the first rows, formal
    seeded states for the output). -#}
{#- Carried filter state (the live path, warehouse/features/live.py; only with `filter_seeds`, left undefined the
    render is the full build's). The source then has a column seed_<id> per filter of STATES, constant per symbol:
    the filter's value before the tail's first input (the value at the row before the tail for the filters of c,
    at the tail's row 0 for those of dc and TR, whose first tail input is row 1); all NULL: no state, the SMA
    seeds as in the full build. A seeded symbol's formal values are the LTI part plus the homogeneous response to
    the seeds (no SMA correction): with x = 16k - 1, b^(x+1)*S for a filter of c, b^x*S for dc and TR; the TRIX
    cascade b^(x+1)*(S3 + a(x+1)S2 + a^2(x+1)(x+2)/2 S1); the MACD signal b9^(x+1)*Ssig plus the responses of
    its inputs' seeds, a9*bx*kappa_x*Sx. The family then also outputs __state__<id>: the seed a tail whose first
    row is this row needs (the value at the previous row for the filters of c, at this row for dc and TR). -#}
{%- set seeded = filter_seeds is defined and filter_seeds %}
{#- `filter_states` (with filter_seeds): output the states too (read at a load and a trim, not per bar). -#}
{%- set with_states = seeded and filter_states is defined and filter_states %}
{#- Cascade stages: id, seed row (the catalog's first value). -#}
{%- set CASCADE = [('k1', 14), ('k2', 28), ('k3', 42), ('sig', 33)] %}
{#- The seed columns, carried from the source to pa_a (" seed_e12, ..., seed_sig,"; empty without seeds). -#}
{%- set seedcols = namespace(v='') %}
{%- if seeded %}{% for id in SINGLE | map(attribute='id') | list + CASCADE | map('first') | list %}{% set seedcols.v = seedcols.v ~ ' seed_' ~ id ~ ',' %}{% endfor %}{% endif %}
{%- set seedcols = seedcols.v %}
{%- macro gate(cond) -%}{{ cond }}{{ ' OR seeded' if seeded }}{%- endmacro %}
{%- macro row_values(s) -%}
{%- for f in SINGLE %}
        p_{{ f.id }} + {{ pw(-ln(1 - f.alpha), 'ob + 1') }} * {{ s }}.{{ f.id }} AS {{ f.id }},
{%- endfor %}
        p_k2 + {{ pw(lam, 'ob + 1') }} * ({{ s }}.k2 + {{ num(a) }} * (ob + 1) * {{ s }}.k1) AS k2,
        p_k3 + {{ pw(lam, 'ob + 1') }} * ({{ s }}.k3 + {{ num(a) }} * (ob + 1) * {{ s }}.k2 + {{ num(a * a / 2) }} * (ob + 1) * (ob + 2) * {{ s }}.k1) AS k3,
        p_sig + {{ pw(lam9, 'ob + 1') }} * {{ s }}.sig + {{ num(a9 * b12) }} * {{ kappa(lam12, b12, 'ob') }} * {{ s }}.e12
            - {{ num(a9 * b26) }} * {{ kappa(lam26, b26, 'ob') }} * {{ s }}.e26 AS sig
{%- endmacro %}
WITH
pa_lag AS (
    SELECT
        symbol, ts,{{ seedcols }} rn, rn // {{ K }} AS sb, rn % {{ K }} AS ob, o, h, l, c, c1, r, coalesce(tr, 0) AS tr
{%- for j in range(2, 20) %}, lag(c, {{ j }}) OVER w AS c{{ j }}{% endfor %}, lag(c, 60) OVER w AS c60, lag(c, 240) OVER w AS c240
{%- for j in range(1, 26) %}, lag(h, {{ j }}) OVER w AS h{{ j }}{% endfor %}
{%- for j in range(1, 26) %}, lag(l, {{ j }}) OVER w AS l{{ j }}{% endfor %}
{%- for j in range(1, 21) %}, lag(r, {{ j }}) OVER w AS r{{ j }}{% endfor %}
{%- for j in range(1, K) %}, lag(coalesce(tr, 0), {{ j }}) OVER w AS tr_{{ j }}{% endfor %}
    FROM {{ source }}
    WINDOW w AS (PARTITION BY symbol ORDER BY ts)
),
-- Per-lag inputs: dc_j = c[t-j] - c[t-j-1] (0 at row 0: the seed corrections absorb row 0), 3*tp at t-j,
-- deviations from the current close / from r[t-1] (shifted sums: exact 0 on a flat window, no cancellation),
-- and the 14/26-bar extremes from shared pieces (max over rows t-13..t-4, suffix and prefix maxima).
pa_in AS (
    SELECT symbol, ts,{{ seedcols }} rn, sb, ob, o, h, l, c, r, c60, c240, tr
{%- for j in range(1, K) %}, tr_{{ j }}{% endfor %}
{%- for j in range(1, 16) %}, {{ xl('c', j) }}{% endfor %}
{%- for j in range(1, 26) %}, h{{ j }}, l{{ j }}{% endfor %}
{%- for j in range(K) %},
        coalesce({{ xl('c', j) }} - {{ xl('c', j + 1) }}, 0) AS dc_{{ j }}
{%- endfor %}
{%- for j in range(20) %},
        {{ xl('h', j) }} + {{ xl('l', j) }} + {{ xl('c', j) }} AS tp3_{{ j }}
{%- endfor %}
{%- for x, f in (('h', 'greatest'), ('l', 'least')) %},
        {{ f }}({% for j in range(4, 14) %}{{ ', ' if j > 4 else '' }}{{ x }}{{ j }}{% endfor %}) AS {{ x }}core,
        {{ f }}({{ x }}2, {{ x }}3) AS {{ x }}s2,
        {{ f }}({{ x }}14, {{ x }}15) AS {{ x }}p15
{%- endfor %},
        ({% for j in range(1, 20) %}{{ ' + ' if j > 1 else '' }}({{ xl('c', j) }} - c){% endfor %}) AS cs,
        ({% for j in range(1, 20) %}{{ ' + ' if j > 1 else '' }}({{ xl('c', j) }} - c) * ({{ xl('c', j) }} - c){% endfor %}) AS css,
        ({% for j in range(2, 21) %}{{ ' + ' if j > 2 else '' }}({{ xl('r', j) }} - r1){% endfor %}) AS rs,
        ({% for j in range(2, 21) %}{{ ' + ' if j > 2 else '' }}({{ xl('r', j) }} - r1) * ({{ xl('r', j) }} - r1){% endfor %}) AS rss
    FROM pa_lag
),
pa_ex AS (
    SELECT *,
{%- for x, f in (('h', 'greatest'), ('l', 'least')) %}
        {{ f }}({{ x }}1, {{ x }}s2) AS {{ x }}s1,
        {{ f }}({{ x }}p15, {{ x }}16) AS {{ x }}p16,
{%- endfor %}
        ({% for j in range(20) %}{{ ' + ' if j else '' }}tp3_{{ j }}{% endfor %}) / 20 AS tp3mean
    FROM pa_in
),
pa_ex2 AS (
    SELECT *,
{%- for x, f in (('h', 'greatest'), ('l', 'least')) %}
        {{ f }}({{ x }}, {{ x }}s1) AS {{ x }}s0,
        {{ f }}({{ x }}p16, {{ x }}17) AS {{ x }}p17,
{%- endfor %}
        ({% for j in range(20) %}{{ ' + ' if j else '' }}abs(tp3_{{ j }} - tp3mean){% endfor %}) / 20 AS mad3
    FROM pa_ex
),
pa_mid AS (
    SELECT symbol, ts,{{ seedcols }} rn, sb, ob, o, h, l, c, c1, r, c5, c10, c15, c60, c240, cs, css, rs, rss, tp3_0, tp3mean, mad3,
        dc_0, abs(dc_0) AS ac_0, tr,
        -- Padded in-block input lists (entries of earlier blocks are 0): the FIRs are inner products with them.
        list_value(c{% for j in range(1, K) %}, CASE WHEN ob >= {{ j }} THEN {{ xl('c', j) }} ELSE 0 END{% endfor %}) AS lc,
        list_value(dc_0{% for j in range(1, K) %}, CASE WHEN ob >= {{ j }} THEN dc_{{ j }} ELSE 0 END{% endfor %}) AS ldc,
        list_value(abs(dc_0){% for j in range(1, K) %}, CASE WHEN ob >= {{ j }} THEN abs(dc_{{ j }}) ELSE 0 END{% endfor %}) AS lac,
        list_value(tr{% for j in range(1, K) %}, CASE WHEN ob >= {{ j }} THEN tr_{{ j }} ELSE 0 END{% endfor %}) AS ltr
{%- for x, f in (('h', 'greatest'), ('l', 'least')) %},
        CASE WHEN rn >= 13 THEN {{ f }}({{ x }}core, {{ x }}s0) END AS {{ x }}{{ x }}14_0,
        CASE WHEN rn >= 14 THEN {{ f }}({{ x }}core, {{ x }}s1, {{ x }}14) END AS {{ x }}{{ x }}14_1,
        CASE WHEN rn >= 15 THEN {{ f }}({{ x }}core, {{ x }}s2, {{ x }}p15) END AS {{ x }}{{ x }}14_2,
        CASE WHEN rn >= 16 THEN {{ f }}({{ x }}core, {{ x }}3, {{ x }}p16) END AS {{ x }}{{ x }}14_3,
        CASE WHEN rn >= 17 THEN {{ f }}({{ x }}core, {{ x }}p17) END AS {{ x }}{{ x }}14_4,
        CASE WHEN rn >= 25 THEN {{ f }}({{ x }}core, {{ x }}s0, {{ x }}p17{% for j in range(18, 26) %}, {{ x }}{{ j }}{% endfor %}) END AS {{ x }}{{ x }}26
{%- endfor %}
{%- for x in ('h', 'l') %}
{%- for j in range(1, 26) %}, {{ xl(x, j) }}{% endfor %}
{%- endfor %}
{%- for j in range(2, 5) %}, {{ xl('c', j) }}{% endfor %}
    FROM pa_ex2
),
pa_mid2 AS (
    SELECT symbol, ts,{{ seedcols }} rn, sb, ob, o, h, l, c, c1, r, c5, c10, c15, c60, c240, cs, css, rs, rss, tp3_0, tp3mean, mad3,
        dc_0, ac_0, tr, lc, ldc, lac, ltr, hh14_0, ll14_0
{%- for j in range(5) %},
        100 * ({{ xl('c', j) }} - ll14_{{ j }}) / NULLIF(hh14_{{ j }} - ll14_{{ j }}, 0) AS fk_{{ j }}
{%- endfor %},
        -- Bars since the most recent max of h / min of l over the 26 rows (ties: the most recent, TA-Lib AROON).
        CASE{% for j in range(26) %} WHEN {{ xl('h', j) }} = hh26 THEN {{ j }}{% endfor %} END AS since_hh,
        CASE{% for j in range(26) %} WHEN {{ xl('l', j) }} = ll26 THEN {{ j }}{% endfor %} END AS since_ll
    FROM pa_mid
),
-- Level A: every non-recursive feature, and the in-block FIR parts p_* of the filters.
pa_a AS (
    SELECT
        symbol, ts,{{ seedcols }} rn, sb, ob, c, dc_0, ac_0, tr,
        c + cs / 20 AS sma20,
        c / NULLIF(c1, 0) - 1 AS ret_1,
        r AS logret_1,
{%- for k in (5, 15, 60, 240) %}
        CASE WHEN c > 0 AND {{ xl('c', k) }} > 0 THEN ln(c / {{ xl('c', k) }}) END AS logret_{{ k }},
{%- endfor %}
        c - c10 AS mom_10,
        100 * (c / NULLIF(c10, 0) - 1) AS roc_10,
        (fk_0 + fk_1 + fk_2) / 3 AS stoch_k_14_3,
        ((fk_0 + fk_1 + fk_2) / 3 + (fk_1 + fk_2 + fk_3) / 3 + (fk_2 + fk_3 + fk_4) / 3) / 3 AS stoch_d_14_3_3,
        -100 * (hh14_0 - c) / NULLIF(hh14_0 - ll14_0, 0) AS willr_14,
        -- CCI on 3*tp (scale-free ratio; the floor on MAD_20(tp) = mad3 / 3).
        CASE WHEN mad3 >= {{ num(3e-7) }} * abs(c) AND mad3 <> 0 THEN (tp3_0 - tp3mean) / ({{ num(0.015) }} * mad3) END AS cci_20,
        CASE WHEN rn >= 25 THEN 100 * (25 - since_hh) / 25 END AS aroon_up_25,
        CASE WHEN rn >= 25 THEN 100 * (25 - since_ll) / 25 END AS aroon_down_25,
        -- c - MEAN_20(c) = -cs/20; VAR_20(c) = (css - cs^2/20) / 19 on deviations from c (no cancellation).
        {{ pdiv('-cs / 20', 'sqrt(greatest(css - cs * cs / 20, 0) / 19)') }} AS zscore_close_20,
        CASE WHEN rss <> 0 THEN r / NULLIF(sqrt(greatest(rss - rs * rs / 20, 0) / 19), 0) END AS ret_sigma_20,
        ((c - l) - (h - c)) / NULLIF(h - l, 0) AS clv,
        (c - o) / NULLIF(h - l, 0) AS body_ratio,
        (h - greatest(o, c)) / NULLIF(h - l, 0) AS upper_wick_ratio,
        (least(o, c) - l) / NULLIF(h - l, 0) AS lower_wick_ratio,
        CASE WHEN o > 0 AND c1 > 0 THEN ln(o / c1) END AS gap_open,
{%- for f in SINGLE %}
        list_inner_product({{ f.x }}, {{ kernel_list(f) }}) AS p_{{ f.id }},
{%- endfor %}
        list_inner_product(lc, {{ klist(ns.k1) }}) AS p_k1,
        list_inner_product(lc, {{ klist(ns.k2) }}) AS p_k2,
        list_inner_product(lc, {{ klist(ns.k3) }}) AS p_k3,
        list_inner_product(lc, {{ klist(ns.sig) }}) AS p_sig
    FROM pa_mid2
),
-- One row per block k: the in-block part at the end of block k - 1 (k = 0: nothing before).
pa_u AS (
    SELECT symbol, CASE WHEN ob = {{ K - 1 }} THEN sb + 1 ELSE 0 END AS k
{%- for id in SINGLE | map(attribute='id') | list + ['k1', 'k2', 'k3', 'sig'] %},
        CASE WHEN ob = {{ K - 1 }} THEN p_{{ id }} ELSE 0 END AS u_{{ id }}
{%- endfor %}
    FROM pa_a
    WHERE ob = {{ K - 1 }} OR rn = 0
),
-- LTI states at the start of block k (the value at row 16k - 1) of the filters fed by the inputs directly.
pa_s1 AS (
    SELECT symbol, k, u_k2, u_k3, u_sig
{%- for f in SINGLE %},
        {{ bsum('u_' ~ f.id, 1 - f.alpha) }} AS {{ f.id }}
{%- endfor %}
{%- for g in ANCHORS %},
        CASE WHEN u_{{ g }} <> 0 THEN k END AS nz_{{ g }}
{%- endfor %},
        {{ bsum('u_k1', b) }} AS k1
    FROM pa_u
    {{ swin() }}
),
-- Second stage: the double EMA15 and the MACD signal (fed by the states of their input filters at the previous
-- block start); k0 = the last block start whose previous block had a non-zero |dc| (TR) input.
pa_s2 AS (
    SELECT symbol, k, u_k3, k1{% for f in SINGLE %}, {{ f.id }}{% endfor %}
{%- for g in ANCHORS %},
        max(nz_{{ g }}) OVER sa AS k0_{{ g }}
{%- endfor %},
        {{ bsum('u_k2', b) }} + {{ num(a * K * b ** K) }} * ({{ bsum('k1', b, 1) }}) AS k2,
        {{ bsum('u_sig', b9) }}
            + {{ num(a9 * b12 * (b9 ** K - b12 ** K) / (b9 - b12)) }} * ({{ bsum('e12', b9, 1) }})
            - {{ num(a9 * b26 * (b9 ** K - b26 ** K) / (b9 - b26)) }} * ({{ bsum('e26', b9, 1) }}) AS sig
    FROM pa_s1
    {{ swin(', sa AS (PARTITION BY symbol ORDER BY k ROWS UNBOUNDED PRECEDING)') }}
),
-- Anchored states: the (exact) truncated state at k0, decayed to k.
pa_s2a AS (
    SELECT s.symbol, s.k, s.u_k3, s.k1, s.k2, s.sig
{%- for f in SINGLE %},
{%- if f.anchor %}
        coalesce(z_{{ f.anchor }}.{{ f.id }} * {{ pw(-ln(1 - f.alpha) * K, 's.k - s.k0_' ~ f.anchor) }}, 0) AS {{ f.id }}
{%- else %}
        s.{{ f.id }}
{%- endif %}
{%- endfor %}
    FROM pa_s2 AS s
{%- for g in ANCHORS %}
    LEFT JOIN pa_s2 AS z_{{ g }} ON z_{{ g }}.symbol = s.symbol AND z_{{ g }}.k = s.k0_{{ g }}
{%- endfor %}
),
pa_s3 AS (
    SELECT symbol, k, k1, k2{% for f in SINGLE %}, {{ f.id }}{% endfor %}, sig,
        {{ bsum('u_k3', b) }} + {{ num(a * K * b ** K) }} * ({{ bsum('k2', b, 1) }})
            + {{ num(a * a * K * (K + 1) / 2 * b ** K) }} * ({{ bsum('k1', b, 1) }}) AS k3
    FROM pa_s2a
    {{ swin() }}
),
-- Seed corrections d = (catalog seed) - (LTI value at the seed row), per symbol, from its first 50 rows.
pa_early AS (
    SELECT a.symbol, a.rn, a.c, a.dc_0, a.ac_0, a.tr,
        p_k1 + {{ pw(lam, 'ob + 1') }} * s.k1 AS k1,
{{- row_values('s') }}
    FROM pa_a AS a JOIN pa_s3 AS s ON s.symbol = a.symbol AND s.k = a.sb
    WHERE a.rn < 50
),
pa_d0 AS (
    SELECT symbol
{%- for f in SINGLE %}
{%- set s = f.first + f.n - 1 %},
        avg({{ f.row }}) FILTER (WHERE rn BETWEEN {{ f.first }} AND {{ s }}) - max({{ f.id }}) FILTER (WHERE rn = {{ s }}) AS d_{{ f.id }}
{%- endfor %},
        avg(c) FILTER (WHERE rn <= 14) - max(k1) FILTER (WHERE rn = 14) AS d1,
        avg(k1) FILTER (WHERE rn BETWEEN 14 AND 28) AS mk1,
        max(k2) FILTER (WHERE rn = 28) AS k2s,
        avg(k2) FILTER (WHERE rn BETWEEN 28 AND 42) AS mk2,
        max(k3) FILTER (WHERE rn = 42) AS k3s,
        avg(e12 - e26) FILTER (WHERE rn BETWEEN 25 AND 33) AS mmacd,
        max(sig) FILTER (WHERE rn = 33) AS sigs
    FROM pa_early
    GROUP BY symbol
),
{%- set g15 = namespace(v=0.0, h=0.0, a12=0.0, a26=0.0) %}
{%- for i in range(15) %}{% set g15.v = g15.v + b ** i / 15 %}{% set g15.h = g15.h + i * b ** (i + 14) / 15 %}{% endfor %}
{%- for t in range(25, 34) %}{% set g15.a12 = g15.a12 + b12 ** (t - 11) / 9 %}{% set g15.a26 = g15.a26 + b26 ** (t - 25) / 9 %}{% endfor %}
pa_d1 AS (
    SELECT *, mk1 + d1 * {{ num(g15.v) }} - k2s AS d2
    FROM pa_d0
),
pa_d AS (
    SELECT *,
        mk2 + d2 * {{ num(g15.v) }} + d1 * {{ num(a * g15.h) }} - k3s AS d3,
        mmacd + d_e12 * {{ num(g15.a12) }} - d_e26 * {{ num(g15.a26) }} - sigs AS ds
    FROM pa_d1
),
-- Formal seeded filter values at row x = 16k - 1 (LTI state + seed correction), one row per block.
{%- if seeded %}
pa_seed AS (
    SELECT symbol,{{ seedcols[:-1] }} FROM pa_a WHERE rn = 0
),
{%- endif %}
pa_f AS (
    SELECT s.symbol, s.k,
{%- for f in SINGLE %}
        {% if seeded %}CASE WHEN q.seed_e12 IS NOT NULL THEN s.{{ f.id }} + {{ pw(-ln(1 - f.alpha), 's.k * ' ~ K ~ ' - ' ~ f.first) }} * q.seed_{{ f.id }} ELSE {% endif -%}
        s.{{ f.id }} + {{ pw(-ln(1 - f.alpha), 's.k * ' ~ K ~ ' - 1 - ' ~ (f.first + f.n - 1)) }} * d.d_{{ f.id }}{{ ' END' if seeded }} AS {{ f.id }},
{%- endfor %}
{%- if seeded %}
        CASE WHEN q.seed_e12 IS NOT NULL THEN s.k1 + {{ pw(lam, 's.k * ' ~ K) }} * q.seed_k1 ELSE
{%- endif %}
        s.k1 + {{ pw(lam, 's.k * ' ~ K ~ ' - 15') }} * d.d1{{ ' END' if seeded }} AS k1,
{%- if seeded %}
        CASE WHEN q.seed_e12 IS NOT NULL THEN s.k2 + {{ pw(lam, 's.k * ' ~ K) }} * (q.seed_k2 + {{ num(a) }} * (s.k * {{ K }}) * q.seed_k1) ELSE
{%- endif %}
        s.k2 + {{ pw(lam, 's.k * ' ~ K ~ ' - 29') }} * d.d2 + {{ num(a) }} * (s.k * {{ K }} - 29) * {{ pw(lam, 's.k * ' ~ K ~ ' - 15') }} * d.d1{{ ' END' if seeded }} AS k2,
{%- if seeded %}
        CASE WHEN q.seed_e12 IS NOT NULL THEN s.k3 + {{ pw(lam, 's.k * ' ~ K) }} * (q.seed_k3 + {{ num(a) }} * (s.k * {{ K }}) * q.seed_k2
            + {{ num(a * a / 2) }} * (s.k * {{ K }}) * (s.k * {{ K }} + 1) * q.seed_k1) ELSE
{%- endif %}
        s.k3 + {{ pw(lam, 's.k * ' ~ K ~ ' - 43') }} * d.d3 + {{ num(a) }} * (s.k * {{ K }} - 43) * {{ pw(lam, 's.k * ' ~ K ~ ' - 29') }} * d.d2
            + {{ num(a * a / 2) }} * ((s.k * {{ K }} - 29) * (s.k * {{ K }} - 28) - 210) * {{ pw(lam, 's.k * ' ~ K ~ ' - 15') }} * d.d1{{ ' END' if seeded }} AS k3,
{%- if seeded %}
        CASE WHEN q.seed_e12 IS NOT NULL THEN s.sig + {{ pw(lam9, 's.k * ' ~ K) }} * q.seed_sig
            + {{ num(a9 * b12) }} * {{ kappa(lam12, b12, 's.k * ' ~ K ~ ' - 1') }} * q.seed_e12
            - {{ num(a9 * b26) }} * {{ kappa(lam26, b26, 's.k * ' ~ K ~ ' - 1') }} * q.seed_e26 ELSE
{%- endif %}
        s.sig + {{ pw(lam9, 's.k * ' ~ K ~ ' - 34') }} * d.ds
            + {{ num(a9 * b12 ** 23) }} * {{ kappa(lam12, b12, 's.k * ' ~ K ~ ' - 35') }} * d.d_e12
            - {{ num(a9 * b26 ** 9) }} * {{ kappa(lam26, b26, 's.k * ' ~ K ~ ' - 35') }} * d.d_e26{{ ' END' if seeded }} AS sig
{%- if seeded %},
        q.seed_e12 IS NOT NULL AS seeded
{%- endif %}
    FROM pa_s3 AS s JOIN pa_d AS d ON d.symbol = s.symbol
{%- if seeded %}
    JOIN pa_seed AS q ON q.symbol = s.symbol
{%- endif %}
),
pa_v AS (
    SELECT a.*,
{{- row_values('f') }}
{%- if seeded %},
        p_k1 + {{ pw(lam, 'ob + 1') }} * f.k1 AS k1,
        f.seeded
{%- endif %}
    FROM pa_a AS a LEFT JOIN pa_f AS f ON f.symbol = a.symbol AND f.k = a.sb
)
{%- set ar = num(a) %}
SELECT
    symbol,
    ts,
    ret_1,
    logret_1,
    logret_5,
    logret_15,
    logret_60,
    logret_240,
    mom_10,
    roc_10,
    -- 100*W(G) / (W(G) + W(L)) with W(G) = (W(dc) + W(|dc|)) / 2 and W(G) + W(L) = W(|dc|).
    CASE WHEN {{ gate('rn >= 2') }} THEN 50 * (wd2 + wa2) / NULLIF(wa2, 0) END AS rsi_2,
    CASE WHEN {{ gate('rn >= 14') }} THEN 50 * (wd14 + wa14) / NULLIF(wa14, 0) END AS rsi_14,
    stoch_k_14_3,
    stoch_d_14_3_3,
    willr_14,
    cci_20,
    CASE WHEN {{ gate('rn >= 25') }} THEN e12 - e26 END AS macd_12_26,
    CASE WHEN {{ gate('rn >= 33') }} THEN sig END AS macd_signal_12_26_9,
    CASE WHEN {{ gate('rn >= 33') }} THEN e12 - e26 - sig END AS macd_hist_12_26_9,
    CASE WHEN {{ gate('rn >= 25') }} THEN 100 * (e12 - e26) / NULLIF(e26, 0) END AS ppo_12_26,
    CASE WHEN {{ gate('rn >= 43') }} THEN 100 * {{ ar }} * (k2 - k3) / NULLIF(k3 - {{ ar }} * k2, 0) END AS trix_15,
    aroon_up_25,
    aroon_down_25,
    zscore_close_20,
    CASE WHEN {{ gate('rn >= 14') }} THEN {{ pdiv('c - sma20', 'atr') }} END AS dist_sma_20_atr,
    CASE WHEN {{ gate('rn >= 49') }} THEN {{ pdiv('c - e50', 'atr') }} END AS dist_ema_50_atr,
    ret_sigma_20,
    clv,
    body_ratio,
    upper_wick_ratio,
    lower_wick_ratio,
    gap_open
{%- if with_states %}
{%- for f in SINGLE %}
{%- set r = f.first + f.n - 1 %},
    {%- if f.first == 0 %}
    CASE WHEN seeded OR rn - 1 >= {{ r }} THEN coalesce(lag({{ f.id }}) OVER (PARTITION BY symbol ORDER BY ts), seed_{{ f.id }}) END AS __state__{{ f.id }}
    {%- else %}
    CASE WHEN seeded OR rn >= {{ r }} THEN {{ f.id }} END AS __state__{{ f.id }}
    {%- endif %}
{%- endfor %}
{%- for id, r in CASCADE %},
    CASE WHEN seeded OR rn - 1 >= {{ r }} THEN coalesce(lag({{ id }}) OVER (PARTITION BY symbol ORDER BY ts), seed_{{ id }}) END AS __state__{{ id }}
{%- endfor %}
{%- endif %}
FROM pa_v
