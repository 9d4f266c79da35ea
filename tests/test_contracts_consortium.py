"""Consortium: founders, membership motions, coordinator role, X25519 keys - on both backends."""

from __future__ import annotations

from eth_utils import keccak

from fedchain.contracts.bindings import FounderSpec, MotionKind, MotionState
from fixtures_chain import FOUNDER_NAMES, VOTING_PERIOD, make_founders, reverts, sha

ZERO = "0x0000000000000000000000000000000000000000"
KEY = sha("new member key")


def _pass_motion(s, mid, voters=None):
    for member in voters or (s.A, s.B, s.C):
        member.consortium.vote_motion(mid, True)
    s.chain.mine(VOTING_PERIOD)
    return s.fc.as_(s.outsiders[1]).consortium.finalize_motion(mid)  # anyone may finalize


# ----------------------------------------------------------------- deploy


def test_founders_and_coordinator_at_deploy(system):
    s = system
    fc = s.fc
    assert fc.consortium.member_count() == 3
    assert fc.consortium.coordinator() == s.coord.address
    assert fc.consortium.voting_params().voting_period_blocks == VOTING_PERIOD
    for acct, name in zip((s.a, s.b, s.c), FOUNDER_NAMES):
        m = fc.consortium.member(acct.address)
        assert (m.name, m.active, m.x25519_pub) == (name, True, sha(f"x25519:{name}"))
        assert m.joined_at == s.deployment.deploy_block
    assert [m.seq for m in fc.consortium.members()] == [1, 2, 3]
    assert not fc.consortium.is_member(s.coord.address)
    assert fc.consortium.call("coordinator") == s.coord.address
    admitted = [e for e in fc.events(s.deployment.deploy_block) if e.event == "MemberAdmitted"]
    assert [e.args["name"] for e in admitted] == list(FOUNDER_NAMES)


def test_deploy_rejects_bad_parameters(system):
    s = system
    founders = make_founders([s.a, s.b])
    with reverts("ConsortiumInvalidFounderCount", given=0, max=128):
        s.chain.deploy(s.a, [], s.coord.address)
    many = [FounderSpec(f"m{i}", f"0x{i + 1:040x}", sha(str(i))) for i in range(129)]
    with reverts("ConsortiumInvalidFounderCount", given=129):
        s.chain.deploy(s.a, many, s.coord.address)
    with reverts("MemberVotingInvalidRules"):
        s.chain.deploy(s.a, founders, s.coord.address, voting_period_blocks=0)
    with reverts("MemberVotingInvalidRules"):  # a motion's expiry (deadline + period) must fit its block number
        s.chain.deploy(s.a, founders, s.coord.address, voting_period_blocks=2**32)
    with reverts("MemberVotingInvalidRules"):
        s.chain.deploy(s.a, founders, s.coord.address, quorum_bps=10_001)
    with reverts("MemberVotingInvalidRules"):
        s.chain.deploy(s.a, founders, s.coord.address, approval_bps=0)
    with reverts("ConsortiumZeroAddress"):
        s.chain.deploy(s.a, founders, ZERO)
    with reverts("ConsortiumZeroAddress"):
        s.chain.deploy(s.a, [FounderSpec("z", ZERO, KEY)], s.coord.address)
    with reverts("ConsortiumAlreadyMember", account=s.a.address):
        s.chain.deploy(s.a, [founders[0], founders[0]], s.coord.address)
    with reverts("ConsortiumInvalidName"):
        s.chain.deploy(s.a, [FounderSpec("", s.a.address, KEY)], s.coord.address)
    with reverts("ConsortiumInvalidName"):
        s.chain.deploy(s.a, [FounderSpec("x" * 65, s.a.address, KEY)], s.coord.address)
    with reverts("ConsortiumInvalidX25519Key"):
        s.chain.deploy(s.a, [FounderSpec("a", s.a.address, b"\0" * 32)], s.coord.address)


def test_coordinator_moves_only_by_motion(system):
    s = system
    # one mechanism: an address; no function but finalizeMotion writes it
    writers = [i["name"] for i in s.fc.consortium.contract.abi
               if i["type"] == "function" and i.get("stateMutability") not in ("view", "pure")]
    assert sorted(writers) == ["finalizeMotion", "proposeMotion", "setX25519Key", "voteMotion"]
    with reverts("ConsortiumNotCoordinator", account=s.a.address):
        s.A.rounds.open_round(1, 1)


# ------------------------------------------------------------ x25519 keys


