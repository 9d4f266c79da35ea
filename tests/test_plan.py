"""Training-plan format: parsing, validation errors, canonical bytes, hashes."""

from __future__ import annotations

import copy
import hashlib
import json
import math

import pytest

from fedchain.errors import ConfigError
from fedchain.plan import (
    PlanError,
    PlanHashMismatch,
    TrainingPlan,
    derive_seed,
    load_plan,
    parse_plan,
    plan_from_dict,
    standardization_from_moments,
    verify_plan_bytes,
)

PLAN_TOML = b"""
name = "bc-test"
purpose = "diagnosis"
local_epochs = 2
batch_size = 16
rounds = 5
min_participants = 2
round_deadline_blocks = 40
seed = 7
datasets = ["hospital-a", "hospital-b", "hospital-c"]

[model]
kind = "mlp"
in_features = 3
n_classes = 2
hidden = [8, 4]

[optimizer]
name = "sgd"
lr = 0.05
momentum = 0.9

[strategy]
name = "fedprox"
mu = 0.01
"""


def base_dict() -> dict:
    return {
        "name": "bc-test",
        "purpose": "diagnosis",
        "model": {"kind": "logreg", "in_features": 3, "n_classes": 2},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "local_epochs": 1,
        "batch_size": 8,
        "rounds": 3,
        "strategy": {"name": "fedavg"},
        "min_participants": 1,
        "round_deadline_blocks": 10,
        "seed": 1,
        "datasets": ["d1", "d2"],
    }


def test_toml_plan_parses_with_defaults():
    plan = parse_plan(PLAN_TOML, source="demo.toml")
    assert isinstance(plan, TrainingPlan)
    assert plan.model.kind == "mlp" and plan.model.hidden == (8, 4)
    assert plan.optimizer.momentum == 0.9 and plan.optimizer.weight_decay == 0.0
    assert plan.strategy.mu == 0.01
    assert plan.metric == "accuracy" and plan.validation_fraction == 0.2
    assert plan.preprocessing.standardize == "none"
    assert plan.datasets == ("hospital-a", "hospital-b", "hospital-c")
    # defaults are explicit in the canonical form
    doc = json.loads(plan.to_canonical_bytes())
    assert doc["optimizer"]["weight_decay"] == 0.0
    assert doc["metric"] == "accuracy" and doc["version"] == 1


def test_canonical_bytes_stable_across_key_order_and_format():
    plan = parse_plan(PLAN_TOML)
    d = plan.to_dict()
    # JSON with every key order reversed, pretty-printed
    def reverse(obj):
        if isinstance(obj, dict):
            return {k: reverse(obj[k]) for k in reversed(list(obj))}
        return obj

    text = json.dumps(reverse(d), indent=4).encode()
    other = parse_plan(text)
    assert other == plan
    assert other.to_canonical_bytes() == plan.to_canonical_bytes()
    assert other.sha256 == plan.sha256
    assert plan.sha256 == "0x" + hashlib.sha256(plan.to_canonical_bytes()).hexdigest()
    # integer-valued floats normalize (lr = 1 and lr = 1.0 are the same plan)
    a = base_dict()
    b = copy.deepcopy(a)
    a["optimizer"]["lr"] = 1
    b["optimizer"]["lr"] = 1.0
    assert plan_from_dict(a).sha256 == plan_from_dict(b).sha256
    # canonical form is compact, sorted, ASCII
    raw = plan.to_canonical_bytes()
    assert b" " not in raw.replace(b'"bc-test"', b"")
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()


def test_sha256_is_pinned():
    # Guard against accidental changes to the canonical encoding (would change on-chain hashes).
    plan = plan_from_dict(base_dict())
    assert plan.to_canonical_bytes() == (
        b'{"auditors":[],"batch_size":8,"datasets":["d1","d2"],"local_epochs":1,"metric":"accuracy",'
        b'"min_participants":1,"model":{"in_features":3,"kind":"logreg","n_classes":2},'
        b'"name":"bc-test","optimizer":{"lr":0.1,"momentum":0.0,"name":"sgd","weight_decay":0.0},'
        b'"preprocessing":{"standardize":"none"},"purpose":"diagnosis","round_deadline_blocks":10,'
        b'"rounds":3,"seed":1,"strategy":{"name":"fedavg"},"validation_fraction":0.2,"version":1}'
    )


