"""Example strategies shipped with quant-engine (``qe backtest --strategy engine.strategies.sma_cross:SmaCross``)."""