def test_update_own_x25519_key(system):
    s = system
    result = s.B.consortium.set_x25519_key(KEY)
    ev = result.event("X25519KeyUpdated")
    assert ev.args == {"account": s.b.address, "x25519": "0x" + KEY.hex()}
    assert s.fc.consortium.member(s.b.address).x25519_pub == KEY
    with reverts("ConsortiumNotAMember", account=s.outsiders[0].address):
        s.O.consortium.set_x25519_key(KEY)
    with reverts("ConsortiumInvalidX25519Key"):
        s.B.consortium.set_x25519_key(b"\0" * 32)


# ------------------------------------------------------------- motions


def test_admit_motion_full_cycle(system):
    s = system
    newbie = s.outsiders[0]
    r = s.A.consortium.propose_motion_admit("Delta Hospital", newbie.address, KEY)
    mid = r.value
    ev = r.event("MotionProposed").args
    assert ev["kind"] == MotionKind.ADMIT and ev["target"] == newbie.address and ev["eligible"] == 3
    info = s.fc.consortium.motion(mid)
    assert (info.state, info.yes, info.name) == (MotionState.ACTIVE, 0, "Delta Hospital")
    with reverts("MemberVotingStillOpen", id=mid):
        s.A.consortium.finalize_motion(mid)
    fin = _pass_motion(s, mid, (s.A, s.B))
    assert fin.value == MotionState.APPROVED
    assert [e.event for e in fin.events] == ["MotionFinalized", "MemberAdmitted"]
    m = s.fc.consortium.member(newbie.address)
    assert (m.active, m.seq, m.name, m.x25519_pub) == (True, 4, "Delta Hospital", KEY)
    assert m.joined_at == fin.block_number
    assert s.fc.consortium.member_count() == 4
    with reverts("MemberVotingNotActive", id=mid, state=MotionState.APPROVED):
        s.C.consortium.vote_motion(mid, True)
    with reverts("MemberVotingNotActive", id=mid):
        s.A.consortium.finalize_motion(mid)


def test_remove_motion_and_removed_member_loses_rights(system):
    s = system
    mid = s.A.consortium.propose_motion_remove(s.c.address).value
    fin = _pass_motion(s, mid)
    assert [e.event for e in fin.events] == ["MotionFinalized", "MemberRemoved"]
    assert not s.fc.consortium.is_member(s.c.address)
    assert s.fc.consortium.member_count() == 2
    assert [m.name for m in s.fc.consortium.members()] == list(FOUNDER_NAMES[:2])
    assert len(s.fc.consortium.members(include_removed=True)) == 3
    with reverts("ConsortiumNotAMember", account=s.c.address):
        s.C.consortium.propose_motion_remove(s.a.address)


def test_set_coordinator_motion_moves_role(system):
    s = system
    new = s.outsiders[1]
    mid = s.B.consortium.propose_motion_coordinator(new.address).value
    fin = _pass_motion(s, mid)
    names = [e.event for e in fin.events]
    assert names[0] == "MotionFinalized" and names[-1] == "CoordinatorChanged"
    assert fin.event("CoordinatorChanged").args == {"previous": s.coord.address, "current": new.address}
    assert s.fc.consortium.coordinator() == new.address
    with reverts("ConsortiumNotCoordinator", account=s.coord.address):  # the old one lost the role
        s.K.rounds.open_round(1, 1)


def test_motion_rejected_without_quorum_or_majority(system):
    s = system
    # quorum 50% of 3: one vote is not enough
    mid = s.A.consortium.propose_motion_remove(s.c.address).value
    s.A.consortium.vote_motion(mid, True)
    s.chain.mine(VOTING_PERIOD)
    assert s.A.consortium.finalize_motion(mid).value == MotionState.REJECTED
    assert s.fc.consortium.is_member(s.c.address)
    # approval > 50%: a 1-1 tie fails
    mid = s.A.consortium.propose_motion_remove(s.c.address).value
    s.A.consortium.vote_motion(mid, True)
    s.B.consortium.vote_motion(mid, False)
    s.chain.mine(VOTING_PERIOD)
    fin = s.A.consortium.finalize_motion(mid)
    assert fin.value == MotionState.REJECTED
    assert fin.event("MotionFinalized").args == {"id": mid, "state": MotionState.REJECTED, "yes": 1, "no": 1}
    assert [e.event for e in fin.events] == ["MotionFinalized"]


