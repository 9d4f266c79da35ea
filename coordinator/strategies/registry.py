"""The strategies a plan can name, by its ``[strategy] name``.

This package owns the list; ``tests/test_strategies.py`` keeps it equal to
the names the plan validator accepts (``fedchain.plan.STRATEGIES``).
"""

from __future__ import annotations

from fedchain.errors import ConfigError
from fedchain.plan import Robust, StrategySpec, TrainingPlan
from fedchain.privacy import dp_params

from fedchain.coordinator.strategies.base import Strategy
from fedchain.coordinator.strategies.dpserver import ServerSideDP
from fedchain.coordinator.strategies.fedadam import FedAdam
from fedchain.coordinator.strategies.fedavg import FedAvg
from fedchain.coordinator.strategies.fedprox import FedProx
from fedchain.coordinator.strategies.fedyogi import FedYogi
from fedchain.coordinator.strategies.foolsgold import FoolsGold
from fedchain.coordinator.strategies.krum import Krum, MultiKrum
from fedchain.coordinator.strategies.median import FedMedian
from fedchain.coordinator.strategies.normbound import NormBound
from fedchain.coordinator.strategies.trimmedmean import FedTrimmedMean
from fedchain.coordinator.strategies.weightcap import WeightCap

__all__ = ["STRATEGY_CLASSES", "known_strategies", "from_spec", "wrap_robust", "for_plan"]

STRATEGY_CLASSES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (FedAvg, FedProx, FedAdam, FedYogi, FedMedian, FedTrimmedMean, Krum, MultiKrum)
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


def wrap_robust(strategy: Strategy, robust: Robust) -> Strategy:
    """``strategy`` inside the plan's defences; the updates meet them in this order:
    norm bound, FoolsGold, weight cap, then the strategy."""
    if robust.max_weight_share is not None:
        strategy = WeightCap(strategy, max_share=robust.max_weight_share)
    if robust.foolsgold:
        strategy = FoolsGold(strategy)
    if robust.norm_bound is not None:
        strategy = NormBound(strategy, bound=robust.norm_bound)
    return strategy


def for_plan(plan: TrainingPlan, *, dp_noise: bool = True) -> Strategy:
    """The strategy a plan asks for, inside its ``[robust]`` defences and, with ``[privacy] mode =
    "server"``, server-side DP (outermost; ``dp_noise=False``: the clean clipped average, the audit's
    reference) - with fresh server state."""
    strategy = wrap_robust(from_spec(plan.strategy, min_participants=plan.min_participants), plan.robust)
    if plan.privacy.mode == "server":
        dp = dp_params(plan, 1)  # server mode: one step per round at rate 1, whatever the rows
        strategy = ServerSideDP(strategy, clipping_norm=dp.clipping_norm, noise_multiplier=dp.noise_multiplier,
                                add_noise=dp_noise)
    return strategy
