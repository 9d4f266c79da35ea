"""Proposals: submission, one-member-one-vote, finalize, cancel - on both backends."""

from __future__ import annotations

from eth_utils import keccak

from fedchain.contracts.bindings import ProposalState, Vote, dataset_id
from fixtures_chain import VOTING_PERIOD, reverts, sha


def _datasets(s):
    """The targets `_submit` names: "ds-a" of A and "ds-b" of B."""
    s.register(s.A, "ds-a")
    s.register(s.B, "ds-b")


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
    return member.proposals.submit_proposal(**args)


def test_submit_stores_and_emits_everything(system):
    s = system
    _datasets(s)
    r = _submit(s.A)
    pid = r.value
    assert pid == 1 and s.fc.proposals.proposal_count() == 1
    p = s.fc.proposals.proposal(pid)
    assert p.proposer == s.a.address and p.state == ProposalState.ACTIVE == ProposalState.PENDING
    assert (p.plan_cid, p.plan_sha256, p.purpose) == ("bafy-plan", sha("plan"), "sepsis-research")
    assert p.purpose_hash == keccak(text="sepsis-research")
    assert p.targets == (dataset_id("ds-a"), dataset_id("ds-b"))
    assert (p.rounds, p.min_participants, p.round_duration) == (3, 2, 12)
    assert p.created_at == r.block_number and p.deadline == r.block_number + VOTING_PERIOD
    assert (p.eligible, p.yes, p.no, p.abstain) == (3, 0, 0, 0)
    assert p.target_owners == (s.a.address, s.b.address)  # whose data the members vote on
    ev = r.event("ProposalSubmitted").args
    assert ev["targets"] == ["0x" + dataset_id("ds-a").hex(), "0x" + dataset_id("ds-b").hex()]
    assert ev["owners"] == [s.a.address, s.b.address]
    assert ev["purposeHash"] == "0x" + keccak(text="sepsis-research").hex()
    assert ev["deadline"] == p.deadline and ev["planCid"] == "bafy-plan"
    assert list(s.fc.proposals.call("useTerms", pid, dataset_id("ds-b")))[2:] == [s.b.address, 1000]
    assert int(s.fc.proposals.call("useTerms", pid, dataset_id("ds-c"))[2], 16) == 0
    assert s.fc.proposals.call("roundTerms", pid).targetCount == 2
    requester, purpose_hash, targets, owners = s.fc.proposals.call("targetsOf", pid)  # what an early close reads
    assert (requester, bytes(purpose_hash)) == (s.a.address, keccak(text="sepsis-research"))
    assert [bytes(t) for t in targets] == [dataset_id("ds-a"), dataset_id("ds-b")] and owners == [s.a.address, s.b.address]
    assert list(s.fc.proposals.call("targetsOf", 2))[2:] == [[], []]
    assert s.fc.proposals.proposal(2) is None


def test_submit_rules(system):
    s = system
    _datasets(s)
    with reverts("ConsortiumNotAMember", account=s.outsiders[0].address):
        _submit(s.O)
    with reverts("ConsortiumNotAMember", account=s.coord.address):
        _submit(s.K)  # the coordinator is not a member
    with reverts("ProposalsEmptyCid"):
        _submit(s.A, plan_cid="")
    with reverts("ProposalsInvalidTargetCount", given=0, max=128):
        _submit(s.A, targets=[])
    with reverts("ProposalsInvalidTargetCount", given=129):
        _submit(s.A, targets=[f"ds-{i}" for i in range(129)])
    with reverts("ProposalsInvalidTarget", datasetId="0x" + dataset_id("ds-a").hex()):
        _submit(s.A, targets=["ds-a", "ds-b", "ds-a"])
    # targets are bound to registered datasets: unknown (or zero) ids are refused
    with reverts("ProposalsUnknownTarget", datasetId="0x" + dataset_id("ds-later").hex()):
        _submit(s.A, targets=["ds-a", "ds-later"])
    with reverts("ProposalsUnknownTarget", datasetId="0x" + "00" * 32):
        _submit(s.A, targets=[b"\0" * 32])
    with reverts("ProposalsInvalidRounds", rounds=0):
        _submit(s.A, rounds=0)
    with reverts("ProposalsInvalidRounds", rounds=10_001):
        _submit(s.A, rounds=10_001)
    with reverts("ProposalsInvalidMinParticipants"):
        _submit(s.A, min_participants=0)
    with reverts("ProposalsInvalidRoundDuration"):
        _submit(s.A, round_duration=0)
    s.A.registry.revoke_dataset("ds-a")
    with reverts("ProposalsUnknownTarget", datasetId="0x" + dataset_id("ds-a").hex()):
        _submit(s.A, targets=["ds-b", "ds-a"])
    assert s.fc.proposals.proposal_count() == 0


def test_submit_up_to_max_targets(system):
    s = system
    owners = (s.A, s.B, s.C)
    for i in range(128):
        s.register(owners[i % 3], f"ds-{i}")
    pid = _submit(s.A, targets=[f"ds-{i}" for i in range(128)]).value
    p = s.fc.proposals.proposal(pid)
    assert len(p.targets) == 128 and p.target_owners[:4] == (s.a.address, s.b.address, s.c.address, s.a.address)


