"""Aggregation strategies: the registry against the plan, explicit constructors,
configure_train agreeing with what nodes train with, exact FedAvg, order
independence, server-optimizer replay, a wrapper strategy, error reporting, and
the federated-vs-pooled end-to-end check. Rounds are the chain's, from 1."""

from __future__ import annotations

import inspect
import itertools
import math
import random

import pytest
import torch

from fedchain.coordinator.strategies import (
    STRATEGY_CLASSES,
    AggregationError,
    ClientUpdate,
    EvaluateResult,
    Strategy,
    StrategyWrapper,
    from_spec,
)
from fedchain.coordinator.strategies.fedadam import FedAdam
from fedchain.coordinator.strategies.fedavg import FedAvg
from fedchain.coordinator.strategies.fedprox import FedProx
from fedchain.coordinator.strategies.fedyogi import FedYogi
from fedchain.errors import ConfigError
from fedchain.models import initial_state
from fedchain.plan import STRATEGIES as PLAN_STRATEGIES
from fedchain.plan import EvaluateConfig, TrainConfig, evaluate_config, plan_from_dict, train_config

ADDR = ["0x" + f"{i:02x}" * 20 for i in (0xA1, 0x0B, 0xC3, 0x4D)]
STRATEGIES = {
    "fedavg": {"name": "fedavg"},
    "fedprox": {"name": "fedprox", "mu": 0.1},
    "fedadam": {"name": "fedadam", "server_lr": 0.05, "tau": 1e-3},
    "fedyogi": {"name": "fedyogi", "server_lr": 0.05, "tau": 1e-3},
}


def make_plan(strategy=None, min_participants=1, rounds=5):
    return plan_from_dict(
        {
            "name": "agg",
            "purpose": "diagnosis",
            "model": {"kind": "mlp", "in_features": 3, "n_classes": 2, "hidden": [4]},
            "optimizer": {"name": "sgd", "lr": 0.1},
            "local_epochs": 1,
            "batch_size": 4,
            "rounds": rounds,
            "strategy": strategy or {"name": "fedavg"},
            "min_participants": min_participants,
            "round_deadline_blocks": 10,
            "seed": 3,
            "datasets": ["d0", "d1", "d2", "d3", "d4"],
        }
    )


def build(plan) -> Strategy:
    return from_spec(plan.strategy, min_participants=plan.min_participants)


def g0_of(plan):
    return initial_state(plan.model, plan.seed)


def random_updates(global_state, server_round=1, n=4):
    g = torch.Generator().manual_seed(1000 + server_round)
    updates = []
    for i in range(n):
        state = {
            k: (v + 0.1 * torch.randn(v.shape, generator=g, dtype=torch.float64).float()) for k, v in global_state.items()
        }
        addr = ADDR[i % len(ADDR)]
        if i % 2:
            addr = "0x" + addr[2:].upper()  # mixed-case addresses must sort the same
        updates.append(ClientUpdate(addr, f"d{i}", 10 + 7 * i, state))
    return updates


def state_bytes(state):
    return b"".join(k.encode() + state[k].numpy().tobytes() for k in sorted(state))


# -- the registry, the plan and the constructors ---------------------------------------


def test_registry_and_plan_know_the_same_strategies():
    assert set(STRATEGY_CLASSES) == set(PLAN_STRATEGIES)
    for name, cls in STRATEGY_CLASSES.items():
        assert cls.name == name
        assert cls.spec_class.model_fields["name"].annotation.__args__ == (name,)  # Literal[name]
        # the plan section's keys are exactly the constructor's keyword arguments
        params = set(inspect.signature(cls.__init__).parameters) - {"self"}
        assert params == (set(cls.spec_class.model_fields) - {"name"}) | {"min_participants"}, name


