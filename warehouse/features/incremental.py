"""Feature rows from a point T on, computed from a bounded tail of history: equal to the full build's rows.

``compute_tail(wh, "1m", ["ES"], T)`` runs the same family templates as the full build, but over only the bars
from a per-symbol, per-family start row before T (what :mod:`warehouse.features.tail` derives from the registry,
located by ``sql/features/_tail_start.sql``), and returns the rows with ``ts >= T``. This is the resumable
state of the feature build: the incremental rebuild of a changed day and the live path of one new bar.

The start is found in the bars of a clock window before T (``lo``), so the live path does not read a symbol's
whole history; when the window does not hold everything a family needs (a long stale stretch, a gap, too few
sessions) the window is widened, and finally the whole history is read, where every need is met by definition.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Sequence
from functools import lru_cache

import duckdb
import pyarrow as pa

from warehouse.features.hash_groups import one_hash_group
from warehouse.features.registry import Family, Registry, build_registry, feature_query, template_params
from warehouse.features.tail import TailNeeds, family_needs, feature_needs
from warehouse.templates import render

@lru_cache(maxsize=4)
def shipped_registry(timeframe: str) -> Registry:
    """The shipped templates' registry, built once per process (rendering and checking them takes ~1-2 s)."""
    return build_registry(timeframe=timeframe)


def registry_signature(registry: Registry) -> str:
    """A short hash of the registry's rendered SQL (every family and the base)."""
    text = "\n".join(f.sql for f in registry.families) + registry.base_sql
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@lru_cache(maxsize=4)
def _shipped_signature(timeframe: str) -> str:
    return registry_signature(shipped_registry(timeframe))


def is_shipped(registry: Registry, timeframe: str) -> bool:
    """The tail bounds (warehouse/features/tail.py) and the carried volume history are derived for the shipped
    catalog templates only; another registry (a user's template, a test's toy) runs as written."""
    return registry is shipped_registry(timeframe) or registry_signature(registry) == _shipped_signature(timeframe)


#: Features whose long history the volume family reads from carried rows (a bounded-tail run here, the live path in
#: :mod:`warehouse.features.live`), and what they still need of the tail itself: the minute-of-day rows come wholly
#: from the carried rows; the session fraction needs whole sessions in the tail (its start at a session open). The family's other session features ask for two, so its
#: short tail starts two sessions before T's. On 1h and 1d bars the filters' warm-up (555 rows) usually reaches
#: further back than 21 sessions anyway: the short tail is then the long one and nothing is carried.
CARRIED = {"rel_volume_tod_20": TailNeeds(0), "session_volume_frac_20": TailNeeds(0, sessions=1)}
#: Relations the volume template reads the carried rows from (its ``tod_history`` and ``session_history``).
TOD_HISTORY, SESSION_HISTORY = "_tail_tod_history", "_tail_session_history"
#: Rows carried per minute of day, and session totals carried (rel_volume_tod_20's and session_volume_frac_20's
#: windows).
TOD_ROWS, SESSION_TOTALS = 20, 21


@lru_cache(maxsize=4)
def carried_registry(timeframe: str) -> Registry:
    """The shipped templates with the volume family reading its long history from :data:`TOD_HISTORY` and
    :data:`SESSION_HISTORY`."""
    return build_registry(timeframe=timeframe, tod_history=TOD_HISTORY, session_history=SESSION_HISTORY)


def carried_needs(family: Family) -> TailNeeds | None:
    """The tail ``family`` needs with :data:`CARRIED` in place of its carried features' own needs; None when the
    family has none of them."""
    if not any(spec.name in CARRIED for spec in family.specs):
        return None
    needs = TailNeeds(0)
    for spec in family.specs:
        needs = needs.merge(CARRIED.get(spec.name) or feature_needs(spec))
    return needs


#: Length of one bar, for the clock window that is read first.
BAR = {"1m": dt.timedelta(minutes=1), "1h": dt.timedelta(hours=1), "1d": dt.timedelta(days=1)}
#: Clock windows tried before the whole history, as multiples of the first one.
WIDEN = (1, 4)


