"""The backtest shell: a SQL query's Arrow stream through the kernel (:mod:`.run`), the vectorized path and
walk-forward."""
