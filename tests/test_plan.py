"""Training-plan format: parsing, validation errors (all at once, with field
paths and lines), canonical bytes (RFC 8785), hashes, the model-size bound."""

from __future__ import annotations

import copy
import hashlib
import json
import math

import pytest
import rfc8785

from fedchain.errors import ConfigError
from fedchain.plan import (
    PLAN_JSON_SCHEMA,
    PLAN_VERSION,
    PlanError,
    PlanHashMismatch,
    TrainingPlan,
    canonical_json,
    derive_seed,
    evaluate_config,
    load_plan,
    parse_model_spec,
    parse_plan,
    plan_from_dict,
    standardization_from_moments,
    train_config,
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
        "limits": {"max_parameters": 20_000_000},
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
    assert doc["metric"] == "accuracy" and doc["version"] == PLAN_VERSION == 5
    assert doc["limits"] == {"max_parameters": 20_000_000}


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
    # canonical form is RFC 8785: compact, sorted, numbers in shortest form
    raw = plan.to_canonical_bytes()
    assert b" " not in raw.replace(b'"bc-test"', b"")
    assert raw == rfc8785.dumps(json.loads(raw))
    assert b'"weight_decay":0}' in raw and b'"lr":0.05' in raw


def test_sha256_is_pinned():
    # Guard against accidental changes to the canonical encoding (would change on-chain hashes).
    plan = plan_from_dict(base_dict())
    assert plan.to_canonical_bytes() == (
        b'{"auditors":[],"batch_size":8,'
        b'"contribution":{"method":"similarity","metric":"loss","permutations":20,"truncation":0,"validation":null},'
        b'"datasets":["d1","d2"],"limits":{"max_parameters":20000000},'
        b'"local_epochs":1,"metric":"accuracy",'
        b'"min_participants":1,"model":{"in_features":3,"kind":"logreg","n_classes":2},'
        b'"name":"bc-test","optimizer":{"lr":0.1,"momentum":0,"name":"sgd","weight_decay":0},'
        b'"preprocessing":{"standardize":"none"},'
        b'"privacy":{"accountant":"rdp","clipping_norm":1,"delta":0.00001,"epsilon":null,"mode":"none",'
        b'"noise_multiplier":null},"purpose":"diagnosis",'
        b'"robust":{"foolsgold":false,"max_weight_share":null,"norm_bound":null},"round_deadline_blocks":10,'
        b'"rounds":3,"seed":1,"strategy":{"name":"fedavg"},"validation_fraction":0.2,"version":5}'
    )
    assert plan.sha256 == "0x" + hashlib.sha256(plan.to_canonical_bytes()).hexdigest()


def test_canonical_json_is_rfc8785():
    doc = {"b": [1.0, 0.1, 1e21, 1e-7, "h\u00e9"], "a": {"z": -0.0, "y": 2**53 - 1}}
    assert canonical_json(doc) == b'{"a":{"y":9007199254740991,"z":0},"b":[1,0.1,1e+21,1e-7,"h\xc3\xa9"]}'
    for bad in (math.nan, math.inf, 2**53, {1: "x"}):
        with pytest.raises(ConfigError, match="canonical"):
            canonical_json(bad)


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
    ("model.kind", "transformer", "model.kind", "expected one of: logreg, mlp, cnn"),
    ("model", "__import__('os').system('id')", "model", "must be a table"),
    ("optimizer.lr", -0.1, "optimizer.lr", "must be >"),
    ("optimizer.lr", "fast", "optimizer.lr", "must be a number"),
    ("optimizer.lr", math.inf, "optimizer.lr", "finite"),
    ("optimizer.name", "lbfgs", "optimizer.name", "expected one of: sgd, adam"),
    ("optimizer.momentum", 1.5, "optimizer.momentum", "must be <"),
    ("batch_size", 0, "batch_size", "must be >= 1"),
    ("batch_size", True, "batch_size", "must be an integer"),
    ("rounds", 2.5, "rounds", "must be an integer"),
    ("seed", _DELETE, "seed", "is required"),
    ("seed", -1, "seed", "must be >= 0"),
    ("seed", 2**53, "seed", "must be <= 9007199254740991"),
    ("rounds", 10_001, "rounds", "must be <= 10000"),
    ("datasets", [f"d{i}" for i in range(129)], "datasets", "at most 128 items"),
    ("limits.max_parameters", 10**9, "limits.max_parameters", "must be <= 250000000"),
    ("limits.speed", 1, "limits.speed", "unknown key (allowed here: max_parameters)"),
    ("name", "import os", "name", "is not allowed here (letters, digits"),
    ("purpose", ["diagnosis"], "purpose", "must be a string"),
    ("datasets", [], "datasets", "must not be empty"),
    ("datasets", ["d1", "d1"], "datasets[1]", "listed twice"),
    ("datasets", "d1", "datasets", "must be a list"),
    ("min_participants", 3, "min_participants", "only 2 target dataset"),
    ("metric", "f1", "metric", "'accuracy', 'auc' or 'loss'"),
    ("validation_fraction", 1.5, "validation_fraction", "must be <="),
    ("strategy.name", "scaffold", "strategy.name", "fedavg, fedprox, fedadam, fedyogi"),
    ("strategy.mu", 0.1, "strategy.mu", "unknown key for strategy 'fedavg'"),
    ("model.hidden", [4], "model.hidden", "unknown key for model kind 'logreg'"),
    ("model.n_classes", 1, "model.n_classes", "must be >= 2"),
    ("version", 1, "version", "unsupported plan version 1"),
    ("auditors", ["0x1234"], "auditors[0]", "0x and 64 hex digits"),
    ("auditors", "0x" + "ab" * 32, "auditors", "must be a list"),
    ("auditors", ["0x" + "ab" * 32, "0x" + "AB" * 32], "auditors[1]", "listed twice"),
]


