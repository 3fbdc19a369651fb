"""Real-time bars folded into the query's timeframe on the CME session clock.

IB sends 5-second bars (``reqRealTimeBars``); a strategy trades 1-minute or hourly bars. :class:`BarAggregator`
folds the 5-second bars of each (root, contract) into buckets of the timeframe and hands a bucket out only once
its interval has closed: when the 5-second bar of its last seconds arrives (IB sends a 5-second bar once it has
ended), when a later one arrives past its end, or when :meth:`BarAggregator.close_due` is told that the clock passed
the end plus a grace (a quiet market, the daily halt, a last 5-second bar that never came).

Conventions, the warehouse's (``warehouse/layout.py``, ``sql/resample_intraday.sql``, DESIGN.md):

* A bar is stamped with its **open** time, tz-aware UTC, and is known at ``ts + timeframe``.
* Intraday buckets start at multiples of the timeframe since the Unix epoch (UTC), the grid ``qe ingest``
  validates (``ts_not_aligned``) and ``bars_5m`` / ``bars_1h_from_1m`` use. The timeframe must divide one hour,
  so a bucket never straddles the 17:00-18:00 ET maintenance halt (ET offsets from UTC are whole hours).
* ``1d`` is the CME session bar of a trading date, stamped at the session open (18:00 ET the evening before;
  the ``session`` daily convention).
* A bucket's interval ends at the earlier of its grid end and its session's close, which the root's exchange
  calendar (pandas_market_calendars via :mod:`warehouse.sessions`) gives, early closes included: on an
  abbreviated day the last hourly bar is final at the early close, not an hour later.
* A 5-second bar with no volume carries no trade: it advances the clock but never sets a price, so the folded
  bars equal bars built from trades (Databento's OHLCV has no record for an interval without trades; a bucket
  with no trade is not emitted).
* 5-second bars outside every session of the root (the halt, a holiday) are skipped and counted; so are
  bars at or before the last one seen for their contract (a repeat after a reconnect, or out of order).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache

import pyarrow as pa

from warehouse import schemas
from warehouse.sessions import session_bounds, trading_date, trading_sessions

__all__ = ["Bar", "FinalBar", "BarAggregator", "timeframe_seconds", "bars_table", "SOURCE_SECONDS", "market_open"]

#: IB's real-time bars are 5 seconds long (the only size reqRealTimeBars accepts).
SOURCE_SECONDS = 5
_HOUR = 3600
_UNITS = {"s": 1, "m": 60, "h": 3600}


def timeframe_seconds(timeframe: str) -> int:
    """Length of an intraday timeframe (``"1m"``, ``"5m"``, ``"1h"``, ``"30s"``) in seconds; ``"1d"`` gives 86400.

    Raises
    ------
    ValueError
        Not ``<n>s|m|h`` or ``1d``, not a multiple of 5 s, or not dividing one hour.
    """
    if timeframe == "1d":
        return 86_400
    match = re.fullmatch(r"(\d+)([smh])", timeframe)
    if match is None:
        raise ValueError(f"timeframe {timeframe!r} is not '<n>s', '<n>m', '<n>h' or '1d'")
    seconds = int(match[1]) * _UNITS[match[2]]
    if seconds <= 0 or seconds % SOURCE_SECONDS or _HOUR % seconds:
        raise ValueError(f"timeframe {timeframe!r}: must be a multiple of {SOURCE_SECONDS} s that divides one hour "
                         "(so that no bar straddles the daily halt)")
    return seconds


@dataclass(frozen=True, slots=True)
class Bar:
    """A bar as the broker sends it (a 5-second real-time bar).

    Attributes
    ----------
    root, contract : str
        The product (``MES``) and the exchange contract (``MESH6``), as the warehouse names them.
    ts : datetime
        Open time of the bar, tz-aware (any zone; UTC is used).
    open, high, low, close : float
        Prices in the contract's own units.
    volume : int
        Contracts traded in the bar; 0 means no trade.
    """

    root: str
    contract: str
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int


@dataclass(frozen=True, slots=True)
class FinalBar:
    """A bar of the timeframe whose interval has closed.

    Attributes
    ----------
    root, contract : str
    ts : datetime
        Open time (UTC), on the timeframe's grid (``1d``: the session open).
    end : datetime
        When the interval closed (UTC): ``ts + timeframe``, or the session's (early) close.
    trading_date : datetime.date
        CME trading date of the bar.
    open, high, low, close : float
        First trade's open, highest high, lowest low, last close of the folded bars.
    volume : int
        Sum of the folded bars' volumes.
    parts : int
        How many source bars with trades were folded in.
    """

    root: str
    contract: str
    ts: datetime
    end: datetime
    trading_date: date
    open: float
    high: float
    low: float
    close: float
    volume: int
    parts: int


@dataclass(slots=True)
class _Bucket:
    ts: datetime
    end: datetime
    trading_date: date
    open: float = 0.0
    high: float = 0.0
    low: float = 0.0
    close: float = 0.0
    volume: int = 0
    parts: int = 0

    def fold(self, bar: Bar) -> None:
        if self.parts == 0:
            self.open, self.high, self.low = bar.open, bar.high, bar.low
        else:
            self.high, self.low = max(self.high, bar.high), min(self.low, bar.low)
        self.close = bar.close
        self.volume += int(bar.volume)
        self.parts += 1

    def final(self, root: str, contract: str) -> FinalBar:
        return FinalBar(root, contract, self.ts, self.end, self.trading_date, self.open, self.high, self.low,
                        self.close, self.volume, self.parts)


class BarAggregator:
    """Folds 5-second bars per (root, contract) into final bars of one timeframe.

    Parameters
    ----------
    timeframe : str
        ``"1m"`` (default), ``"5m"``, ``"15m"``, ``"1h"``, ... (dividing one hour), or ``"1d"`` (session bars).
    grace : timedelta
        How long after an interval's end :meth:`close_due` waits for late source bars before closing it
        (IB delivers a 5-second bar a moment after it ends). Default 2 s.

    Attributes
    ----------
    skipped : collections.Counter
        Source bars not folded, by reason: ``late`` (at or before the last bar seen of its contract),
        ``outside_session`` (the halt, a holiday), ``no_trades`` (volume 0), ``after_close`` (of an interval
        already handed out: the clock closed it before the bar came).
    """

    def __init__(self, timeframe: str = "1m", *, grace: timedelta = timedelta(seconds=2)) -> None:
        self.timeframe = timeframe
        self.seconds = timeframe_seconds(timeframe)
        self.grace = grace
        self.skipped: Counter[str] = Counter()
        self._open: dict[tuple[str, str], _Bucket] = {}
        self._last: dict[tuple[str, str], datetime] = {}
        self._ended: dict[tuple[str, str], datetime] = {}  # end of the last bar handed out, per (root, contract)
        self._sessions: dict[tuple[str, int], dict[date, tuple[datetime, datetime]]] = {}

    # -- feeding ----------------------------------------------------------------------------------
    def add(self, bar: Bar) -> list[FinalBar]:
        """Fold one source bar; return the bars of its contract it closed (oldest first, usually none or one).

        Raises
        ------
        ValueError
            A naive ``ts``, or one off the 5-second grid.
        """
        ts = _utc(bar.ts)
        if int(ts.timestamp()) % SOURCE_SECONDS or ts.microsecond:
            raise ValueError(f"{bar.contract} bar at {ts:%Y-%m-%d %H:%M:%S.%f} is not on the {SOURCE_SECONDS}-second grid")
        key = (bar.root, bar.contract)
        last = self._last.get(key)
        if last is not None and ts <= last:
            self.skipped["late"] += 1
            return []
        self._last[key] = ts
        closed = self._close(key, ts)
        bucket = self._bucket_of(bar.root, ts)
        if bucket is None:
            self.skipped["outside_session"] += 1
        elif key in self._ended and bucket.ts < self._ended[key]:
            # its interval was handed out already (the clock closed it before this bar came): the bar stands
            self.skipped["after_close"] += 1
        elif bar.volume <= 0:
            self.skipped["no_trades"] += 1
        else:
            current = self._open.get(key)
            if current is None or current.ts != bucket.ts:
                current = self._open[key] = bucket
            current.fold(bar)
        # IB sends a 5-second bar once it has ended: the one of an interval's last seconds ends the interval, so
        # its bar is final now (2 s sooner than the grace's clock, 5 s sooner than the next source bar)
        return closed + self._close(key, ts + timedelta(seconds=SOURCE_SECONDS))

    def add_many(self, bars: Iterable[Bar]) -> list[FinalBar]:
        """:meth:`add` each bar in order; every bar closed, oldest first."""
        out: list[FinalBar] = []
        for bar in bars:
            out.extend(self.add(bar))
        return out

    def close_due(self, now: datetime) -> list[FinalBar]:
        """Close every open bar whose interval ended at least ``grace`` before ``now`` (tz-aware).

        Returns
        -------
        list of FinalBar
            Sorted by (ts, root, contract).
        """
        cutoff = _utc(now) - self.grace
        out: list[FinalBar] = []
        for key in list(self._open):
            out.extend(self._close(key, cutoff))
        return sorted(out, key=lambda b: (b.ts, b.root, b.contract))

    def last_seen(self, root: str, contract: str) -> datetime | None:
        """Open time (UTC) of the last source bar taken for ``contract`` (folded or skipped), or None."""
        return self._last.get((root, contract))

    def pending(self, root: str, contract: str) -> FinalBar | None:
        """The bar in progress of ``contract`` as it stands (not final), or None."""
        bucket = self._open.get((root, contract))
        return None if bucket is None else bucket.final(root, contract)

    # -- internals --------------------------------------------------------------------------------
    def _close(self, key: tuple[str, str], at: datetime) -> list[FinalBar]:
        bucket = self._open.get(key)
        if bucket is None or bucket.end > at:
            return []
        del self._open[key]
        self._ended[key] = bucket.end
        return [bucket.final(*key)]

    def _bucket_of(self, root: str, ts: datetime) -> _Bucket | None:
        """The empty bucket ``ts`` falls in, or None outside the root's sessions."""
        day = trading_date(ts)
        session = self._session(root, day)
        if session is None or not session[0] <= ts < session[1]:
            return None
        if self.seconds == 86_400:
            return _Bucket(session[0], session[1], day)
        epoch = int(ts.timestamp())
        start = datetime.fromtimestamp(epoch - epoch % self.seconds, timezone.utc)
        return _Bucket(start, min(start + timedelta(seconds=self.seconds), session[1]), day)

    def _session(self, root: str, day: date) -> tuple[datetime, datetime] | None:
        """(open, close) in UTC of ``root``'s session on trading date ``day``; None on a day without one.

        From the root's exchange calendar (one year at a time, cached); a root the contracts table does not
        list gets the regular Globex session on weekdays.
        """
        year = self._sessions.get((root, day.year))
        if year is None:
            year = self._sessions[(root, day.year)] = _sessions_of_year(root, day.year)
        return year.get(day)