def first_window(needs: TailNeeds, timeframe: str) -> dt.timedelta | None:
    """Clock span before T that usually holds the tail: twice the rows as bars (halts, weekends and holidays
    take less than half of the clock) plus 7/5 calendar days per session (weekends) and 4 days of slack.
    ``None`` (read everything) on daily bars, whose whole history is small."""
    if timeframe == "1d":
        return None
    sessions = max(needs.sessions, 20 if needs.tod else 0, 2 if needs.rth else 0)
    return 2 * needs.rows * BAR[timeframe] + dt.timedelta(days=sessions * 7 / 5 + 4)


def tail_starts(con: duckdb.DuckDBPyConnection, source: str, timeframe: str, needs: TailNeeds,
                symbols: Sequence[str], since: dt.datetime,
                widths: Sequence[dt.timedelta | None] | None = None) -> dict[str, dt.datetime]:
    """First bar of the tail of each symbol of ``symbols`` that has bars at or after ``since``.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
    source : str
        Bar relation (symbol, ts, open, high, low, close, volume).
    timeframe : {"1m", "1h", "1d"}
    needs : TailNeeds
    symbols : sequence of str
    since : datetime
        T, timezone-aware.
    widths : sequence of timedelta or None, optional
        Clock windows before T to read, in turn, until every symbol's needs are met in one (None: all the
        history). Default: :func:`first_window` times :data:`WIDEN`, then everything. A symbol whose needs are
        met by none is left out of the result.
    """
    if widths is None:
        span = first_window(needs, timeframe)
        widths = [span * k for k in WIDEN] + [None] if span is not None else [None]
    out: dict[str, dt.datetime] = {}
    todo = list(symbols)
    for width in widths:
        if not todo:
            break
        [(starts, incomplete)] = tail_starts_many(con, source, timeframe, [needs], todo, since, width)
        out.update(starts)
        todo = incomplete  # symbols without rows at or after since are done (nothing to compute)
    return out


def tail_starts_many(con: duckdb.DuckDBPyConnection, source: str, timeframe: str, needs: Sequence[TailNeeds],
                     symbols: Sequence[str], since: dt.datetime, width: dt.timedelta | None,
                     ) -> list[tuple[dict[str, dt.datetime], list[str]]]:
    """Tail starts for several needs at once, from one scan of the bars within ``width`` before ``since`` (None:
    all the history): per need, the symbols' starts found complete there, and the symbols (with rows at or
    after ``since``) whose needs reach further back (read a wider window for them)."""
    params = template_params(timeframe)
    sql = render("features/_tail_start.sql", source=source, needs=list(needs), rth_table=params["rth"],
                 rth_default=params["rth_default"], windowed=width is not None)
    rows = con.execute(sql, {"since": since, "lo": None if width is None else since - width,
                             "symbols": list(symbols)}).fetchall()
    out: list[tuple[dict[str, dt.datetime], list[str]]] = [({}, []) for _ in needs]
    for need, symbol, start, complete in rows:
        starts, incomplete = out[need]
        if complete:
            starts[symbol] = start
        else:
            incomplete.append(symbol)
    return out


