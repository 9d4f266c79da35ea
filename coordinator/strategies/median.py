"""Coordinate-wise median (Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust
Distributed Learning: Towards Optimal Statistical Rates", ICML 2018).

Each parameter of the new global model is the median of that parameter over
the round's updates (the mean of the two middle values for an even count).
Sample counts are ignored: a member cannot buy influence by claiming more
samples, and up to half of the updates minus one can be arbitrary without
moving any coordinate outside the range of the honest ones. No update is
excluded as a whole, so the rule records no decisions.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from fedchain.plan import MedianSpec

from fedchain.coordinator.strategies.base import ClientUpdate
from fedchain.coordinator.strategies.fedavg import FedAvg
from fedchain.coordinator.strategies.vectors import chunks, in_parallel, prepare, sort_chunk, unflatten

__all__ = ["FedMedian"]


class FedMedian(FedAvg):
    """Coordinate-wise median of the updates.

    Parameters
    ----------
    min_participants : int (default 1)
        Rounds with fewer distinct participants are refused.
    """

    name = "median"
    spec_class = MedianSpec

    def _aggregate(
        self, server_round: int, arrays: Mapping[str, torch.Tensor], updates: Sequence[ClientUpdate]
    ) -> dict[str, torch.Tensor]:
        ordered, base, raws = prepare(arrays, updates)
        n = len(ordered)
        out = np.empty(base.size, dtype=np.float64)
        # Sorted per coordinate (a selection: exact), chunk by chunk, on the raw values: the delta
        # x -> float64(x) - base is non-decreasing, so it commutes with sorting and only the middle
        # values are converted (vectors.sort_chunk). The two middle deltas of an even count are averaged as (a + b) / 2,
        # bit for bit what np.median gives.
        def chunk(job: tuple[int, int], local: dict) -> None:
            a, e = job
            ranked = sort_chunk(raws, a, e, local)
            b = base[a:e]
            if n % 2:
                middle = ranked[n // 2] - b
            else:
                middle = ((ranked[n // 2 - 1] - b) + (ranked[n // 2] - b)) / 2.0
            out[a:e] = b + middle

        in_parallel(chunks(base.size), chunk)
        return unflatten(out, arrays)
