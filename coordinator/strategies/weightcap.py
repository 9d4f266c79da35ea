"""A cap on any one member's share of the aggregation weight.

Sample counts are self-reported (the chain caps them at the dataset's
registered rows, which the owner also declares). A plan may therefore cap the
share of the weight any single update receives. Wraps a weighted strategy:
the shares ``w_i / sum(w)`` above the cap are set to the cap and the excess is
spread over the others in proportion to their weights, repeatedly, until no
share exceeds the cap (water-filling). When the cap times the number of
updates is below one, no assignment can honour it and every update gets an
equal share. Each capped update is recorded with reason ``WEIGHT_CAP`` and its
new share.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from fedchain.errors import ConfigError

from fedchain.coordinator.strategies.base import ClientUpdate, Decision, Strategy, StrategyWrapper, canonical_order

__all__ = ["WeightCap", "capped_shares"]


def capped_shares(weights: Sequence[float], cap: float) -> list[float]:
    """Shares proportional to ``weights`` with none above ``cap`` (equal shares if impossible)."""
    n = len(weights)
    if n == 0:
        return []
    if cap * n < 1:
        return [1.0 / n] * n
    total = math.fsum(weights)
    shares = [w / total for w in weights]
    fixed = [False] * n
    while True:
        over = [i for i in range(n) if not fixed[i] and shares[i] > cap]
        if not over:
            return shares
        for i in over:
            fixed[i] = True
            shares[i] = cap
        free = [i for i in range(n) if not fixed[i]]
        left = 1.0 - cap * sum(fixed)
        free_total = math.fsum(weights[i] for i in free)
        for i in free:
            shares[i] = left * weights[i] / free_total if free_total > 0 else left / len(free)


class WeightCap(StrategyWrapper):
    """Cap each update's share of the weight, then delegate.

    Parameters
    ----------
    inner : Strategy
        A weighted strategy (FedAvg, FedProx, FedAdam, FedYogi).
    max_share : float
        Largest share of the total weight one update may get, in (0, 1].
    """

    def __init__(self, inner: Strategy, *, max_share: float) -> None:
        super().__init__(inner)
        if isinstance(max_share, bool) or not isinstance(max_share, (int, float)) or not 0 < max_share <= 1:
            raise ConfigError(f"max_share must be a number in (0, 1], got {max_share!r}")
        self.max_share = float(max_share)

    def aggregate_train(self, server_round: int, arrays: Mapping[str, torch.Tensor],
                        updates: Sequence[ClientUpdate]) -> dict[str, torch.Tensor]:
        ordered = canonical_order(updates)
        weights = [u.mean_weight for u in ordered]
        total = math.fsum(weights)
        shares = capped_shares(weights, self.max_share)
        capped, decisions = [], []
        for u, w, share in zip(ordered, weights, shares):
            capped.append(u.replace(weight=share))
            if total > 0 and share < w / total:
                decisions.append(Decision(u.participant, u.dataset_id, "reweighted", "WEIGHT_CAP", share))
        self.last_decisions = decisions
        return self.inner.aggregate_train(server_round, arrays, capped)