@pytest.mark.parametrize("dotted,value,field,fragment", BAD_PLANS, ids=[f"{b[0]}=<deleted>" if b[1] is _DELETE else f"{b[0]}={b[1]!r}" for b in BAD_PLANS])
def test_bad_plans_name_the_field(dotted, value, field, fragment):
    d = base_dict()
    _set(d, dotted, value)
    with pytest.raises(PlanError) as exc:
        plan_from_dict(d, source="bad.toml")
    assert [p.field for p in exc.value.problems] == [field]
    assert exc.value.field == field
    assert f"'{field}'" in str(exc.value)
    assert "bad.toml" in str(exc.value)
    assert fragment in str(exc.value)


@pytest.mark.parametrize(
    "changes,field,fragment",
    [
        ({"strategy": {"name": "fedprox"}}, "strategy.mu", "is required"),
        ({"strategy": {"name": "fedadam", "server_lr": 0.1, "beta2": 1.0}}, "strategy.beta2", "must be < 1"),
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
        ({"preprocessing": {"standardize": "local"}}, "preprocessing.standardize", "expected one of: none, plan"),
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
    with pytest.raises(PlanError, match="p.json:3: ") as exc:
        parse_plan(b'{"name": "a",\n "seed": 1,\n "rounds": }', source="p.json")
    assert exc.value.problems[0].line == 3
    with pytest.raises(PlanError) as exc:
        parse_plan(b'name = "a"\nseed = 1\nrounds = = 2\n', source="p.toml")
    assert exc.value.problems[0].line == 3 and "invalid TOML" in str(exc.value)
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
    big = tmp_path / "big.toml"
    big.write_bytes(PLAN_TOML + b"#" * (2 << 20))
    with pytest.raises(ConfigError, match="larger than the 1048576 bytes allowed"):
        load_plan(big)
    with pytest.raises(ConfigError, match="larger than the 1048576 bytes allowed"):
        load_plan("/dev/zero")  # endless: read only up to the limit


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
    # the same values as before canonical JSON moved to RFC 8785 (ASCII strings, integers < 2**53)
    assert derive_seed(42, "train", 0, "hospital-a") == 7745081313113270177
    assert derive_seed(42, "train", 1, "hospital-a") != derive_seed(42, "train", 0, "hospital-a")
    assert 0 <= derive_seed(2**53 - 1, "x") < 2**63
    for bad in (-1, 2**53, True, 1.5):
        with pytest.raises(ConfigError, match="seed"):
            derive_seed(bad, "x")


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


# -- every problem at once, with its line ------------------------------------------------

BROKEN_TOML = b"""\
name = "bc test"
purpose = "diagnosis"
local_epochs = 0
batch_size = 16
rounds = "5"
min_participants = 2
round_deadline_blocks = 40
datasets = ["hospital-a", "hospital-a"]
learning_rate = 0.1

[model]
kind = "mlp"
in_features = 3
n_classes = 2
hidden = [8, -4]

[optimizer]
name = "adam"
lr = 0.05
momentum = 0.9

[strategy]
name = "fedprox"
"""


def test_every_problem_is_reported_at_once_with_its_line():
    with pytest.raises(PlanError) as exc:
        parse_plan(BROKEN_TOML, source="broken.toml")
    got = [(p.line, p.field) for p in exc.value.problems]
    assert got == [
        (1, "name"),
        (1, "seed"),  # missing at the top level: line 1
        (3, "local_epochs"),
        (5, "rounds"),
        (6, "min_participants"),  # cross-field rules still run while other fields are broken:
        (8, "datasets[1]"),  # one distinct dataset, listed twice
        (9, "learning_rate"),
        (15, "model.hidden[1]"),
        (20, "optimizer.momentum"),
        (22, "strategy.mu"),  # missing in a table: the table's line
    ]
    text = str(exc.value)
    assert text.startswith("broken.toml: 10 problems in the plan:")
    assert "broken.toml:20: plan field 'optimizer.momentum': unknown key for optimizer 'adam'" in text


def test_json_plans_get_lines_too():
    d = base_dict()
    d["model"]["n_classes"] = 1
    d["optimizer"]["lr"] = "fast"
    d["auditors"] = ["0x" + "ab" * 32, "0x" + "AB" * 32]
    text = json.dumps(d, indent=2).encode()
    with pytest.raises(PlanError) as exc:
        parse_plan(text, source="p.json")
    lines = text.decode().splitlines()
    for p in exc.value.problems:
        key = p.field.split(".")[-1].split("[")[0]
        assert f'"{key}"' in lines[p.line - 1] or p.field.endswith("]"), (p, lines[p.line - 1])
    assert {p.field for p in exc.value.problems} == {"model.n_classes", "optimizer.lr", "auditors[1]"}


def test_cross_field_rules_run_next_to_type_errors():
    d = base_dict()
    d["rounds"] = 0  # a type/range problem elsewhere
    d["min_participants"] = 5  # but only 2 datasets
    d["metric"] = "auc"
    d["model"] = {"kind": "logreg", "in_features": 3, "n_classes": 3}
    with pytest.raises(PlanError) as exc:
        plan_from_dict(d)
    assert [p.field for p in exc.value.problems] == ["rounds", "min_participants", "metric"]


def test_key_lines_of_toml_shapes():
    from fedchain.textpos import line_of, toml_key_lines

    text = '''\
a = 1
b.c = "x # not a comment"
s = """
not = a key
"""
arr = [
  1,
  2,
]
inline = { k = 1 }
[t]
"q.key" = 2
[t.u]  # comment
v = 3
'''
    lines = toml_key_lines(text)
    assert lines[("a",)] == 1 and lines[("b", "c")] == 2 and lines[("s",)] == 3
    assert ("not",) not in lines
    assert lines[("arr",)] == 6 and lines[("inline",)] == 10
    assert lines[("t",)] == 11 and lines[("t", "q.key")] == 12 and lines[("t", "u", "v")] == 14
    assert line_of(lines, ("arr", 1)) == 6 and line_of(lines, ("t", "missing")) == 11
    assert line_of(lines, ("nowhere",)) == 1


# -- the model-size bound ------------------------------------------------------------------


def test_the_40_gb_mlp_is_refused_naming_the_limit_and_its_size():
    d = base_dict()
    d["model"] = {"kind": "mlp", "in_features": 3, "n_classes": 2, "hidden": [100000, 100000]}
    with pytest.raises(PlanError) as exc:
        plan_from_dict(d)
    assert exc.value.field == "model"
    msg = exc.value.problem
    assert "10,000,700,002 parameters (40.0 GB as float32)" in msg
    assert "20,000,000 parameters (80.0 MB" in msg and "250,000,000" in msg


def test_a_declared_limit_admits_a_bigger_model_up_to_the_hard_cap():
    d = base_dict()
    d["model"] = {"kind": "mlp", "in_features": 1000, "n_classes": 2, "hidden": [5000, 4000]}  # 25,017,002
    with pytest.raises(PlanError, match="consortium default limit") as exc:
        plan_from_dict(d)
    assert "declares [limits] max_parameters" in str(exc.value)
    d["limits"] = {"max_parameters": 30_000_000}
    plan = plan_from_dict(d)
    assert plan.model.size.parameters == 25_017_002 and plan.limits.max_parameters == 30_000_000
    d["limits"] = {"max_parameters": 25_000_000}
    with pytest.raises(PlanError, match="the limit this plan declares"):
        plan_from_dict(d)
    d["limits"] = {"max_parameters": 250_000_001}
    with pytest.raises(PlanError, match="must be <= 250000000"):
        plan_from_dict(d)


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "logreg", "in_features": 30, "n_classes": 2},
        {"kind": "mlp", "in_features": 7, "n_classes": 3, "hidden": [5, 4, 3]},
        {"kind": "cnn", "input_shape": [3, 9, 11], "conv_channels": [4, 6], "hidden": [5], "n_classes": 4},
        {"kind": "cnn", "input_shape": [1, 8, 8], "conv_channels": [2], "n_classes": 2},
    ],
)
def test_parameter_count_equals_the_built_model(spec):
    from fedchain.models import build_model

    model = build_model(spec, 1)
    assert parse_model_spec(spec).size.parameters == sum(p.numel() for p in model.parameters())
    assert parse_model_spec(spec).size.bytes == 4 * sum(p.numel() for p in model.parameters())