def tail_features(con: duckdb.DuckDBPyConnection, source: str, timeframe: str, since: dt.datetime,
                  symbols: Sequence[str] | None = None, registry: Registry | None = None) -> pa.Table:
    """Feature rows with ``ts >= since`` of ``symbols`` (default: all in ``source``), from bounded tails.

    Returns an Arrow table ``symbol, ts`` and the registry's features in catalog order with their declared
    types, sorted by (symbol, ts): the rows a full build over ``source`` gives, to the catalog's tolerances.

    ``source`` is read once for the widest first clock window of the families (into a temporary table that
    every tail start and family query then reads); only a symbol whose needs reach beyond it reads ``source``
    again (widening windows, then its whole history).
    """
    registry = registry or shipped_registry(timeframe)
    shipped = is_shipped(registry, timeframe)
    if symbols is None:
        symbols = [r[0] for r in con.sql(f"SELECT DISTINCT symbol FROM {source} ORDER BY 1").fetchall()]
    symbols = list(symbols)
    needs = [family_needs(family) for family in registry.families]
    # The shipped volume family reads its 21-session history from carried rows: it runs over a short tail, and the
    # rows before that tail (in the long tail, which is read anyway) give the carried minute-of-day rows and
    # session totals (_carry_volume).
    short = {i: n for i, n in ((i, carried_needs(f)) for i, f in enumerate(registry.families)) if n is not None} \
        if shipped else {}
    spans = [first_window(n, timeframe) for n in needs]
    width = None if any(s is None for s in spans) else max(spans)
    tag = uuid.uuid4().hex[:12]
    window, tail = f"_tail_window_{tag}", f"_tail_rows_{tag}"
    con.execute(f"CREATE TEMP TABLE {window} AS SELECT * FROM {source} "
                "WHERE list_contains($symbols, symbol) AND ($lo IS NULL OR ts >= $lo)",
                {"symbols": symbols, "lo": None if width is None else since - width})
    try:
        starts, wider = [], set()
        # Every family's starts (and the volume family's short starts) from one scan of the window; a symbol whose
        # needs reach before it reads more.
        every = needs + list(short.values())
        for n, (found, rest) in zip(every, tail_starts_many(con, window, timeframe, every, symbols, since, width)):
            if rest and width is not None:
                more = tail_starts(con, source, timeframe, n, rest, since)
                wider |= set(more)
                found |= more
            starts.append(found)
        short_starts = dict(zip(short, starts[len(needs):]))
        starts = starts[:len(needs)]
        # The rows every family's tail needs, once: from the window, or from the source where a tail is wider.
        first = {s: min(found[s] for found in starts if s in found) for s in symbols if any(s in f for f in starts)}
        register_starts(con, f"{tail}_starts", first)
        con.execute(
            f"CREATE TEMP TABLE {tail} AS SELECT b.* FROM {window} AS b JOIN {tail}_starts AS s "
            "ON s.symbol = b.symbol AND b.ts >= s.start_ts WHERE NOT list_contains($wider, b.symbol) "
            f"UNION ALL SELECT b.* FROM {source} AS b JOIN {tail}_starts AS s "
            "ON s.symbol = b.symbol AND b.ts >= s.start_ts WHERE list_contains($wider, b.symbol)",
            {"wider": sorted(wider)})
        con.unregister(f"{tail}_starts")
        parts = []
        carried = carried_registry(timeframe).families if short else []
        for index, (found, family) in enumerate(zip(starts, registry.families)):
            if index in short:  # the same template (the carried registry renders the same list) reading carried rows
                found = _carry_volume(con, tail, timeframe, found, short_starts[index])
                family = carried[index]
            parts.append(_family_rows(con, tail, timeframe, since, found, registry, family))
    finally:
        con.execute(f"DROP TABLE IF EXISTS {window}")
        con.execute(f"DROP TABLE IF EXISTS {tail}")
        con.execute(f"DROP TABLE IF EXISTS {TOD_HISTORY}")
        con.execute(f"DROP TABLE IF EXISTS {SESSION_HISTORY}")
    return side_by_side(parts)


def _carry_volume(con: duckdb.DuckDBPyConnection, rows: str, timeframe: str, long: dict[str, dt.datetime],
                  short: dict[str, dt.datetime]) -> dict[str, dt.datetime]:
    """The volume family's starts over ``rows`` with its long history carried: per symbol, its short start
    (``short``: a session open, as every start with session needs), and in :data:`TOD_HISTORY` / :data:`SESSION_HISTORY` the 20 latest rows per
    minute of day and the totals of the complete sessions (sid -1, -2, ..., at most 21) before it, taken from the
    rows of its long tail (from ``long``) before it.

    Exact for the rows from T on: the long tail holds, for each of them, the 20 most recent earlier rows at its
    minute of day and the 21 whole sessions before its session (what the full build's windows read; a tail with
    session needs starts at a session open). Those that lie before the short start are the latest there, hence
    carried; the rest are in the short tail. Where the short start is not after the long start, the symbol keeps
    its long start and carries nothing (the template then reads it all). The carried relations have fixed names
    (the template is rendered with them): one bounded-tail run per connection at a time.
    """
    starts = {symbol: max(first, short.get(symbol, first)) for symbol, first in long.items()}
    register_starts(con, "_carry_long", long)
    register_starts(con, "_carry_at", starts)
    # A fixed relation name: the rendered base.sql is the same text every call (its SELECT check is kept).
    con.execute(f"CREATE OR REPLACE TEMP VIEW _carry_rows AS SELECT b.* FROM {rows} AS b JOIN _carry_long AS s "
                "ON s.symbol = b.symbol AND b.ts >= s.start_ts AND b.ts < (SELECT a.start_ts FROM _carry_at AS a "
                "WHERE a.symbol = b.symbol)")
    base = render("features/base.sql", **{**template_params(timeframe), "source": "_carry_rows"})
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE _carry_base AS SELECT symbol, ts, trading_date, minute_of_day, v "
                    f"FROM ({base})")
        con.execute(f"CREATE OR REPLACE TEMP TABLE {TOD_HISTORY} AS SELECT b.symbol, b.ts, b.minute_of_day, b.v "
                    "FROM _carry_base AS b "
                    "QUALIFY row_number() OVER (PARTITION BY b.symbol, b.minute_of_day ORDER BY b.ts DESC) "
                    f"<= {TOD_ROWS}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE {SESSION_HISTORY} AS SELECT symbol, "
                    "-row_number() OVER (PARTITION BY symbol ORDER BY trading_date DESC) AS sid, total FROM "
                    "(SELECT symbol, trading_date, sum(v) AS total FROM _carry_base GROUP BY ALL) "
                    f"QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY trading_date DESC) <= {SESSION_TOTALS}")
    finally:
        con.execute("DROP TABLE IF EXISTS _carry_base")
        con.execute("DROP VIEW IF EXISTS _carry_rows")
        for name in ("_carry_long", "_carry_at"):
            con.unregister(name)
    return starts


