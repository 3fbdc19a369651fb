"""The live per-bar feature path: each new bar's features from in-memory bounded tails, equal to the batch build.

:class:`LiveFeatures` loads, once, the bounded tail of every root and family (:mod:`warehouse.features.tail`,
located by ``sql/features/_tail_start.sql``) from the warehouse's feature source (``sql/features/_source.sql``,
the back-adjusted ratio series) into its own in-memory DuckDB connection, one table per family. Each
:meth:`LiveFeatures.append` inserts the new bars into those tables and runs every family template as a prepared
statement (planned once: DuckDB spends 40-50 % of a small query in planning) over its table, keeping the new
rows. The templates are the ones ``qe features build`` runs (one source of truth); the tail only ever grows
between trims, and a longer tail than the bound gives the same rows (every need is still met).

State carried instead of bars (the volume family, whose two session-history features would otherwise need a
21-session tail, ~29k bars per root): ``rel_volume_tod_20`` reads the 20 most recent earlier rows at each minute
of day and ``session_volume_frac_20`` the total volumes of the 21 sessions before the current one. Both are
volumes only, so they are kept as the raw rows and session totals before the volume tail (``tod_history`` and
``session_history`` of ``sql/features/02_volume.sql``), and the template's own windows run over them.

Recursive filters' state carried instead of their warm-up rows (every family with filters: price action,
volume, volatility and structure, whose EMA_50 / WILDER_14 / WILDER_50 / ADX warm-ups would otherwise need 1,051 /
555 / 2,031 / 1,109 rows per root; tail.py's ``RECURSIVE``). Rendered with ``filter_seeds``, a family template reads
a seed per filter (``seed_<name>``, one row per root in the table ``live_seeds_f<k>``, joined beside the base
columns) and outputs after its features each filter's state (``__state__<name>``: the seed a tail whose first row
is that row would need). A seeded filter continues the recursion from the seed at the tail's first input
(``y_t = sum_k alpha*x_k*beta^(t-k) + beta^(t+1)*S``, no SMA seed), so the tail needs only its windows' look-back
and the rows the filters' inputs and outputs reach back (``feature_needs(carried_state=True)``: 241 rows for price
action, 61 for volume, 260 for volatility, 240 for structure). The states of every row appended are not kept:
:meth:`LiveFeatures.trim` runs the family once over its table (its rows are exact: seeded at their first row) for
the states at the new first row, cuts to the short bound and seeds it with them. The per-bar statements output the
features only. On load (and reload after a roll or a correction) the family runs once over the full tail of the
short tail's first row (its warm-up: the states from there on equal the full build's), which gives the first
seeds. A root whose filters have no state yet at that row (a series younger than the SMA seeds) keeps the full tail
without seeds, as the batch build runs it, until a trim finds every state defined. Left undefined, ``filter_seeds``
changes no byte of the templates' render (the full and incremental builds).

Running sums in the per-bar statements. DuckDB pays a fixed ~0.1 ms per window function however few the rows, and
the batch forms of the filters are built for millions of rows (price action's block states are sums of up to 64
lags per filter; volatility and structure carry block totals through GROUP BYs and joins). The per-bar statements
are rendered with ``running_rows`` (:data:`RUNNING_ROWS` rows per root): price action then sums its block states
as running sums and volatility and structure run each filter as one block, valid while every exp(lam*k) of those
sums stays below e^600, i.e. while a table holds at most that many rows per root (a short tail grows by at most
``trim_every`` bars between trims). A table beyond it (a young series' full tail grown long without a trim) runs the
batch form of the family (``live_q<k>_long``), chosen per bar from the rows the table holds. Both forms give the
full build's rows; the batch build's own render is unchanged.

Session state carried instead of whole sessions (the volume and structure families, whose session features would
otherwise read the previous session from its open and the current one: ~2,700 rows per root at 1m). Rendered with
``session_seeds``, the two templates take seeds and output states of the same kind (``sess_<name>``,
:data:`SESSION_STATE_PREFIX`, in the same seed row as the filters'), for a tail that starts anywhere in a session:
its first session's running values before the tail (first open; volume: the sums of v, s*v, v*d, v*d^2 and tp*v;
structure: the extrema and the RTH open and last RTH close) and the earlier sessions' values its rows read (volume:
the previous session's VWAP; structure: its high, low and close, and the latest earlier RTH close). A session state
may be NULL (no earlier session, no RTH row yet): that is a state, not a missing warm-up, so only the filter states
decide whether a root is seeded (``live_needs(carried_sessions=True)``: the session features need no session).
Integer sums (v, s*v) and the structure family's extrema and prices continue the full build's exactly; the volume
family's price sums are continued in another order of addition than the full build's window sums (an ulp of their
size, far inside the catalog tolerances). The carried session totals of ``session_volume_frac_20`` are the complete
sessions before the volume tail's first session (a cut session's part before the tail is its seed ``sess_v``).
Left undefined, ``session_seeds`` changes no byte of the templates' render either.

Session numbers. ``sid`` (base.sql: the 0-based rank of the trading date in the series) is what the templates'
session rules read ("NULL on sid < k": the first session of a series may be partial). Over a tail it restarts at
0, which is why :mod:`warehouse.features.tail` asks a ``Dk`` feature for k sessions before T's session, one more
than its data needs. The live path adds each table's *session offset* to ``sid`` in the base query the families
read (the number of trading dates of the series before the table's first row: the full build's sid), so the
rules read the full build's numbers and a ``Dk`` feature needs only its data: the k - 1 sessions before T's,
complete, and T's from its open (:func:`live_needs`), or, with carried session state, no session at all.

Rolls and corrections. The features run on the back-adjusted (ratio) series: when a roll is added, every earlier
price of the root is multiplied by the new roll's ratio, so the tails in memory no longer are the series the
batch build reads. Rescaling them in memory would round differently from the warehouse view (``raw * F`` there,
``(raw * F_old) * f`` here, an ulp apart): the rows would equal the batch build only to rounding, and a tie the
templates test exactly (a flat window, equal prices across two segments) could go the other way. So the state is
**reloaded** from the warehouse instead, which is exact: the live loop calls :meth:`LiveFeatures.reload` for the root after the
roll table gains a roll (best during the daily halt before the roll's session opens: a reload reads the root's
history, seconds, not milliseconds), and likewise after a corrected bar. As a safeguard :meth:`LiveFeatures.append`
also compares each root's front-contract segments (contract, start, ratio factor of ``front_segments``; one small
query per append) with those it loaded and reloads a root whose segments changed before computing its rows. Note
that a volume roll is decided before it takes effect, and until its roll bar its prices (both contracts' closes on
their latest common bar) move with every new bar: on those bars every earlier adjusted price changes, and so every
append reloads. An appended bar at or before the last bar in memory is refused (it would be a correction).
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace

import duckdb
import pyarrow as pa

from warehouse.errors import QEError
from warehouse.features.incremental import (CARRIED, SESSION_TOTALS, TOD_ROWS, first_window, register_starts,
                                            shipped_registry, side_by_side, tail_starts)
from warehouse.features.hash_groups import one_hash_group
from warehouse.features.registry import Family, Registry, build_registry, feature_query, template_params
from warehouse.features.tail import TailNeeds, feature_needs
from warehouse.layout import safe_name, table_dir
from warehouse.store import file_signature
from warehouse.templates import render, render_string

#: Bar columns appended and kept, in order.
BAR_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume")
#: Relations the volume template reads the carried state from (its optional parameters).
TOD_STATE, SESSION_STATE = "live_tod_now", "live_sessions"
#: Most rows per root a family table may hold for the per-bar statements' running sums (``running_rows``; module
#: docstring); a table beyond it runs the batch build's form of the family (``live_q<k>_long``).
RUNNING_ROWS = 2600
#: Default rows per root appended between two trims of the tails, per timeframe (``LiveFeatures`` ``trim_every``):
#: an hour of minutes (the per-bar statements slow down as the tails grow), a trading day of hours, a week of days.
TRIM_EVERY = {"1m": 60, "1h": 23, "1d": 5}
#: Prefix of the carried session states (``session_seeds``): unlike a filter state, NULL is a state (no earlier
#: session, no RTH row yet, the first row of its session).
SESSION_STATE_PREFIX = "sess_"


@dataclass
class _Tail:
    """One family's tail table in the live connection and its prepared per-bar statements."""

    index: int
    family: Family
    needs: TailNeeds
    table: str
    cost: int = 0  # rows read per root by the family (its tail bound): the order the families are started in
    grown: int = 0  # rows appended per root since the last trim (the largest over the roots)
    #: With carried filter state: the family rendered to output its filters' states (``states``), the tail it
    #: needs then, and its seeds table.
    stated: Family | None = None
    short: TailNeeds | None = None
    seeds: str = ""
    states_query: str = ""  # the family's query over its table with the hidden state columns (load and trim)
    #: Per root: the first row from which the table's rows compute the full build's filter states.
    exact: dict = field(default_factory=dict)
    #: Whether the per-bar statement has a second form for tables beyond RUNNING_ROWS rows per root
    #: (``live_q<k>_long``), and then the most rows per root the table held at its last load or trim (with
    #: ``grown``, an upper bound of what it holds now).
    has_long: bool = False
    rows_at_reset: int = 0


