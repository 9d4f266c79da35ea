"""Aggregation strategies: exact FedAvg, order independence, server-optimizer
replay, error reporting, and the federated-vs-pooled end-to-end check."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from fedchain.coordinator.strategies import AggregationError, ClientUpdate, EvaluateResult, strategy_from_plan
from fedchain.coordinator.strategies.fedadam import FedAdam
from fedchain.coordinator.strategies.fedavg import FedAvg
from fedchain.coordinator.strategies.fedprox import FedProx
from fedchain.coordinator.strategies.fedyogi import FedYogi
from fedchain.errors import ConfigError
from fedchain.models import initial_state
from fedchain.plan import plan_from_dict

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


def random_updates(global_state, round_index=0, n=4):
    g = torch.Generator().manual_seed(1000 + round_index)
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


def test_registry_builds_each_strategy():
    expected = {"fedavg": FedAvg, "fedprox": FedProx, "fedadam": FedAdam, "fedyogi": FedYogi}
    for name, spec in STRATEGIES.items():
        s = strategy_from_plan(make_plan(spec))
        assert type(s) is expected[name] and s.name == name
    with pytest.raises(ConfigError):
        FedAvg(make_plan(STRATEGIES["fedadam"]))


def test_initialize_uses_plan_seed():
    plan = make_plan()
    s = strategy_from_plan(plan)
    assert state_bytes(s.initialize(plan)) == state_bytes(initial_state(plan.model, plan.seed))
    assert state_bytes(s.initialize()) == state_bytes(strategy_from_plan(plan).initialize())
    with pytest.raises(ConfigError):
        s.initialize(make_plan(rounds=2))


def test_configure_fit():
    g = strategy_from_plan(make_plan()).initialize()
    cfg = strategy_from_plan(make_plan()).configure_fit(2, g)
    assert cfg == {"round": 2, "strategy": "fedavg", "local_epochs": 1, "batch_size": 4}
    prox = strategy_from_plan(make_plan(STRATEGIES["fedprox"])).configure_fit(0, g)
    assert prox["mu"] == 0.1 and prox["strategy"] == "fedprox"
    with pytest.raises(AggregationError, match="outside"):
        strategy_from_plan(make_plan()).configure_fit(5, g)


def test_fedavg_equals_hand_computed_weighted_mean():
    plan = make_plan()
    s = strategy_from_plan(plan)
    g = s.initialize()
    # exact arithmetic: weights 1 and 3, values 1 and 5 -> (1*1 + 3*5) / 4 = 4
    ones = {k: torch.ones_like(v) for k, v in g.items()}
    fives = {k: torch.full_like(v, 5.0) for k, v in g.items()}
    out = s.aggregate_fit(0, g, [ClientUpdate(ADDR[0], "d0", 1, ones), ClientUpdate(ADDR[1], "d1", 3, fives)])
    for k in g:
        assert torch.equal(out[k], torch.full_like(g[k], 4.0))
    # random values: float64 reference, then one cast to float32
    updates = random_updates(g)
    out = strategy_from_plan(plan).aggregate_fit(0, g, updates)
    total = sum(u.n_samples for u in updates)
    for k in g:
        ref = sum(u.state[k].double() * u.n_samples for u in sorted(updates, key=lambda u: u.key)) / total
        assert out[k].dtype == torch.float32
        assert torch.equal(out[k], ref.float())


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_order_independence(name):
    plan = make_plan(STRATEGIES[name])
    g0 = strategy_from_plan(plan).initialize()
    rounds = [random_updates(g0, r, n=4) for r in range(3)]

    def run(order_seed):
        s = strategy_from_plan(plan)
        g = g0
        rng = random.Random(order_seed)
        for r, ups in enumerate(rounds):
            ups = list(ups)
            rng.shuffle(ups)
            g = s.aggregate_fit(r, g, ups)
        return state_bytes(g), state_bytes(s.state()) if s.state() else b""

    reference = run(0)
    for seed in range(1, 6):
        assert run(seed) == reference
    # every permutation of one round, too
    s0 = strategy_from_plan(plan)
    first = state_bytes(s0.aggregate_fit(0, g0, rounds[0]))
    for perm in itertools.permutations(rounds[0]):
        assert state_bytes(strategy_from_plan(plan).aggregate_fit(0, g0, list(perm))) == first


@pytest.mark.parametrize("name", ["fedadam", "fedyogi"])
def test_server_optimizer_replay_and_checkpoint(name):
    plan = make_plan(STRATEGIES[name])
    live = strategy_from_plan(plan)
    g = live.initialize()
    history = []
    checkpoints = []
    for r in range(4):
        ups = random_updates(g, r)
        history.append(ups)
        g = live.aggregate_fit(r, g, ups)
        checkpoints.append((state_bytes(g), {k: v.clone() for k, v in live.state().items()}))
    assert int(live.state()["step"]) == 4

    # an auditor replays rounds 0..k from scratch and gets identical model and optimizer state
    auditor = strategy_from_plan(plan)
    ga = auditor.initialize(plan)
    for r, ups in enumerate(history):
        ga = auditor.aggregate_fit(r, ga, list(reversed(ups)))
        assert state_bytes(ga) == checkpoints[r][0]
        assert state_bytes(auditor.state()) == state_bytes(checkpoints[r][1])

    # or resumes from a checkpoint taken after round 1
    resumed = strategy_from_plan(plan)
    resumed.load_state(checkpoints[1][1])
    g1 = strategy_from_plan(plan).initialize()
    s_tmp = strategy_from_plan(plan)
    for r in range(2):
        g1 = s_tmp.aggregate_fit(r, g1, history[r])
    g2 = resumed.aggregate_fit(2, g1, history[2])
    assert state_bytes(g2) == checkpoints[2][0]

    # rounds must be applied in increasing order
    s2 = strategy_from_plan(plan)
    g = s2.aggregate_fit(1, s2.initialize(), history[1])
    with pytest.raises(AggregationError, match="in order"):
        s2.aggregate_fit(0, g, history[0])
    with pytest.raises(AggregationError, match="in order"):
        s2.aggregate_fit(1, g, history[1])
    with pytest.raises(AggregationError, match="go back"):
        s2.skip_to(1)


@pytest.mark.parametrize("name", ["fedavg", "fedadam", "fedyogi"])
def test_failed_rounds_leave_state_untouched(name):
    """Round 1 failed (no aggregate): aggregating rounds 0, 2, 3 gives the same
    model and optimizer state whether or not the gap is declared with skip_to."""
    plan = make_plan(STRATEGIES[name])
    g0 = strategy_from_plan(plan).initialize()
    ups = {r: random_updates(g0, r) for r in (0, 2, 3)}

    def run(declare_gap: bool):
        s = strategy_from_plan(plan)
        g = s.initialize()
        for r in (0, 2, 3):
            if declare_gap:
                s.skip_to(r)
            g = s.aggregate_fit(r, g, ups[r])
        return state_bytes(g), state_bytes(s.state())

    assert run(True) == run(False)
    s = strategy_from_plan(plan)
    if name != "fedavg":
        assert s.next_round == 0
        s.skip_to(2)
        assert s.next_round == 2 and int(s.state()["step"]) == 0


def test_fedadam_first_step_matches_formula():
    plan = make_plan(STRATEGIES["fedadam"])
    s = strategy_from_plan(plan)
    g = s.initialize()
    ups = random_updates(g)
    out = s.aggregate_fit(0, g, ups)
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
        s = strategy_from_plan(make_plan(STRATEGIES[name]))
        g = s.initialize()
        for r in range(3):
            g = s.aggregate_fit(r, g, random_updates(g, r))
        results[name] = state_bytes(g)
    assert results["fedadam"] != results["fedyogi"]


def test_bad_updates_name_the_participant():
    plan = make_plan(min_participants=2)
    s = strategy_from_plan(plan)
    g = s.initialize()
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
            s.aggregate_fit(0, g, good + [ClientUpdate(culprit, "d9", 5, bad_state)])
        assert exc.value.participant == culprit and culprit in str(exc.value)
        assert fragment in str(exc.value)

    with pytest.raises(AggregationError, match="two results"):
        s.aggregate_fit(0, g, good + [ClientUpdate(good[0].participant.upper().replace("0X", "0x"), "d0", 3, g)])
    with pytest.raises(AggregationError, match="address"):
        ClientUpdate("alice", "d0", 3, g)
    with pytest.raises(AggregationError, match="n_samples"):
        ClientUpdate(ADDR[0], "d0", 0, g)
    with pytest.raises(AggregationError, match="at least 2"):
        s.aggregate_fit(0, g, good[:1])
    with pytest.raises(AggregationError, match="0 participant"):
        strategy_from_plan(make_plan()).aggregate_fit(0, g, [])


def test_aggregate_evaluate_and_contributions():
    plan = make_plan()
    s = strategy_from_plan(plan)
    results = [
        EvaluateResult(ADDR[0], "d0", 10, {"accuracy": 0.9, "loss": 0.3}),
        EvaluateResult(ADDR[1], "d1", 30, {"accuracy": 0.5, "loss": 0.7}),
    ]
    assert s.aggregate_evaluate(0, results) == pytest.approx((0.9 * 10 + 0.5 * 30) / 40)
    assert s.aggregate_evaluate(0, results[::-1]) == s.aggregate_evaluate(0, results)
    auc_plan = plan.with_changes(metric="auc")
    auc = strategy_from_plan(auc_plan)
    mixed = results + [EvaluateResult(ADDR[2], "d2", 20, {"accuracy": 1.0, "loss": 0.1, "auc": 0.8})]
    assert auc.aggregate_evaluate(0, mixed) == pytest.approx(0.8)  # only results reporting auc count
    with pytest.raises(AggregationError, match="auc"):
        auc.aggregate_evaluate(0, results)

    g = s.initialize()
    ups = [
        ClientUpdate(ADDR[0], "d0", 10, g),
        ClientUpdate(ADDR[0].upper().replace("0X", "0x"), "d1", 30, g),
        ClientUpdate(ADDR[1], "d2", 60, g),
    ]
    scores = s.contribution_scores(ups)
    assert scores == {ADDR[0]: pytest.approx(0.4), ADDR[1]: pytest.approx(0.6)}
    assert sum(scores.values()) == pytest.approx(1.0)


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

    strategy = strategy_from_plan(plan)
    g = strategy.initialize(plan)
    splits = {
        h.name: split_for_plan(load_dataset(h.csv_path, h.schema_path), plan, h.name) for h in demo.hospitals
    }
    address = {h.name: ADDR[i] for i, h in enumerate(demo.hospitals)}
    for r in range(plan.rounds):
        config = strategy.configure_fit(r, g)
        updates = []
        for name, (train, _val) in splits.items():
            res = train_local(g, plan, train, round_index=r, dataset_seed_key=name, config=config)
            updates.append(ClientUpdate(address[name], name, res.n_samples, res.state_dict))
        g = strategy.aggregate_fit(r, g, updates)
        val_acc = strategy.aggregate_evaluate(
            r, [EvaluateResult(address[n], n, v.n_rows, evaluate(g, plan, v)) for n, (_t, v) in splits.items()]
        )
    test = load_dataset(demo.test.csv_path, demo.test.schema_path)
    federated = evaluate(g, plan, test)
    pooled = train_pooled(plan, demo.hospitals, demo.test)
    print(f"federated {federated}  pooled {pooled}  last validation accuracy {val_acc:.4f}")
    assert pooled["accuracy"] > 0.93
    assert federated["accuracy"] >= pooled["accuracy"] - 0.02
    assert val_acc > 0.9
