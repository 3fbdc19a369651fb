"""QuantConnect LEAN futures zip files.

Layout (LEAN's ``Data/future/<market>/<resolution>/...``):

* minute / second: ``<resolution>/<root>/YYYYMMDD_trade.zip`` holding one CSV per contract month,
  ``YYYYMMDD_<root>_minute_trade_<YYYYMM>.csv``, rows ``ms_since_midnight,open,high,low,close,volume``.
* hour / daily: ``<resolution>/<root>_trade.zip`` holding ``<root>_trade_<YYYYMM>.csv``, rows
  ``YYYYMMDD HH:MM,open,high,low,close,volume``.
* open interest: the same with ``openinterest`` for ``trade`` and rows ``time,open_interest``.

Times are UTC (LEAN's market-hours database: ``Future-cme-ES`` data time zone UTC). Prices are plain
index points. The resolution comes from the folder name and ``--timeframe`` overrides it; root and
contract month come from the CSV names.
"""

from __future__ import annotations

import io
import re
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from loaders.raw import RawFile, raw_bars_table
from warehouse.errors import LoadError

_MEMBER = re.compile(
    r"^(?:(?P<date>\d{8})_)?(?P<root>[a-z0-9]+)_(?:(?P<res>minute|second|hour|daily)_)?"
    r"(?P<kind>trade|openinterest|quote)_(?P<month>\d{6})\.csv$"
)
_RESOLUTIONS = {"second": "1s", "minute": "1m", "hour": "1h", "daily": "1d"}


def is_lean_zip(path: Path) -> bool:
    """True when ``path`` is a zip whose members are named like LEAN futures CSVs."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if not _is_junk(n)]
    return bool(names) and all(_MEMBER.match(Path(n).name) for n in names)


def read_lean_zip(path: Path, timeframe: str | None) -> RawFile:
    """Read one LEAN futures zip (trade bars or open interest) into a :class:`RawFile`."""
    from warehouse.contracts import contract_symbol

    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise LoadError(str(path), f"not a readable zip ({exc})") from exc
    bars: list[pa.Table] = []
    interest: list[pa.Table] = []
    with archive:
        members = [n for n in archive.namelist() if not _is_junk(n)]
        if not members:
            raise LoadError(str(path), "the zip is empty")
        tf = timeframe or _resolution_from_members(members) or _resolution_from_folders(path)
        for name in members:
            match = _MEMBER.match(Path(name).name)
            if match is None:
                raise LoadError(str(path), f"member {name!r} is not named like a LEAN futures CSV")
            if match["kind"] == "quote":
                raise LoadError(str(path), "LEAN quote (bid/ask) bars are not supported; ingest the *_trade.zip files")
            root = match["root"].upper()
            month = match["month"]
            contract = contract_symbol(root, int(month[:4]), int(month[4:]))
            try:
                payload = archive.read(name)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise LoadError(str(path), f"member {name!r} cannot be read ({exc})") from exc
            where = f"{path}::{name}"
            if not payload.strip():
                continue
            if not payload.endswith(b"\n"):
                payload += b"\n"  # Arrow cannot read a one-row CSV without a final newline
            try:
                rows = pacsv.read_csv(
                    io.BytesIO(payload),
                    read_options=pacsv.ReadOptions(autogenerate_column_names=True),
                    convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
                )
            except pa.ArrowInvalid as exc:
                raise LoadError(where, f"not a readable CSV ({str(exc).splitlines()[0]})") from exc
            rows = rows.cast(pa.schema([(c, pa.string()) for c in rows.column_names]))
            ts = _timestamps(where, rows.column(0), match["date"])
            n = rows.num_rows
            common = {
                "symbol": pa.array([root] * n, pa.string()),
                "contract": pa.array([contract] * n, pa.string()),
                "ts": ts,
                "_file": pa.array([where] * n, pa.string()),
                "_row": pa.array(range(1, n + 1), pa.int64()),
            }
            if match["kind"] == "openinterest":
                if rows.num_columns != 2:
                    raise LoadError(where, f"expected 2 columns (time, open_interest), found {rows.num_columns}")
                interest.append(
                    pa.table({**common, "open_interest": rows.column(1)}).select(
                        ["symbol", "contract", "ts", "open_interest", "_file", "_row"]
                    )
                )
            else:
                if rows.num_columns != 6:
                    raise LoadError(where, f"expected 6 columns (time, open, high, low, close, volume), found {rows.num_columns}")
                names = ["open", "high", "low", "close", "volume"]
                bars.append(raw_bars_table({**common, **{k: rows.column(i + 1) for i, k in enumerate(names)}}))
    raw = RawFile(path=str(path), format="lean")
    if bars:
        raw.bars[tf] = pa.concat_tables(bars)
    if interest:
        raw.open_interest = pa.concat_tables(interest)
    if not bars and not interest:
        raise LoadError(str(path), "the zip holds no rows")
    return raw


def _is_junk(name: str) -> bool:
    """Directory entries and archiver metadata (macOS ``__MACOSX/``, ``._*`` resource forks)."""
    base = Path(name).name
    return name.endswith("/") or name.startswith("__MACOSX/") or base.startswith("._") or base == ".DS_Store"


def _resolution_from_members(members: list[str]) -> str | None:
    """Minute and second CSV names say their resolution (``..._minute_trade_...``)."""
    found = {m["res"] for n in members if (m := _MEMBER.match(Path(n).name)) and m["res"]}
    return _RESOLUTIONS[found.pop()] if len(found) == 1 else None


def _resolution_from_folders(path: Path) -> str:
    for part in reversed(path.resolve().parts[:-1]):
        if part.lower() in _RESOLUTIONS:
            return _RESOLUTIONS[part.lower()]
    raise LoadError(str(path), "cannot tell the resolution from the folders (minute/hour/daily); pass --timeframe")


def _timestamps(where: str, first: pa.ChunkedArray, member_date: str | None) -> pa.Array:
    """LEAN time column to ``timestamp[us, UTC]``; an unparseable cell becomes null (quarantined later)."""
    text = pc.cast(first, pa.string()).combine_chunks()
    if member_date is not None:
        # Minute/second files: milliseconds since midnight UTC of the date in the file name.
        midnight = datetime.strptime(member_date, "%Y%m%d").replace(tzinfo=timezone.utc)
        base_us = int(midnight.timestamp() * 1_000_000)
        millis = pc.cast(text, pa.int64(), safe=False) if _all_digits(text) else _safe_int(text)
        micros = pc.add(pc.multiply(millis, 1000), base_us)
        return pc.cast(micros, pa.timestamp("us", tz="UTC"))
    parsed = pc.strptime(text, format="%Y%m%d %H:%M", unit="us", error_is_null=True)
    return pc.assume_timezone(parsed, "UTC")


def _all_digits(text: pa.Array) -> bool:
    return bool(pc.all(pc.match_substring_regex(text, r"^\d+$")).as_py())


def _safe_int(text: pa.Array) -> pa.Array:
    valid = pc.match_substring_regex(text, r"^\d+$")
    return pc.cast(pc.if_else(valid, text, None), pa.int64())