def live_needs(family: Family, carried_state: bool = False, carried_sessions: bool = False) -> TailNeeds:
    """The tail one family needs on the live path: :func:`~warehouse.features.tail.feature_needs` of every
    feature, with :data:`CARRIED` in place of the carried features' own needs, and k - 1 sessions before T's
    for a ``Dk`` feature (the session offset keeps its rule; at least 1, which makes the tail start at a session
    open: T's session is read from its open). ``carried_state``: the family's recursive filters continue from
    seeds (no warm-up rows). ``carried_sessions``: its session features continue from carried session state
    (``session_seeds``), so they need no session at all, only their window part (``max(D1,14)``: 14 rows)."""
    needs = TailNeeds(0)
    for spec in family.specs:
        one = CARRIED.get(spec.name) or feature_needs(spec, carried_state)
        if one.sessions:
            one = (replace(one, sessions=0, rth=False) if carried_sessions
                   else replace(one, sessions=max(one.sessions - 1, 1)))
        needs = needs.merge(one)
    return needs


class LiveFeatures:
    """Per-bar features of a set of roots, kept in memory, equal to the batch build.

    Parameters
    ----------
    wh : Warehouse
        Read at construction and by :meth:`reload` only (a connection of its own, closed after).
    timeframe : {"1m", "1h", "1d"}
    roots : sequence of str
        Symbols of the feature source (continuous roots, e.g. "ES").
    trim_every : int, optional
        Rows appended to a root after which the tails are cut back to their bound (:meth:`trim`, ~1 s); default
        :data:`TRIM_EVERY` of the timeframe (an hour of 1m bars). The per-bar statements read every row of the
        tails, so their time grows with what was appended since the last trim: 5 roots, one worker, 176 ms over
        the first 100 bars after a load and 420 ms over bars 700-799 without a trim, flat within an hour's
        growth (bench/README.md). The live loop calls :meth:`trim` itself between bars.
    threads : int, optional
        DuckDB threads per family query; 1 by default (on tails of a few thousand rows a query's second thread
        gains little: the families run side by side instead, see ``workers``).
    workers : int, optional
        Family queries run at once, each on its own cursor of the live connection from a thread pool (DuckDB
        releases the GIL while it executes). Default 1 (in turn): on the shared 2-core machine 2 was never faster
        and cost more CPU per bar (bench/README.md); it may help on an idle machine.
    """

    def __init__(self, wh, timeframe: str, roots: Sequence[str], trim_every: int | None = None,  # noqa: ANN001
                 threads: int = 1, workers: int = 1) -> None:
        self._wh = wh
        self.timeframe = timeframe
        self.roots = list(dict.fromkeys(roots))
        self._trim_every = trim_every or TRIM_EVERY[timeframe]
        self.registry = shipped_registry(timeframe)
        # The same templates with the volume family reading its carried state (see the module docstring).
        # Reading the recursive filters' seeds; and, for a load and a trim, also outputting their states.
        params = {"timeframe": timeframe, "tod_history": TOD_STATE, "session_history": SESSION_STATE,
                  "filter_seeds": True, "session_seeds": True}
        self._live_registry = build_registry(**params)
        # The per-bar statements: the same templates, with running block sums where a template has them.
        self._bar_registry = build_registry(**params, running_rows=RUNNING_ROWS)
        stated = build_registry(**params, filter_states=True).families
        self._con = duckdb.connect()
        _configure(self._con, threads)
        columns = "symbol VARCHAR, ts TIMESTAMPTZ, open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume BIGINT"
        self._con.execute(f"CREATE TABLE live_new ({columns})")
        self._con.execute("CREATE TABLE live_tod_all (symbol VARCHAR, ts TIMESTAMPTZ, minute_of_day INTEGER, v DOUBLE)")
        self._con.execute(f"CREATE TABLE {TOD_STATE} AS SELECT * FROM live_tod_all")
        self._con.execute("CREATE TABLE live_session_totals (symbol VARCHAR, trading_date DATE, total DOUBLE)")
        # Per family table and symbol: trading dates of the series before the table's first row (module docstring).
        self._con.execute("CREATE TABLE live_offsets (family INTEGER, symbol VARCHAR, sid_offset BIGINT)")
        self._tails: list[_Tail] = []
        for index, family in enumerate(self._live_registry.families):
            needs = live_needs(family)
            tail = _Tail(index, family, needs, f"live_f{index}", needs.rows + 1400 * needs.sessions)
            self._con.execute(f"CREATE TABLE {tail.table} ({columns})")
            if stated[index].states:
                tail.stated = stated[index]
                names = tail.stated.states
                tail.short = live_needs(family, carried_state=any(not _session_state(n) for n in names),
                                        carried_sessions=any(_session_state(n) for n in names))
                tail.cost = tail.short.rows + 1400 * tail.short.sessions
                tail.seeds = f"live_seeds_f{index}"
                self._con.execute(f"CREATE TABLE {tail.seeds} (symbol VARCHAR, "
                                  + ", ".join(f"seed_{name} DOUBLE" for name in tail.stated.states) + ")")
            self._tails.append(tail)
        self._volume = next((t for t in self._tails if any(s.name in CARRIED for s in t.family.specs)), None)
        # The session just before the volume tail is its first session's sid - 1, the one before - 2, ... (the
        # template's session_history, in the same numbering as the tail's shifted sids).
        self._con.execute(f"CREATE VIEW {SESSION_STATE} AS SELECT t.symbol, o.sid_offset - row_number() OVER "
                          "(PARTITION BY t.symbol ORDER BY t.trading_date DESC) AS sid, t.total "
                          "FROM live_session_totals AS t JOIN live_offsets AS o ON o.symbol = t.symbol "
                          f"AND o.family = {self._volume.index if self._volume else -1}")
        self._base_new = render("features/base.sql", **{**template_params(timeframe), "source": "live_new"})
        self._last: dict[str, dt.datetime] = {}
        self._segments: dict[str, list[tuple]] = {}
        #: the front_segments files' signature and every root's segments as read then (see _front_segments)
        self._segments_read: tuple[tuple | None, dict[str, list[tuple]]] = (None, {})
        # One cursor per family (prepared statements belong to a connection); the largest families first, so that
        # two workers finish together.
        self._cursors = {tail.index: _configure(self._con.cursor(), threads) for tail in self._tails}
        self._pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
        self._prepare()
        # Kept open for the per-append roll check; its views read the roll tables' files as they are at each query.
        self._wh_con = wh.new_connection()
        self.reload()

    # -- public ------------------------------------------------------------------------------------------------
    def append(self, bars: pa.Table, check_rolls: bool = True, trim: bool = True) -> pa.Table:
        """Features of the final new ``bars`` (symbol, ts, open, high, low, close, volume; one or more per root,
        in ts order, already appended to the warehouse): an Arrow table with exactly the columns and types of
        the ``features_<tf>`` view, one row per bar, sorted by (symbol, ts).

        ``check_rolls`` (default True): first reload the roots whose front-contract segments changed (module
        docstring); pass False when the caller reloads after rolls itself. ``trim`` (default True): cut the tails
        back when they grew by ``trim_every`` rows (:meth:`trim`, ~1 s); False leaves it to the caller, who
        calls :meth:`trim` when :meth:`trim_due` says so, off the bar's path (the live loop: after a decision).

        Raises
        ------
        QEError
            A bar of a root not loaded, or at or before the root's last bar (a correction: :meth:`reload`).
        """
        bars = bars.select(list(BAR_COLUMNS))
        self._check_order(bars)
        if check_rolls:
            segments = self._front_segments(self.roots)
            changed = [root for root in self.roots if segments.get(root, []) != self._segments.get(root, [])]
            if changed:
                first = bars.group_by("symbol").aggregate([("ts", "min")])
                self.reload(changed, dict(zip(first.column("symbol").to_pylist(), first.column("ts_min").to_pylist())))
                self._check_order(bars)
        self._con.execute("DELETE FROM live_new")
        rows = bars.sort_by([("symbol", "ascending"), ("ts", "ascending")]).to_pylist()
        # one INSERT of parameters: registering the Arrow table and selecting from it cost ~2 ms more
        row = f"({', '.join('?' * len(BAR_COLUMNS))})"
        if rows:
            self._con.execute(f"INSERT INTO live_new VALUES {', '.join([row] * len(rows))}",
                              [values[name] for values in rows for name in BAR_COLUMNS])
        counts = bars.group_by("symbol").aggregate([("ts", "count")])
        grown = max(counts.column("ts_count").to_pylist(), default=0)
        for tail in self._tails:
            tail.grown += grown
        parts = self._run_families()
        for symbol, ts in zip(bars.column("symbol").to_pylist(), bars.column("ts").to_pylist()):
            self._last[symbol] = max(self._last[symbol], ts)
        out = side_by_side(parts)
        if out.num_rows != bars.num_rows:
            raise AssertionError(f"live features: {out.num_rows} rows for {bars.num_rows} new bars")
        if trim and self.trim_due():
            self.trim()
        return out

    def trim_due(self) -> bool:
        """Whether a tail grew by ``trim_every`` rows since its last :meth:`trim`."""
        return any(tail.grown >= self._trim_every for tail in self._tails)

    def reload(self, roots: Sequence[str] | None = None, before: dict[str, dt.datetime] | None = None) -> None:
        """Load (again) the tails and carried state of ``roots`` (default: all) from the warehouse: after a roll
        changed the back-adjusted history, or after a corrected bar. Everything the warehouse holds now is
        loaded (the next :meth:`append` takes later bars), or, per root in ``before``, the bars before that time
        (what :meth:`append` does when it finds a changed roll: the new bars are in the warehouse already)."""
        roots = list(self.roots if roots is None else roots)
        unknown = sorted(set(roots) - set(self.roots))
        if unknown:
            raise QEError(f"live features: {', '.join(unknown)} not among the roots {self.roots}")
        before = before or {}
        source = self._wh.new_connection()
        try:
            source.register("_live_before", pa.table({
                "symbol": pa.array(list(before), pa.string()),
                "before": pa.array(list(before.values()), pa.timestamp("us", tz="UTC"))}))
            source.execute(f"CREATE OR REPLACE TEMP VIEW feature_source AS SELECT s.* FROM "
                           f"({render('features/_source.sql', timeframe=self.timeframe)}) AS s "
                           "LEFT JOIN _live_before AS b USING (symbol) WHERE b.before IS NULL OR s.ts < b.before")
            last = dict(source.execute("SELECT symbol, max(ts) FROM feature_source WHERE list_contains($r, symbol) "
                                       "GROUP BY symbol", {"r": roots}).fetchall())
            missing = sorted(set(roots) - set(last))
            if missing:
                raise QEError(f"live features: no {self.timeframe} bars of {', '.join(missing)} in the warehouse")
            self._load(source, roots, last)
        finally:
            source.close()
        self._last.update(last)
        self._segments.update({root: [] for root in roots})
        self._segments.update(self._front_segments(roots))

    def trim(self) -> None:
        """Cut every tail back to its bound for the next bar (the rows cut from the volume tail move into its
        carried state). Equal rows either way: a longer tail than the bound only costs time. A family with
        carried filter state is cut to its short bound and seeded with the filter states at the new first row (one
        run of the family over its table); while a root's states there are not all defined (a young series), to
        the full bound without seeds."""
        con = self._con
        far = [dt.timedelta(days=36500)]
        for tail in self._tails:
            starts: dict[str, dt.datetime] = {}
            seeds: dict[str, tuple] = {}
            if tail.short is not None:
                # The bound for a bar after the last: computed with the last bar as T (a later T needs less).
                short = {}
                for symbol in self.roots:
                    short.update(tail_starts(con, tail.table, self.timeframe, tail.short, [symbol], self._last[symbol],
                                             far))
                short = {symbol: start for symbol, start in short.items() if start >= tail.exact.get(symbol, start)}
                seeds = {symbol: values for symbol, values in self._states_at(tail, short).items()
                         if self._defined(tail, values)}
                starts.update({symbol: short[symbol] for symbol in seeds})
            for symbol in self.roots:
                if symbol in seeds or (tail.short is not None and self._seeded(tail, symbol)):
                    continue  # seeded now; or seeded before, and its states do not reach the short bound yet
                found = tail_starts(con, tail.table, self.timeframe, tail.needs, [symbol], self._last[symbol], far)
                if tail.short is not None and symbol in found and found[symbol] > self._first_row(tail, symbol):
                    # Cut to the full bound of T: the rows from T on compute the full build's states.
                    tail.exact[symbol] = max(tail.exact.get(symbol, found[symbol]), self._last[symbol])
                starts.update(found)
            if tail is self._volume:
                self._carry(tail, starts)
            for symbol, start in starts.items():
                self._cut(tail, symbol, start, seeds.get(symbol) if tail.short is not None else False)
                if symbol in seeds:
                    tail.exact[symbol] = start
            self._reset_growth(tail)

    def _seeded(self, tail: _Tail, symbol: str) -> bool:
        return tail.seeds != "" and self._con.execute(f"SELECT count(*) FROM {tail.seeds} WHERE symbol = $s",
                                                      {"s": symbol}).fetchone()[0] > 0

    def rows(self) -> dict[str, int]:
        """Rows held per family table (all roots): what one append computes over."""
        return {t.family.template: self._con.execute(f"SELECT count(*) FROM {t.table}").fetchone()[0]
                for t in self._tails}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        for cursor in self._cursors.values():
            cursor.close()
        self._con.close()
        self._wh_con.close()

    def _front_segments(self, roots: list[str]) -> dict[str, list[tuple]]:
        """Per root, what its back-adjusted prices depend on: (contract, valid_from, ratio_factor) of every
        front-contract segment.

        Read again only when one of the roots' files is not the one read last time (a roll-table rebuild replaces
        a file by an atomic rename: a new inode and mtime), so the per-bar roll check is a few ``stat`` calls,
        not a query (~5 ms a bar)."""
        directory = table_dir(self._wh.root, "front_segments")  # one file per root (warehouse.rolls)
        signature = tuple(file_signature(directory / f"{safe_name(root)}.parquet") for root in self.roots)
        if signature != self._segments_read[0]:
            rows = self._wh_con.execute(
                "SELECT symbol, contract, valid_from, ratio_factor FROM front_segments "
                "WHERE list_contains($r, symbol) ORDER BY symbol, valid_from", {"r": self.roots}).fetchall()
            read: dict[str, list[tuple]] = {}
            for symbol, *segment in rows:
                read.setdefault(symbol, []).append(tuple(segment))
            self._segments_read = (signature, read)
        return {root: segments for root, segments in self._segments_read[1].items() if root in roots}

    # -- internals ---------------------------------------------------------------------------------------------
    def _run_families(self) -> list[pa.Table]:
        """Every family's rows of the new bars (``live_new``), in family order. Each family's worker first
        appends the new bars to its own table (and the volume family refreshes its carried minute-of-day rows),
        so that those steps run side by side too."""
        long = {tail.index for tail in self._tails
                if tail.has_long and tail.rows_at_reset + tail.grown > RUNNING_ROWS}

        def run(tail: _Tail) -> pa.Table:
            cursor = self._cursors[tail.index]
            cursor.execute(f"INSERT INTO {tail.table} SELECT * FROM live_new")
            if tail is self._volume:
                # Only the carried rows at the new bars' minutes of day: the template's window then runs over
                # ~20 rows per new bar besides the tail, not over 20 sessions of every minute.
                cursor.execute(f"DELETE FROM {TOD_STATE}")
                cursor.execute("EXECUTE live_tod_refresh")
            form = "_long" if tail.index in long else ""
            return cursor.execute(f"EXECUTE live_q{tail.index}{form}").to_arrow_table()

        order = sorted(self._tails, key=lambda t: -t.cost)
        if self._pool is None:
            done = {tail.index: run(tail) for tail in order}
        else:
            futures = {tail.index: self._pool.submit(run, tail) for tail in order}
            # every worker finished before a failure is raised: none may still read live_new when the next
            # append replaces it
            wait(futures.values())
            done = {index: future.result() for index, future in futures.items()}
        return [done[tail.index] for tail in self._tails]

    def _prepare(self) -> None:
        """Prepared statements over the fixed live tables: each family (new rows only), and the carried
        minute-of-day rows of the new bars' minutes."""
        for tail in self._tails:
            # Families with carried filter state read their seeds (one row per root, NULL columns without one)
            # beside the base columns.
            seeds = "".join(f", sd.seed_{name}" for name in tail.stated.states) if tail.stated else ""
            join = f" LEFT JOIN {tail.seeds} AS sd ON sd.symbol = b.symbol" if tail.seeds else ""

            def query(family: Family, tail: _Tail = tail, seeds: str = seeds, join: str = join) -> str:
                sql = feature_query(Registry([family], self._live_registry.base_sql), tail.table, self.timeframe,
                                    wrap_base=lambda base: (
                                        f"SELECT b.* REPLACE (b.sid + o.sid_offset AS sid){seeds} FROM ({base}) AS b "
                                        f"JOIN live_offsets AS o ON o.symbol = b.symbol AND o.family = {tail.index}{join}"),
                                    states=family is tail.stated)
                return one_hash_group(sql, self.roots)  # the roots' windows share their fixed cost

            # Per bar the features only; the filter states are read at a load and a trim.
            tail.states_query = query(tail.stated) if tail.stated else ""
            bar_family = self._bar_registry.families[tail.index]
            tail.has_long = bar_family.sql != tail.family.sql
            forms = {"": bar_family, "_long": tail.family} if tail.has_long else {"": tail.family}
            for suffix, family in forms.items():
                self._cursors[tail.index].execute(
                    f"PREPARE live_q{tail.index}{suffix} AS SELECT f.* FROM ({query(family)}) AS f "
                    "SEMI JOIN live_new AS n USING (symbol, ts) ORDER BY f.symbol, f.ts")
        # The minute of day of a new bar is base.sql's own column (no second definition of it here). Prepared on
        # the volume family's cursor, which refreshes the carried rows before its statement (_run_families).
        if self._volume is not None:
            self._cursors[self._volume.index].execute(
                f"PREPARE live_tod_refresh AS INSERT INTO {TOD_STATE} SELECT t.* FROM live_tod_all AS t "
                f"SEMI JOIN (SELECT DISTINCT symbol, minute_of_day FROM ({self._base_new})) AS n "
                "USING (symbol, minute_of_day)")

    def _check_order(self, bars: pa.Table) -> None:
        seen = dict(self._last)
        for symbol, ts in zip(bars.column("symbol").to_pylist(), bars.column("ts").to_pylist()):
            if symbol not in seen:
                raise QEError(f"live features: bar of {symbol!r}, not among the roots {self.roots}")
            if ts <= seen[symbol]:
                raise QEError(f"live features: {symbol} bar at {ts} is not after its last bar {seen[symbol]} "
                              "(a corrected bar: reload the root)")
            seen[symbol] = ts

    def _load(self, source: duckdb.DuckDBPyConnection, roots: list[str], last: dict[str, dt.datetime]) -> None:
        """Tails and carried state of ``roots`` from the warehouse connection ``source``.

        A family with carried filter state is loaded from the start of its full tail (the filters' warm-up) for
        the rows from its short tail's start on, and run once over it: the states at the short start become the
        seeds, and the rows before it are dropped. A root whose filters have no state there yet (a series younger
        than the SMA seeds) keeps the full tail without seeds, as the batch build runs."""
        con = self._con
        spans = [first_window(replace(t.needs, rows=t.needs.rows + t.short.rows) if t.short else t.needs,
                              self.timeframe) for t in self._tails]
        width = None if any(s is None for s in spans) else max(spans)
        lo = None if width is None else min(last.values()) - width
        window = source.execute("SELECT symbol, ts, open, high, low, close, volume FROM feature_source "
                                "WHERE list_contains($r, symbol) AND ($lo IS NULL OR ts >= $lo) ORDER BY symbol, ts",
                                {"r": roots, "lo": lo}).to_arrow_table()
        con.register("_live_window", window)
        try:
            con.execute("CREATE OR REPLACE TEMP TABLE live_window AS SELECT * FROM _live_window")
        finally:
            con.unregister("_live_window")
        whole = set(roots) if width is None else set()  # roots whose whole history live_window holds

        def starts_for(needs: TailNeeds, since: dict[str, dt.datetime]) -> dict[str, dt.datetime]:
            found: dict[str, dt.datetime] = {}
            for symbol in roots:
                found.update(tail_starts(con, "live_window", self.timeframe, needs, [symbol], since[symbol],
                                         [None] if symbol in whole else [width]))
            wider = [symbol for symbol in roots if symbol not in found]
            if wider:
                # Needs beyond the clock window (a long stale stretch, a gap): those roots' whole history.
                more = source.execute("SELECT symbol, ts, open, high, low, close, volume FROM feature_source "
                                      "WHERE list_contains($r, symbol) ORDER BY symbol, ts", {"r": wider}).to_arrow_table()
                con.register("_live_more", more)
                try:
                    con.execute("DELETE FROM live_window WHERE list_contains($r, symbol)", {"r": wider})
                    con.execute("INSERT INTO live_window SELECT * FROM _live_more")
                finally:
                    con.unregister("_live_more")
                whole.update(wider)
                for symbol in wider:
                    found.update(tail_starts(con, "live_window", self.timeframe, needs, [symbol], since[symbol], [None]))
            return found

        # The minute-of-day rows of the last append were before the volume tail's old start; the reloaded table may
        # start earlier and hold them too (a row twice in the states run below): none are needed until the next append.
        con.execute(f"DELETE FROM {TOD_STATE}")
        shorts: list[dict[str, dt.datetime] | None] = []
        starts: list[dict[str, dt.datetime]] = []
        for tail in self._tails:
            short = starts_for(tail.short, last) if tail.short else None
            shorts.append(short)
            # With carried state: the full tail of the short tail's first row (its states are then exact).
            starts.append(starts_for(tail.needs, short if short is not None else last))
        con.execute("DELETE FROM live_offsets WHERE list_contains($r, symbol)", {"r": roots})
        for symbol in roots:
            # One pass over the root's history: its trading dates before the latest table start; each table's
            # offset counts those before its first row's trading date.
            latest = max(found[symbol] for found in starts)
            dates = [r[0] for r in source.execute(_trading_dates("feature_source"),
                                                  {"s": symbol, "t": latest}).fetchall()]
            for tail, found in zip(self._tails, starts):
                first = source.execute(_trading_date_of(), {"t": found[symbol]}).fetchone()[0]
                con.execute("INSERT INTO live_offsets VALUES ($f, $s, $o)",
                            {"f": tail.index, "s": symbol, "o": bisect.bisect_left(dates, first)})
        for tail, found, short in zip(self._tails, starts, shorts):
            con.execute(f"DELETE FROM {tail.table} WHERE list_contains($r, symbol)", {"r": roots})
            for symbol in roots:
                con.execute(f"INSERT INTO {tail.table} SELECT * FROM live_window WHERE symbol = $s AND ts >= $t",
                            {"s": symbol, "t": found[symbol]})
            if short is not None:
                self._seed_from_full_tail(tail, roots, short, lambda: starts_for(tail.needs, last))
            self._reset_growth(tail)
        if self._volume is not None:
            vstarts = {symbol: self._first_row(self._volume, symbol) for symbol in roots}
            con.execute("DELETE FROM live_tod_all WHERE list_contains($r, symbol)", {"r": roots})
            con.execute("DELETE FROM live_session_totals WHERE list_contains($r, symbol)", {"r": roots})
            self._load_carried(source, vstarts)
        con.execute("DROP TABLE live_window")

    def _seed_from_full_tail(self, tail: _Tail, roots: list[str], short: dict[str, dt.datetime],
                             unseeded) -> None:  # noqa: ANN001
        """Run the family once over its full tails (no seeds) for the filter states at each root's short start;
        seed the roots whose states there are all defined and cut their tails to the short start, cut the others
        to the full tail of the next bar (``unseeded()``: the batch build's warm-up)."""
        self._con.execute(f"DELETE FROM {tail.seeds} WHERE list_contains($r, symbol)", {"r": roots})
        states = self._states_at(tail, short)
        fallback = None
        for symbol in roots:
            tail.exact[symbol] = short[symbol]
            values = states.get(symbol)
            if values is not None and self._defined(tail, values):
                self._cut(tail, symbol, short[symbol], values)
            else:
                fallback = fallback if fallback is not None else unseeded()
                self._cut(tail, symbol, fallback[symbol], None)

    @staticmethod
    def _defined(tail: _Tail, values: tuple) -> bool:
        """Every filter state is defined (a session state may be NULL: it is a state, not a missing warm-up)."""
        return all(v is not None or _session_state(name) for name, v in zip(tail.stated.states, values))

    def _states_at(self, tail: _Tail, rows: dict[str, dt.datetime]) -> dict[str, tuple]:
        """The family's filter states (``__state__`` columns, in ``stated.states`` order) at one row per root."""
        if not rows:
            return {}
        con = self._con
        register_starts(con, "_live_at", rows)
        try:
            found = con.execute(f"SELECT f.* FROM ({tail.states_query}) AS f JOIN _live_at AS s "
                                "ON s.symbol = f.symbol AND f.ts = s.start_ts").fetchall()
        finally:
            con.unregister("_live_at")
        width = len(tail.stated.states)
        return {row[0]: tuple(row[-width:]) for row in found}

    def _cut(self, tail: _Tail, symbol: str, start: dt.datetime, seed: tuple | None | bool = False) -> None:
        """Drop the rows of ``symbol`` before ``start`` from the family's table (their trading dates move into the
        session offset) and its recorded states; with carried state, ``seed`` (the states at ``start``, or None:
        no seed) becomes the root's seed row (False: unchanged)."""
        con = self._con
        con.execute(f"UPDATE live_offsets SET sid_offset = sid_offset + ({_dates_before(tail.table)}) "
                    "WHERE family = $f AND symbol = $s", {"f": tail.index, "s": symbol, "t": start})
        con.execute(f"DELETE FROM {tail.table} WHERE symbol = $s AND ts < $t", {"s": symbol, "t": start})
        if tail.seeds:
            if seed is not False:
                con.execute(f"DELETE FROM {tail.seeds} WHERE symbol = $s", {"s": symbol})
                if seed is not None:
                    con.execute(f"INSERT INTO {tail.seeds} VALUES ($s, "
                                + ", ".join(f"$v{k}" for k in range(len(seed))) + ")",
                                {"s": symbol, **{f"v{k}": v for k, v in enumerate(seed)}})

    def _reset_growth(self, tail: _Tail) -> None:
        """After a load or a cut of the family's table: no rows grown since, and the most rows one root holds
        (counted here, not on a bar's path; only a family with a batch form beyond RUNNING_ROWS needs it)."""
        tail.grown = 0
        tail.rows_at_reset = self._con.execute(
            f"SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM {tail.table} GROUP BY symbol)"
        ).fetchone()[0] if tail.has_long else 0

    def _first_row(self, tail: _Tail, symbol: str) -> dt.datetime:
        return self._con.execute(f"SELECT min(ts) FROM {tail.table} WHERE symbol = $s", {"s": symbol}).fetchone()[0]

    def _load_carried(self, source: duckdb.DuckDBPyConnection, starts: dict[str, dt.datetime]) -> None:
        """The volume family's carried state from the whole history before each root's volume tail: the rows per
        minute of day, and the totals of the complete sessions before the tail's first one (the part of that one
        before the tail is its seed ``sess_v``)."""
        for symbol, start in starts.items():
            rows = f"SELECT * FROM feature_source WHERE symbol = '{_literal(symbol)}'"
            history = f"({rows} AND ts < '{start.isoformat()}')"
            literal = f"TIMESTAMPTZ '{start.isoformat()}'"
            whole = f"({_before_session(rows, 'ts', literal)})"
            state = self._carried_query(history, whole)
            tod = source.execute(state["tod"]).to_arrow_table()
            sessions = source.execute(state["sessions"]).to_arrow_table()
            self._insert_state(tod, sessions)

    def _carry(self, tail: _Tail, starts: dict[str, dt.datetime]) -> None:
        """Move the rows cut from the volume tail into the carried state: the union of the old state and the cut
        rows, reduced to the latest rows per minute of day / sessions. Only the sessions completed before the new
        start's session become totals (the first of them adds its part before the table, the current seed); the
        cut rows of the new start's session are carried by its new seed."""
        con = self._con
        register_starts(con, "_live_cut", starts)
        try:
            rows = f"SELECT b.* FROM {tail.table} AS b JOIN _live_cut AS s ON s.symbol = b.symbol WHERE true"
            cut = f"({rows} AND b.ts < s.start_ts)"
            whole = f"({_before_session(rows, 'b.ts', 's.start_ts')})"
            state = self._carried_query(cut, whole, tail.seeds)
            tod = con.execute(state["tod"]).to_arrow_table()
            sessions = con.execute(state["sessions"]).to_arrow_table()
        finally:
            con.unregister("_live_cut")
        self._insert_state(tod, sessions)
        con.execute("CREATE OR REPLACE TEMP TABLE _live_keep AS SELECT * FROM live_tod_all "
                    "QUALIFY row_number() OVER (PARTITION BY symbol, minute_of_day ORDER BY ts DESC) <= $n",
                    {"n": TOD_ROWS})
        con.execute("DELETE FROM live_tod_all")
        con.execute("INSERT INTO live_tod_all SELECT * FROM _live_keep")
        con.execute("CREATE OR REPLACE TEMP TABLE _live_keep AS SELECT * FROM live_session_totals "
                    "QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY trading_date DESC) <= $n",
                    {"n": SESSION_TOTALS})
        con.execute("DELETE FROM live_session_totals")
        con.execute("INSERT INTO live_session_totals SELECT * FROM _live_keep")
        con.execute("DROP TABLE _live_keep")

    def _carried_query(self, bars: str, whole: str, seeds: str = "") -> dict[str, str]:
        """SELECTs of the carried state: the latest rows per minute of day of the bar relation ``bars`` and the
        latest session totals of ``whole`` (its rows of complete sessions), with base.sql's own minute of day,
        trading date and v. ``seeds``: the volume family's seed table, whose ``seed_sess_v`` (the part of the
        table's first session before the table) is added to the earliest session of ``whole``."""
        params = template_params(self.timeframe)
        base = render("features/base.sql", **{**params, "source": bars})
        sessions = render("features/base.sql", **{**params, "source": whole})
        carried, join = "", ""
        if seeds:
            carried = (" + CASE WHEN b.trading_date = min(b.trading_date) OVER (PARTITION BY b.symbol) "
                       "THEN coalesce(any_value(sd.seed_sess_v), 0) ELSE 0 END")
            join = f" LEFT JOIN {seeds} AS sd ON sd.symbol = b.symbol"
        return {
            "tod": f"SELECT symbol, ts, minute_of_day, v FROM ({base}) "
                   f"QUALIFY row_number() OVER (PARTITION BY symbol, minute_of_day ORDER BY ts DESC) <= {TOD_ROWS}",
            "sessions": f"SELECT b.symbol, b.trading_date, sum(b.v){carried} AS total FROM ({sessions}) AS b{join} "
                        "GROUP BY b.symbol, b.trading_date QUALIFY row_number() OVER "
                        f"(PARTITION BY b.symbol ORDER BY b.trading_date DESC) <= {SESSION_TOTALS}",
        }

    def _insert_state(self, tod: pa.Table, sessions: pa.Table) -> None:
        con = self._con
        con.register("_live_tod", tod)
        con.register("_live_sessions", sessions)
        try:
            con.execute("INSERT INTO live_tod_all SELECT symbol, ts, minute_of_day, v FROM _live_tod")
            con.execute("INSERT INTO live_session_totals SELECT symbol, trading_date, total FROM _live_sessions")
        finally:
            con.unregister("_live_tod")
            con.unregister("_live_sessions")


