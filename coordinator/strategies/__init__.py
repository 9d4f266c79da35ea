"""Aggregation strategies, one module each, behind :class:`base.Strategy`."""

from fedchain.coordinator.strategies.base import (
    AggregationError,
    ClientUpdate,
    EvaluateResult,
    Strategy,
    StrategyWrapper,
)
from fedchain.coordinator.strategies.registry import STRATEGY_CLASSES, from_spec, known_strategies

__all__ = [
    "AggregationError",
    "ClientUpdate",
    "EvaluateResult",
    "Strategy",
    "StrategyWrapper",
    "STRATEGY_CLASSES",
    "from_spec",
    "known_strategies",
]
