"""Test suite (real DuckDB, real files, independent oracles)."""
