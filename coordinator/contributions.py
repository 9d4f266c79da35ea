"""Contribution scores that measure contribution, recomputable bit for bit by an auditor.

A round's score of a member says how much its update helped *this* round's
model. Three methods, chosen in the plan (``[contribution] method``):

``similarity`` (data-free, the default)
    The cosine between the member's update (its difference to the global model)
    and the round's aggregate step, floored at 0: an update pointing where the
    consortium went scores high, one pointing elsewhere or nowhere (a free-rider
    sending the global model back: a zero difference) scores 0. No data needed.

``loo`` (leave-one-out)
    ``v(all) - v(all without i)``, where ``v(S)`` is the validation value of the
    global model plus coalition ``S``'s part of the round's sample-weighted step
    (:mod:`fedchain.coordinator.scoring`: a free-rider adds nothing to any
    coalition) on a public validation set the plan names (a CSV pinned in the
    store, its hash in the plan, voted on with it). The coordinator holds no
    patient data; the validation set is public data the consortium agreed to, so
    anyone re-evaluates it.

``shapley`` (truncated Monte Carlo, Ghorbani and Zou, "Data Shapley", ICML 2019)
    The average of each member's marginal value over ``permutations`` orders of
    the members, a marginal counting 0 once the coalition's value is within
    ``truncation`` of the full coalition's. The orders come from the plan's seed
    and the round (SHA-256 counter, Fisher-Yates), so replay draws the same ones.

Every method returns a raw value per member and a **share**: the positive parts
normalised to sum to 1 (all zero when nothing helped). Members an aggregation
rule excluded get value 0 and share 0 (their exclusion is recorded with its
reason beside the scores).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from fedchain.plan import canonical_json

from fedchain.coordinator.strategies.vectors import BLOCK, in_parallel, squared_norm

__all__ = ["Score", "similarity_scores", "loo_scores", "shapley_scores", "permutation", "shares"]

#: A coalition's value: members (canonical keys) -> a number, higher is better.
ValueFn = Callable[[frozenset[str]], float]


@dataclass(frozen=True)
class Score:
    """One member's score in a round: the method's raw value and its share of the positive total."""

    value: float
    share: float

    def to_dict(self) -> dict[str, float]:
        return {"value": round(self.value, 12), "share": round(self.share, 12)}


def shares(values: Mapping[str, float]) -> dict[str, Score]:
    """Raw values with their shares of the positive total (members in sorted order)."""
    positive = {k: max(0.0, v) for k, v in values.items()}
    total = math.fsum(positive.values())
    return {k: Score(values[k], positive[k] / total if total > 0 else 0.0) for k in sorted(values)}


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    return math.fsum(float(np.add.reduce(a[i:i + BLOCK] * b[i:i + BLOCK])) for i in range(0, a.size, BLOCK))


def similarity_scores(deltas: Mapping[str, np.ndarray], step: np.ndarray) -> dict[str, Score]:
    """Each member's ``max(0, cos(delta, step))`` (0 for a zero delta or a zero step).

    The members' norms and dot products are computed on the vector threads
    (:func:`~fedchain.coordinator.strategies.vectors.in_parallel`); each is the same blocked sum
    on any thread."""
    step_norm = math.sqrt(squared_norm(step))
    members = list(deltas)

    def one(member: str, _local: dict) -> float:
        delta = deltas[member]
        n = math.sqrt(squared_norm(delta))
        return max(0.0, _dot(delta, step) / (n * step_norm)) if n > 0 and step_norm > 0 else 0.0

    values = in_parallel(members, one, parallel=step.size >= BLOCK)
    return shares(dict(zip(members, values)))


def loo_scores(members: Sequence[str], value: ValueFn) -> dict[str, Score]:
    """Leave-one-out: ``v(all) - v(all without i)``."""
    everyone = frozenset(members)
    full = value(everyone)
    return shares({m: full - value(everyone - {m}) for m in members})


def permutation(members: Sequence[str], seed: int, round_: int, k: int) -> list[str]:
    """The ``k``-th order of ``members`` for a round: Fisher-Yates driven by SHA-256 of
    (seed, round, k, counter) — the same on every machine and every Python."""
    order = sorted(members)
    counter = 0

    def below(n: int) -> int:  # uniform in [0, n) by rejection sampling on 64-bit draws
        nonlocal counter
        limit = (1 << 64) - ((1 << 64) % n)
        while True:
            digest = hashlib.sha256(canonical_json(["fedchain-shapley", seed, round_, k, counter])).digest()
            counter += 1
            x = int.from_bytes(digest[:8], "big")
            if x < limit:
                return x % n

    for i in range(len(order) - 1, 0, -1):
        j = below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def shapley_scores(
    members: Sequence[str], value: ValueFn, *, seed: int, round_: int, permutations: int, truncation: float,
) -> dict[str, Score]:
    """Truncated Monte Carlo Shapley values over ``permutations`` seeded orders."""
    cache: dict[frozenset[str], float] = {}

    def v(coalition: frozenset[str]) -> float:
        if coalition not in cache:
            cache[coalition] = value(coalition)
        return cache[coalition]

    full = v(frozenset(members))
    sums: dict[str, list[float]] = {m: [] for m in members}
    for k in range(permutations):
        coalition: frozenset[str] = frozenset()
        previous = v(coalition)
        for m in permutation(members, seed, round_, k):
            if abs(full - previous) <= truncation:
                sums[m].append(0.0)  # the rest of this order adds (almost) nothing: truncated
                continue
            coalition = coalition | {m}
            current = v(coalition)
            sums[m].append(current - previous)
            previous = current
    return shares({m: math.fsum(s) / permutations for m, s in sums.items()})