def _sessions_of_year(root: str, year: int) -> dict[date, tuple[datetime, datetime]]:
    try:
        table = trading_sessions(root, date(year, 1, 1), date(year, 12, 31))
    except KeyError:  # not in contracts.csv: the regular session, Monday to Friday
        days = (date(year, 1, 1) + timedelta(days=k) for k in range(366))
        return {d: session_bounds(d) for d in days if d.year == year and d.weekday() < 5}
    return {
        row.trading_date.date(): (row.open_utc.to_pydatetime(), row.close_utc.to_pydatetime())
        for row in table.itertuples(index=False)
    }


def _utc(ts: datetime) -> datetime:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"bar times must be tz-aware, got {ts!r}")
    return ts.astimezone(timezone.utc)


#: Columns of :func:`bars_table` (what :func:`engine.live.store.append_bars` takes).
BARS_TABLE = pa.schema([
    ("symbol", pa.string()), ("contract", pa.string()), ("ts", schemas.TS), ("open", pa.float64()),
    ("high", pa.float64()), ("low", pa.float64()), ("close", pa.float64()), ("volume", pa.int64()),
])


def bars_table(bars: Sequence[FinalBar | Bar]) -> pa.Table:
    """Bars (final, or as received) as an Arrow table: ``symbol`` (the root), ``contract``, ``ts`` (UTC open time), OHLC, volume."""
    return pa.table({
        "symbol": [b.root for b in bars], "contract": [b.contract for b in bars], "ts": [b.ts for b in bars],
        "open": [b.open for b in bars], "high": [b.high for b in bars], "low": [b.low for b in bars],
        "close": [b.close for b in bars], "volume": [b.volume for b in bars],
    }, schema=BARS_TABLE)


@lru_cache(maxsize=64)
def _year_sessions(root: str, year: int) -> dict[date, tuple[datetime, datetime]]:
    return _sessions_of_year(root, year)


def market_open(root: str, moment: datetime) -> bool:
    """Whether ``root``'s market trades at ``moment`` (tz-aware): inside its session of that trading date, from
    the exchange calendar (holidays, early closes and the daily maintenance halt are closed)."""
    moment = _utc(moment)
    day = trading_date(moment)
    session = _year_sessions(root, day.year).get(day)
    return session is not None and session[0] <= moment < session[1]
