"""Proposals: submission, one-member-one-vote, finalize, cancel - on both backends."""

from __future__ import annotations

from eth_utils import keccak

from fedchain.contracts.bindings import ProposalState, Vote, dataset_id
from fixtures_chain import VOTING_PERIOD, reverts, sha


def _submit(member, **over):
    args = dict(
        plan_cid="bafy-plan",
        plan_sha256=sha("plan"),
        purpose="sepsis-research",
        targets=["ds-a", "ds-b"],
        rounds=3,
        min_participants=2,
        round_duration=12,
    )
    args.update(over)
    return member.submit_proposal(**args)


def test_submit_stores_and_emits_everything(system):
    s = system
    r = _submit(s.A)
    pid = r.value
    assert pid == 1 and s.fc.proposal_count() == 1
    p = s.fc.proposal(pid)
    assert p.proposer == s.a.address and p.state == ProposalState.ACTIVE == ProposalState.PENDING
    assert (p.plan_cid, p.plan_sha256, p.purpose) == ("bafy-plan", sha("plan"), "sepsis-research")
    assert p.purpose_hash == keccak(text="sepsis-research")
    assert p.targets == (dataset_id("ds-a"), dataset_id("ds-b"))
    assert (p.rounds, p.min_participants, p.round_duration) == (3, 2, 12)
    assert p.created_at == r.block_number and p.deadline == r.block_number + VOTING_PERIOD
    assert (p.eligible, p.yes, p.no, p.abstain) == (3, 0, 0, 0)
    ev = r.event("ProposalSubmitted").args
    assert ev["targets"] == ["0x" + dataset_id("ds-a").hex(), "0x" + dataset_id("ds-b").hex()]
    assert ev["purposeHash"] == "0x" + keccak(text="sepsis-research").hex()
    assert ev["deadline"] == p.deadline and ev["planCid"] == "bafy-plan"
    assert s.fc.call("Proposals", "isTarget", pid, dataset_id("ds-b"))
    assert not s.fc.call("Proposals", "isTarget", pid, dataset_id("ds-c"))
    assert s.fc.proposal(2) is None


def test_submit_rules(system):
    s = system
    with reverts("NotAMember", account=s.outsiders[0].address):
        _submit(s.O)
    with reverts("NotAMember", account=s.coord.address):
        _submit(s.K)  # the coordinator is not a member
    with reverts("EmptyCid"):
        _submit(s.A, plan_cid="")
    with reverts("InvalidTargetCount", given=0, max=32):
        _submit(s.A, targets=[])
    with reverts("InvalidTargetCount", given=33):
        _submit(s.A, targets=[f"ds-{i}" for i in range(33)])
    with reverts("InvalidTarget", datasetId="0x" + dataset_id("ds-a").hex()):
        _submit(s.A, targets=["ds-a", "ds-b", "ds-a"])
    with reverts("InvalidTarget"):
        _submit(s.A, targets=[b"\0" * 32])
    with reverts("InvalidRounds", rounds=0):
        _submit(s.A, rounds=0)
    with reverts("InvalidRounds", rounds=10_001):
        _submit(s.A, rounds=10_001)
    with reverts("InvalidMinParticipants"):
        _submit(s.A, min_participants=0)
    with reverts("InvalidRoundDuration"):
        _submit(s.A, round_duration=0)
    assert s.fc.proposal_count() == 0
    assert _submit(s.A, targets=[f"ds-{i}" for i in range(32)]).value == 1


def test_vote_and_approve(system):
    s = system
    pid = _submit(s.A).value
    r = s.B.vote(pid, Vote.YES)
    assert r.event("Voted").args == {"id": pid, "voter": s.b.address, "choice": Vote.YES}
    s.C.vote(pid, Vote.ABSTAIN)
    assert s.fc.vote_of(pid, s.b.address) == Vote.YES
    assert s.fc.vote_of(pid, s.a.address) is None
    p = s.fc.proposal(pid)
    assert (p.yes, p.no, p.abstain) == (1, 0, 1)
    with reverts("VotingOpen", id=pid, deadline=p.deadline):
        s.A.finalize(pid)
    s.mine_past(p.deadline)
    fin = s.fc.as_(s.outsiders[0]).finalize(pid)  # anyone may finalize
    assert fin.value == ProposalState.APPROVED
    assert fin.event("ProposalFinalized").args == {
        "id": pid, "state": ProposalState.APPROVED, "yes": 1, "no": 0, "abstain": 1,
    }
    assert s.fc.proposal(pid).state == ProposalState.APPROVED
    with reverts("ProposalNotActive", id=pid, state=ProposalState.APPROVED):
        s.A.finalize(pid)


