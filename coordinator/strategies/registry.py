"""Strategy lookup by the plan's ``strategy.name``."""

from __future__ import annotations

from fedchain.errors import ConfigError
from fedchain.plan import STRATEGIES, TrainingPlan

from fedchain.coordinator.strategies.base import Strategy
from fedchain.coordinator.strategies.fedadam import FedAdam
from fedchain.coordinator.strategies.fedavg import FedAvg
from fedchain.coordinator.strategies.fedprox import FedProx
from fedchain.coordinator.strategies.fedyogi import FedYogi

__all__ = ["STRATEGY_CLASSES", "known_strategies", "strategy_from_plan"]

STRATEGY_CLASSES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (FedAvg, FedProx, FedAdam, FedYogi)
}
assert set(STRATEGY_CLASSES) == set(STRATEGIES)


def known_strategies() -> tuple[str, ...]:
    return tuple(STRATEGY_CLASSES)


def strategy_from_plan(plan: TrainingPlan) -> Strategy:
    """A fresh strategy (empty server state) for ``plan``."""
    cls = STRATEGY_CLASSES.get(plan.strategy.name)
    if cls is None:
        raise ConfigError(
            f"unknown strategy {plan.strategy.name!r} (known: {', '.join(STRATEGY_CLASSES)})"
        )
    return cls(plan)
