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
from fedchain.coordinator.strategies.vectors import flatten, stack_deltas, unflatten

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
        ordered, deltas = stack_deltas(arrays, updates)
        n = len(ordered)
        k = math.floor(self.beta * n)  # beta < 0.5, so n - 2k >= 1 values stay in every coordinate
        columns = np.ascontiguousarray(deltas.T)  # one row per coordinate: sorting rows is cache-friendly
        ranked = np.sort(columns, axis=1)  # the kept values (and so the mean) do not depend on how ties are ordered
        mean = np.add.reduce(ranked[:, k:n - k], axis=1) / float(n - k - k)
        if k:
            share = _trimmed_counts(columns, ranked, k) / float(columns.shape[0])
            self.last_decisions = [
                Decision(u.participant, u.dataset_id, "trimmed", "TRIMMED", float(share[i]))
                for i, u in enumerate(ordered)
            ]
        return unflatten(flatten(arrays) + mean, arrays)


def _trimmed_counts(columns: np.ndarray, ranked: np.ndarray, k: int) -> np.ndarray:
    """How many coordinates each update (column) had trimmed, ties at a cut broken by the canonical order.

    The same counts as a stable argsort of every row, faster: a value below the
    ``k``-th smallest (or above the ``k``-th largest) is trimmed; where the cut
    value occurs exactly as often as the cut needs, every copy is trimmed; only
    the rows with more copies at a cut than it takes are argsorted (stable, so the
    update with the smaller canonical key is trimmed first).
    """
    n = columns.shape[1]
    lo, hi = ranked[:, k - 1:k], ranked[:, n - k:n - k + 1]
    low, high = columns <= lo, columns >= hi
    ambiguous = (np.add.reduce(low, axis=1) != k) | (np.add.reduce(high, axis=1) != k)
    counts = np.add.reduce(low | high, axis=0, dtype=np.int64)
    rows = np.flatnonzero(ambiguous)
    if rows.size:
        counts -= np.add.reduce((low | high)[rows], axis=0, dtype=np.int64)
        order = np.argsort(columns[rows], axis=1, kind="stable")
        trimmed = np.concatenate([order[:, :k], order[:, n - k:]], axis=1)
        counts += np.bincount(trimmed.reshape(-1), minlength=n)
    return counts
