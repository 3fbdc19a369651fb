"""Execution: the handler interface (:mod:`.base`), the simulated broker (:mod:`.simulated`) and its slippage models."""

from engine.execution.base import ExecutionHandler
from engine.execution.simulated import BacktestExecutionHandler

__all__ = ["ExecutionHandler", "BacktestExecutionHandler"]
