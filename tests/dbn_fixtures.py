"""Synthetic Databento DBN files, built offline with ``databento_dbn`` (no network, no key).

The bytes are the real encoding (metadata header + fixed-width records), so whatever reads them goes
through the same decoder as a downloaded file. Prices are given as floats and stored as int64 fixed
point (1 unit = 1e-9); instrument ids are made up.

A continuous file (``stype_in="continuous"``, e.g. ``ES.v.0``) whose ``instrument_id`` changes between
bars is a roll: the metadata mappings say which instrument the continuous symbol meant on which dates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import databento_dbn
from databento_dbn import Schema, SType

#: One bar: (instrument_id, ts_event in ns = bar open time, open, high, low, close, volume).
Bar = tuple[int, int, float, float, float, float, int]
#: One mapping interval: (start_date inclusive, end_date exclusive, instrument_id).
Interval = tuple[date, date, int]

NS_PER_DAY = 86_400_000_000_000
PRICE_SCALE = 1_000_000_000  # databento_dbn.FIXED_PRICE_SCALE
_RTYPES = {"ohlcv-1s": 32, "ohlcv-1m": 33, "ohlcv-1h": 34, "ohlcv-1d": 35}
_SCHEMAS = {"ohlcv-1s": Schema.OHLCV_1S, "ohlcv-1m": Schema.OHLCV_1M, "ohlcv-1h": Schema.OHLCV_1H, "ohlcv-1d": Schema.OHLCV_1D}
_PUBLISHER_GLBX = 1  # GLBX.MDP3 on the GLBX venue


# The metadata encoder reads these two shapes by attribute (databento_dbn.metadata protocols).
@dataclass(frozen=True)
class _MappingInterval:
    start_date: date
    end_date: date
    symbol: str


@dataclass(frozen=True)
class _SymbolMapping:
    raw_symbol: str
    intervals: list[_MappingInterval]


def ns(text: str) -> int:
    """UTC nanoseconds of an ISO timestamp or date (``"2024-03-14T13:30"`` or ``"2024-03-14"``)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp()) * 1_000_000_000


def fixed(price: float) -> int:
    """A price in Databento's int64 fixed point (exact for prices on a 0.25 or 1/2^k grid)."""
    return int(round(price * PRICE_SCALE))