def test_from_spec_builds_each_strategy_from_its_section_only():
    expected = {"fedavg": FedAvg, "fedprox": FedProx, "fedadam": FedAdam, "fedyogi": FedYogi}
    for name, spec in STRATEGIES.items():
        plan = make_plan(spec, min_participants=2)
        s = from_spec(plan.strategy, min_participants=2)
        assert type(s) is expected[name] and s.name == name and s.min_participants == 2
    adam = from_spec(make_plan(STRATEGIES["fedadam"]).strategy)
    assert (adam.server_lr, adam.beta1, adam.beta2, adam.tau) == (0.05, 0.9, 0.99, 1e-3)  # plan defaults
    with pytest.raises(ConfigError, match="FedAvgSpec"):
        FedAvg.from_spec(make_plan(STRATEGIES["fedadam"]).strategy)
    with pytest.raises(ConfigError, match="unknown strategy"):
        from_spec({"name": "fedavg"})  # a section, not a validated spec


def test_explicit_constructors_validate_their_arguments():
    a = FedAdam(server_lr=0.05, tau=1e-3)
    b = from_spec(make_plan(STRATEGIES["fedadam"]).strategy)
    g = g0_of(make_plan())
    ups = random_updates(g)
    assert state_bytes(a.aggregate_train(1, g, ups)) == state_bytes(b.aggregate_train(1, g, ups))
    for bad in ({"server_lr": 0.0}, {"server_lr": 0.1, "beta2": 1.0}, {"server_lr": 0.1, "tau": -1}):
        with pytest.raises(ConfigError):
            FedYogi(**bad)
    with pytest.raises(ConfigError, match="mu"):
        FedProx(mu=-0.5)
    with pytest.raises(ConfigError, match="min_participants"):
        FedAvg(min_participants=0)
    with pytest.raises(TypeError):
        FedAdam(0.05)  # keyword arguments only


# -- configure_train: what the strategy says is what nodes do ---------------------------


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_configure_train_is_what_nodes_train_with(name):
    """Nodes train with fedchain.plan.train_config(plan, round) (node.runner and
    node.train); every strategy's configure_train returns exactly that config,
    for every round, and its proximal mu is the strategy's own."""
    plan = make_plan(STRATEGIES[name])
    s = build(plan)
    g = g0_of(plan)
    for r in range(1, plan.rounds + 1):
        node_side = train_config(plan, r)
        said = s.configure_train(r, g, node_side)
        assert said == node_side and isinstance(said, TrainConfig)
        assert said.round == r and said.local_epochs == plan.local_epochs and said.batch_size == plan.batch_size
        assert said.optimizer == plan.optimizer
        assert said.proximal_mu == (getattr(s, "mu", 0.0))
        assert s.configure_evaluate(r, g, evaluate_config(plan, r)) == EvaluateConfig(r, plan.metric)


def test_configure_refuses_a_config_that_is_not_the_rounds_plan_config():
    plan = make_plan(STRATEGIES["fedprox"])
    g = g0_of(plan)
    with pytest.raises(ConfigError, match="round 2"):
        build(plan).configure_train(2, g, train_config(plan, 1))
    with pytest.raises(AggregationError, match="from 1"):
        build(plan).configure_train(0, g, train_config(plan, 1))
    with pytest.raises(ConfigError, match="train_config"):
        build(plan).configure_train(1, g, {"round": 1, "mu": 0.1})
    # a FedProx built with another mu than the plan's does not agree with the nodes
    with pytest.raises(ConfigError, match="proximal mu 0.1"):
        FedProx(mu=0.5).configure_train(1, g, train_config(plan, 1))
    with pytest.raises(ConfigError, match="evaluate_config"):
        build(plan).configure_evaluate(1, g, evaluate_config(plan, 2))


# -- aggregation ------------------------------------------------------------------------


def test_fedavg_equals_hand_computed_weighted_mean():
    plan = make_plan()
    s = build(plan)
    g = g0_of(plan)
    ones = {k: torch.ones_like(v) for k, v in g.items()}
    fives = {k: torch.full_like(v, 5.0) for k, v in g.items()}
    out = s.aggregate_train(1, g, [ClientUpdate(ADDR[0], "d0", 1, ones), ClientUpdate(ADDR[1], "d1", 3, fives)])
    for k in g:
        assert torch.equal(out[k], torch.full_like(g[k], 4.0))
    # random values: float64 reference, then one cast to float32
    updates = random_updates(g)
    out = build(plan).aggregate_train(1, g, updates)
    total = sum(u.n_samples for u in updates)
    for k in g:
        ref = sum(u.state[k].double() * u.n_samples for u in sorted(updates, key=lambda u: u.key)) / total
        assert out[k].dtype == torch.float32
        assert torch.equal(out[k], ref.float())