def test_vote_and_approve(system):
    s = system
    _datasets(s)
    pid = _submit(s.A).value
    r = s.B.proposals.vote(pid, Vote.YES)
    assert r.event("Voted").args == {"id": pid, "voter": s.b.address, "choice": Vote.YES}
    s.C.proposals.vote(pid, Vote.ABSTAIN)
    assert s.fc.proposals.vote_of(pid, s.b.address) == Vote.YES
    assert s.fc.proposals.vote_of(pid, s.a.address) is None
    p = s.fc.proposals.proposal(pid)
    assert (p.yes, p.no, p.abstain) == (1, 0, 1)
    with reverts("MemberVotingStillOpen", id=pid, deadline=p.deadline):
        s.A.proposals.finalize(pid)
    s.mine_past(p.deadline)
    fin = s.fc.as_(s.outsiders[0]).proposals.finalize(pid)  # anyone may finalize
    assert fin.value == ProposalState.APPROVED
    assert fin.event("ProposalFinalized").args == {
        "id": pid, "state": ProposalState.APPROVED, "yes": 1, "no": 0, "abstain": 1,
    }
    assert s.fc.proposals.proposal(pid).state == ProposalState.APPROVED
    with reverts("MemberVotingNotActive", id=pid, state=ProposalState.APPROVED):
        s.A.proposals.finalize(pid)


def test_rejections_quorum_and_threshold(system):
    s = system
    _datasets(s)
    # turnout 1/3 < 50% quorum
    p1 = _submit(s.A).value
    s.A.proposals.vote(p1, Vote.YES)
    # 1 yes vs 1 no: 50% < 50.01% approval
    p2 = _submit(s.A).value
    s.A.proposals.vote(p2, Vote.YES)
    s.B.proposals.vote(p2, Vote.NO)
    # quorum met by abstentions only: no yes/no decision -> rejected
    p3 = _submit(s.A).value
    s.A.proposals.vote(p3, Vote.ABSTAIN)
    s.B.proposals.vote(p3, Vote.ABSTAIN)
    # 2 yes 1 no: approved
    p4 = _submit(s.A).value
    s.A.proposals.vote(p4, Vote.YES)
    s.B.proposals.vote(p4, Vote.YES)
    s.C.proposals.vote(p4, Vote.NO)
    s.mine_past(s.fc.proposals.proposal(p4).deadline)
    states = [s.A.proposals.finalize(p).value for p in (p1, p2, p3, p4)]
    assert states == [ProposalState.REJECTED] * 3 + [ProposalState.APPROVED]


def test_vote_rules(system):
    s = system
    _datasets(s)
    with reverts("MemberVotingUnknown", id=7):
        s.A.proposals.vote(7, Vote.YES)
    pid = _submit(s.A).value
    with reverts("MemberVotingInvalidChoice"):
        s.A.proposals.vote(pid, 0)
    with reverts("ConsortiumNotAMember", account=s.outsiders[0].address):
        s.O.proposals.vote(pid, Vote.YES)
    s.A.proposals.vote(pid, Vote.NO)
    with reverts("MemberVotingAlreadyVoted", account=s.a.address, id=pid):
        s.A.proposals.vote(pid, Vote.YES)
    s.mine_past(s.fc.proposals.proposal(pid).deadline)
    with reverts("MemberVotingClosed", id=pid):
        s.B.proposals.vote(pid, Vote.YES)


def test_member_admitted_after_submission_cannot_vote(system):
    s = system
    _datasets(s)
    newbie = s.outsiders[0]
    mid = s.A.consortium.propose_motion_admit("Delta", newbie.address, sha("k")).value
    s.A.consortium.vote_motion(mid, True)
    s.B.consortium.vote_motion(mid, True)
    pid = _submit(s.B).value  # created before the admission
    s.mine_past(s.fc.consortium.motion(mid).deadline)
    s.A.consortium.finalize_motion(mid)
    assert s.fc.consortium.is_member(newbie.address)
    assert s.fc.chain.block_number < s.fc.proposals.proposal(pid).deadline  # voting still open
    with reverts("MemberVotingNotEligible", account=newbie.address, id=pid):
        s.fc.as_(newbie).proposals.vote(pid, Vote.YES)
    later = _submit(s.B).value
    assert s.fc.proposals.proposal(later).eligible == 4
    s.fc.as_(newbie).proposals.vote(later, Vote.YES)


def test_cancel_rules(system):
    s = system
    _datasets(s)
    pid = _submit(s.A).value
    with reverts("ProposalsNotProposer", id=pid, account=s.b.address):
        s.B.proposals.cancel(pid)
    r = s.A.proposals.cancel(pid)
    assert r.event("ProposalCancelled").args == {"id": pid}
    assert s.fc.proposals.proposal(pid).state == ProposalState.CANCELLED
    with reverts("MemberVotingNotActive", id=pid, state=ProposalState.CANCELLED):
        s.B.proposals.vote(pid, Vote.YES)
    with reverts("MemberVotingNotActive", id=pid):
        s.A.proposals.cancel(pid)
    with reverts("MemberVotingUnknown", id=99):
        s.A.proposals.cancel(99)
    voted = _submit(s.A).value
    s.C.proposals.vote(voted, Vote.NO)
    with reverts("ProposalsVotesAlreadyCast", id=voted):
        s.A.proposals.cancel(voted)
