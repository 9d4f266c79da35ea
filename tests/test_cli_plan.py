"""``fedchain plan init | validate | show | reference | schema``: offline plan tools.

Commands run in-process through ``fedchain.cli.main(argv)``; one test runs the
real console script as a subprocess with no network configured, to show that
validation never touches the chain.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from fedchain.cli import main
from fedchain.plan import PLAN_JSON_SCHEMA, load_plan
from fedchain.plandoc import TEMPLATE_KINDS, reference_markdown, template

REPO = Path(__file__).resolve().parents[1]
PROBLEM = re.compile(r"^(?P<file>.+?):(?P<line>\d+): plan field '(?P<field>[^']+)': (?P<msg>.+)$")


@pytest.fixture(autouse=True)
def _wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")


def cli(*args: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


BASE = """\
name = "bc-demo"
purpose = "diagnosis"
datasets = ["hospital-a", "hospital-b", "hospital-c"]
rounds = 5
min_participants = 2
round_deadline_blocks = 40
local_epochs = 2
batch_size = 16
seed = 7
metric = "accuracy"
validation_fraction = 0.2
auditors = []

[model]
kind = "mlp"
in_features = 30
n_classes = 2
hidden = [32]

[optimizer]
name = "sgd"
lr = 0.05
momentum = 0.9

