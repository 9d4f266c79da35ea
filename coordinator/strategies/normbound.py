"""Norm bounding (Sun, Kairouz, Suresh, McMahan, "Can You Really Backdoor
Federated Learning?", 2019).

Wraps any strategy. Before the inner strategy sees the round's updates, each
update whose distance to the current global model (the L2 norm of the
difference, over all tensors) exceeds the plan's bound is scaled back onto the
sphere of that radius: ``global + delta * bound / |delta|``. A boosted or
scaled update (model replacement) thus has at most the influence of an honest
update of that size. Norms are computed the same way on every machine
(:mod:`~fedchain.coordinator.strategies.vectors`); each clipped update is
recorded with reason ``NORM_BOUND`` and its norm before clipping.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from fedchain.errors import ConfigError

from fedchain.coordinator.strategies.base import ClientUpdate, Decision, Strategy, StrategyWrapper, canonical_order
from fedchain.coordinator.strategies.vectors import flatten, norm, unflatten

__all__ = ["NormBound"]


class NormBound(StrategyWrapper):
    """Clip each update's distance to the global model, then delegate.

    Parameters
    ----------
    inner : Strategy
        The strategy that aggregates the clipped updates.
    bound : float
        Largest L2 distance an update may have from the global model (> 0).
    """

    def __init__(self, inner: Strategy, *, bound: float) -> None:
        super().__init__(inner)
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not np.isfinite(bound) or bound <= 0:
            raise ConfigError(f"the norm bound must be a positive number, got {bound!r}")
        self.bound = float(bound)

    def aggregate_train(self, server_round: int, arrays: Mapping[str, torch.Tensor],
                        updates: Sequence[ClientUpdate]) -> dict[str, torch.Tensor]:
        base = flatten(arrays)
        clipped: list[ClientUpdate] = []
        decisions: list[Decision] = []
        for u in canonical_order(updates):
            if set(u.state) != set(arrays):  # the inner strategy names the mismatch
                clipped.append(u)
                continue
            delta = flatten(u.state) - base
            size = norm(delta)
            if size > self.bound:
                scaled = unflatten(base + delta * (self.bound / size), arrays)
                state = {k: scaled[k].to(arrays[k].dtype) for k in arrays}
                clipped.append(u.replace(state=state))
                decisions.append(Decision(u.participant, u.dataset_id, "clipped", "NORM_BOUND", size))
            else:
                clipped.append(u)
        self.last_decisions = decisions
        return self.inner.aggregate_train(server_round, arrays, clipped)
