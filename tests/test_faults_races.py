"""Idempotent, resumable role loops: restarts and races on the embedded chain (in-process).

The role services decide every step from the chain, so

* a coordinator started after a proposal finished does nothing and is done
  (it used to revert with "the global metric of this round is already recorded");
* two coordinators racing never do a step twice: the loser's transaction is
  refused by the contract, logged, and the loser carries on — and a loser that
  later aggregates a round does so from the chain's state, not its stale memory
  (FedAdam here: a stale server state would publish an aggregate the audit
  replay rejects);
* ``proposals=[1, 3]`` drives exactly those;
* a node restarted after committing does not train again, and still evaluates.

The same behaviour across real processes, chain and IPFS restarts is in
``test_faults_outages.py`` and ``test_faults_coordinator.py``.
"""

from __future__ import annotations

import logging

import pytest

from fedchain.cli.simulation import Simulation
from fedchain.coordinator.audit.history import History
from fedchain.coordinator.audit.replay import Replayer
from fedchain.coordinator.audit.trail import chain_events
from fedchain.coordinator.runner import Coordinator, CoordinatorService
from fedchain.node.runner import NodeService
from fedchain.sample_data import demo_plan

N = 3
FEDADAM = {"name": "fedadam", "server_lr": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 0.001}


@pytest.fixture
def sim(tmp_path):
    s = Simulation.create(tmp_path, hospitals=N, seed=5, approval_bps=5001, voting_period_blocks=8, fsync=False)
    s.register_datasets()
    return s


def approve(sim, rounds=2, strategy=None) -> int:
    plan = sim.plan(demo_plan(sim.data.hospitals, seed=5, strategy=strategy), rounds=rounds, min_participants=N)
    return sim.approve(plan)


def drive(sim, coordinators, nodes, *, rounds=60) -> None:
    """Step node services and coordinator services in turn until every service is done."""
    for _ in range(rounds):
        for ns in nodes:
            rm, head = sim.fed().read_model(), sim.chain.block_number
            for pid in ns.proposals(rm, head):
                ns.step(pid)
        done = []
        for cs in coordinators:
            rm, head = sim.fed().read_model(), sim.chain.block_number
            done.append(all([cs.step(pid) for pid in cs.proposals(rm, head)]))
        if all(done):
            return
        sim.chain.mine(1)
    pytest.fail("the services did not finish")


def node_services(sim, **kw) -> list[NodeService]:
    return [NodeService(n, **kw) for n in sim.nodes()]


def round_events(sim, pid):
    out = {}
    for e in sim.fed().events():
        if e.args.get("proposalId") == pid and e.event in ("RoundOpened", "RoundClosed", "RoundFailed",
                                                            "GlobalMetricRecorded", "UpdateCommitted",
                                                            "EvaluationSubmitted"):
            out.setdefault((e.event, e.args["round"]), []).append(e)
    return out


def replay_ok(sim):
    fed = sim.fed()
    history = History(chain_events(fed, fed.deployment.deploy_block), fed.deployment.params)
    return Replayer(history, sim.store, sim.auditor, chain_id=fed.deployment.chain_id,
                    rounds_address=fed.addresses["Rounds"]).run()


def test_a_coordinator_started_after_the_proposal_finished_does_nothing(sim):
    pid = approve(sim)
    drive(sim, [CoordinatorService(sim.coordinator(), eval_grace_blocks=2)], node_services(sim))
    info = sim.fed().rounds.round_info(pid, 2)
    assert info.phase.name == "CLOSED" and info.global_metric_ppm is not None
    height = sim.chain.block_number
    fresh = CoordinatorService(sim.coordinator(), eval_grace_blocks=2)  # a new process: nothing in memory
    fresh.serve(exit_when_done=True, timeout=30)  # no --proposal: nothing is left, so it returns
    fresh.serve(pid, exit_when_done=True, timeout=30)  # --proposal of a finished one: the same
    assert sim.chain.block_number == height  # not one transaction


def test_racing_coordinators_do_every_step_once_and_the_loser_resyncs(sim, caplog):
    caplog.set_level(logging.INFO, logger="fedchain.coordinator")
    pid = approve(sim, rounds=3, strategy=FEDADAM)
    first = CoordinatorService(sim.coordinator(), eval_grace_blocks=2)
    second = CoordinatorService(Coordinator(sim.fed(sim.ops), sim.store, sim.ops), eval_grace_blocks=2)

    # The second coordinator decides on what it read, but the first gets each of its steps in
    # first (as when two processes race): its open, close and metric transactions of round 1 are
    # refused; from round 2 on it is undisturbed and must aggregate from the chain's state.
    c2 = second.c
    for name in ("open_round", "close_round", "record_metric"):
        real = getattr(c2, name)

        def beaten(proposal_id, round_, _real=real, _name=name):
            if round_ == 1:
                first.step(proposal_id)  # the other coordinator takes this very step
            return _real(proposal_id, round_)

        setattr(c2, name, beaten)
    drive(sim, [second, first], node_services(sim))

    events = round_events(sim, pid)
    for r in (1, 2, 3):
        for name in ("RoundOpened", "RoundClosed", "GlobalMetricRecorded"):
            assert len(events.get((name, r), [])) == 1, (name, r)
        assert len(events[("UpdateCommitted", r)]) == N
    lost = [r.getMessage() for r in caplog.records if "another coordinator was first" in r.getMessage()]
    assert any("did not open round 1" in m for m in lost), lost
    assert any("did not close round 1" in m for m in lost), lost
    assert any("did not record the metric of round 1" in m for m in lost), lost
    report = replay_ok(sim)
    assert [v.status for v in report.rounds] == ["VERIFIED"] * 3, report


def test_repeated_proposals_drive_exactly_those(sim):
    pids = [approve(sim, rounds=1) for _ in range(3)]
    svc = CoordinatorService(sim.coordinator(), eval_grace_blocks=1, proposals=[pids[0], pids[2], pids[0]])
    assert svc.only == [pids[0], pids[2]]
    drive(sim, [svc], node_services(sim))
    for pid, driven in zip(pids, (True, False, True)):
        assert (sim.fed().rounds.last_round(pid) == 1) is driven


def test_a_restarted_node_does_not_train_again_and_still_evaluates(sim):
    pid = approve(sim, rounds=1)
    coordinator = CoordinatorService(sim.coordinator(), eval_grace_blocks=5)
    nodes = node_services(sim)
    coordinator.step(pid)  # round 1 opens
    nodes[0].step(pid)  # hospital A commits ... and its process dies
    assert len(nodes[0].outcomes) == 1
    for n in nodes[1:]:
        n.step(pid)
    coordinator.step(pid)  # all committed: the round closes
    assert sim.fed().rounds.round_info(pid, 1).phase.name == "CLOSED"
    again = NodeService(sim.nodes()[0])  # hospital A's new process
    assert again.step(pid) is True
    assert again.outcomes == []  # nothing trained or committed twice
    me = sim.members[0].address
    assert sim.fed().rounds.has_evaluated(pid, 1, me)  # but the evaluation that was due is in
