"""mode = "secagg" driven by the long-running role loops (``NodeService`` / ``CoordinatorService``).

The services are stepped in one process on the embedded chain, the chain mined a block between
passes (as the real processes see it advance); every decision is the services' own, from the chain:

* round 1: 6 hospitals, 2 vanish after their masked input -> the session completes, the round closes
  with the sample-weighted mean of all six masked inputs (the plaintext mean within fixed-point
  precision); a coordinator restarted mid-session does not start a second session;
* round 2 (the four left): one goes offline after masking and one is restarted after masking (its
  secrets are gone, so it cannot unmask: it says so and sits the round out) -> too few unmask, the
  session is Failed on chain, the round Failed after its deadline, nothing published;
* round 3: both take part again; the round completes;
* the audit replay VERIFIES all three rounds;
* a node whose process died between committing its masked input and marking it marks it after its
  restart (no secret needed) and sits out the unmasking; the round completes with its input in the sum.

The same across real processes on anvil + js-ipfs is ``test_secagg_processes.py``.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fedchain import secagg_round
from fedchain.cli.simulation import Simulation
from fedchain.content import pin_document
from fedchain.contracts.models import RoundPhase, SessionStage
from fedchain.coordinator.audit.replay import VERIFIED, replay_live
from fedchain.coordinator.runner import Coordinator, CoordinatorService
from fedchain.he_round import to_vector
from fedchain.node.runner import NodeService
from fedchain.sample_data import demo_plan
from fedchain.serialize import bytes_to_state_dict
from fedchain.validation import model_layout


def _phases(sim, pid, r, ident) -> int:
    return sim.fed().secure.phases(pid, r, ident.address)


def test_secure_rounds_through_the_role_loops(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    sim = Simulation.create(tmp_path, hospitals=6, seed=11, fsync=False)
    sim.register_datasets()
    plan = sim.secagg_plan(demo_plan(sim.data.hospitals, seed=11), max_dropouts=2, rounds=3, min_participants=2)
    pid = sim.approve(plan)
    layout = model_layout(plan.model)
    members = sim.members
    nodes = {i: NodeService(n) for i, n in enumerate(sim.nodes())}
    coord = CoordinatorService(sim.coordinator(), eval_grace_blocks=2)

    seen: dict[int, list] = {}  # round -> every masked (weighted) input, as the nodes built them
    real = secagg_round.weighted_input

    def spy(state, start, n, total, plan_, layout_):
        x = real(state, start, n, total, plan_, layout_)
        seen.setdefault(int(sim.fed().rounds.last_round(pid)), []).append(x)
        return x

    # round -> {hospital: "vanish" | "restart"} once its masked input is marked
    script = {1: {0: "vanish", 4: "vanish"}, 2: {2: "pause", 1: "restart"}}
    paused = {}  # offline until the next round opens
    coordinator_restarted = False
    secagg_round.weighted_input = spy
    try:
        for _ in range(1500):
            r = sim.fed().rounds.last_round(pid)
            if r == 3:
                nodes.update(paused)
                paused.clear()
            for i in list(nodes):
                nodes[i].step(pid)
                what = script.get(r, {}).get(i)
                if what and _phases(sim, pid, r, members[i]) & 0b100:
                    script[r].pop(i)
                    if what == "vanish":
                        del nodes[i]
                    elif what == "pause":
                        paused[i] = nodes.pop(i)
                    else:  # a new process: nothing in memory
                        nodes[i] = NodeService(sim.nodes()[i])
            done = coord.step(pid)
            rec = sim.fed().read_model().secure.get((pid, 1))
            if not coordinator_restarted and rec is not None and rec.masked:
                coord = CoordinatorService(Coordinator(sim.fed(sim.ops), sim.store, sim.ops), eval_grace_blocks=2)
                coordinator_restarted = True
            if done:
                break
            sim.chain.mine(1)
        else:
            pytest.fail("the services did not finish")
    finally:
        secagg_round.weighted_input = real

    fed = sim.fed()
    # round 1: closed, the mean of all six masked inputs although two never unmasked
    s1 = fed.secure.session(pid, 1)
    assert (s1.stage, s1.masked, s1.unmasked) == (SessionStage.COMPLETED, 6, 4)
    info = fed.rounds.round_info(pid, 1)
    assert info.phase == RoundPhase.CLOSED and info.global_metric_ppm is not None
    total = np.sum(seen[1], axis=0)
    assert len(seen[1]) == 6
    got = to_vector(bytes_to_state_dict(sim.store.get(info.aggregate_cid)), layout)
    assert np.max(np.abs(got - total[:-1] / total[-1])) <= 6 * 2.0 ** -33 / total[-1] + 1e-6
    # round 2: one vanished and one restarted after masking -> 2 of 4 unmask, threshold 4: Failed, nothing published
    s2 = fed.secure.session(pid, 2)
    assert (s2.stage, s2.masked, s2.unmasked) == (SessionStage.FAILED, 4, 2)
    info = fed.rounds.round_info(pid, 2)
    assert info.phase == RoundPhase.FAILED and info.aggregate_cid == "" and info.scores_cid == ""
    # round 3: the restarted node is back; the four left complete it
    s3 = fed.secure.session(pid, 3)
    assert (s3.stage, s3.masked, s3.unmasked) == (SessionStage.COMPLETED, 4, 4)
    assert fed.rounds.round_info(pid, 3).phase == RoundPhase.CLOSED
    assert _phases(sim, pid, 3, members[1]) == 0b1111
    # one session per round, although the coordinator was restarted mid-session
    events = fed.events()
    assert sorted(e.args["round"] for e in events if e.event == "SessionStarted") == [1, 2, 3]
    assert not any(e.event == "RoundClosed" and e.args["round"] == 2 for e in events)
    said = [rec.getMessage() for rec in caplog.records]
    assert any("secrets for it are gone" in m and "round 2" in m and "cannot unmask" in m for m in said), said
    assert not any("did not start" in m for m in said)
    report = replay_live(fed, sim.store, sim.auditor)
    assert [v.status for v in report.rounds] == [VERIFIED] * 3, [v.problems for v in report.rounds]


class _Crash(Exception):
    """The node's process dies here."""