[strategy]
name = "fedavg"
""".splitlines()


def edit(replace: dict[int, str] | None = None, append: tuple[str, ...] = ()) -> str:
    """BASE with some lines (1-based) replaced and lines appended (from line 27)."""
    lines = list(BASE)
    for n, text in (replace or {}).items():
        lines[n - 1] = text
    return "\n".join(lines + list(append)) + "\n"


JSON_PLAN = """\
{
  "name": "json plan",
  "purpose": "diagnosis",
  "datasets": ["hospital-a"],
  "rounds": 3,
  "min_participants": 2,
  "round_deadline_blocks": 40,
  "local_epochs": 1,
  "batch_size": 8,
  "seed": 1,
  "model": {"kind": "logreg", "in_features": 0, "n_classes": 2},
  "optimizer": {"name": "sgd", "lr": 0.1},
  "strategy": {"name": "fedprox", "mu": "small"}
}
"""

# (id, file name, text, [(line, field, fragment of the message), ...] in output order)
BROKEN = [
    ("typos", "p.toml", edit({7: "local_epoch = 2", 22: "learning_rate = 0.05"}), [
        (1, "local_epochs", "is required"),
        (7, "local_epoch", "unknown key (allowed here:"),
        (20, "optimizer.lr", "is required"),
        (22, "optimizer.learning_rate", "unknown key for optimizer 'sgd'"),
    ]),
    ("types", "p.toml", edit({4: 'rounds = "5"', 8: "batch_size = 16.0", 11: "validation_fraction = true"}), [
        (4, "rounds", "must be an integer, got string '5'"),
        (8, "batch_size", "must be an integer, got number 16.0"),
        (11, "validation_fraction", "must be a number, got boolean True"),
    ]),
    ("ranges", "p.toml", edit({4: "rounds = 0", 11: "validation_fraction = 0.95", 22: "lr = -0.1",
                               23: "momentum = 1.0"}), [
        (4, "rounds", "must be >= 1, got 0"),
        (11, "validation_fraction", "must be <= 0.9"),
        (22, "optimizer.lr", "must be > 0"),
        (23, "optimizer.momentum", "must be < 1"),
    ]),
    ("model-kind", "p.toml", edit({15: 'kind = "transformer"'}), [
        (15, "model.kind", "unknown value 'transformer' (expected one of: logreg, mlp, cnn)"),
    ]),
    ("hidden-items", "p.toml", edit({18: 'hidden = [32, 0, "8"]'}), [
        (18, "model.hidden[1]", "must be >= 1, got 0"),
        (18, "model.hidden[2]", "must be an integer, got string '8'"),
    ]),
    ("mlp-without-hidden", "p.toml", edit({18: "# hidden = ?"}), [
        (14, "model.hidden", "is required"),
    ]),
    ("logreg-with-hidden", "p.toml", edit({15: 'kind = "logreg"'}), [
        (18, "model.hidden", "unknown key for model kind 'logreg'"),
    ]),
    ("40-gb-model", "p.toml", edit({18: "hidden = [100000, 100000]"}), [
        (14, "model", "10,003,400,002 parameters (40.0 GB as float32), more than the consortium default limit"),
    ]),
    ("limit-above-hard-cap", "p.toml", edit(append=("", "[limits]", "max_parameters = 1000000000")), [
        (29, "limits.max_parameters", "must be <= 250000000"),
    ]),
    ("model-above-declared-limit", "p.toml", edit({18: "hidden = [1000]"},
                                                   append=("", "[limits]", "max_parameters = 1000")), [
        (14, "model", "33,002 parameters (132.0 kB as float32), more than the limit this plan declares"),
    ]),
    ("duplicate-datasets", "p.toml", edit({3: 'datasets = ["hospital-a", "hospital-a"]'}), [
        (3, "datasets[1]", "'hospital-a' is listed twice"),
        (5, "min_participants", "is 2 but only 1 target dataset(s) are listed"),
    ]),
    ("names", "p.toml", edit({1: 'name = "my plan!"', 3: "datasets = []"}), [
        (1, "name", "'my plan!' is not allowed here (letters, digits"),
        (3, "datasets", "must not be empty"),
    ]),
    ("auc-multiclass", "p.toml", edit({10: 'metric = "auc"', 17: "n_classes = 3"}), [
        (10, "metric", "'auc' is only defined for binary models"),
    ]),
    ("unknown-strategy", "p.toml", edit({26: 'name = "scaffold"'}), [
        (26, "strategy.name", "unknown value 'scaffold' (expected one of: fedavg, fedprox, fedadam, fedyogi, median, trimmed_mean, krum, multikrum)"),
    ]),
    ("fedprox-and-adam", "p.toml", edit({21: 'name = "adam"', 26: 'name = "fedprox"'}), [
        (23, "optimizer.momentum", "unknown key for optimizer 'adam'"),
        (25, "strategy.mu", "is required"),
    ]),
    ("fedadam-params", "p.toml", edit({26: 'name = "fedadam"'}, append=("server_lr = 0", "beta2 = 1.0", "eta = 2")), [
        (27, "strategy.server_lr", "must be > 0"),
        (28, "strategy.beta2", "must be < 1"),
        (29, "strategy.eta", "unknown key for strategy 'fedadam' (allowed here: name, server_lr, beta1, beta2, tau)"),
    ]),
    ("standardization", "p.toml", edit(append=("", "[preprocessing]", 'standardize = "plan"', "mean = [0.0, 1.0]",
                                               "std = [1.0, 1.0]")), [
        (30, "preprocessing.mean", "has 2 values but the model takes 30 features"),
        (31, "preprocessing.std", "has 2 values but the model takes 30 features"),
    ]),
    ("federated-with-values", "p.toml", edit(append=("", "[preprocessing]", 'standardize = "federated"',
                                                     "mean = [0.0]")), [
        (30, "preprocessing.mean", "unknown key"),
    ]),
    ("seed-and-version", "p.toml", edit({9: "seed = -1", 12: "version = 1"}), [
        (9, "seed", "must be >= 0"),
        (12, "version", "unsupported plan version 1"),
    ]),
    ("auditors-and-extra-table", "p.toml", edit({12: 'auditors = ["0x1234"]'}, append=("", "[privacy]", "epsilon = 1.0", "", "[extra]")), [
        (12, "auditors[0]", "'0x1234' is not allowed here (0x and 64 hex digits"),
        (29, "privacy.epsilon", 'is set but privacy.mode is "none"'),
        (31, "extra", "unknown key (allowed here:"),
    ]),
    ("cnn-too-small", "p.toml", edit({15: 'kind = "cnn"', 16: "input_shape = [1, 2, 2]", 18: "conv_channels = [4, 4]"}), [
        (16, "model.input_shape", "2x2 is too small for 2 conv+pool stages"),
    ]),
    ("json", "p.json", JSON_PLAN, [
        (2, "name", "is not allowed here"),
        (6, "min_participants", "is 2 but only 1 target dataset(s) are listed"),
        (11, "model.in_features", "must be >= 1, got 0"),
        (13, "strategy.mu", "must be a number, got string 'small'"),
    ]),
    ("toml-syntax", "p.toml", edit({22: "lr = = 0.05"}), [
        (22, "<plan>", "invalid TOML plan"),
    ]),
]


@pytest.mark.parametrize("case", BROKEN, ids=[c[0] for c in BROKEN])
def test_validate_prints_every_problem_with_its_line(tmp_path, case):
    _id, name, text, expected = case
    path = tmp_path / name
    path.write_text(text)
    code, out, err = cli("plan", "validate", path)
    assert code == 1
    assert "Traceback" not in out + err
    lines = out.splitlines()
    assert len(lines) == len(expected), out
    for line, (n, field, fragment) in zip(lines, expected):
        m = PROBLEM.match(line)
        assert m, line
        assert (m["file"], int(m["line"]), m["field"]) == (str(path), n, field), line
        assert fragment in m["msg"], line
    assert f"{len(expected)} problem(s)" in err


def test_there_are_twenty_broken_plans_or_more():
    assert len(BROKEN) >= 20 and len({c[0] for c in BROKEN}) == len(BROKEN)
    assert len({c[2] for c in BROKEN}) == len(BROKEN)  # all different


def test_validate_accepts_a_good_plan_and_prints_its_hash(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(edit())
    code, out, _err = cli("plan", "validate", path)
    assert code == 0
    assert f"sha256 {load_plan(path).sha256}" in out and "valid plan 'bc-demo'" in out
    assert "mlp model of 1,058 parameters" in out
    code, _out, err = cli("plan", "validate", tmp_path / "missing.toml")
    assert code == 1 and "cannot read plan" in err


def test_validate_never_touches_the_chain(tmp_path):
    """The real console script, with a network home that does not exist and
    no chain anywhere: validation works (a command that connected would fail)."""
    path = tmp_path / "ok.toml"
    path.write_text(edit())
    bad = tmp_path / "bad.toml"
    bad.write_text(edit({4: "rounds = 0"}))
    env = dict(os.environ, FEDCHAIN_HOME=str(tmp_path / "no-network"))
    ok = subprocess.run([str(Path(sys.executable).parent / "fedchain"), "plan", "validate", str(path)], env=env,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    fail = subprocess.run([str(Path(sys.executable).parent / "fedchain"), "plan", "validate", str(bad)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert fail.returncode == 1 and f"{bad}:4: plan field 'rounds': must be >= 1" in fail.stdout
    assert not (tmp_path / "no-network").exists()


@pytest.mark.parametrize("kind", TEMPLATE_KINDS)
def test_init_templates_validate_as_written(tmp_path, kind):
    path = tmp_path / f"{kind}.toml"
    code, _out, err = cli("plan", "init", "--model", kind, "-o", path)
    assert code == 0 and "wrote" in err
    text = path.read_text()
    assert text == template(kind)
    plan = load_plan(path)
    assert plan.model.kind == kind
    # every top-level key and table is in the template, each with a comment above it
    for key in PLAN_JSON_SCHEMA["properties"]:
        assert re.search(rf"^(\[{key}\]|{key} = )", text, re.M), key
    for match in re.finditer(r"^(\w+) = ", text, re.M):
        above = text[: match.start()].rstrip("\n").splitlines()[-1]
        assert above.startswith("#"), match.group(1)
    assert cli("plan", "validate", path)[0] == 0
    # printed without -o; an existing file is kept unless --force
    code, out, _ = cli("plan", "init", "--model", kind)
    assert code == 0 and out == text
    path.write_text("mine")
    code, _, err = cli("plan", "init", "--model", kind, "-o", path)
    assert code == 1 and "already exists" in err and path.read_text() == "mine"
    assert cli("plan", "init", "--model", kind, "-o", path, "--force")[0] == 0 and path.read_text() == text


def test_init_refuses_an_unknown_model_kind(tmp_path):
    code, _out, err = cli("plan", "init", "--model", "transformer", "-o", tmp_path / "p.toml")
    assert code == 1 and "unknown model kind 'transformer'" in err
    assert not (tmp_path / "p.toml").exists()


def test_show_says_what_members_vote_on(tmp_path):
    path = tmp_path / "p.toml"
    auditor = "0x" + "ab" * 32
    path.write_text(edit({12: f'auditors = ["{auditor}"]', 18: "hidden = [6000, 3000]", 26: 'name = "fedadam"'},
                         append=("server_lr = 0.3", "", "[limits]", "max_parameters = 30000000")))
    code, out, err = cli("plan", "show", path)
    assert code == 0, err
    topics = dict(line.split(None, 1) for line in out.splitlines())
    plan = load_plan(path)
    assert set(topics) == {"plan", "purpose", "model", "data", "rounds", "training", "strategy", "defences",
                           "evaluation", "contribution", "privacy", "seed", "sha256"}
    assert topics["defences"] == "none besides the strategy itself"
    assert "fully connected network, 30 inputs, hidden layers 6000, 3000, 2 classes" in topics["model"]
    assert "18,195,002 parameters (72.8 MB as float32)" in topics["model"]
    assert "RAISES the model limit to 30,000,000 parameters (consortium default 20,000,000)" in topics["model"]
    assert "3 dataset(s): hospital-a, hospital-b, hospital-c" in topics["data"] and "20%" in topics["data"]
    assert "5 round(s)" in topics["rounds"] and "at least 2 member(s)" in topics["rounds"]
    assert "2 epoch(s)" in topics["training"] and "batches of 16" in topics["training"] and "momentum 0.9" in topics["training"]
    assert "FedAdam" in topics["strategy"] and "server_lr = 0.3, beta1 = 0.9, beta2 = 0.99, tau = 0.001" in topics["strategy"]
    assert auditor in topics["privacy"] and "1 auditor key(s)" in topics["privacy"]
    assert topics["sha256"].startswith(plan.sha256)
    # a broken plan is refused the same way as by validate
    bad = tmp_path / "bad.toml"
    bad.write_text(edit({4: "rounds = 0"}))
    code, _out, err = cli("plan", "show", bad)
    assert code == 1 and "plan field 'rounds'" in err


def test_reference_page_is_generated_from_the_validator():
    committed = (REPO / "fedchain" / "docs" / "plan.md").read_text()
    assert committed == reference_markdown(), "regenerate: fedchain plan reference -o fedchain/docs/plan.md"
    # it covers every field of every table variant
    for node in PLAN_JSON_SCHEMA["$defs"].values():
        for key in node.get("properties", {}):
            assert f"| `{key}` |" in committed, key
    for key in PLAN_JSON_SCHEMA["properties"]:
        assert f"`{key}`" in committed or f"[{key}]" in committed
    assert "fedchain/docs/plan.md" in (REPO / "README.md").read_text()
    code, out, _ = cli("plan", "reference")
    assert code == 0 and out == committed


def test_schema_command_prints_the_json_schema():
    code, out, _ = cli("plan", "schema")
    assert code == 0 and json.loads(out) == PLAN_JSON_SCHEMA
