"""The robust rules as they were before the speed-up (commit 4840ba5), kept verbatim
for tests/test_robust_bitexact.py: the fast implementations must give the same
bytes and the same decisions, so trails made by the old code still verify.

Only the arithmetic is copied (vectors, median, trimmed mean, Krum, norm bound,
FoolsGold); the checks, FedAvg and the weighted mean are the project's own.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch

from fedchain.coordinator.strategies.base import (
    AggregationError,
    ClientUpdate,
    Decision,
    StrategyWrapper,
    canonical_order,
    check_update,
)
from fedchain.coordinator.strategies.fedavg import FedAvg

BLOCK = 1 << 16


# -- vectors.py ------------------------------------------------------------------------------------


def flatten(state):
    return np.concatenate([state[k].detach().to(torch.float64).reshape(-1).numpy() for k in sorted(state)])


def unflatten(vector, like):
    out, at = {}, 0
    for k in sorted(like):
        n = like[k].numel()
        out[k] = torch.from_numpy(np.ascontiguousarray(vector[at:at + n])).reshape(like[k].shape).clone()
        at += n
    return out


def stack_deltas(arrays, updates):
    ordered = canonical_order(updates)
    for u in ordered:
        check_update(arrays, u)
    base = flatten(arrays)
    rows = np.empty((len(ordered), base.size), dtype=np.float64)
    for i, u in enumerate(ordered):
        at = 0
        for k in sorted(arrays):
            t = u.state[k].detach().reshape(-1).numpy()
            np.subtract(t, base[at:at + t.size], out=rows[i, at:at + t.size], dtype=np.float64)
            at += t.size
    return ordered, rows


def squared_norm(v):
    v = np.ascontiguousarray(v, dtype=np.float64).reshape(-1)
    return math.fsum(float(np.add.reduce(v[i:i + BLOCK] * v[i:i + BLOCK])) for i in range(0, v.size, BLOCK))


def norm(v):
    return math.sqrt(squared_norm(v))


def pairwise_squared_distances(rows):
    n, width = rows.shape
    partial = [[[] for _ in range(n)] for _ in range(n)]
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


# -- median.py, trimmedmean.py ---------------------------------------------------------------------


class RefMedian(FedAvg):
    name = "median"

    def _aggregate(self, server_round, arrays, updates):
        _ordered, deltas = stack_deltas(arrays, updates)
        ranked = np.sort(deltas, axis=0)
        n = ranked.shape[0]
        middle = ranked[n // 2] if n % 2 else (ranked[n // 2 - 1] + ranked[n // 2]) / 2.0
        return unflatten(flatten(arrays) + middle, arrays)


class RefTrimmedMean(FedAvg):
    name = "trimmed_mean"

    def __init__(self, *, beta, min_participants=1):
        super().__init__(min_participants=min_participants)
        self.beta = float(beta)

    def _aggregate(self, server_round, arrays, updates):
        ordered, deltas = stack_deltas(arrays, updates)
        n = len(ordered)
        k = math.floor(self.beta * n)
        columns = np.ascontiguousarray(deltas.T)
        ranked = np.sort(columns, axis=1)
        mean = np.add.reduce(ranked[:, k:n - k], axis=1) / float(n - k - k)
        if k:
            share = _trimmed_counts(columns, ranked, k) / float(columns.shape[0])
            self.last_decisions = [
                Decision(u.participant, u.dataset_id, "trimmed", "TRIMMED", float(share[i]))
                for i, u in enumerate(ordered)
            ]
        return unflatten(flatten(arrays) + mean, arrays)


def _trimmed_counts(columns, ranked, k):
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


# -- krum.py ---------------------------------------------------------------------------------------


def krum_scores(squared_distances, byzantine):
    n = squared_distances.shape[0]
    closest = n - byzantine - 2
    if closest < 1:
        raise AggregationError(f"Krum with byzantine = {byzantine} needs at least {byzantine + 3} updates, got {n}")
    scores = []
    for i in range(n):
        others = sorted(float(squared_distances[i, j]) for j in range(n) if j != i)
        scores.append(math.fsum(others[:closest]))
    return scores


class RefMultiKrum(FedAvg):
    name = "multikrum"

    def __init__(self, *, byzantine, keep, min_participants=1):
        super().__init__(min_participants=min_participants)
        self.byzantine = byzantine
        self.keep = keep

    def _aggregate(self, server_round, arrays, updates):
        ordered, deltas = stack_deltas(arrays, updates)
        n, f = len(ordered), self.byzantine
        if n < 2 * f + 3:
            raise AggregationError("too few updates")
        if self.keep > n - f:
            raise AggregationError("cannot keep that many")
        scores = krum_scores(pairwise_squared_distances(deltas), f)
        ranking = sorted(range(n), key=lambda i: (scores[i], ordered[i].key))
        chosen = sorted(ranking[:self.keep])
        self.last_decisions = [
            Decision(ordered[i].participant, ordered[i].dataset_id, "excluded", "KRUM_NOT_SELECTED", scores[i])
            for i in range(n) if i not in chosen
        ]
        mean = np.add.reduce(deltas[chosen], axis=0) / float(len(chosen))
        return unflatten(flatten(arrays) + mean, arrays)


# -- normbound.py ----------------------------------------------------------------------------------


class RefNormBound(StrategyWrapper):
    def __init__(self, inner, *, bound):
        super().__init__(inner)
        self.bound = float(bound)

    def aggregate_train(self, server_round, arrays, updates):
        base = flatten(arrays)
        clipped, decisions = [], []
        for u in canonical_order(updates):
            if set(u.state) != set(arrays):
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


# -- foolsgold.py ----------------------------------------------------------------------------------


def _dot(a, b):
    return math.fsum(float(np.add.reduce(a[i:i + BLOCK] * b[i:i + BLOCK])) for i in range(0, a.size, BLOCK))


def foolsgold_weights(histories):
    n = len(histories)
    if n < 2:
        return [1.0] * n
    norms = [math.sqrt(squared_norm(h)) for h in histories]
    cs = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if norms[i] > 0 and norms[j] > 0:
                cs[i][j] = cs[j][i] = _dot(histories[i], histories[j]) / (norms[i] * norms[j])
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


class RefFoolsGold(StrategyWrapper):
    def __init__(self, inner):
        super().__init__(inner)
        self._history = {}

    def aggregate_train(self, server_round, arrays, updates):
        ordered = canonical_order(updates)
        base = flatten(arrays)
        for u in ordered:
            check_update(arrays, u)
        history = dict(self._history)
        for u in ordered:
            delta = flatten(u.state) - base
            history[u.key] = history[u.key] + delta if u.key in history else delta
        factors = foolsgold_weights([history[u.key] for u in ordered])
        if not any(f > 0 for f in factors):
            raise AggregationError(f"round {server_round}: FoolsGold gave every update weight 0")
        reweighted, decisions = [], []
        for u, f in zip(ordered, factors):
            reweighted.append(u.replace(weight=u.mean_weight * f))
            if f < 1.0:
                decisions.append(Decision(u.participant, u.dataset_id, "reweighted", "FOOLSGOLD", f))
        self.last_decisions = decisions
        new = self.inner.aggregate_train(server_round, arrays, reweighted)
        self._history = history
        return new

    def state(self):
        st = {f"inner.{k}": t for k, t in self.inner.state().items()}
        for (participant, dataset), h in sorted(self._history.items()):
            st[f"history.{participant}.{dataset}"] = torch.from_numpy(h.copy())
        return st