def _set(d: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for p in path:
        d = d[p]
    if value is _DELETE:
        del d[last]
    else:
        d[last] = value


_DELETE = object()

BAD_PLANS = [
    ("learning_rate", 0.1, "learning_rate", "unknown key"),
    ("model.kind", "transformer", "model.kind", "logreg, mlp, cnn"),
    ("model", "__import__('os').system('id')", "model", "must be a table"),
    ("optimizer.lr", -0.1, "optimizer.lr", "must be >"),
    ("optimizer.lr", "fast", "optimizer.lr", "must be a number"),
    ("optimizer.lr", math.inf, "optimizer.lr", "finite"),
    ("optimizer.name", "lbfgs", "optimizer.name", "sgd, adam"),
    ("optimizer.momentum", 1.5, "optimizer.momentum", "must be <"),
    ("batch_size", 0, "batch_size", "must be >= 1"),
    ("batch_size", True, "batch_size", "must be an integer"),
    ("rounds", 2.5, "rounds", "must be an integer"),
    ("seed", _DELETE, "seed", "is required"),
    ("seed", -1, "seed", "must be >= 0"),
    ("name", "import os", "name", "not a valid identifier"),
    ("purpose", ["diagnosis"], "purpose", "must be a string"),
    ("datasets", [], "datasets", "at least one"),
    ("datasets", ["d1", "d1"], "datasets[1]", "listed twice"),
    ("datasets", "d1", "datasets", "must be a list"),
    ("min_participants", 3, "min_participants", "only 2 target dataset"),
    ("metric", "f1", "metric", "accuracy, auc, loss"),
    ("validation_fraction", 1.5, "validation_fraction", "must be <="),
    ("strategy.name", "scaffold", "strategy.name", "fedavg, fedprox, fedadam, fedyogi"),
    ("strategy.mu", 0.1, "strategy.mu", "unknown key for strategy 'fedavg'"),
    ("model.hidden", [4], "model.hidden", "unknown key for model kind 'logreg'"),
    ("model.n_classes", 1, "model.n_classes", "must be >= 2"),
    ("version", 2, "version", "unsupported plan version"),
    ("auditors", ["0x1234"], "auditors[0]", "32-byte public key"),
    ("auditors", "0x" + "ab" * 32, "auditors", "must be a list"),
    ("auditors", ["0x" + "ab" * 32, "0x" + "AB" * 32], "auditors[1]", "listed twice"),
]


@pytest.mark.parametrize("dotted,value,field,fragment", BAD_PLANS, ids=[f"{b[0]}={b[1]!r}" for b in BAD_PLANS])
def test_bad_plans_name_the_field(dotted, value, field, fragment):
    d = base_dict()
    _set(d, dotted, value)
    with pytest.raises(PlanError) as exc:
        plan_from_dict(d, source="bad.toml")
    assert exc.value.field == field
    assert f"'{field}'" in str(exc.value)
    assert "bad.toml" in str(exc.value)
    assert fragment in str(exc.value)


@pytest.mark.parametrize(
    "changes,field,fragment",
    [
        ({"strategy": {"name": "fedprox"}}, "strategy.mu", "is required"),
        ({"strategy": {"name": "fedadam", "server_lr": 0.1, "beta2": 1.0}}, "strategy.beta2", "must be <"),
        ({"model": {"kind": "mlp", "in_features": 3, "n_classes": 2}}, "model.hidden", "is required"),
        ({"model": {"kind": "mlp", "in_features": 3, "n_classes": 2, "hidden": [4, -3]}}, "model.hidden[1]", ">= 1"),
        ({"model": {"kind": "cnn", "n_classes": 2, "input_shape": [1, 2, 2], "conv_channels": [4, 4]}},
         "model.input_shape", "too small"),
        ({"model": {"kind": "logreg", "in_features": 3, "n_classes": 3}, "metric": "auc"}, "metric", "binary"),
        ({"optimizer": {"name": "adam", "lr": 0.01, "momentum": 0.9}}, "optimizer.momentum",
         "unknown key for optimizer 'adam'"),
        ({"preprocessing": {"standardize": "plan", "mean": [0, 0], "std": [1, 1]}}, "preprocessing.mean",
         "has 2 values but the model takes 3"),
        ({"preprocessing": {"standardize": "plan", "mean": [0, 0, 0], "std": [0, 1, 1]}}, "preprocessing.std[0]",
         "must be > 0"),
        ({"preprocessing": {"standardize": "local"}}, "preprocessing.standardize", "none, plan"),
        ({"preprocessing": {"mean": [0, 0, 0]}}, "preprocessing.mean", "unknown key"),
    ],
)
def test_bad_nested_tables(changes, field, fragment):
    d = base_dict()
    d.update(changes)
    with pytest.raises(PlanError) as exc:
        plan_from_dict(d)
    assert exc.value.field == field
    assert fragment in str(exc.value)


def test_decoding_errors():
    with pytest.raises(ConfigError, match="invalid TOML"):
        parse_plan(b"name = ")
    with pytest.raises(ConfigError, match="duplicate key"):
        parse_plan(b'{"name": "a", "name": "b"}')
    with pytest.raises(ConfigError, match="NaN is not allowed"):
        parse_plan(b'{"seed": NaN}')
    with pytest.raises(ConfigError, match="not UTF-8"):
        parse_plan(b"\xff\xfe")
    bad = PLAN_TOML.replace(b"lr = 0.05", b"lr = nan")
    with pytest.raises(PlanError) as exc:
        parse_plan(bad)
    assert exc.value.field == "optimizer.lr"
    # a plan is a table of data, never an expression
    with pytest.raises(PlanError) as exc:
        parse_plan(b'["__import__", "os"]', fmt="json")
    assert "must be a table" in str(exc.value)


def test_load_plan_files(tmp_path):
    plan = parse_plan(PLAN_TOML)
    (tmp_path / "p.toml").write_bytes(PLAN_TOML)
    (tmp_path / "p.json").write_bytes(plan.to_canonical_bytes())
    assert load_plan(tmp_path / "p.toml") == plan
    assert load_plan(tmp_path / "p.json") == plan
    with pytest.raises(ConfigError, match="cannot read plan"):
        load_plan(tmp_path / "missing.toml")


def test_verify_plan_bytes():
    plan = parse_plan(PLAN_TOML)
    data = plan.to_canonical_bytes()
    assert verify_plan_bytes(data, plan.sha256) == plan
    assert verify_plan_bytes(data, plan.sha256[2:].upper()) == plan
    assert verify_plan_bytes(data, bytes.fromhex(plan.sha256[2:])) == plan
    tampered = data.replace(b'"lr":0.05', b'"lr":0.5')
    with pytest.raises(PlanHashMismatch) as exc:
        verify_plan_bytes(tampered, plan.sha256)
    assert exc.value.expected == plan.sha256
    # bytes that hash right but are not canonical are refused (one plan, one hash)
    pretty = json.dumps(plan.to_dict(), indent=2).encode()
    with pytest.raises(ConfigError, match="canonical"):
        verify_plan_bytes(pretty, "0x" + hashlib.sha256(pretty).hexdigest())
    with pytest.raises(ConfigError, match="64 hex"):
        verify_plan_bytes(data, "0x1234")


def test_auditor_keys_are_normalized():
    d = base_dict()
    d["auditors"] = ["0x" + "AB" * 32]
    plan = plan_from_dict(d)
    assert plan.auditors == ("0x" + "ab" * 32,)
    d["auditors"] = ["0x" + "ab" * 32]
    assert plan_from_dict(d).sha256 == plan.sha256


def test_with_changes_revalidates():
    plan = plan_from_dict(base_dict())
    assert plan.with_changes(local_epochs=4).local_epochs == 4
    with pytest.raises(PlanError):
        plan.with_changes(local_epochs=0)


def test_derive_seed_is_stable():
    assert derive_seed(42, "train", 0, "hospital-a") == 7745081313113270177
    assert derive_seed(42, "train", 1, "hospital-a") != derive_seed(42, "train", 0, "hospital-a")
    assert 0 <= derive_seed(2**63 - 1, "x") < 2**63


def test_standardization_from_moments_equals_pooled():
    import numpy as np

    rng = np.random.default_rng(0)
    parts = [rng.normal(5, 3, size=(n, 4)) for n in (10, 25, 7)]
    moments = [(len(p), p.sum(0).tolist(), (p * p).sum(0).tolist()) for p in parts]
    mean, std = standardization_from_moments(moments)
    pooled = np.concatenate(parts)
    np.testing.assert_allclose(mean, pooled.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, pooled.std(0), rtol=1e-9)
    # a constant feature gets std 1 instead of a division by zero
    const = [(3, [6.0], [12.0])]
    assert standardization_from_moments(const) == ((2.0,), (1.0,))
