"""`fedchain demo`, the README's main job: what a hospital user is promised it shows."""

from __future__ import annotations

import json

from fedchain.coordinator.audit.trail import read_trail
from fedchain.cli import main
from fedchain.identity import dev_identity


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())

    # The hospital whose policy excludes the purpose sat out, visibly, and never committed.
    assert summary["excluded"] == ["hospital-d"]
    assert "hospital-d sits out" in printed and "purpose not allowed" in printed
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
    assert main(["audit", "replay", "--trail", str(out / "trail.jsonl")]) == 0
    assert "5/5 rounds VERIFIED" in capsys.readouterr().out
