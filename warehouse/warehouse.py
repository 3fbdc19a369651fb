"""The warehouse: a directory of Parquet tables, seen through DuckDB views.

Every connection is an in-memory DuckDB with ``TimeZone = 'UTC'`` whose views read the Parquet files
directly, so nothing is copied and a new file is visible as soon as its atomic rename lands.

Views
-----
``contract_bars_<tf>``         per-contract raw bars (tf in 1s, 1m, 1h, 1d), as ingested
``bars_<tf>``                  continuous front-contract series at raw prices, with ``contract`` per bar;
                               plain series (no contract) pass through unchanged
``bars_<tf>_adj_ratio``        the same, back-adjusted by ratio (features run on this)
``bars_<tf>_adj_diff``         the same, back-adjusted by difference
``bars_5m``, ``bars_15m``, ``bars_1h_from_1m``   resampled from ``bars_1m``
``features_1m``, ``features_1h``, ``features_1d``  materialized features (symbol, ts, catalog columns)
``signals_<name>_<tf>``        built signals (``qe signals build``), one view per generator and timeframe
``session_bars_1d``            CME session bars (trading date, not UTC day) from ``bars_1m``
``contracts``, ``margins``, ``fees``   contract specifications and date-effective margins and fees
``definitions``                Databento instrument definitions (expirations, tick sizes, multipliers)
``instruments``                every contract seen: bars, expiry and specs (definition, else rule/contracts)
``rolls``, ``front_segments``  roll table and front-contract segments with adjustment factors
``instrument_runs``, ``instrument_changes``   front-contract runs in continuous DBN files; changes between them
``open_interest``, ``quarantine``, ``ingest_log``, ``data_quality``
``daily_conventions``          per root: its stored daily bars are ``utc_day`` or ``session`` bars (none = UTC days)
``runs``, ``run_orders``, ``run_fills``, ``run_positions``, ``run_equity``, ``run_trades``, ``run_events``,
``run_metrics``                the run ledger: one file per run and table under ``runs/<table>/``; the
                               views show committed runs only (those with a ``runs`` row)
``run_executions``             a live or paper run's broker executions (clocks, broker and fee-table commissions)
``run_attribution``            each live or paper run against its latest attribution backtest, order by order
                               (``sql/run_attribution.sql``; ``qe live attribution RUN`` adds the P&L split)
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

import duckdb
import pyarrow as pa

from warehouse import layout, schemas
from warehouse.errors import QEError
from warehouse.templates import render

#: Non-bar tables: view name -> (directory under the root, schema, hive partition key or None).
TABLES: dict[str, tuple[str, pa.Schema, str | None]] = {
    "open_interest": ("open_interest", schemas.OPEN_INTEREST, "symbol"),
    "quarantine": ("quarantine", schemas.QUARANTINE, None),
    "ingest_log": ("ingest_log", schemas.INGEST_LOG, None),
    "definitions": ("definitions", schemas.DEFINITIONS, None),
    "instrument_runs": ("instrument_runs", schemas.INSTRUMENT_RUNS, None),
    "rolls": ("rolls", schemas.ROLLS, None),
    "front_segments": ("front_segments", schemas.FRONT, None),
    "instruments": ("instruments", schemas.INSTRUMENTS, None),
    "data_quality": ("data_quality", schemas.DATA_QUALITY, None),
    "daily_conventions": ("daily_conventions", schemas.DAILY_CONVENTIONS, None),
    "order_journal": ("order_journal", schemas.ORDER_JOURNAL, None),
    **{name: (f"runs/{name}", schema, None) for name, schema in schemas.RUN_TABLES.items()},
}

#: Run-ledger tables shown only for committed runs (those with a ``runs`` row, which is written last): the
#: files of a recording that crashed halfway are invisible until the next recording removes them.
COMMITTED_RUNS_ONLY = frozenset(name for name in schemas.RUN_TABLES if name != "runs")

RESAMPLED = {"bars_5m": 5, "bars_15m": 15}


class Warehouse:
    """A warehouse directory and the DuckDB views over it.

    Parameters
    ----------
    root : str or PathLike, optional
        The directory; defaults to ``$QE_WAREHOUSE`` or ``./qe_data``. Created if missing.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root: Path = layout.resolve_root(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._con: duckdb.DuckDBPyConnection | None = None

    # -- connections -------------------------------------------------------------------------------
    def connect(self) -> duckdb.DuckDBPyConnection:
        """The shared connection, with every view registered against the files present now."""
        if self._con is None:
            self._con = self.new_connection()
        return self._con

    def refresh(self) -> None:
        """Re-register the views (call after files were added or removed)."""
        if self._con is not None:
            self._con.close()
        self._con = None

    def new_connection(self) -> duckdb.DuckDBPyConnection:
        """A fresh in-memory connection with all views (e.g. one per thread)."""
        con = duckdb.connect()
        configure_connection(con, self.root)
        self._register_reference(con)
        for tf in layout.TIMEFRAMES:
            self._register_bars(con, tf)
        self.register_tables(con, list(TABLES))
        for tf in layout.TIMEFRAMES:
            contractless = _symbols_with_contractless_bars(self.root / "bars" / f"timeframe={tf}")
            for adjust in (None, "ratio", "diff"):
                name = f"bars_{tf}" + (f"_adj_{adjust}" if adjust else "")
                sql = render("continuous.sql", timeframe=tf, adjust=adjust, contractless=contractless)
                con.execute(f"CREATE OR REPLACE VIEW {name} AS " + sql)
        for name, minutes in RESAMPLED.items():
            con.execute(f"CREATE OR REPLACE VIEW {name} AS " + render("resample_intraday.sql", source="bars_1m", minutes=minutes))
        con.execute("CREATE OR REPLACE VIEW instrument_changes AS " + render("instrument_changes.sql"))
        con.execute("CREATE OR REPLACE VIEW run_attribution AS " + _run_attribution_sql())
        for tf in ("1m", "1h", "1d"):
            self._register_features(con, tf)
        self._register_signals(con)
        con.execute("CREATE OR REPLACE VIEW bars_1h_from_1m AS " + render("resample_intraday.sql", source="bars_1m", minutes=60))
        con.execute("CREATE OR REPLACE VIEW session_bars_1d AS " + render("resample_session_daily.sql", source="bars_1m"))
        return con

    def register_tables(self, con: duckdb.DuckDBPyConnection, names: list[str]) -> None:
        """Register the views of these tables (``rolls``, ``front_segments``...) on ``con`` again, over the files
        present now: a table that had no file when ``con`` was made is an empty view until then (a long-lived
        connection, e.g. a live session's, after ``qe rolls build`` wrote its first file)."""
        for name in names:
            directory, schema, hive_key = TABLES[name]
            self._register_table(con, name, self.root / directory, schema, hive_key)

    def _register_reference(self, con: duckdb.DuckDBPyConnection) -> None:
        from warehouse.contracts import fees_table, margins_table, specs_table

        for name, table in (("contracts", specs_table()), ("margins", margins_table()), ("fees", fees_table())):
            con.register(f"_{name}_arrow", table)
            con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM _{name}_arrow")

    def _register_bars(self, con: duckdb.DuckDBPyConnection, tf: str) -> None:
        directory = self.root / "bars" / f"timeframe={tf}"
        columns = ", ".join(f.name for f in schemas.BARS)
        if any(directory.glob("*/*/*.parquet")):
            glob = layout.bars_glob(self.root, tf)
            con.execute(
                f"CREATE OR REPLACE VIEW contract_bars_{tf} AS SELECT symbol, {columns} FROM read_parquet("
                f"'{_quote(glob)}', hive_partitioning = true, hive_types = {{'symbol': VARCHAR, 'year': INTEGER}})"
            )
        else:
            empty = pa.schema([("symbol", pa.string()), *schemas.BARS]).empty_table()
            con.register(f"_empty_contract_bars_{tf}", empty)
            con.execute(f"CREATE OR REPLACE VIEW contract_bars_{tf} AS SELECT * FROM _empty_contract_bars_{tf}")

    def _register_features(self, con: duckdb.DuckDBPyConnection, tf: str) -> None:
        directory = self.root / "features" / f"timeframe={tf}"
        if any(directory.glob("symbol=*/year=*/*.parquet")):
            _partitioned_view(con, f"features_{tf}", directory)
        else:
            con.execute(
                f"CREATE OR REPLACE VIEW features_{tf} AS SELECT CAST(NULL AS VARCHAR) AS symbol, "
                "CAST(NULL AS TIMESTAMPTZ) AS ts WHERE false"
            )

    def _register_signals(self, con: duckdb.DuckDBPyConnection) -> None:
        """``signals_<name>_<tf>`` over each built ``signals/<name>/timeframe=<tf>`` (``qe signals build``)."""
        for directory in sorted((self.root / "signals").glob("*/timeframe=*")):
            if not any(directory.glob("symbol=*/year=*/*.parquet")):
                continue
            _partitioned_view(con, f"signals_{directory.parent.name}_{directory.name.split('=', 1)[1]}", directory)

    def _register_table(
        self, con: duckdb.DuckDBPyConnection, name: str, path: Path, schema: pa.Schema, hive_key: str | None
    ) -> None:
        files = _parquet_files(path)
        committed = " WHERE run_id IN (SELECT run_id FROM runs)" if name in COMMITTED_RUNS_ONLY else ""
        if files and name in schemas.RUN_TABLES:
            # run-ledger tables gain nullable columns over time (e.g. run_orders.parent_id): runs recorded before
            # a column existed read it as NULL (union by name over the files, then with an empty typed table)
            con.register(f"_empty_{name}", schema.empty_table())
            columns = ", ".join(f.name for f in schema)
            con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT {columns} FROM (SELECT * FROM read_parquet("
                        f"'{_quote(f'{path}/*.parquet')}', union_by_name = true) UNION ALL BY NAME SELECT * FROM _empty_{name})"
                        f"{committed}")
        elif files:
            hive = f", hive_partitioning = true, hive_types = {{'{hive_key}': VARCHAR}}" if hive_key else ""
            pattern = f"{path}/*/*.parquet" if hive_key else f"{path}/*.parquet"
            columns = ", ".join(([hive_key] if hive_key else []) + [f.name for f in schema])
            con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT {columns} FROM read_parquet('{_quote(pattern)}'{hive}){committed}")
        else:
            full = pa.schema([(hive_key, pa.string()), *schema]) if hive_key else schema
            con.register(f"_empty_{name}", full.empty_table())
            con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM _empty_{name}")

    # -- queries -----------------------------------------------------------------------------------
    def sql(self, query: str, params: list | dict | None = None) -> pa.Table:
        """Run ``query`` against the views and return an Arrow table."""
        return self.connect().sql(query, params=params).to_arrow_table()

    def polars(self, query: str):  # noqa: ANN201 - polars is imported lazily
        """Run ``query`` and return a polars DataFrame."""
        import polars as pl

        return pl.from_arrow(self.sql(query))

    def pandas(self, query: str):  # noqa: ANN201
        """Run ``query`` and return a pandas DataFrame (UTC-aware timestamps)."""
        return self.sql(query).to_pandas()

    def close(self) -> None:
        """Close the shared connection."""
        self.refresh()


@lru_cache(maxsize=1)
def _run_attribution_sql() -> str:
    """Live/paper runs against their latest attribution backtest, order by order (no marks: see the template).

    Rendered once per process: the text never changes, and checking it (sqlglot) costs ~25 ms, too much for
    every connection.
    """
    return render("run_attribution.sql", runs="runs", orders="run_orders", fills="run_fills",
                  executions="run_executions", pairs=None, marks=None)


def _symbols_with_contractless_bars(directory: Path) -> list[str]:
    """Symbols of a timeframe whose stored bars mix rows without a contract and rows with one.

    Only those symbols need the continuous view's per-session choice between contract-less rows and front
    bars (an anti-join that would otherwise cost every query of ``bars_<tf>`` a second scan). Read from the
    Parquet statistics (null count against row count), so it is O(files), not O(rows); a file without
    statistics, or one that cannot be read now, counts as mixing (the anti-join is then merely not needed).
    """
    import pyarrow.parquet as pq

    nulls: dict[str, bool] = {}
    values: dict[str, bool] = {}
    for path in sorted(directory.glob("symbol=*/year=*/*.parquet")):
        symbol = path.parent.parent.name.removeprefix("symbol=")
        try:
            meta = pq.ParquetFile(path).metadata
            column = meta.schema.names.index("contract")
            for i in range(meta.num_row_groups):
                group = meta.row_group(i)
                stats = group.column(column).statistics
                if stats is None or not stats.has_null_count:
                    nulls[symbol] = values[symbol] = True
                    continue
                nulls[symbol] = nulls.get(symbol, False) or stats.null_count > 0
                values[symbol] = values.get(symbol, False) or stats.null_count < group.num_rows
        except (OSError, ValueError, pa.ArrowInvalid):
            nulls[symbol] = values[symbol] = True
    return sorted(s for s in nulls if nulls[s] and values.get(s, False))


def _partitioned_view(con: duckdb.DuckDBPyConnection, name: str, directory: Path) -> None:
    """View ``name`` over ``directory/symbol=*/year=*/*.parquet``: ``symbol`` first, the partition keys dropped."""
    glob = str(directory / "symbol=*" / "year=*" / "*.parquet")
    con.execute(
        f'CREATE OR REPLACE VIEW "{name}" AS SELECT symbol, * EXCLUDE (symbol, year, timeframe) FROM read_parquet('
        f"'{_quote(glob)}', hive_partitioning = true, hive_types = {{'symbol': VARCHAR, 'year': INTEGER, 'timeframe': VARCHAR}}, union_by_name = true)"
    )


def _parquet_files(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    return sorted(path.rglob("*.parquet"))


#: Bytes per unit of a DuckDB memory size ("2GB", "1.5GiB", "800MB", "1000000B").
_SIZE_UNITS = {"b": 1, "bytes": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def configure_connection(con: duckdb.DuckDBPyConnection, root: Path, share: int = 1) -> None:
    """A warehouse connection's settings: UTC; large sorts and windows (a backtest feed's ORDER BY, feature
    builds) spill into ``root/.duckdb_tmp``, not the cwd; ``QE_DUCKDB_MEMORY_LIMIT`` (e.g. "2GB") caps DuckDB's
    memory (default: DuckDB's, 80 % of RAM), split evenly when ``share`` connections (their own databases, e.g.
    the segments of a feature build) run side by side, so that together they stay within it.

    Raises
    ------
    QEError
        ``QE_DUCKDB_MEMORY_LIMIT`` is not a size DuckDB takes.
    """
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET temp_directory = '{_quote(root / '.duckdb_tmp')}'")
    limit = os.environ.get("QE_DUCKDB_MEMORY_LIMIT")
    if not limit:
        return
    try:
        con.execute(f"SET memory_limit = '{_quote(limit)}'")
    except duckdb.Error as exc:
        raise QEError(f"QE_DUCKDB_MEMORY_LIMIT={limit!r}: {str(exc).splitlines()[0]}") from exc
    size = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-z]*)\s*", limit.lower())
    if share > 1 and size is not None and (size.group(2) or "b") in _SIZE_UNITS:
        each = int(float(size.group(1)) * _SIZE_UNITS[size.group(2) or "b"]) // share
        con.execute(f"SET memory_limit = '{each}B'")


def _quote(text: str) -> str:
    return str(text).replace("'", "''")
