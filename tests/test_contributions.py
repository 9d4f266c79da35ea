"""Contribution scores: similarity, leave-one-out and truncated Monte Carlo Shapley.

Scores must reward what helped, give a free-rider nothing, and come out the same
on every replay (seeded orders, exact sums).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedchain.coordinator.contributions import (
    loo_scores,
    permutation,
    shapley_scores,
    shares,
    similarity_scores,
)

MEMBERS = ["0xa", "0xb", "0xc", "0xd"]


def test_similarity_gives_a_free_rider_and_an_opponent_nothing():
    rng = np.random.default_rng(0)
    step = rng.standard_normal(10_000)
    deltas = {
        "0xaligned": step + 0.1 * rng.standard_normal(10_000),
        "0xpartly": step + 3.0 * rng.standard_normal(10_000),
        "0xfree-rider": np.zeros(10_000),  # sent the global model back unchanged
        "0xopposite": -step,
    }
    s = similarity_scores(deltas, step)
    assert s["0xfree-rider"].value == 0.0 and s["0xfree-rider"].share == 0.0
    assert s["0xopposite"].share == 0.0
    assert s["0xaligned"].value > 0.99 and 0 < s["0xpartly"].value < s["0xaligned"].value
    assert math.fsum(x.share for x in s.values()) == pytest.approx(1.0)


def test_similarity_scores_are_the_same_bits_on_one_thread_and_on_four(monkeypatch):
    """The members' deltas, norms and dot products are shared out over the vector threads; each is the same
    blocked sum wherever it runs, so the scores a replay recomputes on any machine do not depend on it."""
    import threading

    import torch

    from fedchain.coordinator.scoring import score_round
    from fedchain.coordinator.strategies import vectors
    from fedchain.coordinator.strategies.base import ClientUpdate
    from fedchain.plan import plan_from_dict

    rng = np.random.default_rng(3)
    base = {"b": torch.from_numpy(rng.standard_normal(70_001).astype(np.float32)),
            "w": torch.from_numpy(rng.standard_normal((3, 65_536)).astype(np.float32))}
    updates = [ClientUpdate(f"0x{i:040x}", f"ds-{i}", 10 + 7 * i,
                            {k: v + torch.from_numpy(rng.standard_normal(v.shape).astype(np.float32)) * (i - 1.5)
                             for k, v in base.items()})
               for i in range(4)]
    new = {k: v + 0.1 for k, v in base.items()}
    plan = plan_from_dict({  # only its contribution spec is read: similarity, the default
        "name": "scores", "purpose": "diagnosis", "model": {"kind": "logreg", "in_features": 3, "n_classes": 2},
        "optimizer": {"name": "sgd", "lr": 0.1}, "local_epochs": 1, "batch_size": 4, "rounds": 1,
        "strategy": {"name": "fedavg"}, "min_participants": 1, "round_deadline_blocks": 10, "seed": 3,
        "datasets": ["d0"]})
    assert plan.contribution.method == "similarity"
    where = set()
    real_flatten = vectors.flatten

    def flatten(state):
        where.add(threading.current_thread().name)
        return real_flatten(state)

    import fedchain.coordinator.scoring as scoring
    monkeypatch.setattr(scoring, "flatten", flatten)
    results = {}
    for threads in (1, 4):
        monkeypatch.setattr(vectors, "THREADS", threads)
        results[threads] = score_round(plan, 1, base, new, updates, [], None)
    assert len(results[1].scores) == 4
    assert {m: (s.value, s.share) for m, s in results[1].scores.items()} == \
        {m: (s.value, s.share) for m, s in results[4].scores.items()}
    assert any(name.startswith("fedchain-vectors") for name in where)


def additive(weights):
    return lambda coalition: math.fsum(weights[m] for m in coalition)


def test_leave_one_out_of_an_additive_game_is_each_weight():
    w = {"0xa": 3.0, "0xb": 1.0, "0xc": 0.0, "0xd": -1.0}
    s = loo_scores(MEMBERS, additive(w))
    assert {m: x.value for m, x in s.items()} == pytest.approx(w)
    assert s["0xa"].share == pytest.approx(0.75) and s["0xd"].share == 0.0


def test_shapley_of_an_additive_game_is_exact_and_a_null_player_gets_zero():
    w = {"0xa": 3.0, "0xb": 1.0, "0xc": 0.0, "0xd": 2.0}
    s = shapley_scores(MEMBERS, additive(w), seed=7, round_=3, permutations=5, truncation=0.0)
    assert {m: x.value for m, x in s.items()} == pytest.approx(w)
    assert s["0xc"].value == 0.0


def test_shapley_splits_a_shared_contribution_and_is_reproducible():
    # Members a and b bring the same information: either one alone gives the whole value.
    def v(coalition):
        return 1.0 if coalition & {"0xa", "0xb"} else 0.0

    s = shapley_scores(MEMBERS, v, seed=1, round_=1, permutations=200, truncation=0.0)
    assert s["0xa"].value + s["0xb"].value == pytest.approx(1.0)
    assert abs(s["0xa"].value - 0.5) < 0.1 and s["0xc"].value == s["0xd"].value == 0.0
    again = shapley_scores(MEMBERS, v, seed=1, round_=1, permutations=200, truncation=0.0)
    assert again == s


def test_truncation_stops_paying_once_the_coalition_is_as_good_as_everyone():
    calls = []

    def v(coalition):
        calls.append(coalition)
        return min(1.0, 0.5 * len(coalition))  # any two members reach the full value

    s = shapley_scores(MEMBERS, v, seed=2, round_=1, permutations=10, truncation=1e-9)
    assert math.fsum(x.value for x in s.values()) == pytest.approx(1.0)
    assert all(len(c) <= 2 for c in calls if len(c) < 4)  # coalitions of 3 were never evaluated


def test_permutations_are_orders_of_the_members_that_vary_with_k_seed_and_round():
    orders = {tuple(permutation(MEMBERS, 7, 1, k)) for k in range(50)}
    assert all(sorted(o) == sorted(MEMBERS) for o in orders) and len(orders) > 10
    assert permutation(MEMBERS, 7, 1, 0) == permutation(list(reversed(MEMBERS)), 7, 1, 0)
    assert permutation(MEMBERS, 7, 1, 0) != permutation(MEMBERS, 8, 1, 0) or \
        permutation(MEMBERS, 7, 1, 1) != permutation(MEMBERS, 8, 1, 1)
    # pinned: an auditor on any machine and any Python draws this order for (seed 7, round 1, k 3)
    assert permutation(MEMBERS, 7, 1, 3) == ["0xb", "0xa", "0xd", "0xc"]


def test_shares_are_zero_when_nothing_helped():
    assert all(x.share == 0.0 for x in shares({"0xa": -1.0, "0xb": 0.0}).values())