def test_rejections_quorum_and_threshold(system):
    s = system
    # turnout 1/3 < 50% quorum
    p1 = _submit(s.A).value
    s.A.vote(p1, Vote.YES)
    # 1 yes vs 1 no: 50% < 50.01% approval
    p2 = _submit(s.A).value
    s.A.vote(p2, Vote.YES)
    s.B.vote(p2, Vote.NO)
    # quorum met by abstentions only: no yes/no decision -> rejected
    p3 = _submit(s.A).value
    s.A.vote(p3, Vote.ABSTAIN)
    s.B.vote(p3, Vote.ABSTAIN)
    # 2 yes 1 no: approved
    p4 = _submit(s.A).value
    s.A.vote(p4, Vote.YES)
    s.B.vote(p4, Vote.YES)
    s.C.vote(p4, Vote.NO)
    s.mine_past(s.fc.proposal(p4).deadline)
    states = [s.A.finalize(p).value for p in (p1, p2, p3, p4)]
    assert states == [ProposalState.REJECTED] * 3 + [ProposalState.APPROVED]


def test_vote_rules(system):
    s = system
    with reverts("UnknownProposal", id=7):
        s.A.vote(7, Vote.YES)
    pid = _submit(s.A).value
    with reverts("InvalidChoice"):
        s.A.vote(pid, 0)
    with reverts("NotAMember", account=s.outsiders[0].address):
        s.O.vote(pid, Vote.YES)
    s.A.vote(pid, Vote.NO)
    with reverts("AlreadyVoted", account=s.a.address, id=pid):
        s.A.vote(pid, Vote.YES)
    s.mine_past(s.fc.proposal(pid).deadline)
    with reverts("VotingClosed", id=pid):
        s.B.vote(pid, Vote.YES)


def test_member_admitted_after_submission_cannot_vote(system):
    s = system
    newbie = s.outsiders[0]
    mid = s.A.propose_motion_admit("Delta", newbie.address, sha("k")).value
    s.A.vote_motion(mid, True)
    s.B.vote_motion(mid, True)
    pid = _submit(s.B).value  # created before the admission
    s.mine_past(s.fc.motion(mid).deadline)
    s.A.finalize_motion(mid)
    assert s.fc.is_member(newbie.address)
    assert s.fc.chain.block_number < s.fc.proposal(pid).deadline  # voting still open
    with reverts("NotEligible", account=newbie.address, id=pid):
        s.fc.as_(newbie).vote(pid, Vote.YES)
    later = _submit(s.B).value
    assert s.fc.proposal(later).eligible == 4
    s.fc.as_(newbie).vote(later, Vote.YES)


def test_cancel_rules(system):
    s = system
    pid = _submit(s.A).value
    with reverts("NotProposer", id=pid, account=s.b.address):
        s.B.cancel(pid)
    r = s.A.cancel(pid)
    assert r.event("ProposalCancelled").args == {"id": pid}
    assert s.fc.proposal(pid).state == ProposalState.CANCELLED
    with reverts("ProposalNotActive", id=pid, state=ProposalState.CANCELLED):
        s.B.vote(pid, Vote.YES)
    with reverts("ProposalNotActive", id=pid):
        s.A.cancel(pid)
    with reverts("UnknownProposal", id=99):
        s.A.cancel(99)
    voted = _submit(s.A).value
    s.C.vote(voted, Vote.NO)
    with reverts("VotesAlreadyCast", id=voted):
        s.A.cancel(voted)
