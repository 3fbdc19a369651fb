"""DuckDB warehouse over hive-partitioned Parquet bars: layout, atomic writes, views and the query API."""

from warehouse.warehouse import Warehouse

__all__ = ["Warehouse"]