def test_streamed_mean_is_bit_for_bit_the_float64_sum_of_products():
    """WeightedMean adds in place, one update at a time; its float64 mean is exactly
    sum(w.double() * n) / total in canonical order, also for sample counts whose
    product is not exact (they take the separate-multiply path)."""
    from fedchain.coordinator.strategies.base import MAX_EXACT_SAMPLES, WeightedMean, weighted_mean

    g = {"a": torch.zeros(257, 33), "b": torch.zeros(5)}
    gen = torch.Generator().manual_seed(5)

    def updates_with(counts):
        return [
            ClientUpdate(ADDR[i % 4], f"d{i}", n, {k: torch.randn(v.shape, generator=gen) for k, v in g.items()})
            for i, n in enumerate(counts)
        ]

    def reference(updates):
        ordered = sorted(updates, key=lambda u: u.key)
        total = float(sum(u.n_samples for u in updates))
        out = {}
        for k in g:
            acc = torch.zeros(g[k].shape, dtype=torch.float64)
            for u in ordered:
                acc = acc + u.state[k].double() * float(u.n_samples)
            out[k] = acc / total
        return out

    for counts in ([1, 977, 12_345, 3, 40_001], [7, MAX_EXACT_SAMPLES + 12_345, 2**40 + 3, 5]):
        updates = updates_with(counts)
        ref = reference(updates)
        out = weighted_mean(g, list(reversed(updates)))
        for k in g:
            assert out[k].dtype == torch.float64 and torch.equal(out[k], ref[k]), (counts, k)

    updates = updates_with([3, 5, 8, 13])
    ordered = sorted(updates, key=lambda u: u.key)
    total = 29
    mean = WeightedMean(g)
    mean.add(ordered[1])
    with pytest.raises(AggregationError, match="canonical order"):
        mean.add(ordered[0])
    with pytest.raises(AggregationError, match="two results"):
        mean.add(ordered[1])
    for u in ordered[2:]:
        mean.add(u)
    assert mean.count == 3 and mean.total == total - ordered[0].n_samples
    mean.result()
    with pytest.raises(AggregationError, match="already taken"):
        mean.result()
    with pytest.raises(AggregationError, match="no updates"):
        WeightedMean(g).result()


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_order_independence(name):
    plan = make_plan(STRATEGIES[name])
    g0 = g0_of(plan)
    rounds = {r: random_updates(g0, r, n=4) for r in (1, 2, 3)}

    def run(order_seed):
        s = build(plan)
        g = g0
        rng = random.Random(order_seed)
        for r, ups in rounds.items():
            ups = list(ups)
            rng.shuffle(ups)
            g = s.aggregate_train(r, g, ups)
        return state_bytes(g), state_bytes(s.state()) if s.state() else b""

    reference = run(0)
    for seed in range(1, 6):
        assert run(seed) == reference
    # every permutation of one round, too
    first = state_bytes(build(plan).aggregate_train(1, g0, rounds[1]))
    for perm in itertools.permutations(rounds[1]):
        assert state_bytes(build(plan).aggregate_train(1, g0, list(perm))) == first