def test_propose_motion_rules(system):
    s = system
    out = s.outsiders[0].address
    with reverts("ConsortiumNotAMember", account=out):
        s.O.consortium.propose_motion_admit("me", out, KEY)
    with reverts("ConsortiumZeroAddress"):
        s.A.consortium.propose_motion_admit("zero", ZERO, KEY)
    with reverts("ConsortiumAlreadyMember", account=s.b.address):
        s.A.consortium.propose_motion_admit("again", s.b.address, KEY)
    with reverts("ConsortiumInvalidName"):
        s.A.consortium.propose_motion_admit("", out, KEY)
    with reverts("ConsortiumInvalidX25519Key"):
        s.A.consortium.propose_motion_admit("name", out, b"\0" * 32)
    with reverts("ConsortiumNotAMember", account=out):
        s.A.consortium.propose_motion_remove(out)
    with reverts("ConsortiumAlreadyCoordinator", account=s.coord.address):
        s.A.consortium.propose_motion_coordinator(s.coord.address)
    with reverts("ConsortiumInvalidMotionKind"):
        s.A.consortium.propose_motion(0, out)


def test_vote_motion_rules(system):
    s = system
    with reverts("MemberVotingUnknown", id=99):
        s.A.consortium.vote_motion(99, True)
    mid = s.A.consortium.propose_motion_admit("Delta", s.outsiders[0].address, KEY).value
    with reverts("ConsortiumNotAMember", account=s.outsiders[1].address):
        s.fc.as_(s.outsiders[1]).consortium.vote_motion(mid, True)
    s.A.consortium.vote_motion(mid, True)
    with reverts("MemberVotingAlreadyVoted", account=s.a.address, id=mid):
        s.A.consortium.vote_motion(mid, False)
    assert s.fc.consortium.vote_of(mid, s.a.address) is True and s.fc.consortium.vote_of(mid, s.b.address) is None
    s.chain.mine(VOTING_PERIOD)
    with reverts("MemberVotingClosed", id=mid):
        s.B.consortium.vote_motion(mid, True)


def test_member_admitted_during_a_vote_cannot_vote_on_it(system):
    s = system
    other = s.outsiders[1]
    admit = s.A.consortium.propose_motion_admit("Epsilon", other.address, sha("e")).value
    for m in (s.A, s.B, s.C):
        m.consortium.vote_motion(admit, True)
    pending = s.A.consortium.propose_motion_remove(s.b.address).value  # created before `other` is admitted
    s.mine_past(s.fc.consortium.motion(admit).deadline)
    s.A.consortium.finalize_motion(admit)
    assert s.fc.consortium.is_member(other.address)
    assert s.fc.chain.block_number < s.fc.consortium.motion(pending).deadline  # voting still open
    with reverts("MemberVotingNotEligible", account=other.address, id=pending):
        s.fc.as_(other).consortium.vote_motion(pending, True)
    later = s.B.consortium.propose_motion_remove(s.c.address).value  # created after the admission
    s.fc.as_(other).consortium.vote_motion(later, True)
    assert s.fc.consortium.motion(later).yes == 1


def test_finalize_rechecks_and_last_member(system):
    s = system
    # two removals pass in a two-member consortium: the second cannot be applied
    pair = s.chain.deploy(s.a, make_founders([s.a, s.b]), s.coord.address, voting_period_blocks=8)
    fa, fb = s.chain.attach(pair, s.a), s.chain.attach(pair, s.b)
    m1 = fa.consortium.propose_motion_remove(s.b.address).value
    m2 = fb.consortium.propose_motion_remove(s.a.address).value
    for m in (m1, m2):
        fa.consortium.vote_motion(m, True)
        fb.consortium.vote_motion(m, True)
    s.mine_past(fa.consortium.motion(m2).deadline)
    fa.consortium.finalize_motion(m1)
    with reverts("ConsortiumLastMember"):
        fa.consortium.finalize_motion(m2)
    assert fa.consortium.motion(m2).state == MotionState.ACTIVE  # the revert left it untouched

    # a one-member consortium cannot remove its last member
    solo = s.chain.deploy(s.a, make_founders([s.a])[:1], s.coord.address, voting_period_blocks=2)
    fc = s.chain.attach(solo, s.a)
    mid = fc.consortium.propose_motion_remove(s.a.address).value
    fc.consortium.vote_motion(mid, True)
    s.chain.mine(2)
    with reverts("ConsortiumLastMember"):
        fc.consortium.finalize_motion(mid)
