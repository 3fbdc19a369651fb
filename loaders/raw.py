"""What every reader returns: rows as read, before validation.

Readers do not judge values. They turn a file into an Arrow table with the columns of
:data:`RAW_COLUMNS` (values may still be strings) plus ``_file`` and ``_row`` so that every rejected row
can be traced to the place it came from. Only a file that cannot be read at all raises
:class:`warehouse.errors.LoadError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

#: Columns a reader hands to validation, in this order.
RAW_COLUMNS: tuple[str, ...] = (
    "symbol",
    "contract",
    "instrument_id",
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "open_interest",
    "_file",
    "_row",
)


@dataclass
class RawFile:
    """One input file, read.

    Attributes
    ----------
    path : str
        The file as the user named it.
    format : str
        ``dbn``, ``lean``, ``csv`` or ``parquet``.
    bars : dict[str, pyarrow.Table]
        Raw bar rows by timeframe (``1s``, ``1m``, ``1h``, ``1d``); columns :data:`RAW_COLUMNS`.
    open_interest : pyarrow.Table | None
        Open-interest samples (symbol, contract, ts, open_interest, _file, _row), when the file has them.
    definitions : pyarrow.Table | None
        Instrument definitions (Databento ``definition`` schema).
    instrument_runs : pyarrow.Table | None
        Runs of one instrument id in a continuous DBN file (symbol, continuous_symbol, instrument_id,
        first_ts, last_ts); front changes are derived from them across files.
    notes : list[str]
        Facts worth printing in the ingest summary (e.g. "continuous symbology ES.v.0").
    """

    path: str
    format: str
    bars: dict[str, pa.Table] = field(default_factory=dict)
    open_interest: pa.Table | None = None
    definitions: pa.Table | None = None
    instrument_runs: pa.Table | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        """Bar and open-interest rows read from the file."""
        n = sum(t.num_rows for t in self.bars.values())
        return n + (self.open_interest.num_rows if self.open_interest is not None else 0)


def raw_bars_table(columns: dict[str, pa.Array | list]) -> pa.Table:
    """Build a raw bar table, filling absent optional columns with nulls."""
    n = len(next(iter(columns.values())))
    arrays = []
    for name in RAW_COLUMNS:
        if name in columns:
            arrays.append(pa.array(columns[name]) if isinstance(columns[name], list) else columns[name])
        else:
            arrays.append(pa.nulls(n, pa.string()))
    return pa.Table.from_arrays(arrays, names=list(RAW_COLUMNS))
