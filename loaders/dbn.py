"""Databento DBN files (v1, v2, v3; plain or zstd): OHLCV bars and instrument definitions.

Decoding goes through the real ``databento`` reader. Prices are int64 fixed point with 1 unit = 1e-9
(``UNDEF_PRICE`` becomes NULL and is quarantined). ``ts_event`` is the bar's open time (UTC ns).
Symbols come from the file's symbology mappings:

* ``raw_symbol`` files (``ESH1``): the contract is the raw symbol and the symbol is its root;
* continuous files (``ES.v.0``): the symbol is the root, the contract is resolved from instrument
  definitions at ingest, and each change of ``instrument_id`` is recorded as a front-contract change.
"""

from __future__ import annotations

import warnings
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa

from loaders.raw import RawFile, raw_bars_table
from warehouse.errors import LoadError

OHLCV_SCHEMAS = {"ohlcv-1s": "1s", "ohlcv-1m": "1m", "ohlcv-1h": "1h", "ohlcv-1d": "1d"}
SUPPORTED = (*OHLCV_SCHEMAS, "definition")
PRICE_UNITS = 1_000_000_000  # fixed-point units per price unit (1 unit = 1e-9)
_UNDEF_PRICE = np.iinfo(np.int64).max


def is_dbn(path: Path) -> bool:
    """True when the file starts with the DBN magic (after zstd decompression for ``.zst``)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    if head[:3] == b"DBN":
        return True
    if head == b"\x28\xb5\x2f\xfd":  # zstd frame: peek at the decompressed magic
        import zstandard

        try:
            with open(path, "rb") as handle:
                reader = zstandard.ZstdDecompressor().stream_reader(handle)
                return reader.read(3) == b"DBN"
        except zstandard.ZstdError:
            return False
    return False


def read_dbn(path: Path, timeframe: str | None = None) -> RawFile:
    """Decode one DBN file into a :class:`RawFile` (bars or definitions)."""
    import databento as db

    store, issues = _open_store(path, db)
    metadata = store.metadata
    schema = str(metadata.schema) if metadata.schema is not None else ""
    if schema not in SUPPORTED:
        raise LoadError(str(path), f"DBN schema {schema or 'mixed'!r} is not supported (supported: {', '.join(SUPPORTED)})")
    raw = RawFile(path=str(path), format="dbn")
    raw.notes.append(f"DBN v{metadata.version} {metadata.dataset} {schema} stype_in={metadata.stype_in}")
    raw.notes.extend(issues)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            records = store.to_ndarray()
        except Exception as exc:  # the Rust decoder raises plain ValueError/RuntimeError on bad bytes
            raise LoadError(str(path), f"cannot decode DBN records ({exc})") from exc
    # Decoding is where a cut-off last record shows up; a file missing data is refused, not half-loaded.
    for warning in caught:
        if "truncated" in str(warning.message) or "incomplete" in str(warning.message):
            raise LoadError(str(path), f"DBN file is truncated ({warning.message})")
    if schema == "definition":
        raw.definitions = _definitions(store, path) if len(records) else None
        if raw.definitions is None:
            raise LoadError(str(path), "the file holds no definition records")
        return raw
    tf = timeframe or OHLCV_SCHEMAS[schema]
    if tf != OHLCV_SCHEMAS[schema]:
        raise LoadError(str(path), f"--timeframe {tf} contradicts the file's schema {schema}")
    if len(records) == 0:
        raise LoadError(str(path), f"the file holds no {schema} records (header only)")
    continuous = str(metadata.stype_in) == "continuous"
    raw.bars[tf], runs = _bars(path, records, metadata, continuous)
    if continuous:
        raw.instrument_runs = runs
        raw.notes.append(f"continuous symbology: {runs.num_rows} front-contract run(s)")
    return raw


def _open_store(path: Path, db):  # noqa: ANN001 - databento module passed in to keep the import lazy
    issues: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            store = db.DBNStore.from_file(path)
            _ = store.metadata
        except Exception as exc:
            raise LoadError(str(path), f"not a readable DBN file ({exc})") from exc
    for warning in caught:
        if issubclass(warning.category, db.BentoWarning):
            text = str(warning.message)
            if "truncated" in text:
                raise LoadError(str(path), f"DBN file is truncated ({text})")
            issues.append(text)
    return store, issues


def _bars(path: Path, records: np.ndarray, metadata, continuous: bool) -> tuple[pa.Table, pa.Table | None]:  # noqa: ANN001
    from warehouse.contracts import root_of

    n = len(records)
    iid = records["instrument_id"].astype(np.int64)
    ts_ns = records["ts_event"].astype(np.int64)
    input_symbol = _input_symbols(iid, ts_ns, metadata.mappings)
    roots = {s: (root_of(s) if s is not None else None) for s in set(input_symbol.tolist())}
    symbol = np.array([(roots[s] or s) if s is not None else None for s in input_symbol], dtype=object)
    if continuous:
        contract = np.array([None] * n, dtype=object)
    else:
        contract = np.array([s if s is not None and roots[s] not in (None, s) else None for s in input_symbol], dtype=object)
    columns = {
        "symbol": pa.array(symbol, pa.string()),
        "contract": pa.array(contract, pa.string()),
        "instrument_id": pa.array(iid, pa.int64()),
        "ts": pa.array(ts_ns // 1000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "volume": pa.array(records["volume"].astype(np.float64), pa.float64()),
        "_file": pa.array([str(path)] * n, pa.string()),
        "_row": pa.array(np.arange(1, n + 1), pa.int64()),
    }
    for field in ("open", "high", "low", "close"):
        fixed = records[field].astype(np.int64)
        # Divide (not multiply by 1e-9): the quotient of two exact numbers is correctly rounded, so
        # 3702750000000 becomes exactly 3702.75 instead of 3702.7500000000005.
        columns[field] = pa.array(fixed / PRICE_UNITS, pa.float64(), mask=fixed == _UNDEF_PRICE)
    runs = _instrument_runs(symbol, input_symbol, iid, ts_ns) if continuous else None
    return raw_bars_table(columns), runs


def _input_symbols(iid: np.ndarray, ts_ns: np.ndarray, mappings: dict) -> np.ndarray:
    """Input symbol of every record from the metadata's dated instrument-id intervals."""
    out = np.array([None] * len(iid), dtype=object)
    day = (ts_ns // 86_400_000_000_000).astype("datetime64[D]")
    for input_symbol, intervals in (mappings or {}).items():
        for interval in intervals:
            if not str(interval["symbol"]).isdigit():
                continue
            start = np.datetime64(_as_date(interval["start_date"]))
            end = np.datetime64(_as_date(interval["end_date"]))
            hit = (iid == int(interval["symbol"])) & (day >= start) & (day < end)
            out[hit] = input_symbol
    return out


def _as_date(value) -> date:  # noqa: ANN001
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _instrument_runs(symbol: np.ndarray, input_symbol: np.ndarray, iid: np.ndarray, ts_ns: np.ndarray) -> pa.Table:
    """Maximal runs of one instrument id per continuous symbol, in time order."""
    order = np.lexsort((ts_ns, input_symbol.astype(str)))
    rows: list[dict] = []
    for i in order:
        key = input_symbol[i]
        if key is None:
            continue
        current = rows[-1] if rows and rows[-1]["continuous_symbol"] == key else None
        if current is not None and current["instrument_id"] == int(iid[i]):
            current["last_ts"] = int(ts_ns[i]) // 1000
        else:
            rows.append({"symbol": symbol[i], "continuous_symbol": key, "instrument_id": int(iid[i]),
                         "first_ts": int(ts_ns[i]) // 1000, "last_ts": int(ts_ns[i]) // 1000})
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("symbol", pa.string()), ("continuous_symbol", pa.string()), ("instrument_id", pa.int64()),
        ("first_ts", pa.int64()), ("last_ts", pa.int64())]))
    for name in ("first_ts", "last_ts"):
        table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(pa.timestamp("us", tz="UTC")))
    return table


def _definitions(store, path: Path) -> pa.Table:  # noqa: ANN001
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = store.to_df(price_type="float", pretty_ts=True, map_symbols=False)
    df = df.reset_index()
    keep = {
        "instrument_id": "instrument_id",
        "raw_symbol": "raw_symbol",
        "asset": "asset",
        "exchange": "exchange",
        "instrument_class": "instrument_class",
        "expiration": "expiration",
        "activation": "activation",
        "min_price_increment": "min_price_increment",
        "unit_of_measure_qty": "multiplier",
        "currency": "currency",
        "ts_recv": "ts_recv",
    }
    out = df[list(keep)].rename(columns=keep)
    out["instrument_id"] = out["instrument_id"].astype("int64")
    out["source"] = str(path)
    table = pa.Table.from_pandas(out, preserve_index=False)
    for name in ("expiration", "activation", "ts_recv"):
        table = table.set_column(table.schema.get_field_index(name), name, table.column(name).cast(pa.timestamp("us", tz="UTC"), safe=False))
    return table
