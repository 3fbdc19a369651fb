"""Bars at the simulated gateway: the history of each contract, IB's duration and bar-size strings, aggregation.

Every bar pushed into the simulator (by a test or a replay) is kept per contract; ``reqHistoricalData``
answers from that history, aggregated to the requested bar size (open of the first bar, high/low over the
bucket, close of the last, volume summed; buckets start at multiples of the bar size since the epoch, daily
buckets at 00:00 UTC), and ``reqRealTimeBars`` subscribers get each pushed bar as it arrives. IB's real-time
bars are 5-second bars: :func:`split_5s` turns a pushed minute bar into twelve whose aggregate is that bar.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

__all__ = ["Bar", "BarHistory", "bar_seconds", "duration", "parse_end", "split_5s"]

_UNITS = {"sec": 1, "secs": 1, "min": 60, "mins": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400,
          "week": 7 * 86400, "weeks": 7 * 86400}
_DURATION = {"S": 1, "D": 86400, "W": 7 * 86400, "M": 30 * 86400, "Y": 365 * 86400}


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar opening at ``ts`` (tz-aware UTC)."""

    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int


def split_5s(bar: Bar, length_s: int = 60) -> list[Bar]:
    """A bar of ``length_s`` seconds as the 5-second bars IB would send for it, aggregating to it exactly.

    The price walks open -> high -> low -> close in the first three 5-second bars, which share the volume
    (the remainder to the first); the rest are flat at the close with no volume (no trade). With fewer than
    three contracts of volume the first 5-second bar is the whole bar. Prices stay on the bar's own values,
    hence on its tick grid.
    """
    count = length_s // 5
    if count < 1 or length_s % 5:
        raise ValueError(f"a {length_s}-second bar does not split into 5-second bars")
    step = timedelta(seconds=5)
    o, h, low, c, v = bar.open, bar.high, bar.low, bar.close, bar.volume
    if v >= 3 and count >= 3:
        share, extra = divmod(v, 3)
        path = [Bar(bar.ts, o, h, o, h, share + extra), Bar(bar.ts + step, h, h, low, low, share),
                Bar(bar.ts + 2 * step, low, c, low, c, share)]
    else:
        path = [Bar(bar.ts, o, h, low, c, v)]
    return path + [Bar(bar.ts + k * step, c, c, c, c, 0) for k in range(len(path), count)]


def bar_seconds(setting: str) -> int:
    """IB's ``barSizeSetting`` (``"1 min"``, ``"5 secs"``, ``"1 hour"``, ``"1 day"``) in seconds.

    Raises
    ------
    ValueError
        Not ``<n> <unit>``.
    """
    match = re.fullmatch(r"\s*(\d+)\s+([a-z]+)\s*", setting)
    if match is None or match[2] not in _UNITS:
        raise ValueError(f"bar size {setting!r} is not '<n> secs|mins|hours|day|week'")
    return int(match[1]) * _UNITS[match[2]]


def duration(text: str) -> timedelta:
    """IB's ``durationStr`` (``"3600 S"``, ``"2 D"``, ``"1 W"``, ``"1 M"``, ``"1 Y"``; a month is 30 days)."""
    match = re.fullmatch(r"\s*(\d+)\s+([SDWMY])\s*", text)
    if match is None:
        raise ValueError(f"duration {text!r} is not '<n> S|D|W|M|Y'")
    return timedelta(seconds=int(match[1]) * _DURATION[match[2]])


def parse_end(text: str, now: datetime) -> datetime:
    """``endDateTime``: empty = now; ``YYYYMMDD HH:MM:SS [zone]`` (UTC without a zone) or ``YYYYMMDD-HH:MM:SS`` (UTC)."""
    text = text.strip()
    if not text:
        return now
    if len(text) == 8:  # a bare date: its midnight
        text += " 00:00:00"
    day, clock, *zone = text.replace("-", " ", 1).split(" ", 2)
    tz = ZoneInfo(zone[0]) if zone else timezone.utc
    return datetime.strptime(day + clock, "%Y%m%d%H:%M:%S").replace(tzinfo=tz).astimezone(timezone.utc)


class BarHistory:
    """Bars per contract id, kept in time order."""

    def __init__(self) -> None:
        self._bars: dict[int, list[Bar]] = {}
        self._times: dict[int, list[datetime]] = {}

    def add(self, con_id: int, bar: Bar) -> None:
        bars = self._bars.setdefault(con_id, [])
        times = self._times.setdefault(con_id, [])
        k = bisect.bisect_right(times, bar.ts)
        bars.insert(k, bar)
        times.insert(k, bar.ts)

    def window(self, con_id: int, start: datetime, end: datetime, size_s: int) -> list[Bar]:
        """Bars of ``[start, end)`` aggregated to ``size_s`` seconds."""
        times = self._times.get(con_id, [])
        bars = self._bars.get(con_id, [])[bisect.bisect_left(times, start):bisect.bisect_left(times, end)]
        buckets: dict[int, list[Bar]] = {}
        for bar in bars:
            buckets.setdefault(int(bar.ts.timestamp()) // size_s, []).append(bar)
        return [
            Bar(datetime.fromtimestamp(key * size_s, timezone.utc), group[0].open, max(b.high for b in group),
                min(b.low for b in group), group[-1].close, sum(b.volume for b in group))
            for key, group in sorted(buckets.items())
        ]