def test_parse_model_spec_applies_the_hard_cap():
    with pytest.raises(PlanError, match="hard cap"):
        parse_model_spec({"kind": "mlp", "in_features": 100, "n_classes": 2, "hidden": [1_000_000, 1_000]})


# -- the train config and the schema -----------------------------------------------------


def test_train_config_comes_from_the_plan():
    plan = parse_plan(PLAN_TOML)  # fedprox, mu 0.01
    cfg = train_config(plan, 3)
    assert (cfg.round, cfg.local_epochs, cfg.batch_size, cfg.proximal_mu) == (3, 2, 16, 0.01)
    assert cfg.optimizer == plan.optimizer
    assert train_config(plan.with_changes(strategy={"name": "fedavg"}), 1).proximal_mu == 0.0
    assert evaluate_config(plan, 5).metric == "accuracy"
    with pytest.raises(ConfigError, match="1..5"):
        evaluate_config(plan, 6)


def test_json_schema_is_available_and_strict():
    schema = PLAN_JSON_SCHEMA
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) >= {"name", "purpose", "model", "optimizer", "strategy", "datasets", "seed"}
    model = schema["properties"]["model"]
    assert set(model["discriminator"]["mapping"]) == {"logreg", "mlp", "cnn"}
    for name in ("LogRegSpec", "MLPSpec", "CNNSpec", "FedAdamSpec", "Limits"):
        assert schema["$defs"][name]["additionalProperties"] is False
    assert schema["$defs"]["Limits"]["properties"]["max_parameters"]["maximum"] == 250_000_000