def side_by_side(parts: list[pa.Table]) -> pa.Table:
    """The families' rows as one table: ``symbol, ts``, then every family's features in family order."""
    keys = parts[0].select(["symbol", "ts"])
    for part in parts[1:]:
        # Every family sees the same rows from since on; side by side by position needs exactly that.
        if not part.select(["symbol", "ts"]).equals(keys):
            raise AssertionError("feature families returned different rows for the same tail")
    columns = {"symbol": keys.column("symbol"), "ts": keys.column("ts")}
    for part in parts:
        for name in part.column_names[2:]:
            columns[name] = part.column(name)
    return pa.table(columns)


def register_starts(con: duckdb.DuckDBPyConnection, name: str, starts: dict[str, dt.datetime]) -> None:
    con.register(name, pa.table({"symbol": pa.array(list(starts), pa.string()),
                                 "start_ts": pa.array(list(starts.values()), pa.timestamp("us", tz="UTC"))}))


def _family_rows(con: duckdb.DuckDBPyConnection, source: str, timeframe: str, since: dt.datetime,
                 starts: dict[str, dt.datetime], registry: Registry, family: Family) -> pa.Table:
    """One family's rows from ``since`` on, over each symbol's tail (from ``starts``) in ``source``."""
    # Fixed names (one bounded-tail run per connection at a time): the composed query is then the same text for
    # every run of a family, and its SELECT checks are kept (a new name re-parsed base.sql, ~13 ms, each time).
    view, table = "_tail_family_rows", "_tail_family_starts"
    register_starts(con, table, starts)
    try:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT b.* FROM {source} AS b "
                    f"JOIN {table} AS s ON s.symbol = b.symbol AND b.ts >= s.start_ts")
        # the symbols' windows share one hash group (their fixed cost is paid once, not per symbol)
        query = one_hash_group(feature_query(Registry([family], registry.base_sql), view, timeframe), list(starts))
        return con.execute(f"SELECT * FROM ({query}) WHERE ts >= $since ORDER BY symbol, ts",
                           {"since": since}).to_arrow_table()
    finally:
        con.execute(f"DROP VIEW IF EXISTS {view}")
        con.unregister(table)


def compute_tail(wh_or_con, timeframe: str, symbols: Sequence[str] | None, since_ts: dt.datetime,  # noqa: ANN001
                 registry: Registry | None = None) -> pa.Table:
    """Feature rows with ``ts >= since_ts`` from the warehouse's feature source bars (see :func:`tail_features`).

    Parameters
    ----------
    wh_or_con : Warehouse or duckdb.DuckDBPyConnection
        A connection must already have the ``feature_source`` view (``sql/features/_source.sql``).
    timeframe : {"1m", "1h", "1d"}
    symbols : sequence of str, optional
    since_ts : datetime
        Timezone-aware; the first feature row returned is the first bar at or after it.
    registry : Registry, optional
    """
    con = wh_or_con
    if not isinstance(wh_or_con, duckdb.DuckDBPyConnection):
        con = wh_or_con.connect()
        con.execute(f"CREATE OR REPLACE TEMP VIEW feature_source AS "
                    f"{render('features/_source.sql', timeframe=timeframe)}")
    return tail_features(con, "feature_source", timeframe, since_ts, symbols, registry)
