"""Local training: determinism (in-process and across processes), FedProx, the
plan's train config as the only source of what a node does, evaluation."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fedchain.errors import ConfigError
from fedchain.models import initial_state
from dataclasses import replace

from fedchain.plan import plan_from_dict, train_config
from fedchain.node.dataset import TabularData
from fedchain.node.train import TrainingError, evaluate, train_local

REPO = Path(__file__).resolve().parent.parent


def make_plan(**changes):
    d = {
        "name": "unit",
        "purpose": "diagnosis",
        "model": {"kind": "mlp", "in_features": 4, "n_classes": 2, "hidden": [6]},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "local_epochs": 3,
        "batch_size": 8,
        "rounds": 4,
        "strategy": {"name": "fedavg"},
        "min_participants": 1,
        "round_deadline_blocks": 10,
        "seed": 17,
        "datasets": ["h1", "h2"],
    }
    d.update(changes)
    return plan_from_dict(d)


def make_data(n=60, seed=0) -> TabularData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64).float()
    y = ((x[:, 0] + 0.5 * x[:, 1] - 0.25 * x[:, 3]) > 0).long()
    return TabularData(x, y, ("a", "b", "c", "d"), ("neg", "pos"), "synthetic")


def digest(state) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def test_same_inputs_same_bytes():
    plan = make_plan()
    data = make_data()
    g0 = initial_state(plan.model, plan.seed)
    a = train_local(g0, plan, data, config=train_config(plan, 1), dataset_seed_key="h1")
    b = train_local(g0, plan, data, config=train_config(plan, 1), dataset_seed_key="h1")
    assert digest(a.state_dict) == digest(b.state_dict)
    assert a.train_loss == b.train_loss and a.metrics == b.metrics
    assert a.n_samples == 60
    assert all(t.dtype == torch.float32 for t in a.state_dict.values())
    # round and hospital key change the shuffling, hence the weights
    c = train_local(g0, plan, data, config=train_config(plan, 2), dataset_seed_key="h1")
    d = train_local(g0, plan, data, config=train_config(plan, 1), dataset_seed_key="h2")
    assert len({digest(a.state_dict), digest(c.state_dict), digest(d.state_dict)}) == 3


def test_global_torch_settings_restored():
    plan = make_plan()
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    train_local(initial_state(plan.model, plan.seed), plan, make_data(), config=train_config(plan, 1), dataset_seed_key="h1")
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det


SUBPROCESS = textwrap.dedent(
    """
    import hashlib, sys, torch
    from fedchain.models import initial_state
    from fedchain.plan import parse_plan, train_config
    from fedchain.node.dataset import load_dataset
    from fedchain.node.train import train_local
    torch.manual_seed(12345)            # global RNG state must not matter
    plan = parse_plan(open(sys.argv[1], "rb").read())
    data = load_dataset(sys.argv[2], sys.argv[3])
    res = train_local(initial_state(plan.model, plan.seed), plan, data, config=train_config(plan, 2), dataset_seed_key="h2")
    h = hashlib.sha256()
    for k in sorted(res.state_dict):
        h.update(k.encode()); h.update(res.state_dict[k].contiguous().numpy().tobytes())
    print(h.hexdigest())
    """
)


def test_same_bytes_in_another_process(tmp_path):
    plan = make_plan(
        optimizer={"name": "adam", "lr": 0.01},
        preprocessing={"standardize": "plan", "mean": [0.1, 0, 0, -0.2], "std": [1, 2, 0.5, 1]},
        strategy={"name": "fedprox", "mu": 0.05},
    )
    data = make_data(45, seed=3)
    csv_path = tmp_path / "d.csv"
    rows = ["a,b,c,d,y"] + [
        ",".join(repr(float(v)) for v in x) + "," + ("pos" if y else "neg")
        for x, y in zip(data.features.tolist(), data.labels.tolist())
    ]
    csv_path.write_text("\n".join(rows) + "\n")
    schema_path = tmp_path / "s.json"
    schema_path.write_text(
        '{"features":[{"name":"a","type":"float"},{"name":"b","type":"float"},'
        '{"name":"c","type":"float"},{"name":"d","type":"float"}],'
        '"label":{"name":"y","values":["neg","pos"]}}'
    )
    plan_path = tmp_path / "plan.json"
    plan_path.write_bytes(plan.to_canonical_bytes())

    here = train_local(initial_state(plan.model, plan.seed), plan, data, config=train_config(plan, 2), dataset_seed_key="h2")
    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", PYTHONHASHSEED="99")
    out = subprocess.run(
        [sys.executable, "-c", SUBPROCESS, str(plan_path), str(csv_path), str(schema_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == digest(here.state_dict)


def test_training_learns():
    plan = make_plan()
    data = make_data(200)
    g0 = initial_state(plan.model, plan.seed)
    before = evaluate(g0, plan, data)
    res = train_local(g0, plan, data, config=train_config(plan, 1), dataset_seed_key="h1")
    assert res.metrics["loss"] < before["loss"]
    assert res.metrics["accuracy"] > 0.9
    assert set(res.metrics) == {"accuracy", "loss", "auc"}
    assert res.train_loss > 0


def _distance(a, b) -> float:
    return sum(float(((a[k] - b[k]) ** 2).sum()) for k in a)


def test_fedprox_keeps_weights_near_global():
    data = make_data(80)
    avg = make_plan()
    g0 = initial_state(avg.model, avg.seed)
    free = train_local(g0, avg, data, config=train_config(avg, 1), dataset_seed_key="h1")
    prox = make_plan(strategy={"name": "fedprox", "mu": 5.0})
    tied = train_local(g0, prox, data, config=train_config(prox, 1), dataset_seed_key="h1")
    assert _distance(tied.state_dict, g0) < 0.5 * _distance(free.state_dict, g0)
    # mu = 0 is plain FedAvg training, bit for bit
    zero_plan = make_plan(strategy={"name": "fedprox", "mu": 0.0})
    zero = train_local(g0, zero_plan, data, config=train_config(zero_plan, 1), dataset_seed_key="h1")
    assert digest(zero.state_dict) == digest(free.state_dict)


def test_training_follows_the_train_config_not_the_plan_fields():
    """The node's loop reads epochs, batch size, optimizer and mu from the
    TrainConfig (fedchain.plan.train_config), nothing else."""
    data = make_data(80)
    plan = make_plan(strategy={"name": "fedprox", "mu": 5.0})
    g0 = initial_state(plan.model, plan.seed)
    cfg = train_config(plan, 1)
    assert cfg.proximal_mu == 5.0 and cfg.local_epochs == 3 and cfg.batch_size == 8
    # the same plan with the config of a 1-epoch, batch-4, adam, mu-0 plan trains exactly like that plan
    other = make_plan(local_epochs=1, batch_size=4, optimizer={"name": "adam", "lr": 0.01})
    via_config = train_local(g0, plan, data, config=train_config(other, 1), dataset_seed_key="h1")
    direct = train_local(g0, other, data, config=train_config(other, 1), dataset_seed_key="h1")
    assert digest(via_config.state_dict) == digest(direct.state_dict)
    # and each field of the config matters
    base = digest(train_local(g0, plan, data, config=cfg, dataset_seed_key="h1").state_dict)
    for change in ({"local_epochs": 1}, {"batch_size": 16}, {"proximal_mu": 0.0},
                   {"optimizer": other.optimizer}, {"round": 2}):
        changed = train_local(g0, plan, data, config=replace(cfg, **change), dataset_seed_key="h1")
        assert digest(changed.state_dict) != base, change


def test_train_config_is_required_and_in_range():
    plan = make_plan()
    g0 = initial_state(plan.model, plan.seed)
    with pytest.raises(ConfigError, match="TrainConfig"):
        train_local(g0, plan, make_data(), config={"round": 1, "local_epochs": 3}, dataset_seed_key="h1")
    for bad_round in (0, plan.rounds + 1, True):
        with pytest.raises(ConfigError, match="outside the plan's rounds 1..4"):
            train_config(plan, bad_round)


def test_bad_global_state_and_data():
    plan = make_plan()
    g0 = initial_state(plan.model, plan.seed)
    missing = {k: v for k, v in g0.items() if k != "out.bias"}
    with pytest.raises(TrainingError, match="missing out.bias"):
        train_local(missing, plan, make_data(), config=train_config(plan, 1), dataset_seed_key="h1")
    wrong = dict(g0, **{"out.bias": torch.zeros(3)})
    with pytest.raises(TrainingError, match="shape"):
        train_local(wrong, plan, make_data(), config=train_config(plan, 1), dataset_seed_key="h1")
    three_class = TabularData(torch.zeros(5, 4), torch.zeros(5, dtype=torch.long), tuple("abcd"), ("x", "y", "z"))
    with pytest.raises(TrainingError, match="3 label values"):
        train_local(g0, plan, three_class, config=train_config(plan, 1), dataset_seed_key="h1")
    with pytest.raises(ConfigError, match="features"):
        narrow = TabularData(torch.zeros(5, 3), torch.zeros(5, dtype=torch.long), tuple("abc"), ("x", "y"))
        train_local(g0, plan, narrow, config=train_config(plan, 1), dataset_seed_key="h1")


def test_divergence_is_reported():
    plan = make_plan(optimizer={"name": "sgd", "lr": 10.0, "momentum": 0.99})
    data = make_data()
    big = TabularData(data.features * 1e18, data.labels, data.feature_names, data.label_values, "huge")
    with pytest.raises(TrainingError, match="lr"):
        train_local(initial_state(plan.model, plan.seed), plan, big, config=train_config(plan, 1), dataset_seed_key="h1")


def test_evaluate_metrics():
    plan = make_plan()
    g0 = initial_state(plan.model, plan.seed)
    data = make_data()
    m = evaluate(g0, plan, data)
    assert set(m) == {"accuracy", "loss", "auc"} and 0 <= m["accuracy"] <= 1 and 0 <= m["auc"] <= 1
    one_class = TabularData(data.features, torch.zeros_like(data.labels), data.feature_names, data.label_values)
    m1 = evaluate(g0, plan, one_class)
    assert "auc" not in m1  # undefined with a single class
    # accuracy and loss agree with a direct computation
    from fedchain.models import build_model

    model = build_model(plan.model, plan.seed)
    with torch.no_grad():
        logits = model(data.features)
    assert m["accuracy"] == pytest.approx(float((logits.argmax(1) == data.labels).float().mean()))
    assert m["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, data.labels)), rel=1e-5)