class _DiesBeforeMarking:
    """The node's chain façade, except that its process dies when it is about to mark its masked input."""

    def __init__(self, fed) -> None:
        self._fed = fed

    def __getattr__(self, name):
        return getattr(self._fed, name)

    @property
    def secure(self):
        real = self._fed.secure

        class Secure:
            def __getattr__(self, name):
                return getattr(real, name)

            def mark_masked(self, *_a, **_k):
                raise _Crash

        return Secure()


def test_a_node_that_died_between_committing_and_marking_marks_after_its_restart(tmp_path, caplog):
    """Marking needs no secret: the restarted node marks the masked input it committed (it still cannot unmask)."""
    caplog.set_level(logging.INFO)
    sim = Simulation.create(tmp_path, hospitals=3, seed=4, fsync=False)
    sim.register_datasets()
    plan = sim.secagg_plan(demo_plan(sim.data.hospitals, seed=4), max_dropouts=1, rounds=1, min_participants=2)
    pid = sim.approve(plan)
    nodes = [NodeService(n) for n in sim.nodes()]
    nodes[0].node.fed = _DiesBeforeMarking(nodes[0].node.fed)
    coord = CoordinatorService(sim.coordinator(), eval_grace_blocks=2)
    for _ in range(400):
        for i, ns in enumerate(nodes):
            try:
                ns.step(pid)
            except _Crash:
                nodes[i] = NodeService(sim.nodes()[i])  # a new process
        if coord.step(pid):
            break
        sim.chain.mine(1)
    else:
        pytest.fail("the services did not finish")
    fed = sim.fed()
    me = sim.members[0].address
    assert _phases(sim, pid, 1, sim.members[0]) == 0b0111  # marked after the restart, never unmasked
    s = fed.secure.session(pid, 1)
    assert (s.stage, s.masked, s.unmasked) == (SessionStage.COMPLETED, 3, 2)
    assert sum(c.member.lower() == me.lower() for c in fed.rounds.commitments(pid, 1)) == 1
    assert fed.rounds.round_info(pid, 1).phase == RoundPhase.CLOSED
    said = [r.getMessage() for r in caplog.records]
    assert any("marked the masked input committed earlier" in m for m in said), said
    report = replay_live(fed, sim.store, sim.auditor)
    assert [v.status for v in report.rounds] == [VERIFIED], [v.problems for v in report.rounds]


def test_a_members_bad_message_fails_the_round_and_stops_no_process(tmp_path, caplog):
    """Round 1: hospital C sends an unmasking message that is not one (the session still completes on chain:
    it counts messages); round 2: C advertises keys that are not keys. No loop crashes: the others sit
    the round out, the coordinator fails it after the deadline, nothing is published, and replay VERIFIES
    both failures (the messages on chain give no sum)."""
    caplog.set_level(logging.INFO)
    sim = Simulation.create(tmp_path, hospitals=3, seed=4, fsync=False)
    sim.register_datasets()
    plan = sim.secagg_plan(demo_plan(sim.data.hospitals, seed=4), max_dropouts=1, rounds=2, min_participants=2)
    pid = sim.approve(plan)
    nodes = [NodeService(n) for n in sim.nodes()]
    bad = nodes[2].node
    real_unmask, real_advertise = bad.secagg_unmask, bad.secagg_advertise

    def garbage(pid_, r_, what):
        junk = pin_document(sim.store, b"not a secure-aggregation message")
        return (bad.fed.secure.unmask(pid_, r_, junk.cid, junk.sha256) if what == "unmask" else
                bad.fed.secure.advertise_keys(pid_, r_, bad.dataset_name, junk.cid, junk.sha256))

    bad.secagg_unmask = lambda p_, r_: garbage(p_, r_, "unmask") if r_ == 1 else real_unmask(p_, r_)
    bad.secagg_advertise = lambda p_, r_: garbage(p_, r_, "advertise") if r_ == 2 else real_advertise(p_, r_)
    coord = CoordinatorService(sim.coordinator(), eval_grace_blocks=2)
    for _ in range(600):
        for ns in nodes:
            ns.step(pid)
        if coord.step(pid):
            break
        sim.chain.mine(1)
    else:
        pytest.fail("the services did not finish")
    fed = sim.fed()
    s1, s2 = fed.secure.session(pid, 1), fed.secure.session(pid, 2)
    assert (s1.stage, s1.masked, s1.unmasked) == (SessionStage.COMPLETED, 3, 3)
    assert (s2.stage, s2.advertised, s2.shared) == (SessionStage.FAILED, 3, 0)
    for r in (1, 2):
        info = fed.rounds.round_info(pid, r)
        assert info.phase == RoundPhase.FAILED and info.aggregate_cid == "", (r, info)
    said = [r.getMessage() for r in caplog.records]
    assert any("round 1 of proposal 1: the sum cannot be unmasked" in m for m in said), said
    assert any("round 2 of proposal 1 cannot go on for this node" in m and "phase-0 message" in m for m in said), said
    report = replay_live(fed, sim.store, sim.auditor)
    assert [v.status for v in report.rounds] == [VERIFIED] * 2, [v.problems for v in report.rounds]
