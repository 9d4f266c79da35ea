"""`fedchain demo`, the README's main job: what a hospital user is promised it shows."""

from __future__ import annotations

import json

import pytest

from fedchain.cli import main
from fedchain.cli.demo import run_demo
from fedchain.coordinator.audit.trail import read_trail
from fedchain.identity import dev_identity
from fedchain.usecases import phrase


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["demo", "--out", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps lines at 80 columns
    summary = json.loads((out / "summary.json").read_text())

    # The hospital whose policy excludes the purpose sat out, visibly, and never committed.
    assert summary["excluded"] == ["hospital-d"]
    assert "hospital-d sits out" in printed and phrase("PURPOSE_NOT_ALLOWED") in printed
    excluded = dev_identity(3).address.lower()
    trail = read_trail(out / "trail.jsonl")
    committers = {e.args["member"].lower() for e in trail.events if e.event == "UpdateCommitted"}
    assert excluded not in committers and len(committers) == 3

    # One member voted no and the proposal still passed.
    votes = [e.args["choice"] for e in trail.events if e.event == "Voted"]
    assert votes.count(2) == 1 and summary["proposal"] == 1
    assert any(e.event == "ProposalFinalized" and e.args["state"] == 2 for e in trail.events)

    # At least five rounds, three participants each, federated close to pooled on the same test split.
    assert len(summary["rounds"]) >= 5
    assert all(len(r["participants"]) == 3 for r in summary["rounds"])
    assert abs(summary["federated_test_accuracy"] - summary["pooled_test_accuracy"]) <= 0.02
    assert summary["federated_test_accuracy"] > 0.9

    # The run folder is self-sufficient: a fresh replay from it verifies every round.
    assert (out / "report.html").exists() and "VERIFIED" in (out / "report.html").read_text()
    assert main(["audit", "replay", "--trail", str(out / "trail.jsonl"),
                 "--checkpoint", summary["checkpoint"]["hash"]]) == 0
    assert "5/5 rounds VERIFIED" in capsys.readouterr().out


def test_demo_runs_more_hospitals_than_anvil_has_dev_accounts(tmp_path):
    # Every vote mines a block on the embedded chain: the voting period must outlast them all,
    # and hospitals 10+ need identities (and gas) beyond the ten prefunded dev accounts.
    result = run_demo(out=tmp_path / "run", rounds=2, hospitals=12, quiet=True, report=False)
    assert [len(r.participants) for r in result.rounds] == [11, 11]  # hospital-d sits out
    assert result.excluded == ["hospital-d"]
    trail = read_trail(tmp_path / "run" / "trail.jsonl")
    voters = {e.args["voter"] for e in trail.events if e.event == "Voted"}
    assert dev_identity(11).address in voters and len(voters) == 13  # 12 hospitals + the coordinator


@pytest.mark.parametrize("n", [3, 51])
def test_demo_refuses_a_hospital_count_it_cannot_run(tmp_path, capsys, n):
    assert main(["demo", "--out", str(tmp_path / "run"), "--hospitals", str(n)]) == 1
    assert "the demo runs 4 to 50 hospitals" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_demo_with_attackers_prints_clean_and_attacked_side_by_side(tmp_path, capsys):
    """The two largest of six participants flip their labels; Multi-Krum excludes them every round
    (2 rounds, ~20 s: two demos)."""
    code = main(["demo", "--out", str(tmp_path / "run"), "--rounds", "2", "--attackers", "2", "--attack", "label-flip",
                 "--attackers-from", "largest", "--strategy", "multikrum"])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0
    assert "2 malicious (label-flip) vs clean, rule multikrum" in out
    assert "excluded / clipped by the rule" in out and out.count("KRUM_NOT_SELECTED") >= 4
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["attackers"] == ["hospital-a", "hospital-b"] and summary["strategy"] == "multikrum"
    assert summary["clean_test_accuracy"] is not None
    assert abs(summary["federated_test_accuracy"] - summary["clean_test_accuracy"]) <= 0.05
    for r in summary["rounds"]:
        assert sorted(d.split()[0] for d in r["decisions"]) == ["hospital-a", "hospital-b"]
        assert all(" excluded (KRUM_NOT_SELECTED " in d for d in r["decisions"])
    assert "hospital-d" not in summary["attackers"]  # the one that sits out by policy never attacks
    assert "2/2 rounds VERIFIED" in out


@pytest.mark.parametrize("args, words", [
    (["--attackers", "1", "--attack", "poison-everything"], "unknown attack 'poison-everything'"),
    (["--strategy", "krum"], "krum with byzantine = 1 needs at least"),
    (["--strategy", "bulyan"], "unknown rule 'bulyan'"),
    (["--attackers", "6"], "--attackers must be from 0 to 5"),
    (["--attackers", "1", "--attackers-from", "richest"], "--attackers-from must be smallest or largest"),
])
def test_demo_refuses_an_attack_it_cannot_run_before_writing_anything(tmp_path, capsys, args, words):
    code = main(["demo", "--out", str(tmp_path / "run"), "--rounds", "1", *args])
    assert code != 0
    assert words in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "run").exists()


def test_demo_with_differential_privacy(tmp_path, capsys):
    """--dp: budgets on chain, the third hospital refused part-way with the contract's words, the
    accuracy next to the non-private run, ε spent per dataset as the chain has it, replay verifies."""
    result = run_demo(out=tmp_path / "run", rounds=3, report=True, dp=1.0, dp_mode="dpsgd")
    out = capsys.readouterr().out
    dp = result.dp
    assert dp["mode"] == "dpsgd" and 0.5 < dp["non_private_accuracy"] <= 1.0
    budgets = {b["dataset"]: b for b in dp["budgets"]}
    assert budgets["hospital-a"]["allowed"] == 1.0 and 0.95 <= budgets["hospital-a"]["spent"] <= 1.0
    assert budgets["hospital-c"]["allowed"] == 0.5 and budgets["hospital-c"]["spent"] <= 0.5
    assert budgets["hospital-d"]["spent"] == 0  # sat out by purpose
    refused = [r.refused.get("hospital-c", "") for r in result.rounds]
    assert any("the update would exceed the dataset's privacy budget (epsilon)" in why for why in refused)
    assert "hospital-c refused" in " ".join(out.split()) and "without privacy" in out
    assert "3/3 rounds VERIFIED" in " ".join(out.split())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["differential_privacy"]["budgets"][0]["spent"] == budgets["hospital-a"]["spent"]
    assert "Privacy budgets" in (tmp_path / "run" / "report.html").read_text()
