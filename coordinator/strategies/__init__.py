"""Aggregation strategies, one module each, behind :class:`base.Strategy`."""

from fedchain.coordinator.strategies.base import (
    AggregationError,
    ClientUpdate,
    EvaluateResult,
    Strategy,
)
from fedchain.coordinator.strategies.registry import known_strategies, strategy_from_plan

__all__ = [
    "AggregationError",
    "ClientUpdate",
    "EvaluateResult",
    "Strategy",
    "known_strategies",
    "strategy_from_plan",
]
