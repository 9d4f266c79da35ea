"""Coordinate-wise trimmed mean (Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust
Distributed Learning: Towards Optimal Statistical Rates", ICML 2018).

For each parameter the round's values are sorted, the ``k = floor(beta * n)``
smallest and largest are dropped, and the rest averaged (unweighted: sample
counts are self-reported). Ties are ordered by the canonical update key, so
the same updates always drop the same values. Each update's decision records
the share of its coordinates that were trimmed (reason ``TRIMMED``): an update
trimmed almost everywhere was an outlier almost everywhere.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch

from fedchain.errors import ConfigError
from fedchain.plan import TrimmedMeanSpec

from fedchain.coordinator.strategies.base import ClientUpdate, Decision
from fedchain.coordinator.strategies.fedavg import FedAvg
from fedchain.coordinator.strategies.vectors import chunks, in_parallel, prepare, rank_sum, sort_chunk, unflatten

__all__ = ["FedTrimmedMean"]


class FedTrimmedMean(FedAvg):
    """Coordinate-wise trimmed mean.

    Parameters
    ----------
    beta : float
        Share of the updates dropped at each end, per coordinate, in (0, 0.5).
    min_participants : int (default 1)
        Rounds with fewer distinct participants are refused.
    """

    name = "trimmed_mean"
    spec_class = TrimmedMeanSpec

    def __init__(self, *, beta: float, min_participants: int = 1) -> None:
        super().__init__(min_participants=min_participants)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < 0.5:
            raise ConfigError(f"beta must be a number in (0, 0.5), got {beta!r}")
        self.beta = float(beta)

    def _aggregate(
        self, server_round: int, arrays: Mapping[str, torch.Tensor], updates: Sequence[ClientUpdate]
    ) -> dict[str, torch.Tensor]:
        ordered, base, raws = prepare(arrays, updates)
        n, width = len(ordered), base.size
        k = math.floor(self.beta * n)  # beta < 0.5, so n - 2k >= 1 values stay in every coordinate
        out = np.empty(width, dtype=np.float64)
        def chunk(job: tuple[int, int], local: dict) -> np.ndarray | None:
            a, e = job
            ranked = sort_chunk(raws, a, e, local)
            b = base[a:e]
            # Sorting the raw values sorts the deltas (x -> float64(x) - base is non-decreasing);
            # the kept ranks are converted and summed rank after rank in the order add.reduce
            # summed each coordinate's slice of its sorted deltas (vectors.rank_sum).
            kept = [np.subtract(ranked[r], b, dtype=np.float64) for r in range(k, n - k)]
            out[a:e] = b + rank_sum(kept) / float(n - k - k)
            return _trimmed_counts(raws, a, e, b, ranked, k) if k else None

        per_chunk = in_parallel(chunks(width), chunk)
        if k:
            counts = np.zeros(n, dtype=np.int64)
            for c in per_chunk:  # integer sums: exact in any order
                counts += c
            share = counts / float(width)
            self.last_decisions = [
                Decision(u.participant, u.dataset_id, "trimmed", "TRIMMED", float(share[i]))
                for i, u in enumerate(ordered)
            ]
        return unflatten(out, arrays)


def _trimmed_counts(raws: list[np.ndarray], a: int, e: int, base: np.ndarray, ranked: np.ndarray,
                    k: int) -> np.ndarray:
    """How many of the coordinates ``[a, e)`` each update had trimmed, ties at a cut broken by the
    canonical order.

    ``ranked[r]`` holds each coordinate's ``r``-th smallest raw value. Where the deltas (``raw - base``) at a
    cut are distinct — the k-th smallest below the next, the k-th largest above the one before —
    exactly the k values on each side are trimmed, and as the delta is non-decreasing in the raw
    value these are exactly the raw values ``<=`` the k-th smallest or ``>=`` the k-th largest.
    Where the deltas tie at a cut (equal raw values, or raw values whose deltas round to the same
    number), the coordinate's deltas are argsorted (stable, so the update with the smaller
    canonical key is trimmed first): the counts of a stable argsort of every coordinate's deltas.
    """
    n = len(ranked)
    lo, hi = ranked[k - 1], ranked[n - k]
    ambiguous = ((lo - base) == (ranked[k] - base)) | ((ranked[n - k - 1] - base) == (hi - base))
    rows = np.flatnonzero(ambiguous)
    counts = np.empty(n, dtype=np.int64)
    for i, r in enumerate(raws):
        x = r[a:e]
        trimmed = (x <= lo) | (x >= hi)
        if rows.size:
            trimmed[rows] = False
        counts[i] = np.count_nonzero(trimmed)
    if rows.size:
        deltas = np.stack([r[a:e][rows] for r in raws], axis=1) - base[rows, None]
        order = np.argsort(deltas, axis=1, kind="stable")
        cut = np.concatenate([order[:, :k], order[:, n - k:]], axis=1)
        counts += np.bincount(cut.reshape(-1), minlength=n)
    return counts
