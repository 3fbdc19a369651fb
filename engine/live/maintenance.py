"""Roll upkeep of a long-running session: the roll table, the contracts streamed, and the features, kept current.

A session reads the roll table when it starts; a trader runs it for days or weeks. :class:`RollMaintenance`
keeps its view of the front current without a restart. Once per trading day, in CME's daily maintenance
halt (no root of the session trades then, so no bar arrives: nothing of this is on a bar's close path), and
when the operator asks (``qe live rolls``), it:

1. rebuilds the roll table of the session's roots with the warehouse's configured rule (the rule each root
   was last built with, as ``qe rolls build`` without ``--rule``) from every stored bar, the bars this
   session stored included, under the warehouse write lock (taken in a worker thread, with a timeout; never
   held while a broker request is out);
2. refreshes the session's view of the fronts (:meth:`engine.live.session.LiveSession.load_fronts`) and the
   kernel's roll prices;
3. works out each root's front for the next session (the roll table's front at the next session's open) and
   the contract after it in the product's listing cycle (``contract_months`` of the contracts table), which is
   streamed too so that a volume or open-interest crossover can be seen in the bars stored live;
4. qualifies the contracts not streamed yet at the broker and subscribes their bars in the feed
   (:meth:`~engine.adapters.ib.handler.IBExecutionHandler.add_contracts`,
   :meth:`~engine.adapters.ib.data.IBBarFeed.add_streams`); a contract no longer needed (not the front now,
   at the next open, nor the one after it, nor held, nor the handler's) stops streaming;
5. reloads the per-bar features (:meth:`warehouse.features.live.LiveFeatures.reload`) of the roots whose
   front segments (contract, start, ratio factor) changed: a new roll rescales every earlier back-adjusted
   price, and the in-memory tails are reloaded from the warehouse (exact) rather than rescaled.

Each change is logged and kept as a run event (kind ``roll``): ``ROLL_SCHEDULED`` (a roll the table did not
hold), ``ROLL_UNSCHEDULED`` (one it no longer holds), ``ROLL_LATE`` (a new roll effective at or before the
last decided bar: the position rolls at the next bar instead), ``STREAM_ADDED``, ``STREAM_DROPPED``,
``CONTRACT_UNKNOWN`` (the broker does not list the contract after the front yet), ``FEATURES_RELOADED``;
a step that fails is ``MAINTENANCE_FAILED`` and the session trades on with what it had.

The kernel then rolls exactly as a backtest does: when the query's row of a root names another contract than
the last one (the ``contract`` column of ``bars_<tf>`` changes at the roll table's ``roll_ts``), also when
that is the first bar of the next session.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from engine.live.bars import _year_sessions, market_open
from warehouse.contracts import contract_symbol, load_specs, parse_contract
from warehouse.errors import QEError
from warehouse.sessions import trading_date

if TYPE_CHECKING:
    from engine.adapters.ib.data import IBBarFeed
    from engine.adapters.ib.handler import IBExecutionHandler
    from engine.live.session import LiveSession

__all__ = ["RollMaintenance", "MaintenanceReport", "next_contract", "last_closed_session", "next_session_open"]

log = logging.getLogger(__name__)

#: Seconds the rebuild waits for the warehouse write lock (another writer: an ingest, a features build).
LOCK_TIMEOUT_S = 120.0


def next_contract(contract: str, on: date) -> str | None:
    """The contract listed after ``contract`` in its product's cycle (``ESZ3`` -> ``ESH4``), or None for a
    symbol that is not a contract of a root in the contracts table.

    Parameters
    ----------
    contract : str
        A local symbol such as ``ESZ3`` (a one-digit year is read relative to ``on``).
    on : datetime.date
        When the symbol is seen (its trading date), to date a one-digit year.
    """
    parsed = parse_contract(contract, on)
    spec = load_specs().get(parsed.root) if parsed is not None else None
    if parsed is None or spec is None:
        return None
    later = [m for m in spec.months if m > parsed.month]
    year, month = (parsed.year, later[0]) if later else (parsed.year + 1, spec.months[0])
    return contract_symbol(parsed.root, year, month)


def _sessions_around(root: str, moment: datetime) -> list[tuple[date, datetime, datetime]]:
    """(trading date, open, close) in UTC of ``root``'s sessions from the year before ``moment`` to the year
    after, in order."""
    day = trading_date(moment)
    out = []
    for year in (day.year - 1, day.year, day.year + 1):
        out.extend((d, o, c) for d, (o, c) in _year_sessions(root, year).items())
    return sorted(out)


def last_closed_session(root: str, moment: datetime) -> date | None:
    """Trading date of ``root``'s latest session closed at ``moment`` (tz-aware)."""
    closed = [d for d, _, close in _sessions_around(root, moment) if close <= moment]
    return closed[-1] if closed else None


