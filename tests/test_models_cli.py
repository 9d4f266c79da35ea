"""From a finished round to a usable model, through the CLI: moments, standardize, model list/pull/evaluate/card.

* Offline commands (``dataset moments``, ``plan standardize``, ``model evaluate --plan``) run in-process
  on the demo data; their numbers are checked against pooling the rows / ``node.train.evaluate``.
* ``model list/pull/evaluate --proposal/card`` run against a consortium trained by the ``Simulation`` on a
  real anvil with the embedded store (``network.json`` written as 'chain up' would), including a
  coordinator that records an aggregate hash its CID does not have, or an oversized aggregate.
* The README journey ("Bring your own data") runs end to end on anvil + js-ipfs: keystores, founders
  file, chain up, datasets, moments -> standardize -> plan validate -> submit, votes, the nodes and the
  coordinator as separate processes, then ``model list/pull/evaluate/card``. Every ``fedchain`` command
  and TOML file of that README section is one this test runs.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import signal
import textwrap
import subprocess
import sys
import time
import tomllib
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fedchain.cli import main
from fedchain.content import pin_document
from fedchain.errors import ConfigError
from fedchain.identity import read_public
from fedchain.models import initial_state
from fedchain.modelcard import CARD_FORMAT, card_bytes, render_markdown
from fedchain.moments import MAX_MOMENTS_BYTES, MOMENTS_FORMAT, MomentsError, set_preprocessing
from fedchain.network import NetworkConfig
from fedchain.node.dataset import apply_preprocessing, load_dataset
from fedchain.node.train import evaluate
from fedchain.plan import load_plan, sha256_hex
from fedchain.plandoc import template
from fedchain.sample_data import demo_plan, make_demo_data
from fedchain.serialize import state_dict_to_bytes, state_dict_to_file

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("FEDCHAIN_HOME", raising=False)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def ok(self) -> "Result":
        assert self.code == 0, f"exit {self.code}:\n{self.out}\n{self.err}"
        return self

    def fails(self, *phrases: str) -> "Result":
        """Exit 1 with one 'error:' line holding every phrase, and no traceback."""
        text = self.out + self.err
        assert self.code == 1, f"expected exit 1, got {self.code}:\n{text}"
        assert "Traceback" not in text
        errors = [line for line in self.err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, text
        for p in phrases:
            assert p in errors[0], f"{p!r} not in {errors[0]!r}"
        return self


def cli(*args: object) -> Result:
    """``fedchain ARGS`` in-process, output captured."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in args])
    return Result(code, ANSI.sub("", out.getvalue()), ANSI.sub("", err.getvalue()))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Three hospitals' CSVs and schemas (non-IID breast-cancer slices) and the held-out test split."""
    return make_demo_data(tmp_path_factory.mktemp("demo"), n_hospitals=3, seed=11)


# ============================================================ moments -> standardize (offline)


def test_moments_then_standardize_equals_pooling_the_rows(demo, tmp_path):
    files = []
    for h in demo.hospitals:
        out = tmp_path / f"moments-{h.name}.json"
        r = cli("dataset", "moments", "--csv", h.csv_path, "--schema", h.schema_path, "-o", out).ok()
        assert f"{h.n_rows} rows" in r.err
        doc = json.loads(out.read_text())
        assert doc["format"] == MOMENTS_FORMAT and doc["n"] == h.n_rows
        assert set(doc) == {"format", "features", "n", "sums", "sums_sq"}  # aggregates only, no row
        files.append(out)
    printed = cli("plan", "standardize", *files).ok().out
    table = tomllib.loads(printed)["preprocessing"]
    pooled = torch.cat([load_dataset(h.csv_path, h.schema_path).features for h in demo.hospitals]).to(torch.float64)
    assert table["standardize"] == "plan"
    assert torch.allclose(torch.tensor(table["mean"], dtype=torch.float64), pooled.mean(0), rtol=1e-12, atol=1e-12)
    assert torch.allclose(torch.tensor(table["std"], dtype=torch.float64), pooled.std(0, unbiased=False),
                          rtol=1e-9, atol=1e-12)
    assert "mean_radius" in printed  # each value names its feature

    # --into: only [preprocessing] changes; the comments elsewhere stay; the plan validates.
    plan_file = tmp_path / "plan.toml"
    text = template("logreg").replace('datasets = ["hospital-a", "hospital-b", "hospital-c"]',
                                      "datasets = " + json.dumps([h.name for h in demo.hospitals]))
    plan_file.write_text(text)
    r = cli("plan", "standardize", *files, "--into", plan_file).ok()
    assert "pooled mean/std of 30 feature(s)" in r.err
    new = plan_file.read_text()
    before, after = tomllib.loads(text), tomllib.loads(new)
    assert after == {**before, "preprocessing": table}
    assert "# Bounds voted on with the plan." in new and "# The aggregation strategy." in new
    plan = load_plan(plan_file)
    assert list(plan.preprocessing.mean) == table["mean"]
    # Run again: the table is replaced, not duplicated.
    cli("plan", "standardize", *files, "--into", plan_file).ok()
    assert plan_file.read_text() == new


