"""Krum and Multi-Krum (Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning
with Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017).

Each update's score is the sum of its squared distances to its ``n - f - 2``
nearest other updates, where ``f`` is the number of malicious updates to
tolerate (the guarantee needs ``n >= 2f + 3``). Multi-Krum averages the
``keep`` best-scored updates (unweighted: sample counts are self-reported);
Krum is Multi-Krum keeping one. Distances are computed the same way on every
machine (:mod:`~fedchain.coordinator.strategies.vectors`) and equal scores are
ordered by the canonical update key, so the coordinator and the auditor select
the same updates. Every update left out is recorded as excluded with reason
``KRUM_NOT_SELECTED`` and its score.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch

from fedchain.errors import ConfigError
from fedchain.plan import KrumSpec, MultiKrumSpec

from fedchain.coordinator.strategies.kernels import get as compiled_loops
from fedchain.coordinator.strategies.base import AggregationError, ClientUpdate, Decision
from fedchain.coordinator.strategies.fedavg import FedAvg
from fedchain.coordinator.strategies.vectors import (
    chunks,
    in_parallel,
    pair_block_sums,
    prepare,
    scratch,
    squared_difference,
    unflatten,
)

__all__ = ["Krum", "MultiKrum", "krum_scores"]


def krum_scores(squared_distances: np.ndarray, byzantine: int) -> list[float]:
    """Each row's sum of its ``n - f - 2`` smallest squared distances to the other rows."""
    n = squared_distances.shape[0]
    closest = n - byzantine - 2
    if closest < 1:
        raise AggregationError(f"Krum with byzantine = {byzantine} needs at least {byzantine + 3} updates, got {n}")
    scores = []
    for i in range(n):
        others = sorted(float(squared_distances[i, j]) for j in range(n) if j != i)
        scores.append(math.fsum(others[:closest]))
    return scores


class MultiKrum(FedAvg):
    """The unweighted mean of the ``keep`` updates with the best Krum scores.

    Parameters
    ----------
    byzantine : int
        Malicious updates tolerated (``f``); a round needs ``n >= 2f + 3`` updates.
    keep : int
        Updates averaged (``m``), at most ``n - f``.
    min_participants : int (default 1)
        Rounds with fewer distinct participants are refused.
    """

    name = "multikrum"
    spec_class = MultiKrumSpec

    def __init__(self, *, byzantine: int, keep: int, min_participants: int = 1) -> None:
        super().__init__(min_participants=min_participants)
        for what, v, lo in (("byzantine", byzantine, 0), ("keep", keep, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"{what} must be an integer >= {lo}, got {v!r}")
        self.byzantine = byzantine
        self.keep = keep

    def _aggregate(
        self, server_round: int, arrays: Mapping[str, torch.Tensor], updates: Sequence[ClientUpdate]
    ) -> dict[str, torch.Tensor]:
        ordered, base, raws = prepare(arrays, updates)
        n, f = len(ordered), self.byzantine
        if n < 2 * f + 3:
            raise AggregationError(f"round {server_round}: {self.name} with byzantine = {f} needs at least "
                                   f"{2 * f + 3} updates, got {n}")
        if self.keep > n - f:
            raise AggregationError(f"round {server_round}: cannot keep {self.keep} of {n} updates with "
                                   f"byzantine = {f} (at most {n - f})")
        scores = krum_scores(_squared_distances(base, raws), f)
        ranking = sorted(range(n), key=lambda i: (scores[i], ordered[i].key))
        chosen = sorted(ranking[:self.keep])
        self.last_decisions = [
            Decision(ordered[i].participant, ordered[i].dataset_id, "excluded", "KRUM_NOT_SELECTED", scores[i])
            for i in range(n) if i not in chosen
        ]
        out = np.empty(base.size, dtype=np.float64)

        def mean(job: tuple[int, int], local: dict) -> None:  # the chosen deltas' mean, chunk by chunk:
            a, e = job                                         # the same add.reduce along axis 0
            rows = scratch(local, "rows", len(chosen) * (e - a)).reshape(len(chosen), e - a)
            for r, i in enumerate(chosen):
                np.subtract(raws[i][a:e], base[a:e], out=rows[r], dtype=np.float64)
            out[a:e] = base[a:e] + np.add.reduce(rows, axis=0) / float(len(chosen))

        in_parallel(chunks(base.size), mean)
        return unflatten(out, arrays)


def _squared_distances(base: np.ndarray, raws: list[np.ndarray]) -> np.ndarray:
    """The updates' pairwise squared distances, bit for bit
    ``pairwise_squared_distances(stack_deltas(...))``, without the float64 stack: each chunk
    of coordinates is converted (``float64(x) - base``, as stack_deltas does) once, into a
    buffer that stays in cache while every pair uses it."""
    n, width = len(raws), base.size

    compiled = compiled_loops()

    def load(a: int, b: int, rows: np.ndarray) -> np.ndarray:
        for i, r in enumerate(raws):
            if compiled and r.flags.c_contiguous:
                compiled.deltas(r[a:b], base[a:b], rows[i])  # the same subtraction, one pass
            else:
                np.subtract(r[a:b], base[a:b], out=rows[i], dtype=np.float64)
        return rows

    pairs, sums = pair_block_sums(n, width, load, squared_difference, diagonal=False)
    d = np.zeros((n, n), dtype=np.float64)
    for (i, j), row in zip(pairs, sums.tolist()):
        d[i, j] = d[j, i] = math.fsum(row)
    return d


class Krum(MultiKrum):
    """The one update with the best Krum score (Multi-Krum keeping one).

    Parameters
    ----------
    byzantine : int
        Malicious updates tolerated (``f``); a round needs ``n >= 2f + 3`` updates.
    min_participants : int (default 1)
        Rounds with fewer distinct participants are refused.
    """

    name = "krum"
    spec_class = KrumSpec

    def __init__(self, *, byzantine: int, min_participants: int = 1) -> None:
        super().__init__(byzantine=byzantine, keep=1, min_participants=min_participants)
