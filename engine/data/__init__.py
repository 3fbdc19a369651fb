"""Bars into the kernel: the backtest's Arrow stream of a SQL query (:mod:`.feed`)."""
