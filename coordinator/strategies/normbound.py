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

import math
from typing import Mapping, Sequence

import numpy as np
import torch

from fedchain.errors import ConfigError

from fedchain.coordinator.strategies.base import ClientUpdate, Decision, Strategy, StrategyWrapper, canonical_order
from fedchain.coordinator.strategies.kernels import get as compiled_loops
from fedchain.coordinator.strategies.vectors import (
    BLOCK,
    flatten,
    in_parallel,
    norm,
    raw_vector,
    scratch,
    tree_sums,
    unflatten,
)

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
        names = sorted(arrays)

        def one(u: ClientUpdate, local: dict) -> tuple[ClientUpdate, Decision | None]:
            if set(u.state) != set(arrays):  # the inner strategy names the mismatch
                return u, None
            fast = all(isinstance(u.state[k], torch.Tensor) and u.state[k].dtype == torch.float32
                       and arrays[k].dtype == torch.float32 and u.state[k].shape == arrays[k].shape for k in arrays)
            if fast:
                raw = raw_vector(u.state, names)
                buf = scratch(local, "block", min(base.size, BLOCK))
                size = _norm_of_delta(raw, base, buf)
            else:  # mismatched shapes or dtypes: computed as before, the inner strategy names the fault
                delta = flatten(u.state) - base
                size = norm(delta)
            if not size > self.bound:
                return u, None
            if fast:
                state = _clip(raw, base, self.bound / size, arrays, names, buf)
            else:
                scaled = unflatten(base + delta * (self.bound / size), arrays)
                state = {k: scaled[k].to(arrays[k].dtype) for k in arrays}
            return u.replace(state=state), Decision(u.participant, u.dataset_id, "clipped", "NORM_BOUND", size)

        # each update on one thread, with the same operations whichever it is; gathered in canonical order
        results = in_parallel(canonical_order(updates), one, parallel=base.size >= BLOCK)
        clipped = [u for u, _ in results]
        decisions = [d for _, d in results if d is not None]
        self.last_decisions = decisions
        return self.inner.aggregate_train(server_round, arrays, clipped)


def _norm_of_delta(raw: np.ndarray, base: np.ndarray, buf: np.ndarray) -> float:
    """``norm(flatten(state) - base)`` bit for bit, block by block in a reused buffer: each
    block's ``float64(x) - base`` squared and ``add.reduce``-d as :func:`norm` does, the block
    sums combined with ``math.fsum``."""
    compiled = compiled_loops() if tree_sums() else None
    sums = []
    for a in range(0, base.size, BLOCK):
        e = min(a + BLOCK, base.size)
        d = buf[:e - a]
        if compiled and e - a == BLOCK and raw.flags.c_contiguous:  # one fused pass, the same sum
            sums.append(float(compiled.delta_square_sum(raw[a:e], base[a:e], d)))
            continue
        np.subtract(raw[a:e], base[a:e], out=d, dtype=np.float64)
        np.multiply(d, d, out=d)
        sums.append(float(np.add.reduce(d)))
    return math.sqrt(math.fsum(sums))


def _clip(raw: np.ndarray, base: np.ndarray, scale: float, arrays: Mapping[str, torch.Tensor],
          names: list[str], buf: np.ndarray) -> dict[str, torch.Tensor]:
    """``base + (float64(x) - base) * scale`` rounded to float32, block by block (the same
    operations, in the same order, as the whole-vector expression)."""
    out = np.empty(base.size, dtype=np.float32)
    compiled = compiled_loops()
    if compiled and raw.flags.c_contiguous:
        compiled.clip(raw, base, scale, out)  # one fused pass of the same steps, each rounded once
    else:
        for a in range(0, base.size, BLOCK):
            e = min(a + BLOCK, base.size)
            d = buf[:e - a]
            np.subtract(raw[a:e], base[a:e], out=d, dtype=np.float64)
            np.multiply(d, scale, out=d)
            np.add(base[a:e], d, out=out[a:e])  # added in float64, then rounded to float32 (nearest even)
    state, at = {}, 0
    for k in names:
        m = arrays[k].numel()
        state[k] = torch.from_numpy(out[at:at + m]).reshape(arrays[k].shape)
        at += m
    return state
