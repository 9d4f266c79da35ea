"""FoolsGold (Fung, Yoon, Beschastnikh, "The Limitations of Federated Learning in
Sybil Settings", RAID 2020).

Sybils — several identities pushing the same poisoned objective — send updates
that point the same way round after round, while honest members' data differ.
FoolsGold keeps each member's update history (the sum of its deltas to the
global model over the rounds it took part in), measures the cosine similarity
between histories, and lowers the weight of members that are too similar to
another one:

1. ``cs[i][j]`` is the cosine similarity of histories ``i`` and ``j`` (0 on the
   diagonal), ``v[i] = max_j cs[i][j]``;
2. pardoning: ``cs[i][j] *= v[i] / v[j]`` when ``v[i] < v[j]`` (an honest member
   similar to a sybil is not punished as much as the sybil);
3. ``w[i] = 1 - max_j cs[i][j]``, clipped to [0, 1] and divided by its maximum;
4. a logit spreads the weights: ``w = ln(w / (1 - w)) + 0.5`` (``w = 1`` is first
   set to 0.99), clipped to [0, 1].

The wrapped strategy then aggregates with weight ``w[i] * samples[i]``. Every
step is deterministic; the history is server state (:meth:`state`), rebuilt by
an auditor who replays the rounds in order. Each update whose weight was
lowered is recorded with reason ``FOOLSGOLD`` and its factor ``w[i]``.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch

from fedchain.coordinator.strategies.kernels import get as compiled_loops
from fedchain.coordinator.strategies.base import (
    AggregationError,
    ClientUpdate,
    Decision,
    Strategy,
    StrategyWrapper,
    canonical_order,
    check_update,
)
from fedchain.coordinator.strategies.vectors import (
    flatten,
    pair_block_sums,
    pairwise_products,
    product,
    raw_vector,
)

__all__ = ["FoolsGold", "foolsgold_weights"]


def foolsgold_weights(histories: Sequence[np.ndarray]) -> list[float]:
    """FoolsGold's weight factor in [0, 1] for each history (see the module docstring)."""
    if len(histories) < 2:
        return [1.0] * len(histories)
    return _weights(pairwise_products(histories))


def _weights(gram: np.ndarray) -> list[float]:
    """The weights from the histories' products (``gram[i, j] = sum(h_i * h_j)``, the diagonal the
    squared norms; block sums combined with ``math.fsum``, see the vectors module)."""
    n = gram.shape[0]
    if n < 2:
        return [1.0] * n
    norms = [math.sqrt(float(gram[i, i])) for i in range(n)]
    cs = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if norms[i] > 0 and norms[j] > 0:
                cs[i][j] = cs[j][i] = float(gram[i, j]) / (norms[i] * norms[j])
    v = [max(row) for row in cs]
    pardoned = [row[:] for row in cs]
    for i in range(n):
        for j in range(n):
            if i != j and 0 < v[i] < v[j]:
                pardoned[i][j] = cs[i][j] * v[i] / v[j]
    w = [min(1.0, max(0.0, 1.0 - max(row))) for row in pardoned]
    top = max(w)
    if top <= 0:
        return [0.0] * n
    out = []
    for x in w:
        x = min(x / top, 0.99)
        logit = math.log(x / (1.0 - x)) + 0.5 if x > 0 else -math.inf
        out.append(min(1.0, max(0.0, logit)))
    return out


class FoolsGold(StrategyWrapper):
    """Lower the weight of members whose update histories are too similar, then delegate.

    Parameters
    ----------
    inner : Strategy
        A weighted strategy (FedAvg, FedProx, FedAdam, FedYogi).
    """

    def __init__(self, inner: Strategy) -> None:
        super().__init__(inner)
        self._history: dict[tuple[str, str], np.ndarray] = {}

    def aggregate_train(self, server_round: int, arrays: Mapping[str, torch.Tensor],
                        updates: Sequence[ClientUpdate]) -> dict[str, torch.Tensor]:
        ordered = canonical_order(updates)
        base = flatten(arrays)
        for u in ordered:
            check_update(arrays, u)
        history = dict(self._history)
        rows, gram = _histories(base, [raw_vector(u.state, sorted(arrays)) for u in ordered],
                                [history.get(u.key) for u in ordered])
        for u, row in zip(ordered, rows):
            history[u.key] = row
        factors = _weights(gram) if len(ordered) >= 2 else [1.0] * len(ordered)
        if not any(f > 0 for f in factors):
            raise AggregationError(f"round {server_round}: FoolsGold gave every update weight 0")
        reweighted, decisions = [], []
        for u, f in zip(ordered, factors):
            reweighted.append(u.replace(weight=u.mean_weight * f))
            if f < 1.0:
                decisions.append(Decision(u.participant, u.dataset_id, "reweighted", "FOOLSGOLD", f))
        self.last_decisions = decisions
        new = self.inner.aggregate_train(server_round, arrays, reweighted)
        self._history = history  # only a round that aggregated enters the history
        return new

    def state(self) -> dict[str, torch.Tensor]:
        st = {f"inner.{k}": t for k, t in self.inner.state().items()}
        for (participant, dataset), h in sorted(self._history.items()):
            st[f"history.{participant}.{dataset}"] = torch.from_numpy(h.copy())
        return st

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        inner, history = {}, {}
        for key, t in state.items():
            kind, _, rest = key.partition(".")
            if kind == "inner":
                inner[rest] = t
            elif kind == "history" and "." in rest:
                participant, _, dataset = rest.partition(".")
                history[(participant, dataset)] = t.detach().to(torch.float64).reshape(-1).numpy().copy()
            else:
                raise AggregationError(f"FoolsGold state has unexpected entry {key!r}")
        self.inner.load_state(inner)
        self._history = history


def _histories(base: np.ndarray, raws: list[np.ndarray], old: list[np.ndarray | None]
               ) -> tuple[list[np.ndarray], np.ndarray]:
    """The round's new histories (``old + (float64(x) - base)``, or the delta for a first round) and
    their products, in one pass: each chunk of coordinates is written into the histories and used by
    every pair while it is in cache. Bit for bit ``flatten(state) - base``, ``history + delta`` and
    ``pairwise_products`` of the result."""
    n, width = len(raws), base.size
    rows = [np.empty(width, dtype=np.float64) for _ in range(n)]  # one array each: a member's history
                                                                    # does not pin the others' memory
    compiled = compiled_loops()

    def load(a: int, b: int, block: np.ndarray) -> np.ndarray:
        for i, (r, h) in enumerate(zip(raws, old)):
            if compiled and r.flags.c_contiguous and (h is None or h.flags.c_contiguous):
                if h is None:  # the same operations as below, one pass
                    compiled.deltas(r[a:b], base[a:b], block[i])
                else:
                    compiled.add_deltas(r[a:b], base[a:b], h[a:b], block[i])
            else:
                np.subtract(r[a:b], base[a:b], out=block[i], dtype=np.float64)
                if h is not None:
                    np.add(h[a:b], block[i], out=block[i])
            rows[i][a:b] = block[i]
        return block

    pairs, sums = pair_block_sums(n, width, load, product, diagonal=True)
    if not pairs or not width:  # nothing was loaded: fill the rows
        load(0, width, np.empty((n, width)))
    gram = np.zeros((n, n), dtype=np.float64)
    for (i, j), row in zip(pairs, sums.tolist()):
        gram[i, j] = gram[j, i] = math.fsum(row)
    return rows, gram
