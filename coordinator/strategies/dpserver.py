"""Server-side differential privacy with fixed clipping (the pattern of Flower's
``DifferentialPrivacyServerSideFixedClipping``; McMahan et al., "Learning Differentially
Private Recurrent Language Models", 2018).

Wraps a weighted-mean strategy (FedAvg, FedProx: the plan rules allow no other). For a
consortium that trusts the coordinator with the individual updates (it opens them anyway)
but not the released model: each update's distance to the global model is clipped to the
plan's ``clipping_norm`` C, the inner strategy averages the clipped updates, and Gaussian
noise is added to the average. Replacing one dataset moves its clipped update by at most
2C and the weighted mean by at most ``2C · share`` (its share of the weight), so the noise
standard deviation is ``z · C · max_share`` with ``z`` the plan's noise multiplier (from
:func:`fedchain.privacy.dp_params`, which accounts ``z/2`` per round): with equal weights
``z·C/n``, Flower's value.

**The noise is fresh** (:func:`fedchain.privacy.secure_generator`), never derived from chain
data: anyone who could re-derive it could subtract it from the released model and undo the
guarantee. So the audit cannot recompute a server-DP aggregate bit for bit; instead it
recomputes the *clean* clipped average (``add_noise=False``) and tests that the published
aggregate differs from it by noise of the stated size (:func:`noise_consistent`, a
chi-square test): a coordinator that adds no noise, too little, or shifts the model
further than the noise explains, is flagged. Each clipped update is recorded with reason
``DP_CLIP`` and its norm before clipping.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from fedchain.errors import ConfigError
from fedchain.privacy import secure_generator

from fedchain.coordinator.strategies.base import ClientUpdate, Decision, Strategy, StrategyWrapper, canonical_order
from fedchain.coordinator.strategies.vectors import flatten, norm, unflatten

__all__ = ["ServerSideDP", "noise_consistent", "NOISE_TEST_P"]

#: Two-sided false-alarm probability of the audit's noise test.
NOISE_TEST_P = 1e-6


class ServerSideDP(StrategyWrapper):
    """Clip each update, let ``inner`` average them, add Gaussian noise to the average.

    Parameters
    ----------
    inner : Strategy
        A weighted-mean strategy.
    clipping_norm : float
        C: largest L2 distance of an update from the global model.
    noise_multiplier : float
        z: the noise std is z · C · (largest weight share in the round).
    add_noise : bool
        False gives the clean clipped average (the audit's reference).
    generator : callable
        Returns the noise generator for a round (default: a fresh CSPRNG-seeded one).
    """

    def __init__(self, inner: Strategy, *, clipping_norm: float, noise_multiplier: float, add_noise: bool = True,
                 generator: Callable[[], torch.Generator] = secure_generator) -> None:
        super().__init__(inner)
        for what, v in (("clipping norm", clipping_norm), ("noise multiplier", noise_multiplier)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
                raise ConfigError(f"the server-side DP {what} must be a positive number, got {v!r}")
        self.clipping_norm = float(clipping_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.add_noise = add_noise
        self.generator = generator
        self.last_noise_std = 0.0

    def noise_std(self, updates: Sequence[ClientUpdate]) -> float:
        """The noise std for a round with these updates: z · C · max weight share."""
        weights = [u.mean_weight for u in updates]
        total = sum(weights)
        share = max(weights) / total if total > 0 else 1.0
        return self.noise_multiplier * self.clipping_norm * share

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
            if size > self.clipping_norm:
                scaled = unflatten(base + delta * (self.clipping_norm / size), arrays)
                clipped.append(u.replace(state={k: scaled[k].to(arrays[k].dtype) for k in arrays}))
                decisions.append(Decision(u.participant, u.dataset_id, "clipped", "DP_CLIP", size))
            else:
                clipped.append(u)
        self.last_decisions = decisions
        mean = self.inner.aggregate_train(server_round, arrays, clipped)
        self.last_noise_std = self.noise_std(clipped)
        if not self.add_noise:
            return mean
        gen = self.generator()
        return {k: (t.to(torch.float32) + torch.normal(0.0, self.last_noise_std, size=tuple(t.shape), generator=gen,
                                                       dtype=torch.float32)).contiguous() for k, t in mean.items()}


def noise_consistent(published: Mapping[str, torch.Tensor], clean: Mapping[str, torch.Tensor],
                     std: float) -> tuple[bool, float]:
    """Whether ``published - clean`` looks like N(0, std²) noise in every coordinate: the sum of
    squares over std² must lie in the chi-square central interval of probability 1 - NOISE_TEST_P.
    Returns (consistent, the ratio of the residual's mean square to std²)."""
    residual = flatten(published) - flatten(clean)
    d = residual.size
    stat = float(np.sum(residual * residual)) / (std * std)
    # scipy.stats costs ~1 s to import; only the server-DP noise check needs it.
    from scipy.stats import chi2
    lo, hi = chi2.ppf(NOISE_TEST_P / 2, d), chi2.ppf(1 - NOISE_TEST_P / 2, d)
    return bool(lo <= stat <= hi), stat / d
