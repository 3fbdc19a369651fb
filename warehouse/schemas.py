"""Arrow schemas of the stored tables (partition columns excluded: they live in directory names)."""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

#: Per-contract raw bars inside one (timeframe, symbol, year) partition.
BARS = pa.schema(
    [
        ("contract", pa.string()),
        ("instrument_id", pa.int64()),
        ("ts", TS),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.int64()),
        ("open_interest", pa.int64()),
        ("source", pa.string()),
    ]
)

#: Open-interest samples inside one symbol partition.
OPEN_INTEREST = pa.schema(
    [("contract", pa.string()), ("ts", TS), ("open_interest", pa.int64()), ("source", pa.string())]
)

#: Rows rejected by validation, with where they came from and why.
QUARANTINE = pa.schema(
    [
        ("file", pa.string()),
        ("row", pa.int64()),
        ("table_name", pa.string()),
        ("timeframe", pa.string()),
        ("rule", pa.string()),
        ("detail", pa.string()),
        ("symbol", pa.string()),
        ("contract", pa.string()),
        ("ts", TS),
    ]
)

INGEST_LOG = pa.schema(
    [
        ("file", pa.string()),
        ("format", pa.string()),
        ("sha256", pa.string()),
        ("rows_read", pa.int64()),
        ("rows_loaded", pa.int64()),
        ("rows_unchanged", pa.int64()),
        ("rows_quarantined", pa.int64()),
        ("ingested_at", TS),
    ]
)

DEFINITIONS = pa.schema(
    [
        ("instrument_id", pa.int64()),
        ("raw_symbol", pa.string()),
        ("asset", pa.string()),
        ("exchange", pa.string()),
        ("instrument_class", pa.string()),
        ("expiration", TS),
        ("activation", TS),
        ("min_price_increment", pa.float64()),
        ("multiplier", pa.float64()),
        ("currency", pa.string()),
        ("ts_recv", TS),
        ("source", pa.string()),
    ]
)

#: Runs of one instrument id inside a continuous DBN file (ES.v.0): the front contract between first_ts and
#: last_ts. Front changes are derived across files from these runs (view ``instrument_changes``), so a roll
#: that falls between two files (e.g. monthly download chunks) is not lost.
INSTRUMENT_RUNS = pa.schema(
    [
        ("symbol", pa.string()),
        ("continuous_symbol", pa.string()),
        ("instrument_id", pa.int64()),
        ("first_ts", TS),
        ("last_ts", TS),
    ]
)

ROLLS = pa.schema(
    [
        ("symbol", pa.string()),
        ("roll_ts", TS),
        ("roll_date", pa.date32()),
        ("signal_date", pa.date32()),
        ("from_contract", pa.string()),
        ("to_contract", pa.string()),
        ("from_price", pa.float64()),
        ("to_price", pa.float64()),
        ("price_ts", TS),
        ("rule", pa.string()),
        ("basis_timeframe", pa.string()),
    ]
)

#: Front-contract segments: [valid_from, valid_to) per symbol, with back-adjustment of that segment.
FRONT = pa.schema(
    [
        ("symbol", pa.string()),
        ("contract", pa.string()),
        ("valid_from", TS),
        ("valid_to", TS),
        ("ratio_factor", pa.float64()),
        ("diff_offset", pa.float64()),
        ("rule", pa.string()),
    ]
)

#: Every contract seen, with expiry and specs (definitions where available, else rule and contracts table).
INSTRUMENTS = pa.schema(
    [
        ("symbol", pa.string()),
        ("contract", pa.string()),
        ("instrument_id", pa.int64()),
        ("first_ts", TS),
        ("last_ts", TS),
        ("bars", pa.int64()),
        ("expiry", pa.date32()),
        ("expiry_source", pa.string()),
        ("tick_size", pa.float64()),
        ("multiplier", pa.float64()),
        ("spec_source", pa.string()),
    ]
)

DATA_QUALITY = pa.schema(
    [
        ("dataset", pa.string()),
        ("symbol", pa.string()),
        ("schema_name", pa.string()),
        ("date", pa.date32()),
        ("condition", pa.string()),
        ("detail", pa.string()),
        ("recorded_at", TS),
    ]
)


def empty(schema: pa.Schema) -> pa.Table:
    """An empty table of ``schema`` (views over tables with no files yet)."""
    return schema.empty_table()