@pytest.mark.parametrize("name", ["fedadam", "fedyogi"])
def test_server_optimizer_replay_and_checkpoint(name):
    plan = make_plan(STRATEGIES[name])
    live = build(plan)
    g = g0_of(plan)
    history = {}
    checkpoints = {}
    for r in (1, 2, 3, 4):
        ups = random_updates(g, r)
        history[r] = ups
        g = live.aggregate_train(r, g, ups)
        checkpoints[r] = (state_bytes(g), {k: v.clone() for k, v in live.state().items()})
    assert int(live.state()["step"]) == 4 and int(live.state()["next_round"]) == 5

    # an auditor replays rounds 1..k from scratch and gets identical model and optimizer state
    auditor = build(plan)
    ga = g0_of(plan)
    for r, ups in history.items():
        ga = auditor.aggregate_train(r, ga, list(reversed(ups)))
        assert state_bytes(ga) == checkpoints[r][0]
        assert state_bytes(auditor.state()) == state_bytes(checkpoints[r][1])

    # or resumes from a checkpoint taken after round 2
    resumed = build(plan)
    resumed.load_state(checkpoints[2][1])
    g2 = g0_of(plan)
    s_tmp = build(plan)
    for r in (1, 2):
        g2 = s_tmp.aggregate_train(r, g2, history[r])
    g3 = resumed.aggregate_train(3, g2, history[3])
    assert state_bytes(g3) == checkpoints[3][0]

    # rounds must be applied in increasing order
    s2 = build(plan)
    g = s2.aggregate_train(2, g0_of(plan), history[2])
    with pytest.raises(AggregationError, match="in order"):
        s2.aggregate_train(1, g, history[1])
    with pytest.raises(AggregationError, match="in order"):
        s2.aggregate_train(2, g, history[2])
    with pytest.raises(AggregationError, match="go back"):
        s2.skip_to(2)
    with pytest.raises(AggregationError, match="from 1"):
        build(plan).aggregate_train(0, g0_of(plan), history[1])
    bad = dict(checkpoints[2][1], next_round=torch.tensor(1))
    with pytest.raises(AggregationError, match="do not fit"):
        build(plan).load_state(bad)


@pytest.mark.parametrize("name", ["fedavg", "fedadam", "fedyogi"])
def test_failed_rounds_leave_state_untouched(name):
    """Round 2 failed (no aggregate): aggregating rounds 1, 3, 4 gives the same
    model and optimizer state whether or not the gap is declared with skip_to."""
    plan = make_plan(STRATEGIES[name])
    g0 = g0_of(plan)
    ups = {r: random_updates(g0, r) for r in (1, 3, 4)}

    def run(declare_gap: bool):
        s = build(plan)
        g = g0
        for r in (1, 3, 4):
            if declare_gap:
                s.skip_to(r)
            g = s.aggregate_train(r, g, ups[r])
        return state_bytes(g), state_bytes(s.state())

    assert run(True) == run(False)
    s = build(plan)
    if name != "fedavg":
        assert s.next_round == 1
        s.skip_to(3)
        assert s.next_round == 3 and int(s.state()["step"]) == 0


def test_fedadam_first_step_matches_formula():
    plan = make_plan(STRATEGIES["fedadam"])
    s = build(plan)
    g = g0_of(plan)
    ups = random_updates(g)
    out = s.aggregate_train(1, g, ups)
    total = sum(u.n_samples for u in ups)
    b1, b2, lr, tau = 0.9, 0.99, 0.05, 1e-3
    for k in g:
        mean = sum(u.state[k].double() * u.n_samples for u in sorted(ups, key=lambda u: u.key)) / total
        d = mean - g[k].double()
        m = (1 - b1) * d
        v = b2 * tau**2 + (1 - b2) * d * d
        assert torch.equal(out[k], (g[k].double() + lr * m / (torch.sqrt(v) + tau)).float())
        assert torch.equal(s.state()[f"m.{k}"], b1 * torch.zeros_like(d) + m)


def test_yogi_differs_from_adam():
    results = {}
    for name in ("fedadam", "fedyogi"):
        plan = make_plan(STRATEGIES[name])
        s = build(plan)
        g = g0_of(plan)
        for r in (1, 2, 3):
            g = s.aggregate_train(r, g, random_updates(g, r))
        results[name] = state_bytes(g)
    assert results["fedadam"] != results["fedyogi"]