def test_standardize_refuses_what_would_skew_the_scaling(demo, tmp_path):
    a, b = demo.hospitals[0], demo.hospitals[1]
    fa, fb = tmp_path / "a.json", tmp_path / "b.json"
    cli("dataset", "moments", "--csv", a.csv_path, "--schema", a.schema_path, "-o", fa).ok()
    cli("dataset", "moments", "--csv", b.csv_path, "--schema", b.schema_path, "-o", fb).ok()
    # The same hospital counted twice (under another file name).
    shutil.copy(fa, tmp_path / "a-again.json")
    cli("plan", "standardize", fa, fb, tmp_path / "a-again.json").fails("same moments", "twice")
    # Another feature order (a schema with columns swapped).
    doc = json.loads(fb.read_text())
    doc["features"][0], doc["features"][1] = doc["features"][1], doc["features"][0]
    (tmp_path / "swapped.json").write_text(json.dumps(doc))
    cli("plan", "standardize", fa, tmp_path / "swapped.json").fails("feature 1 is", "same order")
    # Numbers no real data gives (sum of squares below sum^2 / n), a missing key, NaN, an extra key.
    bad = json.loads(fa.read_text())
    bad["sums_sq"][3] = 0.0
    (tmp_path / "forged.json").write_text(json.dumps(bad))
    cli("plan", "standardize", fa, tmp_path / "forged.json").fails("not the moments of real data")
    for name, text in {
        "short.json": json.dumps({**json.loads(fa.read_text()), "sums": [1.0]}),
        "nan.json": fa.read_text().replace('"n": ', '"n": NaN, "x": ', 1),
        "extra.json": json.dumps({**json.loads(fa.read_text()), "rows": [[1, 2]]}),
        "notjson.json": "hello",
    }.items():
        (tmp_path / name).write_text(text)
        cli("plan", "standardize", tmp_path / name).fails(name)
    # A huge file is refused without being read whole.
    huge = tmp_path / "huge.json"
    with huge.open("wb") as f:
        f.truncate(MAX_MOMENTS_BYTES + 10)
    cli("plan", "standardize", huge).fails("larger than")


def test_moments_refuses_tiny_datasets_and_never_half_writes(demo, tmp_path):
    h = demo.hospitals[0]
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("".join(h.csv_path.read_text().splitlines(keepends=True)[:4]))  # header + 3 rows
    out = tmp_path / "m.json"
    cli("dataset", "moments", "--csv", tiny, "--schema", h.schema_path, "-o", out).fails("3 row(s)", "fewer than 10")
    assert not out.exists()
    cli("dataset", "moments", "--csv", tiny, "--schema", h.schema_path, "-o", out, "--min-rows", "3").ok()
    assert json.loads(out.read_text())["n"] == 3
    cli("dataset", "moments", "--csv", h.csv_path, "--schema", h.schema_path, "-o", out).fails("already exists")
    assert json.loads(out.read_text())["n"] == 3  # untouched
    broken = tmp_path / "broken.csv"
    broken.write_text(h.csv_path.read_text().replace("benign", "maybe", 1))
    cli("dataset", "moments", "--csv", broken, "--schema", h.schema_path, "-o", tmp_path / "x.json").fails("row")
    assert not (tmp_path / "x.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.csv", "m.json", "tiny.csv"]


def test_standardize_into_leaves_an_invalid_result_unwritten(demo, tmp_path):
    h = demo.hospitals[0]
    m = tmp_path / "m.json"
    cli("dataset", "moments", "--csv", h.csv_path, "--schema", h.schema_path, "-o", m).ok()
    plan_file = tmp_path / "plan.toml"
    text = template("logreg").replace("in_features = 30", "in_features = 12")  # 30 moments, 12 inputs
    plan_file.write_text(text)
    r = cli("plan", "standardize", m, "--into", plan_file).fails("left unchanged")
    assert "preprocessing" in r.out  # the validator's problems, each with its line
    assert plan_file.read_text() == text
    json_plan = tmp_path / "plan.json"
    json_plan.write_text("{}")
    cli("plan", "standardize", m, "--into", json_plan).fails("TOML")


@pytest.mark.parametrize("layout", ["template", "no-table", "last-table", "inline", "dotted"])
def test_set_preprocessing_layouts(layout):
    table = '[preprocessing]\nstandardize = "plan"\nmean = [1.0, 2.0]\nstd = [1.0, 0.5]\n'
    base = template("logreg").replace("in_features = 30", "in_features = 2")
    start = base.index("[preprocessing]\n")
    block = base[start:base.index('standardize = "none"\n', start) + len('standardize = "none"\n')]
    if layout == "template":
        text = base
    elif layout == "no-table":
        text = base.replace(block, "")
    elif layout == "last-table":
        a = base.index("# Feature preprocessing.")
        b = base.index("# Bounds voted on")
        text = base[:a] + base[b:] + "\n" + base[a:b]
    elif layout == "inline":
        text = base.replace(block, "").replace(
            'purpose = "diagnosis"', 'purpose = "diagnosis"\npreprocessing = { standardize = "none" }')
    else:
        text = base.replace(block, "").replace(
            'purpose = "diagnosis"', 'purpose = "diagnosis"\npreprocessing.standardize = "none"')
    assert tomllib.loads(text)  # the starting point is valid TOML
    if layout in ("inline", "dotted"):
        with pytest.raises(MomentsError, match="not written as a \\[preprocessing\\] table"):
            set_preprocessing(text, table)
        return
    new = set_preprocessing(text, table)
    assert tomllib.loads(new) == {**tomllib.loads(text), "preprocessing": tomllib.loads(table)["preprocessing"]}


# ============================================================ model evaluate (offline, --plan)


def _plan_file(demo, tmp_path) -> tuple[Path, object]:
    plan = demo_plan(demo.hospitals, seed=11)
    path = tmp_path / "plan.json"
    path.write_bytes(plan.to_canonical_bytes())
    return path, plan


