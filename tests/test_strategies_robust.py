"""Robust aggregation rules and defences: what each computes, what it refuses, what it records.

Every rule must give the same bytes whatever the order the updates arrived in
(the auditor re-derives each aggregate), and must keep poisoned updates from
steering the model where the mean would follow them.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from fedchain.coordinator.strategies import registry
from fedchain.coordinator.strategies.base import AggregationError, ClientUpdate
from fedchain.coordinator.strategies.fedavg import FedAvg
from fedchain.coordinator.strategies.foolsgold import FoolsGold, foolsgold_weights
from fedchain.coordinator.strategies.krum import Krum, MultiKrum
from fedchain.coordinator.strategies.median import FedMedian
from fedchain.coordinator.strategies.normbound import NormBound
from fedchain.coordinator.strategies.trimmedmean import FedTrimmedMean
from fedchain.coordinator.strategies.vectors import flatten, norm, pairwise_squared_distances, squared_norm
from fedchain.coordinator.strategies.weightcap import WeightCap, capped_shares
from fedchain.plan import PlanError
from fedchain.sample_data import demo_plan
from fedchain.serialize import state_dict_to_bytes

SHAPES = {"layer.weight": (3, 4), "layer.bias": (3,)}


def addr(i: int) -> str:
    return "0x" + f"{i + 1:040x}"


def state(values) -> dict[str, torch.Tensor]:
    flat = torch.as_tensor(np.asarray(values, dtype=np.float32))
    out, at = {}, 0
    for name in sorted(SHAPES):
        n = math.prod(SHAPES[name])
        out[name] = flat[at:at + n].reshape(SHAPES[name]).clone()
        at += n
    return out


N_PARAMS = sum(math.prod(s) for s in SHAPES.values())
GLOBAL = state(np.zeros(N_PARAMS))


def upd(i: int, values, n: int = 10) -> ClientUpdate:
    return ClientUpdate(addr(i), f"ds-{i}", n, state(values))


def honest(i: int, rng) -> ClientUpdate:
    return upd(i, 1.0 + 0.1 * rng.standard_normal(N_PARAMS), n=10 + i)


def as_bytes(s) -> bytes:
    return state_dict_to_bytes(s)


def shuffled(xs, seed=1):
    xs = list(xs)
    random.Random(seed).shuffle(xs)
    return xs


# -- the deterministic vector math ---------------------------------------------------------------


def test_norms_and_distances_are_exact_enough_and_symmetric():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((5, 200_003))  # not a multiple of the block size
    d = pairwise_squared_distances(rows)
    assert np.allclose(d, ((rows[:, None, :] - rows[None, :, :]) ** 2).sum(-1), rtol=1e-12)
    assert (d == d.T).all() and (np.diag(d) == 0).all()
    assert squared_norm(rows[0]) == pytest.approx(float((rows[0] ** 2).sum()), rel=1e-12)
    assert flatten(state(np.arange(N_PARAMS))).tolist() == list(map(float, range(N_PARAMS)))  # sorted names


# -- median and trimmed mean ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [4, 5])
def test_median_is_the_coordinate_wise_median_and_ignores_an_outlier(n):
    rng = np.random.default_rng(n)
    ups = [honest(i, rng) for i in range(n - 1)] + [upd(n - 1, np.full(N_PARAMS, 1e6), n=10**9)]
    out = FedMedian().aggregate_train(1, GLOBAL, ups)
    ref = np.median(np.stack([flatten(u.state) for u in ups]), axis=0)
    assert np.allclose(flatten(out), ref.astype(np.float32))
    assert float(flatten(out).max()) < 2.0  # the boosted, over-claiming outlier moved nothing
    assert as_bytes(FedMedian().aggregate_train(1, GLOBAL, shuffled(ups))) == as_bytes(out)


def test_trimmed_mean_drops_the_extremes_and_records_who_was_trimmed():
    rng = np.random.default_rng(3)
    ups = [honest(i, rng) for i in range(8)] + [upd(8, np.full(N_PARAMS, -50.0)), upd(9, np.full(N_PARAMS, 80.0))]
    rule = FedTrimmedMean(beta=0.1)
    out = rule.aggregate_train(1, GLOBAL, ups)
    vals = np.sort(np.stack([flatten(u.state) for u in ups]), axis=0)[1:-1]
    assert np.allclose(flatten(out), vals.mean(axis=0).astype(np.float32), atol=1e-6)
    shares = {d.participant: d.value for d in rule.last_decisions}
    assert shares[addr(8)] == 1.0 and shares[addr(9)] == 1.0  # trimmed everywhere
    assert all(d.reason == "TRIMMED" for d in rule.last_decisions)
    assert sum(shares.values()) == pytest.approx(2.0)  # k = 1 at each end of every coordinate
    rule2 = FedTrimmedMean(beta=0.1)
    assert as_bytes(rule2.aggregate_train(1, GLOBAL, shuffled(ups))) == as_bytes(out)
    assert [d.to_dict() for d in rule2.last_decisions] == [d.to_dict() for d in rule.last_decisions]
    # beta < 0.5 always keeps a value: with two updates and beta 0.49 nothing is trimmed
    assert as_bytes(FedTrimmedMean(beta=0.49).aggregate_train(1, GLOBAL, ups[:2])) == \
        as_bytes(state((flatten(ups[0].state) + flatten(ups[1].state)) / 2))


# -- Krum ------------------------------------------------------------------------------------------


def test_multikrum_leaves_out_the_attackers_and_records_their_scores():
    rng = np.random.default_rng(5)
    ups = [honest(i, rng) for i in range(5)] + [upd(5, -10 * np.ones(N_PARAMS)), upd(6, 12 * np.ones(N_PARAMS))]
    rule = MultiKrum(byzantine=2, keep=3)
    out = rule.aggregate_train(1, GLOBAL, ups)
    excluded = {d.participant: d for d in rule.last_decisions}
    assert {addr(5), addr(6)} <= set(excluded) and len(excluded) == 4
    assert all(d.action == "excluded" and d.reason == "KRUM_NOT_SELECTED" and d.value > 0 for d in excluded.values())
    assert 0.5 < float(flatten(out).mean()) < 1.5
    assert as_bytes(MultiKrum(byzantine=2, keep=3).aggregate_train(1, GLOBAL, shuffled(ups))) == as_bytes(out)
    single = Krum(byzantine=2)
    chosen = single.aggregate_train(1, GLOBAL, ups)
    kept = [u for u in ups if u.participant not in {d.participant for d in single.last_decisions}]
    assert len(kept) == 1 and as_bytes(chosen) == as_bytes(kept[0].state)


def test_krum_refuses_a_round_too_small_for_its_guarantee():
    rng = np.random.default_rng(6)
    with pytest.raises(AggregationError, match="needs at least 7 updates"):
        Krum(byzantine=2).aggregate_train(1, GLOBAL, [honest(i, rng) for i in range(6)])


def test_krum_breaks_equal_scores_by_the_canonical_key():
    same = [upd(i, np.ones(N_PARAMS)) for i in range(5)]
    rule = MultiKrum(byzantine=1, keep=2)
    rule.aggregate_train(1, GLOBAL, shuffled(same, 7))
    assert sorted(d.participant for d in rule.last_decisions) == [addr(2), addr(3), addr(4)]


# -- wrappers: norm bound, weight cap, FoolsGold ---------------------------------------------------------


def test_norm_bound_clips_a_boosted_update_onto_the_bound():
    rng = np.random.default_rng(8)
    ups = [honest(i, rng) for i in range(3)] + [upd(3, 100 * np.ones(N_PARAMS))]
    rule = NormBound(FedAvg(), bound=5.0)
    out = rule.aggregate_train(1, GLOBAL, ups)
    (d,) = rule.last_decisions
    assert (d.participant, d.action, d.reason) == (addr(3), "clipped", "NORM_BOUND")
    assert d.value == pytest.approx(100 * math.sqrt(N_PARAMS))
    clipped = 5.0 / math.sqrt(N_PARAMS)  # every coordinate of the clipped delta
    weights = [u.n_samples for u in ups]
    expect = (sum(w * flatten(u.state) for w, u in zip(weights[:3], ups[:3])) + weights[3] * clipped) / sum(weights)
    assert np.allclose(flatten(out), expect, atol=1e-5)
    assert as_bytes(NormBound(FedAvg(), bound=5.0).aggregate_train(1, GLOBAL, shuffled(ups))) == as_bytes(out)
    assert norm(flatten(ups[0].state)) < 5.0  # honest ones untouched


@pytest.mark.parametrize("weights,cap,expect", [
    ([1, 1, 1, 1], 0.5, [0.25] * 4),
    ([97, 1, 1, 1], 0.4, [0.4, 0.2, 0.2, 0.2]),
    ([50, 30, 10, 10], 0.35, [0.35, 0.35, 0.15, 0.15]),
    ([10, 1], 0.4, [0.5, 0.5]),  # 2 x 0.4 < 1: equal shares
])
def test_capped_shares_water_fill(weights, cap, expect):
    got = capped_shares(weights, cap)
    assert got == pytest.approx(expect) and math.fsum(got) == pytest.approx(1.0)


def test_weight_cap_takes_an_over_claimer_down_to_its_cap():
    ups = [upd(0, np.ones(N_PARAMS), n=10**9)] + [upd(i, np.zeros(N_PARAMS), n=10) for i in (1, 2, 3)]
    rule = WeightCap(FedAvg(), max_share=0.25)
    out = rule.aggregate_train(1, GLOBAL, ups)
    assert np.allclose(flatten(out), 0.25)
    (d,) = rule.last_decisions
    assert (d.participant, d.reason, d.value) == (addr(0), "WEIGHT_CAP", pytest.approx(0.25))


def test_foolsgold_downweights_sybils_over_rounds_and_its_state_replays():
    rng = np.random.default_rng(9)
    target = rng.standard_normal(N_PARAMS)

    def round_updates():
        hon = [upd(i, rng.standard_normal(N_PARAMS)) for i in range(4)]
        syb = [upd(4 + k, target + 0.01 * rng.standard_normal(N_PARAMS)) for k in range(3)]
        return hon + syb

    rounds = [round_updates() for _ in range(3)]
    rule = FoolsGold(FedAvg())
    outs = [rule.aggregate_train(r + 1, GLOBAL, ups) for r, ups in enumerate(rounds)]
    factors = {d.participant: d.value for d in rule.last_decisions}
    assert all(factors.get(addr(4 + k), 1.0) < 0.05 for k in range(3)), factors
    assert all(factors.get(addr(i), 1.0) > 0.5 for i in range(4)), factors
    # an auditor replaying the rounds in order gets the same bytes, and so does one loading the state
    replayed = FoolsGold(FedAvg())
    assert [as_bytes(replayed.aggregate_train(r + 1, GLOBAL, shuffled(u, r))) for r, u in enumerate(rounds)] == \
        [as_bytes(o) for o in outs]
    extra = round_updates()
    loaded = FoolsGold(FedAvg())
    loaded.load_state(rule.state())
    assert as_bytes(loaded.aggregate_train(4, GLOBAL, extra)) == as_bytes(rule.aggregate_train(4, GLOBAL, extra))


def test_foolsgold_weights_leave_distinct_histories_alone():
    rng = np.random.default_rng(10)
    hist = [rng.standard_normal(1000) for _ in range(5)]
    assert all(w > 0.9 for w in foolsgold_weights(hist))
    assert foolsgold_weights([hist[0]]) == [1.0]


# -- the plan names them; the registry builds them -------------------------------------------------------


def test_plans_build_robust_strategies_with_their_defences():
    base = demo_plan(seed=2)
    plan = base.with_changes(strategy={"name": "fedavg"},
                             robust={"norm_bound": 3.0, "foolsgold": True, "max_weight_share": 0.4})
    s = registry.for_plan(plan)
    assert isinstance(s, NormBound) and isinstance(s.inner, FoolsGold) and isinstance(s.inner.inner, WeightCap)
    assert isinstance(s.inner.inner.inner, FedAvg) and s.name == "fedavg"
    six = base.with_changes(datasets=[f"h{i}" for i in range(6)], min_participants=5,
                            strategy={"name": "multikrum", "byzantine": 1, "keep": 3})
    assert isinstance(registry.for_plan(six), MultiKrum)


@pytest.mark.parametrize("changes,field", [
    (dict(strategy={"name": "krum", "byzantine": 1}), "min_participants"),
    (dict(strategy={"name": "multikrum", "byzantine": 0, "keep": 4}), "strategy.keep"),
    (dict(strategy={"name": "median"}, robust={"foolsgold": True}), "robust.foolsgold"),
    (dict(strategy={"name": "trimmed_mean", "beta": 0.2}, robust={"max_weight_share": 0.5}), "robust.max_weight_share"),
    (dict(robust={"max_weight_share": 0.2}), "robust.max_weight_share"),  # 4 datasets x 0.2 < 1
    (dict(strategy={"name": "trimmed_mean", "beta": 0.5}), "strategy.beta"),
    (dict(robust={"norm_bound": -1.0}), "robust.norm_bound"),
])
def test_the_validator_refuses_robust_settings_that_cannot_work(changes, field):
    with pytest.raises(PlanError) as exc:
        demo_plan(seed=2).with_changes(**changes)
    assert field in {".".join(map(str, pr.path)) for pr in exc.value.problems}, str(exc.value)


def test_foolsgold_pardons_an_honest_member_that_merely_resembles_a_sybil():
    e = np.eye(5, 1000)
    s1, s2 = e[0], 0.99 * e[0] + math.sqrt(1 - 0.99**2) * e[1]
    h = 0.6 * e[0] + 0.8 * e[2]  # cos(h, s1) = 0.6: similar to a sybil, not a sybil
    w = foolsgold_weights([s1, s2, h, e[3], e[4]])
    assert w[0] == 0.0 and w[1] == 0.0  # the sybil pair
    assert w[2] == 1.0 and w[3] == 1.0 and w[4] == 1.0  # unpardoned, h would get ln(0.4/0.6) + 0.5 = 0.09


def test_show_words_the_defences_members_vote_on():
    from fedchain.plandoc import describe

    plan = demo_plan(seed=2).with_changes(robust={"norm_bound": 3.0, "foolsgold": True, "max_weight_share": 0.4})
    words = dict(describe(plan))["defences"]
    assert "clipped to 3" in words and "FoolsGold" in words and "40%" in words


def test_trimmed_counts_equal_a_stable_argsort_of_every_coordinate_ties_included():
    """The fast count of who was trimmed breaks ties at a cut exactly as a stable sort in canonical order would."""
    from fedchain.coordinator.strategies.trimmedmean import _trimmed_counts

    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(300):
        n = int(rng.integers(3, 12))
        k = int(rng.integers(1, (n + 1) // 2))
        if n - 2 * k < 1:
            continue
        cols = (rng.integers(-2, 3, size=(40, n)).astype(float) if trial % 2 else rng.standard_normal((40, n)))
        cols[rng.random(cols.shape) < 0.2] = 0.0  # many ties, at the cuts too
        cols = cols.astype(np.float32)
        base = np.zeros(40) if trial % 3 else rng.standard_normal(40) * 1e9  # huge: raw - base rounds, ties appear
        order = np.argsort(cols - base[:, None], axis=1, kind="stable")  # the deltas' stable order
        expect = np.bincount(np.concatenate([order[:, :k], order[:, n - k:]], axis=1).reshape(-1), minlength=n)
        raws, ranked = list(cols.T), list(np.sort(cols, axis=1).T)  # an update per row, a rank per row
        assert (_trimmed_counts(raws, 0, 40, base, ranked, k) == expect).all(), trial
        checked += 1
    assert checked > 200