def test_bad_updates_name_the_participant():
    plan = make_plan(min_participants=2)
    s = build(plan)
    g = g0_of(plan)
    good = random_updates(g, n=3)
    culprit = ADDR[3]

    renamed = {("hidden.0.W" if k == "hidden.0.weight" else k): v for k, v in g.items()}
    reshaped = dict(g, **{"out.bias": torch.zeros(3)})
    doubled = {k: v.double() for k, v in g.items()}
    poisoned = dict(g, **{"out.bias": torch.tensor([float("nan"), 0.0])})
    for bad_state, fragment in [
        (renamed, "missing tensors hidden.0.weight; unexpected tensors hidden.0.W"),
        (reshaped, "tensor out.bias has shape (3,)"),
        (doubled, "torch.float64"),
        (poisoned, "NaN"),
    ]:
        with pytest.raises(AggregationError) as exc:
            s.aggregate_train(1, g, good + [ClientUpdate(culprit, "d9", 5, bad_state)])
        assert exc.value.participant == culprit and culprit in str(exc.value)
        assert fragment in str(exc.value)

    with pytest.raises(AggregationError, match="two results"):
        s.aggregate_train(1, g, good + [ClientUpdate(good[0].participant.upper().replace("0X", "0x"), "d0", 3, g)])
    with pytest.raises(AggregationError, match="address"):
        ClientUpdate("alice", "d0", 3, g)
    with pytest.raises(AggregationError, match="n_samples"):
        ClientUpdate(ADDR[0], "d0", 0, g)
    with pytest.raises(AggregationError, match="at least 2"):
        s.aggregate_train(1, g, good[:1])
    with pytest.raises(AggregationError, match="0 participant"):
        build(make_plan()).aggregate_train(1, g, [])


def test_aggregate_evaluate_and_contributions():
    plan = make_plan()
    s = build(plan)
    results = [
        EvaluateResult(ADDR[0], "d0", 10, {"accuracy": 0.9, "loss": 0.3}),
        EvaluateResult(ADDR[1], "d1", 30, {"accuracy": 0.5, "loss": 0.7}),
    ]
    agg = s.aggregate_evaluate(1, results)
    assert agg == {"accuracy": pytest.approx((0.9 * 10 + 0.5 * 30) / 40), "loss": pytest.approx((3 + 21) / 40)}
    assert s.aggregate_evaluate(1, results[::-1]) == agg
    mixed = results + [EvaluateResult(ADDR[2], "d2", 20, {"accuracy": 1.0, "loss": 0.1, "auc": 0.8})]
    assert s.aggregate_evaluate(1, mixed)["auc"] == pytest.approx(0.8)  # only results reporting auc count
    assert "auc" not in s.aggregate_evaluate(1, results)
    with pytest.raises(AggregationError, match="no evaluation results"):
        s.aggregate_evaluate(1, [])
    with pytest.raises(AggregationError, match="metric loss is nan"):
        s.aggregate_evaluate(1, [EvaluateResult(ADDR[0], "d0", 10, {"loss": math.nan})])

    g = g0_of(plan)
    ups = [
        ClientUpdate(ADDR[0], "d0", 10, g),
        ClientUpdate(ADDR[0].upper().replace("0X", "0x"), "d1", 30, g),
        ClientUpdate(ADDR[1], "d2", 60, g),
    ]
    scores = s.contribution_scores(ups)
    assert scores == {ADDR[0]: pytest.approx(0.4), ADDR[1]: pytest.approx(0.6)}
    assert sum(scores.values()) == pytest.approx(1.0)


# -- the wrapper seam -------------------------------------------------------------------


class ClipDeltas(StrategyWrapper):
    """A test-only wrapper: scale each update's change from the global model to
    L2 norm <= ``clip`` (float64), then hand the clipped updates to the inner
    strategy. Robust rules and server-side DP wrap strategies the same way."""

    def __init__(self, inner: Strategy, *, clip: float) -> None:
        super().__init__(inner)
        self.clip = clip

    def clipped(self, arrays, updates):
        out = []
        for u in updates:
            delta = {k: u.state[k].double() - arrays[k].double() for k in arrays}
            norm = math.sqrt(sum(float((d * d).sum()) for d in delta.values()))
            scale = min(1.0, self.clip / norm) if norm > 0 else 1.0
            state = {k: (arrays[k].double() + delta[k] * scale).float() for k in arrays}
            out.append(ClientUpdate(u.participant, u.dataset_id, u.n_samples, state))
        return out

    def aggregate_train(self, server_round, arrays, updates):
        return self.inner.aggregate_train(server_round, arrays, self.clipped(arrays, updates))