def test_evaluate_matches_the_nodes_numbers(demo, tmp_path):
    plan_path, plan = _plan_file(demo, tmp_path)
    state = {k: v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(3))
             for k, v in initial_state(plan.model, plan.seed).items()}
    model_file = tmp_path / "model.safetensors"
    state_dict_to_file(state, model_file)
    test = demo.test
    r = cli("model", "evaluate", model_file, "--csv", test.csv_path, "--schema", test.schema_path,
            "--plan", plan_path, "--json").ok()
    got = json.loads(r.out)
    data = load_dataset(test.csv_path, test.schema_path)
    want = evaluate(state, plan, data)
    assert got["n_rows"] == data.n_rows
    assert got["accuracy"] == pytest.approx(want["accuracy"], abs=0) and got["loss"] == pytest.approx(want["loss"], abs=0)
    assert got["auc"] == pytest.approx(want["auc"], abs=0)
    cm = got["confusion_matrix"]
    assert sum(map(sum, cm)) == data.n_rows
    assert [sum(row) for row in cm] == [int((data.labels == i).sum()) for i in range(2)]  # rows: true class
    assert (cm[0][0] + cm[1][1]) / data.n_rows == pytest.approx(got["accuracy"])
    logits = torch.nn.functional.linear(apply_preprocessing(plan, data.features), state["linear.weight"],
                                        state["linear.bias"])
    assert cm[0][1] == int(((data.labels == 0) & (logits.argmax(1) == 1)).sum())  # the preprocessing was applied
    text = cli("model", "evaluate", model_file, "--csv", test.csv_path, "--schema", test.schema_path,
               "--plan", plan_path).ok().out
    assert "confusion matrix" in text and "ROC AUC" in text and "benign" in text and "malignant" in text


