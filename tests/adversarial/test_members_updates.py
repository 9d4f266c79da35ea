"""A member halts the coordinator with one update: it is rejected with a stable code instead, and everyone else finishes.

Before: a validly sealed update holding a NaN, a tensor of the wrong shape or an
extra tensor raised out of aggregation; the coordinator process exited and,
restarted, retried the same round forever. An update sealed without the plan's
auditor was accepted (the auditor could then never check it), and a CID that is
not a CID was rejected with library text.

Each attack here is made by a member through the public path -- it seals the
bytes itself and commits them through the bindings -- and judged by the real
coordinator (and its long-running service) and by the audit replay.
"""

from __future__ import annotations

import pytest

from adversary import bad_update, make_world
from fedchain.contracts.errors import ChainRevert
from fedchain.coordinator.audit.replay import VERIFIED
from fedchain.coordinator.runner import CoordinatorService
from fedchain.validation import Reason

HONEST = (0, 1, 2)
ATTACKER = 3


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = make_world(tmp_path_factory.mktemp("members"), rounds=2)
    w.open(1)
    w.commit_honest(1, HONEST)
    w.save("honest in")  # round 1 open, the three honest updates committed; the attacker's turn
    return w


def _closed_without(world, res, code: Reason):
    """The round closed on the honest three; the attacker's update is rejected with ``code``, publicly."""
    attacker = world.address(ATTACKER)
    assert res.closed, res.reason
    assert sorted(res.participants) == sorted(world.address(i) for i in HONEST)
    assert set(res.rejected) == {attacker} and res.rejected[attacker].code == code
    entry = world.scores_doc(res.round)["rejected"][attacker.lower()]
    assert entry["code"] == code.value and entry["detail"] == res.rejected[attacker].detail
    v = world.verdict(res.round)
    assert v.status == VERIFIED and v.rejected == {attacker.lower(): code.value}, (v.problems, v.unverifiable)


@pytest.mark.parametrize("kind", ["NOT_FINITE", "INFINITE", "WRONG_SHAPE", "WRONG_TENSORS"])
def test_a_validly_sealed_broken_update_is_rejected_and_the_round_closes(world, kind):
    world.restore("honest in")
    world.seal_and_commit(ATTACKER, 1, bad_update(world.plan, kind))
    res = world.coord.close_round(world.pid, 1)
    _closed_without(world, res, Reason.NOT_FINITE if kind == "INFINITE" else Reason[kind])


def test_the_long_running_service_closes_the_round_and_goes_on(world):
    """The service that used to die on the NaN (and die again on restart) closes round 1 and opens round 2."""
    world.fresh()
    svc = CoordinatorService(world.coord, eval_grace_blocks=0)
    assert svc.step(world.pid) is False  # opens round 1
    world.commit_honest(1, HONEST)
    world.seal_and_commit(ATTACKER, 1, bad_update(world.plan, "NOT_FINITE"))
    svc.step(world.pid)  # all four targets committed: close now
    assert world.fed.rounds.round_info(world.pid, 1).phase.name == "CLOSED"
    assert svc.results[(world.pid, 1)].rejected[world.address(ATTACKER)].code == Reason.NOT_FINITE
    world.evaluate(1, HONEST)
    svc.step(world.pid)  # metric recorded, round 2 opened
    assert world.fed.rounds.round_info(world.pid, 2).phase.name == "OPEN"
    report = world.replay()
    assert report.ok, [(v.round, v.problems, v.unverifiable) for v in report.rounds]


def test_an_update_the_auditor_cannot_open_is_rejected(world):
    """Sealed for the coordinator alone: the coordinator could open it, the auditor never could."""
    world.restore("honest in")
    honest_bytes = bad_update(world.plan, "NOT_FINITE")  # the content does not matter: the envelope decides first
    world.seal_and_commit(ATTACKER, 1, honest_bytes, recipients=[world.sim.ops.x25519_public])
    res = world.coord.close_round(world.pid, 1)
    _closed_without(world, res, Reason.BAD_ENVELOPE)
    assert "recipients" in res.rejected[world.address(ATTACKER)].detail


def test_a_commitment_that_is_not_a_cid_is_refused_by_the_chain(world):
    """Once rejected by the coordinator and replay alike (a path in the CID slot); now the chain refuses it."""
    world.restore("honest in")
    with pytest.raises(ChainRevert) as exc:
        world.commit_raw(ATTACKER, 1, "../../etc/passwd", "ab" * 32)
    assert exc.value.error == "RoundsInvalidCid"
    assert world.fed.rounds.round_info(world.pid, 1).committed == 3  # only the honest three