def test_a_wrapper_holds_an_inner_strategy_and_delegates():
    plan = make_plan(STRATEGIES["fedadam"], min_participants=2)
    wrapped = ClipDeltas(build(plan), clip=0.05)
    reference = build(plan)
    assert wrapped.name == "fedadam" and wrapped.min_participants == 2
    g = g0_of(plan)
    gw = gr = g
    for r in (1, 2, 3):
        assert wrapped.configure_train(r, gw, train_config(plan, r)) == train_config(plan, r)
        ups = random_updates(gw, r)
        new_w = wrapped.aggregate_train(r, gw, ups)
        new_r = reference.aggregate_train(r, gr, wrapped.clipped(gr, ups))  # the inner rule on clipped updates
        assert state_bytes(new_w) == state_bytes(new_r)
        assert state_bytes(wrapped.state()) == state_bytes(reference.state())  # server state is the inner's
        gw, gr = new_w, new_r
    # clipping changed the result compared with the bare strategy
    bare = build(plan)
    assert state_bytes(bare.aggregate_train(1, g, random_updates(g, 1))) != \
        state_bytes(ClipDeltas(build(plan), clip=0.05).aggregate_train(1, g, random_updates(g, 1)))
    # a clip no update reaches changes nothing, bit for bit
    assert state_bytes(ClipDeltas(build(plan), clip=1e9).aggregate_train(1, g, random_updates(g, 1))) == \
        state_bytes(build(plan).aggregate_train(1, g, random_updates(g, 1)))
    # the inner strategy's checks still apply through the wrapper
    with pytest.raises(AggregationError, match="at least 2"):
        wrapped.aggregate_train(4, gw, random_updates(gw, 4)[:1])
    restored = ClipDeltas(build(plan), clip=0.05)
    restored.load_state(wrapped.state())
    assert state_bytes(restored.state()) == state_bytes(wrapped.state())
    with pytest.raises(ConfigError, match="inner Strategy"):
        ClipDeltas("fedadam", clip=1.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="wraps a strategy"):
        ClipDeltas.from_spec(plan.strategy)


# -- end to end -------------------------------------------------------------------------


def test_federated_matches_pooled_on_breast_cancer(tmp_path):
    """4 non-IID hospitals x 5 rounds of FedAvg with the demo plan reach the
    pooled baseline's accuracy (within 2 points) on the same global test split."""
    from fedchain.sample_data import demo_plan, make_demo_data
    from fedchain.node.baseline import train_pooled
    from fedchain.node.dataset import load_dataset, split_for_plan
    from fedchain.node.train import evaluate, train_local

    demo = make_demo_data(tmp_path, n_hospitals=4)
    plan = demo_plan(demo.hospitals)
    assert plan == demo_plan()  # the default plan is the one for the default split
    assert plan.rounds == 5 and len(plan.datasets) == 4

    strategy = build(plan)
    g = g0_of(plan)
    splits = {
        h.name: split_for_plan(load_dataset(h.csv_path, h.schema_path), plan, h.name) for h in demo.hospitals
    }
    address = {h.name: ADDR[i] for i, h in enumerate(demo.hospitals)}
    for r in range(1, plan.rounds + 1):
        config = strategy.configure_train(r, g, train_config(plan, r))
        updates = []
        for name, (train, _val) in splits.items():
            res = train_local(g, plan, train, config=config, dataset_seed_key=name)
            updates.append(ClientUpdate(address[name], name, res.n_samples, res.state_dict))
        g = strategy.aggregate_train(r, g, updates)
        metric = strategy.configure_evaluate(r, g, evaluate_config(plan, r)).metric
        val_acc = strategy.aggregate_evaluate(
            r, [EvaluateResult(address[n], n, v.n_rows, evaluate(g, plan, v)) for n, (_t, v) in splits.items()]
        )[metric]
    test = load_dataset(demo.test.csv_path, demo.test.schema_path)
    federated = evaluate(g, plan, test)
    pooled = train_pooled(plan, demo.hospitals, demo.test)
    print(f"federated {federated}  pooled {pooled}  last validation accuracy {val_acc:.4f}")
    assert pooled["accuracy"] > 0.93
    assert federated["accuracy"] >= pooled["accuracy"] - 0.02
    assert val_acc > 0.9
