"""Updates as flat float64 vectors, for the robust rules that compare whole updates.

Robust rules (Krum, coordinate-wise median and trimmed mean, norm bounding,
FoolsGold) look at each update as one vector. To keep their results
bit-identical on every machine — the auditor re-derives every aggregate — the
numbers are computed with fixed-order operations only:

* the flat vector concatenates the tensors in sorted name order, in float64;
* a squared L2 norm or distance squares element by element (each product
  correctly rounded) and sums with numpy's ``add.reduce`` over blocks of
  :data:`BLOCK` elements — numpy's pairwise summation, whose order is fixed by
  its source, not by the CPU's vector width or thread count — and the block
  sums with ``math.fsum`` (correctly rounded, order-independent). BLAS (``dot``,
  ``@``) is never used: its reduction order depends on the machine;
* ties are broken by the canonical update key ``(participant, dataset)``.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch

from fedchain.coordinator.strategies.base import ClientUpdate, canonical_order, check_update

__all__ = ["BLOCK", "flatten", "unflatten", "stack_deltas", "squared_norm", "norm", "pairwise_squared_distances"]

#: Elements per block of a norm or distance (each block is one pairwise-summed reduction).
BLOCK = 1 << 16


def flatten(state: Mapping[str, torch.Tensor]) -> np.ndarray:
    """The tensors of ``state`` in sorted name order as one float64 vector."""
    return np.concatenate([state[k].detach().to(torch.float64).reshape(-1).numpy() for k in sorted(state)])


def unflatten(vector: np.ndarray, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``vector`` cut back into tensors shaped like ``like`` (float64)."""
    out, at = {}, 0
    for k in sorted(like):
        n = like[k].numel()
        out[k] = torch.from_numpy(np.ascontiguousarray(vector[at:at + n])).reshape(like[k].shape).clone()
        at += n
    return out


def stack_deltas(
    arrays: Mapping[str, torch.Tensor], updates: Sequence[ClientUpdate]
) -> tuple[list[ClientUpdate], np.ndarray]:
    """The updates in canonical order (checked against the global model) and their
    differences to it as the rows of one float64 matrix."""
    ordered = canonical_order(updates)
    for u in ordered:
        check_update(arrays, u)
    base = flatten(arrays)
    rows = np.empty((len(ordered), base.size), dtype=np.float64)
    for i, u in enumerate(ordered):  # written in place: float64(w) - base, as flatten(w) - base would give
        at = 0
        for k in sorted(arrays):
            t = u.state[k].detach().reshape(-1).numpy()
            np.subtract(t, base[at:at + t.size], out=rows[i, at:at + t.size], dtype=np.float64)
            at += t.size
    return ordered, rows


def squared_norm(v: np.ndarray) -> float:
    """``sum(v**2)``, the same on every machine (see the module docstring)."""
    v = np.ascontiguousarray(v, dtype=np.float64).reshape(-1)
    return math.fsum(float(np.add.reduce(v[i:i + BLOCK] * v[i:i + BLOCK])) for i in range(0, v.size, BLOCK))


def norm(v: np.ndarray) -> float:
    """The L2 norm of ``v`` (see :func:`squared_norm`)."""
    return math.sqrt(squared_norm(v))


def pairwise_squared_distances(rows: np.ndarray) -> np.ndarray:
    """``d[i, j] = sum((rows[i] - rows[j])**2)`` for every pair, the same on every machine.

    Computed block by block (each block of columns stays in cache while all pairs
    use it); each pair's block sums are combined with ``math.fsum``.
    """
    n, width = rows.shape
    partial: list[list[list[float]]] = [[[] for _ in range(n)] for _ in range(n)]
    for start in range(0, width, BLOCK):
        block = np.ascontiguousarray(rows[:, start:start + BLOCK])
        for i in range(n - 1):
            diff = block[i + 1:] - block[i]
            sums = np.add.reduce(diff * diff, axis=1)
            for k, value in enumerate(sums.tolist()):
                partial[i][i + 1 + k].append(value)
    d = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for j in range(i + 1, n):
            d[i, j] = d[j, i] = math.fsum(partial[i][j])
    return d