def test_evaluate_refuses_files_that_are_not_the_plans_model(demo, tmp_path):
    plan_path, plan = _plan_file(demo, tmp_path)
    test = demo.test
    args = ["--csv", test.csv_path, "--schema", test.schema_path, "--plan", plan_path]
    wrong = tmp_path / "wrong.safetensors"
    state_dict_to_file({"linear.weight": torch.zeros(2, 29), "linear.bias": torch.zeros(2)}, wrong)
    cli("model", "evaluate", wrong, *args).fails("not a model of this plan", "WRONG_SHAPE")
    nan = tmp_path / "nan.safetensors"
    state = initial_state(plan.model, plan.seed)
    state["linear.bias"][0] = float("nan")
    state_dict_to_file(state, nan)
    cli("model", "evaluate", nan, *args).fails("NOT_FINITE")
    pickle = tmp_path / "model.pt"
    torch.save(initial_state(plan.model, plan.seed), pickle)  # a pickle is never loaded
    cli("model", "evaluate", pickle, *args).fails("not a model of this plan")
    huge = tmp_path / "huge.safetensors"
    with huge.open("wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB that must not be read
    cli("model", "evaluate", huge, *args).fails("TOO_LARGE")
    cli("model", "evaluate", tmp_path / "missing.safetensors", *args).fails("cannot read")
    ok = tmp_path / "ok.safetensors"
    state_dict_to_file(initial_state(plan.model, plan.seed), ok)
    other_schema = tmp_path / "three-classes.schema.json"
    s = json.loads(test.schema_path.read_text())
    s["label"]["values"] = ["benign", "malignant", "unknown"]
    other_schema.write_text(json.dumps(s))
    cli("model", "evaluate", ok, "--csv", test.csv_path, "--schema", other_schema, "--plan", plan_path).fails(
        "3 label values", "2 classes")
    cli("model", "evaluate", ok, "--csv", test.csv_path, "--schema", test.schema_path).fails("--plan FILE or --proposal")


# ============================================================ model list / pull / evaluate / card on anvil


@pytest.fixture(scope="module")
def trained(tmp_path_factory, anvil_node):
    """A consortium trained for 2 rounds on anvil (Simulation) + a network folder the CLI reads."""
    from fedchain.cli.simulation import Simulation

    root = tmp_path_factory.mktemp("trained")
    sim = Simulation.create(root / "sim", hospitals=3, seed=11, chain_url=anvil_node.url, fsync=False)
    sim.register_datasets()
    plan = sim.plan(demo_plan(sim.data.hospitals, seed=11), rounds=3, min_participants=2)
    pid = sim.approve(plan)
    nodes, coord = sim.nodes(), sim.coordinator()
    rounds = [sim.run_round(pid, r, nodes, coord) for r in (1, 2)]
    home = root / "home"
    home.mkdir()
    sim.deployment.save(home / "deployment.json")
    NetworkConfig(chain_url=anvil_node.url, deployment_file=str(home / "deployment.json"),
                  store=f"local:{root / 'sim' / 'store'}").save(home)
    return sim, pid, plan, rounds, home


def test_model_list_and_pull(trained, tmp_path):
    sim, pid, plan, rounds, home = trained
    listing = json.loads(cli("model", "list", "--json", "--home", home).ok().out)
    assert [(m["proposal"], m["round"], m["last"]) for m in listing] == [(pid, 1, False), (pid, 2, True)]
    assert [m["aggregate_cid"] for m in listing] == [r.result.aggregate_cid for r in rounds]
    assert listing[1]["validation_metric"] == pytest.approx(rounds[1].validation_metric, abs=1e-6)
    assert listing[0]["released"] is False and listing[0]["withdrawn"] == []
    assert listing[0]["strategy"] == "fedavg" and listing[0]["metric"] == "accuracy"
    table = cli("model", "list", "--home", home).ok().out
    assert "2 of 3 (last)" in table and "validation accuracy" in table and "release vote" in table

    out = tmp_path / "model.safetensors"
    r = cli("model", "pull", pid, "-o", out, "--home", home).ok()
    assert "round 2 of 3" in r.out and "matches the chain" in r.out
    info = sim.fed().rounds.round_info(pid, 2)
    assert sha256_hex(out.read_bytes()) == "0x" + bytes(info.aggregate_sha256).hex()
    cli("model", "pull", pid, "-o", out, "--round", 1, "--home", home).fails("already exists")
    cli("model", "pull", pid, "-o", out, "--round", 1, "--force", "--home", home).ok()
    assert sha256_hex(out.read_bytes()) == "0x" + bytes(sim.fed().rounds.round_info(pid, 1).aggregate_sha256).hex()
    cli("model", "pull", pid, "-o", tmp_path / "r3", "--round", 3, "--home", home).fails(
        "round 3 of proposal", "not been opened", "closed rounds: 1, 2")
    cli("model", "pull", 99, "-o", tmp_path / "x", "--home", home).fails("no proposal 99")
    cli("model", "pull", pid, "-o", tmp_path / "nowhere" / "m", "--home", home).fails("does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]

    # evaluate --proposal: the plan from the chain, the file recognised as a recorded aggregate.
    test = sim.data.test
    r = cli("model", "evaluate", out, "--csv", test.csv_path, "--schema", test.schema_path, "--proposal", pid,
            "--home", home).ok()
    assert "the aggregate of round 1 of proposal" in r.out
    swapped = tmp_path / "swapped.schema.json"
    s = json.loads(test.schema_path.read_text())
    s["features"][0], s["features"][1] = s["features"][1], s["features"][0]
    swapped.write_text(json.dumps(s))
    cli("model", "evaluate", out, "--csv", test.csv_path, "--schema", swapped, "--proposal", pid,
        "--home", home).fails("features differ", "order")


def test_member_scores_accumulate_over_the_closed_rounds(trained):
    """'fedchain member scores': each member's shares summed over the rounds, from the hash-checked documents."""
    from fedchain.modelcard import SCORE_MEANING

    sim, pid, plan, rounds, home = trained
    out = " ".join(cli("member", "scores", "--home", home).ok().out.replace("│", " ").split())
    assert "contribution scores over 2 closed round(s)" in out
    assert SCORE_MEANING in out and f"proposal {pid}: similarity" in out
    for m in sim.members:
        total = sum(r.result.scores.get(m.address.lower(), 0.0) for r in rounds)
        assert f"{m.address.lower()} {total:.3f} 2 {total / 2:.3f} 0 0" in out, (m.name, total)
    assert "not counted" not in out
    only = " ".join(cli("member", "scores", "--proposal", 99, "--home", home).ok().out.split())
    assert "over 0 closed round(s)" in only


def test_pull_refuses_an_aggregate_the_chain_does_not_vouch_for(trained, tmp_path, anvil_node):
    """A coordinator closes rounds with a hash its CID does not have, or with an oversized blob: nothing is written."""
    sim, _pid, _plan, _rounds, home = trained
    # one target: the chain lets a round close before its deadline only once every target committed
    plan = sim.plan(demo_plan(sim.data.hospitals, seed=12), rounds=3, min_participants=1, name="forged",
                    datasets=[sim.names[0]])
    pid = sim.approve(plan)
    ops = sim.fed(sim.ops)
    good = state_dict_to_bytes(initial_state(plan.model, plan.seed))
    real = pin_document(sim.store, good)
    huge = pin_document(sim.store, b"\0" * (len(good) * 50))
    junk = pin_document(sim.store, b"\1" * len(good))  # the right size, not a model
    forgeries = [
        (real.cid, "ab" * 32, "does not match"),  # the sha256 on chain is not the CID's
        (huge.cid, huge.sha256, "more than the limit"),  # bigger than the plan's model
        (junk.cid, junk.sha256, "not a model of its plan"),
    ]
    cli("model", "pull", pid, "-o", tmp_path / "none", "--home", home).fails(
        f"proposal {pid} has no trained model yet", "no round opened yet")
    assert f"no trained models yet: no round has closed for proposal {pid}" in cli(
        "model", "list", "--proposal", pid, "--home", home).ok().out
    member = sim.fed(sim.members[0])
    for r, (cid, sha, _why) in enumerate(forgeries, start=1):
        ops.rounds.open_round(pid, r)
        member.rounds.commit_update(pid, r, sim.names[0], real.cid, real.sha256, 10)  # what it holds is moot here
        # the others sit out: the round closes at its deadline (the chain refuses an earlier close)
        sim.chain.mine(max(0, ops.rounds.round_info(pid, r).deadline - sim.chain.block_number + 1))
        ops.rounds.close_round(pid, r, cid, sha, real.cid, real.sha256)
    for r, (_cid, _sha, why) in enumerate(forgeries, start=1):
        out = tmp_path / f"r{r}.safetensors"
        res = cli("model", "pull", pid, "--round", r, "-o", out, "--home", home)
        res.fails(f"the aggregate of round {r} of proposal {pid}", why)
        assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_model_card(trained, tmp_path):
    sim, pid, plan, rounds, home = trained
    out, md = tmp_path / "card.json", tmp_path / "card.md"
    r = cli("model", "card", pid, "-o", out, "--markdown", md, "--home", home).ok()
    card = json.loads(out.read_text())
    assert out.read_bytes() == card_bytes(card)  # canonical bytes on disk
    assert f"sha256 {sha256_hex(out.read_bytes())}" in r.err and "card pinned:" in r.err
    cid = re.search(r"card pinned: (\S+)", r.err).group(1)
    buf = io.BytesIO()
    sim.store.get_to(cid, buf)
    assert buf.getvalue() == out.read_bytes()
    assert card["format"] == CARD_FORMAT and card["model"]["round"] == 2 and card["model"]["proposal"] == pid
    assert card["model"]["aggregate_cid"] == rounds[1].result.aggregate_cid
    assert card["audit"]["status"] == "not audited" and card["release"]["released"] is None
    assert card["privacy"]["differential_privacy"] == "none" and card["privacy"]["secure_aggregation"] == "none"
    assert card["training"]["strategy"]["name"] == "fedavg" and card["training"]["rounds_closed"] == 2
    assert sorted(d["name"] for d in card["datasets"]) == sorted(sim.names)
    assert all(d["rows"] == sim.datasets[d["name"]].n_rows and d["contributed_rounds"] == [1, 2]
               for d in card["datasets"])
    for rnd in ("1", "2"):  # a round's scores are shares of its samples
        assert sum(c["scores"][rnd] for c in card["contributors"]) == pytest.approx(1.0)
    per = {h["dataset"]: h for h in card["metrics"]["per_hospital"]}
    chain_evals = sim.fed().rounds.evaluations(pid, 2)
    assert len(per) == len(chain_evals) == 3
    weighted = sum(h["value"] * h["samples"] for h in per.values()) / sum(h["samples"] for h in per.values())
    assert card["metrics"]["weighted_mean"] == pytest.approx(weighted, abs=1e-5)
    assert md.read_text() == r.out and "Not audited" in r.out and "validation accuracy" in r.out
    # Deterministic: the same chain state gives the same bytes.
    again = cli("model", "card", pid, "--no-pin", "-o", tmp_path / "again.json", "--home", home).ok()
    assert (tmp_path / "again.json").read_bytes() == out.read_bytes() and "not pinned" in again.err
    # Round 1, audited by the plan's auditor: every round VERIFIED.
    r = cli("model", "card", pid, "--round", 1, "--auditor-dev", len(sim.members) + 1, "--no-pin",
            "-o", tmp_path / "r1.json", "--home", home).ok()
    audited = json.loads((tmp_path / "r1.json").read_text())
    assert audited["model"]["round"] == 1 and audited["audit"]["status"] == "replayed"
    assert [(v["round"], v["verdict"]) for v in audited["audit"]["rounds"]] == [(1, "VERIFIED")]
    assert "1 of 1 round(s) VERIFIED" in r.out
    # A key the plan does not name cannot audit; nothing is written.
    cli("model", "card", pid, "--auditor-dev", 7, "-o", tmp_path / "no.json", "--home", home).fails(
        "not an auditor of proposal")
    assert not (tmp_path / "no.json").exists()
    cli("model", "card", pid, "-o", out, "--home", home).fails("already exists")


def test_release_by_vote_then_withdrawal(trained, tmp_path):
    """Release through the CLI (the card checked against the chain), pull --released, then a revocation marks.

    Runs after the other tests of the trained consortium: it revokes a dataset.
    """
    sim, pid, plan, rounds, home = trained
    h = ("--home", home)
    period = sim.fed().voting_period()
    cli("model", "pull", pid, "-o", tmp_path / "none", "--released", *h).fails("has not released")

    # A card that lies about the model (another aggregate's sha256) is refused before anything is sent ...
    out = tmp_path / "card.json"
    cli("model", "card", pid, "--no-pin", "-o", out, *h).ok()
    lying = json.loads(out.read_text())
    lying["model"]["aggregate_sha256"] = "0x" + "ab" * 32
    (tmp_path / "lying.json").write_bytes(card_bytes(lying))
    cli("model", "release", "propose", pid, "--card", tmp_path / "lying.json", "--dev", 0, *h).fails(
        "does not describe the model", "model.aggregate_sha256")
    # ... and a member who put one on chain directly gets no honest YES: the vote command checks the card.
    pinned = pin_document(sim.store, card_bytes(lying))
    bad = sim.fed(sim.members[1]).releases.propose_release(pid, 2, pinned.cid, pinned.sha256).value
    cli("model", "release", "vote", bad, "yes", "--dev", 0, *h).fails("does not describe the model")
    cli("model", "release", "vote", bad, "no", "--dev", 0, *h).ok()

    r = cli("model", "release", "propose", pid, "--dev", 0, *h).ok()  # the card built from the chain, pinned
    rid = int(re.search(r"release (\d+) proposed: round 2 of proposal", r.out).group(1))
    for dev in (0, 1, 2):
        cli("model", "release", "vote", rid, "yes", "--dev", dev, *h).ok()
    cli("model", "release", "finalize", rid, "--dev", 0, *h).fails("voting period is still running")
    sim.chain.mine(period)
    assert "finalized: released" in cli("model", "release", "finalize", rid, "--dev", 0, *h).ok().out
    listed = json.loads(cli("model", "release", "list", "--json", *h).ok().out)
    assert [(x["release"], x["state"]) for x in listed] == [(bad, "voting"), (rid, "released")]
    models = json.loads(cli("model", "list", "--proposal", pid, "--json", *h).ok().out)
    assert [(m["round"], m["released"]) for m in models] == [(1, False), (2, True)]
    cli("model", "release", "propose", pid, "--dev", 1, *h).fails("already released")

    got = tmp_path / "released.safetensors"
    r = cli("model", "pull", pid, "-o", got, "--released", *h).ok()
    assert f"released by vote {rid}" in r.out and "round 2 of 3" in r.out
    assert sha256_hex(got.read_bytes()) == "0x" + bytes(sim.fed().rounds.round_info(pid, 2).aggregate_sha256).hex()
    cli("model", "pull", pid, "-o", tmp_path / "r1", "--round", 1, "--released", *h).fails("has not released")

    # The second hospital withdraws consent: both models (its updates are in rounds 1 and 2) are marked.
    name = sim.names[1]
    cli("model", "release", "mark", name, "--dev", 5, *h).fails("is not revoked")
    r = cli("dataset", "revoke", name, "--yes", "--dev", 1, *h).ok()
    assert r.out.count("marked withdrawn") == 2
    models = json.loads(cli("model", "list", "--proposal", pid, "--json", *h).ok().out)
    assert [(m["round"], m["withdrawn"]) for m in models] == [(1, [name]), (2, [name])]
    assert "WITHDRAWN" in cli("model", "list", *h).ok().out
    cli("model", "pull", pid, "-o", tmp_path / "gone", "--released", *h).fails("marked withdrawn", name)
    assert not (tmp_path / "gone").exists()
    cli("model", "release", "propose", pid, "--round", 1, "--dev", 1, *h).fails("lineage was withdrawn")
    assert "no model to mark" in cli("model", "release", "mark", name, "--dev", 5, *h).ok().out  # idempotent


def test_card_markdown_escapes_member_text():
    hostile = "<img src=x onerror=alert(1)> [click](javascript:alert(1)) | `x`"
    who = {"address": "0x" + "ab" * 20, "name": hostile}
    card = {
        "format": CARD_FORMAT, "network": {"chain_id": 1, "rounds_contract": "0x" + "11" * 20},
        "model": {"proposal": 1, "round": 1, "aggregate_cid": "Qm`x", "aggregate_sha256": "0x00", "closed_block": 5,
                  "kind": "logreg", "parameters": 62, "in_features": 30, "n_classes": 2, "last_closed_round": True},
        "release": {"released": None, "note": "n"},
        "proposal": {"id": 1, "name": hostile, "purpose": hostile, "proposer": who, "plan_cid": "Qm", "plan_sha256": "0x",
                     "state": "Approved", "votes": {"yes": 1, "no": 0, "abstain": 0, "eligible": 1}},
        "training": {"rounds_approved": 1, "rounds_closed": 1, "rounds_failed": 0,
                     "strategy": {"name": "fedavg", "params": {}}, "optimizer": {"name": "sgd", "lr": 0.1},
                     "local_epochs": 1, "batch_size": 8, "validation_fraction": 0.2, "metric": "accuracy",
                     "preprocessing": "none", "seed": 1, "approved": True},
        "datasets": [{"name": hostile, "owner": who, "rows": 10, "description": hostile, "schema_hash": "0x",
                      "contributed_rounds": [1], "policy_max_epsilon": None, "note": ""}],
        "score_meaning": "s", "contributors": [{"member": who, "dataset": hostile, "samples": {"1": 8},
                                                  "scores": {"1": 1.0}, "mean_score": 1.0}],
        "rounds": [{"round": 1, "state": "closed", "participants": 1, "aggregate_cid": "Qm",
                    "validation_metric": 0.5, "rejected": [{"address": who["address"], "name": hostile,
                                                            "reason": hostile}]}],
        "metrics": {"name": "accuracy", "split": "validation", "round": 1, "split_note": "n", "weighted_mean": 0.5,
                    "per_hospital": [{"member": who, "dataset": hostile, "value": 0.5, "samples": 2}]},
        "privacy": {"differential_privacy": "none", "secure_aggregation": "none", "summary": "s"},
        "audit": {"status": "replayed", "auditor": "0x", "summary": "s",
                  "rounds": [{"round": 1, "verdict": "DISCREPANCY", "problems": [hostile]}], "governance_problems": []},
    }
    text = render_markdown(card)
    assert "<img" not in text and "&lt;img" in text
    assert "\\[click\\](javascript" in text and not re.search(r"(?<!\\)\]\(javascript", text)  # no link
    tables: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("|"):
            if not tables or tables[-1] is None:
                tables.append([])
            tables[-1].append(line)
        elif tables and tables[-1] is not None:
            tables.append(None)
    for table in filter(None, tables):  # a hostile '|' never adds a cell: every row has the header's cells
        widths = {len(re.split(r"(?<!\\)\|", row)) for row in table}
        assert len(widths) == 1, table
    with pytest.raises(ConfigError):
        card_bytes({**card, "format": "other"})


# ============================================================ the README journey


SECTION = "## Bring your own data"
HOSPITALS = [  # (short, member name); St Mary's commands are the README's
    ("st-mary", "St Mary Hospital"), ("northside", "Northside Clinic"), ("lakeview", "Lakeview Hospital"),
]


def readme_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return text[start:end]


def readme_blocks(lang: str) -> list[str]:
    return [textwrap.dedent(b) for b in re.findall(rf"```{lang}\n(.*?)```", readme_section(), re.S)]


def tokens(line: str) -> tuple[str, ...]:
    """A command line as the shell reads it (quotes resolved, a trailing # comment dropped)."""
    return tuple(shlex.split(line, comments=True))


def readme_commands() -> list[str]:
    """Every ``fedchain`` command line in the section's bash blocks (continuation lines joined)."""
    out = []
    for block in readme_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("fedchain "):
                out.append(" ".join(line.split()))
    return out


def rc_exact(line: str) -> str:
    """The README command that is exactly ``line`` (comments included, spaces collapsed)."""
    assert line in readme_commands(), f"no README command {line!r}"
    return line


def rc(prefix: str) -> str:
    """The one README command that starts with ``prefix``."""
    found = [c for c in readme_commands() if c.startswith(prefix)]
    assert len(found) == 1, f"README commands starting with {prefix!r}: {found}"
    return found[0]


def _for(cmd: str, short: str, name: str) -> str:
    """St Mary's README line as another hospital writes it."""
    if short == "st-mary":
        return cmd
    return (cmd.replace("st-mary", short).replace("St Mary Hospital", name)
            .replace('"2019-2024 biopsies"', f'"{name} biopsies"'))


class Journey:
    """Runs command lines as written in the README (cwd = the journey folder) and remembers them."""

    def __init__(self, root: Path) -> None:
        self.root, self.subst, self.ran = root, {}, []

    def argv(self, line: str) -> tuple[list[str], str | None]:
        text = line
        for k, v in self.subst.items():
            text = text.replace(k, v)
        target = None
        if " > " in text:
            text, target = (part.strip() for part in text.split(" > "))
        argv = shlex.split(text, comments=True)
        assert argv[0] == "fedchain", line
        return argv[1:], target

    def run(self, line: str, *extra: str) -> Result:
        self.ran.append(line)
        argv, target = self.argv(line)
        res = cli(*argv, *extra).ok()
        if target is not None:
            (self.root / target).write_text(res.out)
        return res

    def spawn(self, line: str, name: str) -> subprocess.Popen:
        """A long-running role as its own OS process (``python -m fedchain.cli``), output to NAME.log."""
        self.ran.append(line)
        argv, _ = self.argv(line)
        log = open(self.root / f"{name}.log", "wb")
        return subprocess.Popen([sys.executable, "-m", "fedchain.cli", *argv], cwd=self.root, stdout=log,
                                stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _wait(procs: dict[str, subprocess.Popen], root: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs.values()):
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {n}\n{(root / f'{n}.log').read_text()[-2000:]}" for n in procs)
            raise AssertionError(f"role processes did not finish in {timeout:.0f} s:\n{tails}")
        time.sleep(0.5)
    for name, p in procs.items():
        assert p.returncode == 0, f"{name} exited {p.returncode}:\n{(root / f'{name}.log').read_text()[-3000:]}"


@pytest.mark.slow
@pytest.mark.anvil
@pytest.mark.ipfsd
def test_bring_your_own_data_journey(tmp_path, monkeypatch, demo):
    from fedchain.contracts.anvil import AnvilError, find_anvil, free_port
    from fedchain.ipfs.kubo import KuboStore
    from fixtures_ipfs import require_jsipfs

    try:
        find_anvil()
    except AnvilError as exc:
        pytest.skip(str(exc))
    require_jsipfs()
    t0 = time.monotonic()
    root = tmp_path / "journey"
    (root / "keys").mkdir(parents=True)
    (root / "data").mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv("FEDCHAIN_PASSWORD", "journey password")
    for (short, _name), h in zip(HOSPITALS, demo.hospitals):
        shutil.copy(h.csv_path, root / "data" / f"{short}.csv")
        shutil.copy(h.schema_path, root / f"{short}.schema.json")
    shutil.copy(demo.test.csv_path, root / "data" / "st-mary-2025.csv")  # rows no hospital trained on
    j = Journey(root)
    procs: dict[str, subprocess.Popen] = {}
    try:
        # 2. identities: three hospitals, the coordinator's organisation, an audit office.
        for short, name in HOSPITALS:
            j.run(_for(rc("fedchain identity create keys/st-mary.json"), short, name))
        j.run('fedchain identity create keys/ops.json --name "Consortium Ops"')
        shown = json.loads(j.run(rc("fedchain identity show keys/st-mary.json --json")).out)
        assert shown == read_public(root / "keys" / "st-mary.json")
        j.run(rc("fedchain identity create keys/audit-office.json"))
        line = re.search(r'auditors = \["0x[0-9a-f]{64}"\]', j.run(rc("fedchain identity show keys/audit-office.json")).out)
        assert line and read_public(root / "keys" / "audit-office.json")["x25519"] in line.group(0)
        auditors_line = line.group(0)

        # 3. the founders file and the chain.
        j.run(rc("fedchain identity founders"))
        founders = json.loads((root / "founders.json").read_text())
        assert [f["name"] for f in founders] == [n for _s, n in HOSPITALS] + ["Consortium Ops"]
        ops = read_public(root / "keys" / "ops.json")["address"]
        j.subst['"$(jq -r .address keys/ops.json)"'] = ops
        j.run(rc("fedchain chain up"), "--port", str(free_port()))
        j.run(rc("fedchain ipfs up"))

        # 4. datasets.
        for short, name in HOSPITALS:
            j.run(_for(rc("fedchain dataset register st-mary-bc"), short, name))
        listed = j.run(rc("fedchain dataset list")).out
        assert all(f"{short}-bc" in listed for short, _ in HOSPITALS)

        # 6. the plan (edited as the README says), proposal, votes.
        j.run(rc("fedchain plan init"))
        plan_toml = root / "plan.toml"
        text = plan_toml.read_text()
        for old, new in [
            (r'^name = .*$', 'name = "bc-diagnosis"'),
            (r'^datasets = .*$', "datasets = " + json.dumps([f"{s}-bc" for s, _ in HOSPITALS])),
            (r'^auditors = \[\]$', auditors_line),
            (r"^rounds = .*$", "rounds = 2"),
            (r'^min_participants = .*$', "min_participants = 3"),
            (r'^in_features = .*$', "in_features = 30"),
            (r'^standardize = "none"$', 'standardize = "federated"'),  # 5. the statistics phase
        ]:
            text, n = re.subn(old, new, text, count=1, flags=re.M)
            assert n == 1, old
        plan_toml.write_text(text)
        assert "valid plan 'bc-diagnosis'" in j.run(rc("fedchain plan validate")).out
        assert "statistics phase" in j.run(rc("fedchain plan show")).out
        j.run(rc("fedchain proposal submit"))
        for short, name in HOSPITALS:
            j.run(_for(rc("fedchain proposal vote 1 yes"), short, name))
        j.run("fedchain proposal vote 1 yes --identity keys/ops.json")
        j.run(rc("fedchain chain mine 10 # DEV ONLY: end the voting"))
        assert "APPROVED" in j.run(rc("fedchain proposal finalize")).out.upper()

        # 7. nodes and coordinator, each its own process, configured with the README's TOML.
        hospital_toml, coordinator_toml = readme_blocks("toml")
        for short, name in HOSPITALS:
            cfg = "hospital.toml" if short == "st-mary" else f"hospital-{short}.toml"
            (root / cfg).write_text(_for(hospital_toml, short, name))
            tomllib.loads((root / cfg).read_text())
            procs[short] = j.spawn(rc("fedchain node run").replace("hospital.toml", cfg), short)
        (root / "coordinator.toml").write_text(coordinator_toml)
        procs["coordinator"] = j.spawn(rc("fedchain coordinator run"), "coordinator")
        launched_at = time.monotonic()
        _wait(procs, root, timeout=600)
        trained_at = time.monotonic()

        # 8. the model.
        logs = {n: (root / f"{n}.log").read_text() for n in procs}
        assert "published the pooled statistics of proposal 1: 3 hospital(s), 0 left out" in logs["coordinator"]
        assert all("committed the moments of" in logs[short] for short, _ in HOSPITALS)
        listing = j.run(rc_exact("fedchain model list")).out
        assert "2 of 2 (last)" in listing and "validation accuracy" in listing
        j.run(rc("fedchain model pull 1 -o"))
        records = json.loads(cli("model", "list", "--json").ok().out)
        last = records[-1]
        assert (last["round"], last["last"]) == (2, True) and last["evaluations"] == 3
        assert sha256_hex((root / "model.safetensors").read_bytes()) == last["aggregate_sha256"]
        ev = j.run(rc("fedchain model evaluate")).out
        assert "the aggregate of round 2 of proposal 1" in ev and "confusion matrix" in ev
        got = json.loads(cli(*j.argv(rc("fedchain model evaluate"))[0], "--json").ok().out)
        assert got["n_rows"] == demo.test.n_rows and got["accuracy"] > 0.85 and got["auc"] > 0.9
        res = j.run(rc("fedchain model card"))
        card = json.loads((root / "card.json").read_text())
        assert (root / "card.md").read_text() == res.out
        assert [(v["round"], v["verdict"]) for v in card["audit"]["rounds"]] == [(1, "VERIFIED"), (2, "VERIFIED")]
        assert card["audit"]["auditor"] == read_public(root / "keys" / "audit-office.json")["x25519"]
        assert {d["owner"]["name"] for d in card["datasets"]} == {n for _s, n in HOSPITALS}
        assert {c["member"]["name"] for c in card["contributors"]} == {n for _s, n in HOSPITALS}  # not ops
        assert card["model"]["aggregate_sha256"] == last["aggregate_sha256"]
        cid = re.search(r"card pinned: (\S+)", res.err).group(1)
        store_addr = NetworkConfig.load(root / ".fedchain").store
        assert store_addr.startswith("/ip4/")  # the js-ipfs daemon 'ipfs up' started
        with KuboStore(store_addr) as store:
            buf = io.BytesIO()
            store.get_to(cid, buf)
        assert buf.getvalue() == (root / "card.json").read_bytes()

        # 9. release by vote, then pull the released model.
        r = j.run(rc("fedchain model release propose"))
        assert "release 1 proposed: round 2 of proposal 1" in r.out
        for short, name in HOSPITALS:
            j.run(_for(rc("fedchain model release vote 1 yes"), short, name))
        j.run("fedchain model release vote 1 yes --identity keys/ops.json")
        j.run(rc("fedchain chain mine 10 # DEV ONLY: end the release"))
        assert "finalized: released" in j.run(rc("fedchain model release finalize")).out
        assert "released by vote 1" in j.run(rc("fedchain model pull 1 --released")).out
        assert sha256_hex((root / "released.safetensors").read_bytes()) == last["aggregate_sha256"]

        # 10. Lakeview withdraws consent: both models of its lineage are marked; replay still verifies.
        r = j.run(rc("fedchain dataset revoke"))
        assert r.out.count("marked withdrawn") == 2
        assert "WITHDRAWN" in j.run(rc("fedchain model list --proposal 1")).out
        cli("model", "pull", 1, "--released", "-o", "again.safetensors").fails("marked withdrawn", "lakeview-bc")
        replay = j.run(rc("fedchain audit replay")).out
        assert replay.count("VERIFIED") >= 2 and "DISCREPANCY" not in replay
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=20)
        if (root / ".fedchain" / "network.json").exists():
            for line in (rc("fedchain chain down"), rc("fedchain ipfs down")):
                j.ran.append(line)
                cli(*j.argv(line)[0])
    processes = json.loads((root / ".fedchain" / "network.json").read_text())["processes"]
    assert processes == {}, f"services left running: {processes}"
    # Every fedchain command of the README section was run above, as written there.
    missing = {c for c in readme_commands()} - set(j.ran)
    assert not missing, f"README commands the journey did not run: {missing}"
    print(f"\njourney: {time.monotonic() - t0:.0f} s in all: {launched_at - t0:.0f} s of set-up commands, "
          f"{trained_at - launched_at:.0f} s of training (role processes), {time.monotonic() - trained_at:.0f} s after")
