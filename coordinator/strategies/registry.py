"""The strategies a plan can name, by its ``[strategy] name``.

This package owns the list; ``tests/test_strategies.py`` keeps it equal to
the names the plan validator accepts (``fedchain.plan.STRATEGIES``).
"""

from __future__ import annotations

from fedchain.errors import ConfigError
from fedchain.plan import StrategySpec

from fedchain.coordinator.strategies.base import Strategy
from fedchain.coordinator.strategies.fedadam import FedAdam
from fedchain.coordinator.strategies.fedavg import FedAvg
from fedchain.coordinator.strategies.fedprox import FedProx
from fedchain.coordinator.strategies.fedyogi import FedYogi

__all__ = ["STRATEGY_CLASSES", "known_strategies", "from_spec"]

STRATEGY_CLASSES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (FedAvg, FedProx, FedAdam, FedYogi)
}


def known_strategies() -> tuple[str, ...]:
    return tuple(STRATEGY_CLASSES)


def from_spec(spec: StrategySpec, *, min_participants: int = 1) -> Strategy:
    """A fresh strategy (empty server state) from a plan's ``strategy`` section."""
    cls = STRATEGY_CLASSES.get(getattr(spec, "name", None))  # type: ignore[arg-type]
    if cls is None:
        raise ConfigError(
            f"unknown strategy {getattr(spec, 'name', spec)!r} (known: {', '.join(STRATEGY_CLASSES)})"
        )
    return cls.from_spec(spec, min_participants=min_participants)