def next_session_open(root: str, moment: datetime) -> datetime | None:
    """Open (UTC) of ``root``'s first session opening after ``moment``."""
    opens = [o for _, o, _ in _sessions_around(root, moment) if o > moment]
    return opens[0] if opens else None


@dataclass
class MaintenanceReport:
    """What one maintenance pass did.

    Attributes
    ----------
    at : datetime
        The session clock when it ran (UTC).
    reason : {"halt", "operator", "start"}
    day : datetime.date or None
        The trading date whose close it followed (``halt``).
    fronts : dict
        root -> (front at the next session's open, the contract after it).
    changes : list of str
        One line per change (the events' messages).
    failed : str or None
        Why a step failed (the session trades on with what it had).
    """

    at: datetime
    reason: str
    day: date | None = None
    fronts: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)
    failed: str | None = None


class RollMaintenance:
    """Roll upkeep of one running session (module docstring).

    Parameters
    ----------
    session : LiveSession
    handler : IBExecutionHandler
        Connected.
    feed : IBBarFeed, optional
        Its streams follow the contracts needed; set before the first :meth:`run` that subscribes.
    lock_timeout_s : float
        Seconds the rebuild waits for the warehouse write lock before giving up until the next pass.

    Attributes
    ----------
    last_day : datetime.date or None
        The trading date whose halt was maintained last.
    requested : bool
        The operator asked for a pass (``qe live rolls``): it runs between the next bars.
    reports : list of MaintenanceReport
    """

    def __init__(self, session: LiveSession, handler: IBExecutionHandler, feed: IBBarFeed | None = None, *,
                 lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.session = session
        self.handler = handler
        self.feed = feed
        self.lock_timeout_s = lock_timeout_s
        self.last_day: date | None = None
        self.requested = False
        self.reports: list[MaintenanceReport] = []
        self.running = False

    # -- when -----------------------------------------------------------------------------------------
    def halt_day(self, now: datetime) -> date | None:
        """The trading date whose close begins the halt ``now`` is in (no root of the session trades), if it was
        not maintained yet; else None. A weekend or holiday is one halt: it follows the last session closed."""
        roots = self.session.roots
        if not roots or any(market_open(root, now) for root in roots):
            return None
        day = max((d for d in (last_closed_session(root, now) for root in roots) if d is not None), default=None)
        if day is None or (self.last_day is not None and day <= self.last_day):
            return None
        return day

    def due(self, now: datetime) -> bool:
        """Whether a pass should run now: the operator asked, or the first look at a new daily halt once the
        feed stored and handed out the session's last bars (:meth:`~engine.adapters.ib.data.IBBarFeed.idle`: the
        features reload reads the warehouse, so no stored bar may still wait to be decided); the operator's
        request waits only for the bars being stored (:meth:`~engine.adapters.ib.data.IBBarFeed.settled`: their
        features may be computed already)."""
        if self.running:
            return False
        if self.requested:
            return self.feed is None or self.feed.settled()
        return self.halt_day(now) is not None and (self.feed is None or self.feed.idle())

    def done_through(self, day: date) -> bool:
        """Whether the halt after trading date ``day`` (or a later one) was maintained."""
        return self.last_day is not None and self.last_day >= day

    # -- what -----------------------------------------------------------------------------------------
    async def prepare(self, after: dict[str, str | None], now: datetime) -> None:
        """At start, before the feed subscribes: qualify ``after`` (root -> the contract after its latest front),
        so that it is streamed from the first bar on; one the broker does not list is logged, not fatal."""
        for root, local in after.items():
            if not local or local in self.handler.listed:
                continue
            added, unknown = await self.handler.add_contracts(root, [local])
            for contract in added:
                self._event(now, "STREAM_ADDED", root, f"{root}: {contract.localSymbol} (the contract after the "
                            "front) qualified and streamed")
            for missing in unknown:
                self._event(now, "CONTRACT_UNKNOWN", root, f"{root}: the broker has no unique {missing} future yet; "
                            "not streamed (asked again at the next maintenance)", level=logging.WARNING)

    async def run(self, now: datetime | None = None, reason: str | None = None) -> MaintenanceReport:
        """One pass (module docstring, steps 1-5); returns its report. Never raises for a failed step: the
        failure is logged, kept as ``MAINTENANCE_FAILED`` and the session trades on with what it had."""
        session = self.session
        now = (now or session.clock()).astimezone(timezone.utc)
        day = self.halt_day(now)
        reason = reason or ("operator" if self.requested else "halt")
        report = MaintenanceReport(now, reason, day)
        self.requested = False
        self.running = True
        try:
            await self._run(report, now)
        except Exception as exc:  # noqa: BLE001 - the session must go on trading
            report.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            self._event(now, "MAINTENANCE_FAILED", None, f"roll maintenance ({reason}) failed: {report.failed}; "
                        "trading on with the roll table and contracts it had", level=logging.ERROR)
        finally:
            self.running = False
            if day is not None:
                self.last_day = day
        self.reports.append(report)
        log.info("roll maintenance (%s) done: %s", reason,
                 "; ".join(f"{r} next {f} then {n}" for r, (f, n) in report.fronts.items()) or "no roots")
        return report

    async def _run(self, report: MaintenanceReport, now: datetime) -> None:
        session = self.session
        roots = list(session.roots)
        session.refresh_rolls()  # what the files hold now (a qe rolls build may have run since the last look)
        before_rolls = self._rolls(roots)
        before_segments = self._segments(roots)
        await asyncio.to_thread(_rebuild_rolls, Path(session.wh.root), roots, self.lock_timeout_s)
        session.refresh_rolls()
        after_rolls = self._rolls(roots)
        last = session.decided[-1] if session.decided else None
        for key in sorted(set(after_rolls) - set(before_rolls), key=lambda k: (k[0], k[1])):
            root, roll_ts, old, new = key
            self._event(now, "ROLL_SCHEDULED", root, f"{root}: the roll table now rolls {old} -> {new} at "
                        f"{roll_ts.isoformat()} ({after_rolls[key]})", report=report)
            if last is not None and roll_ts <= last:
                self._event(now, "ROLL_LATE", root, f"{root}: the roll {old} -> {new} takes effect at "
                            f"{roll_ts.isoformat()}, at or before the last decided bar {last.isoformat()}: a "
                            f"position rolls at the next bar", level=logging.WARNING, report=report)
        for root, roll_ts, old, new in sorted(set(before_rolls) - set(after_rolls), key=lambda k: (k[0], k[1])):
            self._event(now, "ROLL_UNSCHEDULED", root, f"{root}: the roll table no longer rolls {old} -> {new} at "
                        f"{roll_ts.isoformat()}", level=logging.WARNING, report=report)
        # the fronts of the next session and the contracts after them: streamed (and qualified) from now on
        wanted: dict[str, list[str]] = {}
        held = session.held_contracts()
        for root in roots:
            opens = next_session_open(root, now)
            front = session.front_at(root, opens) if opens is not None else None
            after = next_contract(front, trading_date(opens)) if front is not None and opens is not None else None
            report.fronts[root] = (front, after)
            keep = [front, after, session.front_at(root, now), self.handler.traded_contract(root), held.get(root)]
            wanted[root] = list(dict.fromkeys(c for c in keep if c))
        await self._streams(report, now, wanted)
        after_segments = self._segments(roots)
        changed = [root for root in roots if after_segments.get(root) != before_segments.get(root)]
        if changed and session.features is not None:
            # the bars the features have taken: those up to the last decided bar (a bar stored since, on the
            # operator's request mid-session, is appended when it is decided)
            before = {} if last is None else {root: last + timedelta(microseconds=session.kernel.bar_ns // 1000)
                                               for root in changed}
            await asyncio.to_thread(session.features.reload, changed, before)
            self._event(now, "FEATURES_RELOADED", ",".join(changed), f"features of {', '.join(changed)} reloaded "
                        "from the warehouse: their front segments changed", report=report)

    async def _streams(self, report: MaintenanceReport, now: datetime, wanted: dict[str, list[str]]) -> None:
        """Qualify and stream the wanted contracts not streamed yet; stop streaming those no longer wanted."""
        handler, feed = self.handler, self.feed
        streamed = {c.localSymbol for _, c in (feed.contracts if feed is not None else handler.streams())}
        for root, contracts in wanted.items():
            new = [c for c in contracts if c not in streamed]
            if not new:
                continue
            added, unknown = await handler.add_contracts(root, new)
            for local in unknown:
                self._event(now, "CONTRACT_UNKNOWN", root, f"{root}: the broker has no unique {local} future yet; "
                            "not streamed (asked again at the next maintenance)", level=logging.WARNING,
                            report=report)
            pairs = [(root, c) for c in added if c.localSymbol not in streamed]
            if pairs and feed is not None:
                await feed.add_streams(pairs)
            for _, contract in pairs:
                self._event(now, "STREAM_ADDED", root, f"{root}: {contract.localSymbol} qualified and its bars "
                            "streamed", report=report)
        if feed is None:
            return
        keep = {c for contracts in wanted.values() for c in contracts}
        drop = [(root, c.localSymbol) for root, c in feed.contracts if root in wanted and c.localSymbol not in keep]
        if drop:
            feed.drop_streams([local for _, local in drop])
            for root, local in drop:
                handler.forget(root, local)
                self._event(now, "STREAM_DROPPED", root, f"{root}: {local} no longer streamed (not the front, the "
                            "next one, nor held)", report=report)

    # -- helpers --------------------------------------------------------------------------------------
    def _rolls(self, roots: list[str]) -> dict[tuple, str]:
        rows = self.session.query_rows(
            "SELECT symbol, roll_ts, from_contract, to_contract, rule FROM rolls WHERE list_contains($roots, symbol)",
            roots)
        return {(s, ts, f, t): rule for s, ts, f, t, rule in rows}

    def _segments(self, roots: list[str]) -> dict[str, list[tuple]]:
        """Per root, what its back-adjusted prices depend on: (contract, valid_from, ratio_factor) of every
        front segment (what :class:`~warehouse.features.live.LiveFeatures` compares)."""
        rows = self.session.query_rows(
            "SELECT symbol, contract, valid_from, ratio_factor FROM front_segments WHERE list_contains($roots, symbol) "
            "ORDER BY symbol, valid_from NULLS FIRST", roots)
        out: dict[str, list[tuple]] = {}
        for symbol, *segment in rows:
            out.setdefault(symbol, []).append(tuple(segment))
        return out

    def _event(self, now: datetime, code: str, symbol: str | None, message: str, *, level: int = logging.INFO,
               report: MaintenanceReport | None = None) -> None:
        log.log(level, "%s %s", code, message)
        self.session.kernel.events.append((int(now.timestamp() * 1e9), "roll", code, symbol, None, message))
        if report is not None:
            report.changes.append(f"{code} {message}")


def _rebuild_rolls(root: Path, roots: list[str], lock_timeout_s: float) -> None:
    """``build_rolls`` of ``roots`` with each root's configured rule, on a warehouse object of its own (this runs
    in a worker thread: the loop's shared connection is not touched), under the write lock."""
    from warehouse import Warehouse
    from warehouse.lock import LockTimeout, write_lock
    from warehouse.rolls import build_rolls

    wh = Warehouse(root)
    try:
        with write_lock(wh.root, timeout=lock_timeout_s, command="qe live (roll maintenance)"):
            build_rolls(wh, roots)
    except LockTimeout as exc:
        raise QEError(f"the warehouse write lock was busy for {lock_timeout_s:g} s ({exc})") from exc
    finally:
        wh.close()


def halt_after(root: str, day: date) -> datetime | None:
    """The close (UTC) of ``root``'s session on trading date ``day``: where the halt after it begins."""
    session = _year_sessions(root, day.year).get(day)
    return None if session is None else session[1]