def _day(ts_ns: int) -> date:
    return date(1970, 1, 1) + timedelta(days=ts_ns // NS_PER_DAY)


def intervals_from_bars(bars: Sequence[Bar]) -> list[Interval]:
    """Mapping intervals implied by the bars: one per run of the same instrument id, abutting by date.

    A run starts on the UTC date of its first bar and ends where the next run starts (the last run ends
    the day after its last bar), which is how Databento maps a continuous symbol: by whole dates.
    """
    ordered = sorted(bars, key=lambda b: b[1])
    runs: list[tuple[int, date, date]] = []
    for iid, ts, *_ in ordered:
        if runs and runs[-1][0] == iid:
            runs[-1] = (iid, runs[-1][1], _day(ts))
        else:
            runs.append((iid, _day(ts), _day(ts)))
    out: list[Interval] = []
    for i, (iid, first, last) in enumerate(runs):
        end = runs[i + 1][1] if i + 1 < len(runs) else last + timedelta(days=1)
        out.append((first, end, iid))
    return out


def continuous_ohlcv(
    bars: Sequence[Bar],
    symbol: str = "ES.v.0",
    schema: str = "ohlcv-1m",
    mappings: Sequence[Interval] | None = None,
    start: int | None = None,
    end: int | None = None,
    dataset: str = "GLBX.MDP3",
) -> bytes:
    """Uncompressed DBN bytes of continuous-symbology OHLCV bars.

    Parameters
    ----------
    bars : sequence of Bar
        ``(instrument_id, ts_event_ns, open, high, low, close, volume)``; written in the order given.
    symbol : str
        The continuous input symbol (``ROOT.RULE.RANK``).
    schema : {"ohlcv-1s", "ohlcv-1m", "ohlcv-1h", "ohlcv-1d"}
        Record type of every bar.
    mappings : sequence of Interval, optional
        ``(start_date, end_date_exclusive, instrument_id)``; derived from the bars when omitted.
    start, end : int, optional
        The request range in the header (UTC ns); default the first bar's date to the day after the last.
    dataset : str
        Dataset code in the header.

    Returns
    -------
    bytes
        Metadata header followed by one OHLCV record per bar.
    """
    if schema not in _RTYPES:
        raise ValueError(f"schema must be one of {', '.join(_RTYPES)}")
    intervals = list(mappings) if mappings is not None else intervals_from_bars(bars)
    times = [b[1] for b in bars]
    if start is None:
        start = (min(times) // NS_PER_DAY) * NS_PER_DAY if times else 0
    if end is None:
        end = (max(times) // NS_PER_DAY + 1) * NS_PER_DAY if times else start + NS_PER_DAY
    metadata = databento_dbn.Metadata(
        dataset=dataset,
        start=start,
        end=end,
        stype_in=SType.CONTINUOUS,
        stype_out=SType.INSTRUMENT_ID,
        schema=_SCHEMAS[schema],
        symbols=[symbol],
        mappings=[_SymbolMapping(symbol, [_MappingInterval(s, e, str(iid)) for s, e, iid in intervals])],
    )
    out = bytearray(metadata.encode())
    rtype = _RTYPES[schema]
    for iid, ts, o, h, lo, c, v in bars:
        out += bytes(databento_dbn.OHLCVMsg(rtype, _PUBLISHER_GLBX, iid, ts, fixed(o), fixed(h), fixed(lo), fixed(c), v))
    return bytes(out)


def continuous_ohlcv_1m(
    bars: Sequence[Bar],
    symbol: str = "ES.v.0",
    mappings: Sequence[Interval] | None = None,
    start: int | None = None,
    end: int | None = None,
) -> bytes:
    """Uncompressed DBN bytes of continuous 1-minute bars; see :func:`continuous_ohlcv`."""
    return continuous_ohlcv(bars, symbol=symbol, schema="ohlcv-1m", mappings=mappings, start=start, end=end)


def continuous_definitions(
    contracts: Sequence[tuple[int, str, str]],
    symbol: str = "ES.v.0",
    mappings: Sequence[Interval] | None = None,
    start: int | None = None,
    end: int | None = None,
    tick: float = 0.25,
    multiplier: float = 50.0,
) -> bytes:
    """Uncompressed DBN bytes of instrument definitions for a continuous request.

    Parameters
    ----------
    contracts : sequence of (instrument_id, raw_symbol, expiration ISO timestamp)
        One definition record each (e.g. ``(5002, "ESH4", "2024-03-15T13:30")``).
    symbol, mappings, start, end
        As in :func:`continuous_ohlcv`; ``mappings`` defaults to one day per contract from ``start``.
    tick, multiplier : float
        Minimum price increment and contract multiplier of every contract.
    """
    start = ns("2024-01-01") if start is None else start
    end = start + NS_PER_DAY if end is None else end
    if mappings is None:
        first = _day(start)
        mappings = [(first + timedelta(days=i), first + timedelta(days=i + 1), c[0]) for i, c in enumerate(contracts)]
    metadata = databento_dbn.Metadata(
        dataset="GLBX.MDP3",
        start=start,
        end=end,
        stype_in=SType.CONTINUOUS,
        stype_out=SType.INSTRUMENT_ID,
        schema=Schema.DEFINITION,
        symbols=[symbol],
        mappings=[_SymbolMapping(symbol, [_MappingInterval(s, e, str(iid)) for s, e, iid in mappings])],
    )
    out = bytearray(metadata.encode())
    root = symbol.split(".")[0]
    for iid, raw_symbol, expiration in contracts:
        record = databento_dbn.InstrumentDefMsg(
            _PUBLISHER_GLBX,
            iid,
            start,
            start,
            fixed(tick),
            PRICE_SCALE,
            raw_symbol,
            root,
            "FUT",
            databento_dbn.InstrumentClass.FUTURE,
            databento_dbn.SecurityUpdateAction.ADD,
            expiration=ns(expiration),
            activation=start - 90 * NS_PER_DAY,
            unit_of_measure_qty=fixed(multiplier),
            currency="USD",
            exchange="XCME",
        )
        out += bytes(record)
    return bytes(out)
