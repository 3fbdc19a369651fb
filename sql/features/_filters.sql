{#-
  Exact recursive filters (EMA, Wilder) in O(n) SQL, catalog section 4 (TA-Lib SMA seed, NULL-skipping).

  y = alpha*x + beta*y[-1] on the non-NULL inputs, seeded with the mean of the first n of them. The seed is an
  input substitution: w = 0 before the seed row, w = SMA at the seed row, w = alpha*x after, so y = sum over
  k <= t of w_k * beta^(t-k). Rows are split into blocks of L rows with L*lam ~ 40 (lam = -ln(beta)): inside a
  block, exp(-lam*o) * running sum of w*exp(lam*o) (o = offset in the block, so every factor stays below e^40)
  is the in-block part; the history enters through the previous block's end value, which is the previous block
  total plus beta^L times the one before (the rest is below beta^(2L) = e^-80, far under double precision).

  recursive_filter(name, source, x, n, alpha) emits CTE definitions (for a WITH list) ending in `name`
  (symbol, ts, value); `x` is an expression over `source`, rows where it is NULL are skipped (no output there).
-#}
{% macro recursive_filter(name, source, x, n, alpha, partition='symbol') -%}
{%- set lam = -ln(1.0 - alpha) -%}
{%- set L = [1, (40.0 / lam) | round(0, 'floor') | int] | max -%}
{{ name }}__nn AS (
    SELECT {{ partition }}, ts, x, row_number() OVER (PARTITION BY {{ partition }} ORDER BY ts) - 1 AS rn
    FROM (SELECT {{ partition }}, ts, {{ x }} AS x FROM {{ source }}) WHERE x IS NOT NULL
),
{{ name }}__w AS (
    SELECT {{ partition }}, ts, rn, rn // {{ L }} AS blk, rn % {{ L }} AS o,
        CASE
            WHEN rn < {{ n - 1 }} THEN 0.0
            WHEN rn = {{ n - 1 }} THEN avg(x) OVER (PARTITION BY {{ partition }} ORDER BY rn ROWS BETWEEN {{ n - 1 }} PRECEDING AND CURRENT ROW)
            ELSE {{ alpha | double }} * x
        END AS w
    FROM {{ name }}__nn
),
{{ name }}__blk AS (
    SELECT {{ partition }}, blk, exp({{ (-lam * (L - 1)) | double }}) * sum(w * exp({{ lam | double }} * o)) AS total
    FROM {{ name }}__w GROUP BY {{ partition }}, blk
),
{{ name }}__carry AS (
    SELECT {{ partition }}, blk,
        coalesce(lag(total) OVER b, 0.0) + exp({{ (-lam * L) | double }}) * coalesce(lag(total, 2) OVER b, 0.0) AS carry
    FROM {{ name }}__blk
    WINDOW b AS (PARTITION BY {{ partition }} ORDER BY blk)
),
{{ name }} AS (
    SELECT w.{{ partition }}, w.ts,
        CASE WHEN w.rn >= {{ n - 1 }} THEN
            exp({{ -lam | double }} * w.o) * sum(w.w * exp({{ lam | double }} * w.o)) OVER (PARTITION BY w.{{ partition }}, w.blk ORDER BY w.rn ROWS UNBOUNDED PRECEDING)
            + exp({{ -lam | double }} * (w.o + 1)) * c.carry
        END AS value
    FROM {{ name }}__w AS w JOIN {{ name }}__carry AS c USING ({{ partition }}, blk)
)
{%- endmacro %}

{% macro ema(name, source, x, n) -%}{{ recursive_filter(name, source, x, n, 2.0 / (n + 1)) }}{%- endmacro %}
{% macro wilder(name, source, x, n) -%}{{ recursive_filter(name, source, x, n, 1.0 / n) }}{%- endmacro %}
