"""Replay of differentially private runs: every round's ε is recomputed; an edited ε and a skipped
server-side noise are named."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from fedchain.cli.simulation import Simulation
from fedchain.contracts.bindings import Policy
from fedchain.coordinator.audit import export_trail
from fedchain.coordinator.audit.replay import DISCREPANCY, VERIFIED, replay_trail
from fedchain.coordinator.audit.trail import read_trail
from fedchain.coordinator.strategies.base import ClientUpdate
from fedchain.coordinator.strategies.dpserver import ServerSideDP, noise_consistent
from fedchain.coordinator.strategies.fedavg import FedAvg
from fedchain.coordinator.strategies.registry import for_plan
from fedchain.sample_data import demo_plan


def _run(root, privacy, rounds=2, tamper=None, budget_milli=3000):
    sim = Simulation.create(root, hospitals=3, seed=5, fsync=False)
    names = sim.names
    sim.register_datasets({h: dataclasses.replace(Policy.open(), max_epsilon_milli=budget_milli) for h in names})
    plan = sim.plan(demo_plan(sim.data.hospitals, seed=5), rounds=rounds, min_participants=2, privacy=privacy)
    pid = sim.approve(plan)
    nodes, coord = sim.nodes(), sim.coordinator()
    for r in range(1, rounds + 1):
        if tamper is not None:
            tamper(coord, pid, plan, r)
        assert sim.run_round(pid, r, nodes, coord).result.closed
    export_trail(sim.fed(), sim.store, root / "trail.jsonl")
    sim.last_coordinator = coord
    return sim, pid


def _replay(sim, trail, store=None):
    return replay_trail(read_trail(trail), store or sim.store, sim.auditor)


@pytest.fixture(scope="module")
def dpsgd_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpsgd")
    sim, pid = _run(root, {"mode": "dpsgd", "epsilon": 1.0}, rounds=3)
    return sim, pid, root


def test_replay_verifies_every_round_of_a_dp_run_and_flags_an_edited_epsilon(dpsgd_run, tmp_path):
    sim, pid, root = dpsgd_run
    report = _replay(sim, root / "trail.jsonl")
    assert [v.status for v in report.rounds] == [VERIFIED] * 3, [v.problems for v in report.rounds]
    # someone edits the ε of one commitment in the exported trail (an under-reporting node looks the same)
    trail = tmp_path / "trail.jsonl"
    records = [json.loads(line) for line in (root / "trail.jsonl").read_text().splitlines()]
    spends = [r for r in records if r.get("kind") == "event" and r["event"] == "PrivacySpent"]
    assert len(spends) == 9  # 3 datasets x 3 rounds
    edited = next(r for r in spends if r["args"]["round"] == 2)
    edited["args"]["epsilonMicro"] //= 2
    trail.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    report = _replay(sim, trail)
    by_round = {v.round: v for v in report.rounds}
    assert by_round[1].status == VERIFIED and by_round[2].status == DISCREPANCY
    text = "\n".join(by_round[2].problems)
    assert "states privacy epsilon" in text and "but the plan's round 2 gives epsilon" in text
    assert "privacy ledger" in text  # the running total no longer adds up either


def test_replay_flags_a_commitment_without_the_plans_privacy(dpsgd_run, tmp_path):
    """A commitment whose PrivacySpent is missing (a non-private update under a DP plan) is named."""
    sim, pid, root = dpsgd_run
    records = [json.loads(line) for line in (root / "trail.jsonl").read_text().splitlines()]
    drop = next(i for i, r in enumerate(records) if r.get("event") == "PrivacySpent" and r["args"]["round"] == 3)
    del records[drop]
    trail = tmp_path / "trail.jsonl"
    trail.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    v3 = {v.round: v for v in _replay(sim, trail).rounds}[3]
    assert v3.status == DISCREPANCY and "states privacy epsilon 0 (delta 0)" in "\n".join(v3.problems)


def test_server_side_dp_replay_tests_the_noise(tmp_path):
    privacy = {"mode": "server", "noise_multiplier": 2.0, "clipping_norm": 1.0}
    sim, pid = _run(tmp_path / "honest", privacy, budget_milli=30_000)  # z = 2 spends ~4.7 a round
    assert [v.status for v in _replay(sim, tmp_path / "honest" / "trail.jsonl").rounds] == [VERIFIED] * 2
    # a restarted coordinator resumes from the chain's noised aggregates (it cannot re-derive the noise)
    coord = sim.last_coordinator
    last = {k: v.clone() for k, v in coord.global_state(pid).items()}
    coord.forget(pid)
    assert all(torch.equal(last[k], v) for k, v in coord.global_state(pid).items())

    def no_noise(coord, pid, plan, r):  # a coordinator that releases the clean average
        coord.strategy(pid)
        coord._strategies[pid] = for_plan(plan, dp_noise=False)

    sim, pid = _run(tmp_path / "lazy", privacy, tamper=no_noise, budget_milli=30_000)
    report = _replay(sim, tmp_path / "lazy" / "trail.jsonl")
    assert [v.status for v in report.rounds] == [DISCREPANCY] * 2
    assert "is not the clipped average plus the plan's noise" in report.rounds[0].problems[0]


def test_server_side_dp_clips_and_noises_the_weighted_mean():
    arrays = {"w": torch.zeros(400)}
    ups = [ClientUpdate("0x" + f"{i:040x}", f"d{i}", n, {"w": torch.full((400,), float(i + 1))})
           for i, n in enumerate((100, 300))]
    clean = ServerSideDP(FedAvg(), clipping_norm=1.0, noise_multiplier=2.0, add_noise=False)
    mean = clean.aggregate_train(1, arrays, ups)["w"]
    # both updates clipped to norm 1 (each is constant over 400 coordinates: 1/20 each), then averaged
    assert torch.allclose(mean, torch.full((400,), 0.05)) and [d.reason for d in clean.last_decisions] == ["DP_CLIP"] * 2
    assert clean.last_noise_std == pytest.approx(2.0 * 1.0 * 0.75)  # z·C·max weight share
    noisy = ServerSideDP(FedAvg(), clipping_norm=1.0, noise_multiplier=2.0).aggregate_train(1, arrays, ups)
    assert noise_consistent(noisy, {"w": mean}, 1.5)[0]
    assert not noise_consistent({"w": mean}, {"w": mean}, 1.5)[0]  # no noise at all
    assert not noise_consistent({"w": mean + 10.0}, {"w": mean}, 1.5)[0]  # shifted beyond what noise explains


def test_an_under_reporting_node_is_left_out_and_named(tmp_path):
    """A node that states less ε than the plan's round spends: the chain accepts it (it cannot know),
    the coordinator leaves the update out (WRONG_PRIVACY), the replay agrees and names the member."""

    def under_report(coord, pid, plan, r):
        node = under_report.nodes[1]
        real = node.prepare

        def prepare(proposal_id, round_):
            job = real(proposal_id, round_)
            return dataclasses.replace(job, spend=(job.spend[0] // 2, job.spend[1]))

        node.prepare = prepare

    sim = Simulation.create(tmp_path, hospitals=3, seed=5, fsync=False)
    sim.register_datasets({h: dataclasses.replace(Policy.open(), max_epsilon_milli=3000) for h in sim.names})
    plan = sim.plan(demo_plan(sim.data.hospitals, seed=5), rounds=1, min_participants=2,
                    privacy={"mode": "dpsgd", "epsilon": 1.0})
    pid = sim.approve(plan)
    nodes, coord = sim.nodes(), sim.coordinator()
    under_report.nodes = nodes
    under_report(coord, pid, plan, 1)
    done = sim.run_round(pid, 1, nodes, coord)
    cheat = sim.members[1].address
    assert done.result.closed and set(done.result.rejected) == {cheat}
    assert str(done.result.rejected[cheat].code) == "WRONG_PRIVACY"
    export_trail(sim.fed(), sim.store, tmp_path / "trail.jsonl")
    [v] = _replay(sim, tmp_path / "trail.jsonl").rounds
    assert v.rejected == {cheat.lower(): "WRONG_PRIVACY"}
    text = "\n".join(v.problems)
    assert f"update of {cheat.lower()} states privacy epsilon" in text  # the ledger under-counts: named
    assert "rejected as" not in text and "included" not in text  # the coordinator did the right thing