def test_hostile_nesting_is_refused_before_decoding():
    """A proposer can pin any bytes (up to MAX_PLAN_BYTES) behind a proposal.
    json and tomllib recurse per nesting level, and py-evm raises the recursion
    limit to 100,000, so 150,000 '[' would overflow the C stack (a segfault in
    the node, not an exception): the depth is checked first. This test imports
    py-evm's limit on purpose."""
    import eth  # noqa: F401  (raises sys.getrecursionlimit() as the node process has it)

    deep = 150_000  # within MAX_PLAN_BYTES
    for data, fmt in [
        (b"[" * deep + b"]" * deep, "json"),
        (b'{"a":' * deep + b"1" + b"}" * deep, "json"),
        (b"a = " + b"[" * deep + b"]" * deep, "toml"),
        (b"a = 1\nb = " + b"{c=" * deep + b"1" + b"}" * deep, "toml"),
    ]:
        with pytest.raises(PlanError, match="nested more than 16 levels deep"):
            parse_plan(data, fmt=fmt)
    raw = b'{"a":' * deep + b"1" + b"}" * deep
    with pytest.raises(PlanError, match="nested more than 16"):
        verify_plan_bytes(raw, "0x" + hashlib.sha256(raw).hexdigest())
    # brackets inside strings and comments do not count
    fine = PLAN_TOML.replace(b'name = "bc-test"', b'name = "bc-test" # ' + b"[" * 100)
    assert parse_plan(fine).name == "bc-test"
    with pytest.raises(PlanError, match="is not allowed here"):
        parse_plan(PLAN_TOML.replace(b'"bc-test"', b'"' + b"[" * 100 + b'"'))
