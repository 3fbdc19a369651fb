"""The live shell: bars from the broker through the same kernel as a backtest."""
