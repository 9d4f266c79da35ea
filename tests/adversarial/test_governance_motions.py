"""Membership motions that outlive their moment (issue 10).

Before the fix an approved motion that was not applied stayed executable for ever:
two SetCoordinator motions pass, the members apply one, and much later the
coordinator they replaced finalizes the stale one and takes the role back. And a
member could open any number of duplicates of a pending motion. Now an approved
motion must be applied within a voting period (at least ``MIN_APPLY_WINDOW``
blocks) after its vote ends - afterwards ``finalizeMotion`` reverts with
``MemberVotingExpired`` and ``stateOf`` reports it EXPIRED - and a second motion
of the same kind on the same account reverts with ``ConsortiumDuplicateMotion``
while the first is pending. Both run on eth-tester and anvil.
"""

from __future__ import annotations

from fedchain.contracts.bindings import MotionKind, MotionState
from fedchain.contracts.bindings.clients import MIN_APPLY_WINDOW
from fedchain.usecases import members
from fixtures_chain import VOTING_PERIOD, reverts, sha


def _pass(s, mid):
    for m in (s.A, s.B, s.C):
        m.consortium.vote_motion(mid, True)


def test_removed_coordinator_cannot_revive_a_stale_motion(system):
    s = system
    old, rival, new = s.coord, s.outsiders[1], s.outsiders[2]
    assert s.fc.consortium.call("MIN_APPLY_WINDOW") == MIN_APPLY_WINDOW

    # The consortium replaces its coordinator (the old one is now an outsider) ...
    first = s.A.consortium.propose_motion_coordinator(rival.address).value
    _pass(s, first)
    s.mine_past(s.fc.consortium.motion(first).deadline)
    s.A.consortium.finalize_motion(first)
    assert s.fc.consortium.coordinator() == rival.address

    # ... then weighs bringing it back against a third candidate; both motions pass,
    # and the members apply the second.
    back = s.B.consortium.propose_motion_coordinator(old.address).value
    other = s.C.consortium.propose_motion_coordinator(new.address).value
    for member in (s.A, s.B):  # two of three: both pass
        member.consortium.vote_motion(back, True)
        member.consortium.vote_motion(other, True)
    s.mine_past(s.fc.consortium.motion(other).deadline)
    s.A.consortium.finalize_motion(other)
    assert s.fc.consortium.coordinator() == new.address

    # Much later the removed coordinator finalizes the stale motion: refused, the role stays.
    stale = s.fc.consortium.motion(back)
    assert stale.expiry == stale.deadline + max(VOTING_PERIOD, MIN_APPLY_WINDOW)
    s.mine_past(stale.expiry)  # the next transaction lands one block past the expiry
    with reverts("MemberVotingExpired", id=back, expiry=stale.expiry):
        s.fc.as_(old).consortium.finalize_motion(back)
    assert s.fc.consortium.coordinator() == new.address
    s.chain.mine(1)  # views run at the head block: past the expiry now
    assert s.fc.consortium.motion(back).state == MotionState.EXPIRED
    assert s.fc.consortium.call("stateOf", back) == MotionState.EXPIRED


def test_motion_can_be_applied_up_to_its_expiry_block(system):
    s = system
    mid = s.A.consortium.propose_motion_coordinator(s.outsiders[1].address).value
    _pass(s, mid)
    m = s.fc.consortium.motion(mid)
    ev = [e for e in s.fc.events(m.created_at) if e.event == "MotionProposed"][-1]
    assert ev.args["expiry"] == m.expiry  # the event says when it lapses; the read model keeps it
    assert s.fc.read_model().motions[mid].expiry == m.expiry
    s.mine_past(m.expiry - 1)  # the finalize lands in the expiry block itself
    assert s.fc.consortium.motion(mid).state == MotionState.ACTIVE
    assert s.A.consortium.finalize_motion(mid).value == MotionState.APPROVED


def test_expired_rejected_motion_is_expired_too(system):
    """Expiry is about finalizing at all: a vote that failed and was never finalized lapses as well."""
    s = system
    mid = s.A.consortium.propose_motion_remove(s.c.address).value
    s.A.consortium.vote_motion(mid, False)
    s.mine_past(s.fc.consortium.motion(mid).expiry)
    with reverts("MemberVotingExpired", id=mid):
        s.B.consortium.finalize_motion(mid)
    assert s.fc.consortium.is_member(s.c.address)


def test_duplicate_of_a_pending_motion_reverts(system):
    s = system
    target = s.outsiders[0].address
    first = members.propose_admit(s.A, "Delta", target, sha("delta")).value  # the use case, as the CLI runs it
    for proposer in (s.A, s.B):
        with reverts("ConsortiumDuplicateMotion", pending=first):
            proposer.consortium.propose_motion_admit("Delta (again)", target, sha("other key"))
    # other kinds, or other targets, are not duplicates
    coord = s.B.consortium.propose_motion_coordinator(target).value
    with reverts("ConsortiumDuplicateMotion", pending=coord):
        s.C.consortium.propose_motion(MotionKind.SET_COORDINATOR, target)
    s.C.consortium.propose_motion_admit("Epsilon", s.outsiders[1].address, sha("eps"))
    remove = s.A.consortium.propose_motion_remove(s.c.address).value
    with reverts("ConsortiumDuplicateMotion", pending=remove):
        s.B.consortium.propose_motion_remove(s.c.address)

    # once the first is finalized (here: rejected) it is no longer pending ...
    s.A.consortium.vote_motion(first, False)
    s.B.consortium.vote_motion(first, False)
    s.mine_past(s.fc.consortium.motion(first).deadline)
    assert s.A.consortium.finalize_motion(first).value == MotionState.REJECTED
    again = s.A.consortium.propose_motion_admit("Delta", target, sha("delta")).value
    # ... and an expired one is not pending either
    s.mine_past(s.fc.consortium.motion(remove).expiry)
    assert s.B.consortium.propose_motion_remove(s.c.address).value > again