def _session_state(name: str) -> bool:
    return name.startswith(SESSION_STATE_PREFIX)


def _before_session(rows: str, ts: str, start: str) -> str:
    """The SELECT ``rows`` (ending in a WHERE clause) kept to the bars at ``ts`` of an earlier trading date than
    ``start`` (SQL expressions; base.sql's trading date)."""
    return render_string("{% import 'macros.sql' as m %}{{ rows }} AND {{ m.trading_date(ts) }} < "
                         "{{ m.trading_date(start) }}", rows=rows, ts=ts, start=start)


def _dates_before(bars: str) -> str:
    """Scalar SELECT: trading dates of symbol $s in ``bars`` before the trading date of $t (base.sql's rule)."""
    return f"SELECT count(*) FROM ({_trading_dates(bars)}) WHERE trading_date < ({_trading_date_of()})"


def _trading_dates(bars: str) -> str:
    """SELECT of the distinct trading dates (base.sql's macro) of symbol $s in ``bars`` before $t, ascending."""
    return render_string("{% import 'macros.sql' as m %}SELECT DISTINCT {{ m.trading_date('ts') }} AS trading_date "
                         "FROM {{ bars }} WHERE symbol = $s AND ts < $t ORDER BY 1", bars=bars)


def _trading_date_of() -> str:
    """SELECT of the trading date of $t."""
    return render_string("{% import 'macros.sql' as m %}SELECT {{ m.trading_date('$t') }}")


def _configure(con: duckdb.DuckDBPyConnection, threads: int) -> duckdb.DuckDBPyConnection:
    """The live connection's settings, on it and on each of its cursors (a cursor starts from the defaults)."""
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET threads = {int(threads)}")
    # The statements are prepared once over tables whose contents change: no optimizer may fold an expression
    # from the column statistics of the moment (with empty tables, sid >= 1 was folded to false: all NULL).
    con.execute("SET disabled_optimizers = 'statistics_propagation,empty_result_pullup'")
    return con


def _literal(text: str) -> str:
    return text.replace("'", "''")
