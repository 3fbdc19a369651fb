{#-
  Where the bounded tail of each symbol starts, for the feature rows with ts >= $since (warehouse/features/tail.py
  derives the needs; warehouse/features/incremental.py runs this for one or several families in one scan).
  Parameters: source (bar relation: symbol, ts, open, high, low, close, volume), needs (a list of TailNeeds:
  rows, sessions, tod, rth, anchors; one output block per entry, numbered `need` from 0), rth_table and
  rth_default (the RTH table), windowed (True when $lo may cut the history).
  Bound parameters: $since (TIMESTAMPTZ), $lo (TIMESTAMPTZ: only bars with ts >= $lo are read), $symbols (list).
  Output per need and symbol with rows at or after $since: need, symbol, start_ts (first bar of the tail), complete
  (false when the
  bars from $lo on did not hold everything the needs ask for: read more history). Without `windowed` the relation
  holds the whole history, row 0 is the symbol's first bar, and a need that reaches before it is met by row 0
  (the full build has the same NULLs there).

  Candidates for the start row (0-based rn within the read bars), the tail starts at the earliest:
  * rows before the first new row; with anchors also `rows` before the last earlier row on which each filter input
    is non-zero (TR, volume, close change, s*v, mfm*v, +DM, -DM, gain, loss): a stale stretch only decays a filter's
    state, so its history must be read from before the stretch;
  * sessions: the first row of the session `sessions` before the first new row's session;
  * rth: the first row of the latest earlier session with an RTH row;
  * tod: the 20th most recent earlier row at each minute of day of the new rows;
  and, with sessions or rth, the start moves back to the open of its session (session sums start at the open).
-#}
{% import 'macros.sql' as m %}
{%- set NEG = -1000000000000 -%}
{%- set any_anchors = needs | selectattr('anchors') | list | length > 0 -%}
{%- set any_tod = needs | selectattr('tod') | list | length > 0 -%}
{%- set any_rth = needs | selectattr('rth') | list | length > 0 -%}
WITH bars AS (
    SELECT symbol, ts, open AS o, high AS h, low AS l, close AS c, volume AS v,
        row_number() OVER w - 1 AS rn,
        lag(close) OVER w AS c1, lag(high) OVER w AS h1, lag(low) OVER w AS l1,
        {{ m.trading_date('ts') }} AS td,
        CAST(hour(timezone('America/New_York', ts)) * 60 + minute(timezone('America/New_York', ts)) AS INTEGER) AS mod
    FROM {{ source }}
    WHERE list_contains($symbols, symbol) AND ($lo IS NULL OR ts >= $lo)
    WINDOW w AS (PARTITION BY symbol ORDER BY ts)
),
sb AS (
    SELECT *, dense_rank() OVER (PARTITION BY symbol ORDER BY td) - 1 AS sid FROM bars
),
sess AS (
    SELECT symbol, sid, min(rn) AS first_rn,
        bool_or(mod >= {{ m.rth_open('symbol', rth_table, rth_default) }} AND mod < {{ m.rth_close('symbol', rth_table, rth_default) }}) AS has_rth
    FROM sb GROUP BY symbol, sid
),
cut AS (
    -- The first new row, and the last earlier row on which each filter input is active.
    SELECT symbol,
        min(rn) FILTER (WHERE ts >= $since) AS new_rn,
        min(sid) FILTER (WHERE ts >= $since) AS new_sid
{%- if any_anchors %},
        least(
            max(rn) FILTER (WHERE ts < $since AND (h <> l OR h <> c1 OR l <> c1)),
            max(rn) FILTER (WHERE ts < $since AND v <> 0),
            max(rn) FILTER (WHERE ts < $since AND c <> c1),
            max(rn) FILTER (WHERE ts < $since AND c > c1),
            max(rn) FILTER (WHERE ts < $since AND c < c1),
            max(rn) FILTER (WHERE ts < $since AND c <> c1 AND v <> 0),
            max(rn) FILTER (WHERE ts < $since AND h <> l AND (c - l) <> (h - c) AND v <> 0),
            max(rn) FILTER (WHERE ts < $since AND h - h1 > l1 - l AND h - h1 > 0),
            max(rn) FILTER (WHERE ts < $since AND l1 - l > h - h1 AND l1 - l > 0)
        ) AS anchor_rn,
        count(*) FILTER (WHERE ts < $since) > 0 AND (
            max(rn) FILTER (WHERE ts < $since AND (h <> l OR h <> c1 OR l <> c1)) IS NULL
            OR max(rn) FILTER (WHERE ts < $since AND v <> 0) IS NULL
            OR max(rn) FILTER (WHERE ts < $since AND c > c1) IS NULL
            OR max(rn) FILTER (WHERE ts < $since AND c < c1) IS NULL
            OR max(rn) FILTER (WHERE ts < $since AND c <> c1 AND v <> 0) IS NULL
            OR max(rn) FILTER (WHERE ts < $since AND h <> l AND (c - l) <> (h - c) AND v <> 0) IS NULL
            OR max(rn) FILTER (WHERE ts < $since AND h - h1 > l1 - l AND h - h1 > 0) IS NULL
            OR max(rn) FILTER (WHERE ts < $since AND l1 - l > h - h1 AND l1 - l > 0) IS NULL
        ) AS anchor_missing
{%- endif %}
    FROM sb GROUP BY symbol
    HAVING min(rn) FILTER (WHERE ts >= $since) IS NOT NULL
),
{%- if any_tod %}
tod_new AS (SELECT DISTINCT symbol, mod FROM sb WHERE ts >= $since),
tod_old AS (
    SELECT symbol, mod, rn, row_number() OVER (PARTITION BY symbol, mod ORDER BY ts DESC) AS k
    FROM sb SEMI JOIN tod_new USING (symbol, mod) WHERE ts < $since
),
tod AS (
    SELECT n.symbol, min(o.rn) FILTER (WHERE o.k <= 20) AS tod_rn, bool_and(coalesce(o.cnt, 0) >= 20) AS tod_full
    FROM tod_new AS n
    LEFT JOIN (SELECT symbol, mod, rn, k, count(*) OVER (PARTITION BY symbol, mod) AS cnt FROM tod_old) AS o
        USING (symbol, mod)
    GROUP BY n.symbol
),
{%- endif %}
{%- if any_rth %}
rt AS (
    SELECT c2.symbol, max(s2.sid) AS sid, arg_max(s2.first_rn, s2.sid) AS first_rn
    FROM cut AS c2 JOIN sess AS s2 ON s2.symbol = c2.symbol AND s2.sid < c2.new_sid AND s2.has_rth
    GROUP BY c2.symbol
),
{%- endif %}
{%- for need in needs %}
{%- set i = loop.index0 %}
cand{{ i }} AS (
    SELECT cut.symbol, cut.new_rn,
        least(
            cut.new_rn - {{ need.rows }}
{%- if need.anchors %}, coalesce(cut.anchor_rn - {{ need.rows }}, cut.new_rn){% endif %}
{%- if need.sessions %}, CASE WHEN cut.new_sid >= {{ need.sessions }} THEN s.first_rn ELSE {{ NEG }} END{% endif %}
{%- if need.rth %}, coalesce(rt.first_rn, {{ NEG }}){% endif %}
{%- if need.tod %}, coalesce(tod.tod_rn, cut.new_rn){% endif %}
        ) AS start_rn,
        -- Everything the needs ask for lies inside the bars read (a cut-off need falls back to more history).
        {% if windowed %}(
            TRUE
{%- if need.anchors %} AND NOT cut.anchor_missing{% endif %}
{%- if need.sessions %} AND cut.new_sid >= {{ need.sessions }} + 1{% endif %}
{%- if need.rth %} AND rt.first_rn IS NOT NULL AND rt.sid >= 1{% endif %}
{%- if need.tod %} AND coalesce(tod.tod_full, TRUE){% endif %}
        ){% else %}TRUE{% endif %} AS found
    FROM cut
{%- if need.sessions %}
    LEFT JOIN sess AS s ON s.symbol = cut.symbol AND s.sid = cut.new_sid - {{ need.sessions }}
{%- endif %}
{%- if need.rth %}
    LEFT JOIN rt ON rt.symbol = cut.symbol
{%- endif %}
{%- if need.tod %}
    LEFT JOIN tod ON tod.symbol = cut.symbol
{%- endif %}
),
snapped{{ i }} AS (
    -- With session needs the tail starts at a session open: the open of the session holding the start row.
    SELECT c.symbol, c.found, c.start_rn AS raw_rn,
        {{ 's.first_rn' if (need.sessions or need.rth) else 'x.rn' }} AS start_rn
    FROM cand{{ i }} AS c
    JOIN sb AS x ON x.symbol = c.symbol AND x.rn = greatest(c.start_rn, 0)
    JOIN sess AS s ON s.symbol = x.symbol AND s.sid = x.sid
){{ ',' if not loop.last }}
{%- endfor %}
{%- for need in needs %}
{%- set i = loop.index0 %}
{{ 'UNION ALL ' if not loop.first }}SELECT {{ i }} AS need, p.symbol, b.ts AS start_ts,
    -- A start before the first bar read (or in its possibly partial first session) is only exact when that bar
    -- is the symbol's first.
    p.found{% if windowed %} AND p.raw_rn >= 0 AND b.sid >= {{ 1 if (need.sessions or need.rth) else 0 }}{% endif %} AS complete
FROM snapped{{ i }} AS p JOIN sb AS b ON b.symbol = p.symbol AND b.rn = p.start_rn
{%- endfor %}
ORDER BY need, symbol
