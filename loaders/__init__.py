"""Readers for the bar formats futures traders have (DBN, LEAN zips, CSV, Parquet) and the ingest pipeline."""
