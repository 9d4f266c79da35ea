"""Releases: release votes on trained models and withdrawal marks - every rule, on both backends."""

from __future__ import annotations

import dataclasses

import pytest

from fedchain.contracts.bindings import ProposalState, Vote, dataset_id
from fixtures_chain import VOTING_PERIOD, cid, reverts, sha

AGG = (cid("aggregate-1"), sha("aggregate-1"), cid("scores-1"), sha("scores-1"))
CARD = (cid("card"), sha("card"))


def _closed_round(s, pid: int, rnd: int) -> None:
    if rnd > 1:
        s.K.rounds.open_round(pid, rnd)
    s.commit(s.A, pid, rnd, "ds-a")
    s.commit(s.B, pid, rnd, "ds-b")
    s.K.rounds.close_round(pid, rnd, cid(f"agg-{rnd}"), sha(f"agg-{rnd}"), cid(f"sc-{rnd}"), sha(f"sc-{rnd}"))


@pytest.fixture
def trained(system):
    """Datasets ds-a (A), ds-b (B); proposal on both with 3 rounds; rounds 1 and 2 closed."""
    s = system
    pid = s.training_setup(rounds=3, min_participants=1, round_duration=10)
    _closed_round(s, pid, 1)
    _closed_round(s, pid, 2)
    return s, pid


def _released(s, pid: int, rnd: int, votes=(Vote.YES, Vote.YES, Vote.YES)) -> int:
    rid = s.A.releases.propose_release(pid, rnd, *CARD).value
    for member, v in zip((s.A, s.B, s.C), votes):
        member.releases.vote(rid, v)
    s.chain.mine(VOTING_PERIOD)
    return rid


def _commit_of(s, pid: int, rnd: int, dataset: str):
    return next(c for c in s.fc.rounds.commitments(pid, rnd) if c.dataset == dataset_id(dataset))


# ------------------------------------------------------------------ release


def test_release_by_vote(trained):
    s, pid = trained
    r = s.A.releases.propose_release(pid, 2, *CARD)
    rid = r.value
    ev = r.event("ReleaseProposed").args
    assert (ev["proposalId"], ev["round"], ev["cardCid"], ev["aggregateSha256"]) == (
        pid, 2, CARD[0], "0x" + sha("agg-2").hex())
    info = s.fc.releases.release(rid)
    assert (info.state, info.proposal_id, info.round, info.card_sha256, info.aggregate_sha256) == (
        ProposalState.ACTIVE, pid, 2, CARD[1], sha("agg-2"))
    for member in (s.A, s.B):
        member.releases.vote(rid, Vote.YES)
    s.C.releases.vote(rid, Vote.NO)
    assert not s.fc.releases.model_status(pid, 2).released
    s.chain.mine(VOTING_PERIOD)
    assert s.O.releases.finalize(rid).value == ProposalState.APPROVED  # anyone finalizes
    st = s.fc.releases.model_status(pid, 2)
    assert st.released and st.release_id == rid and not st.withdrawn
    assert not s.fc.releases.model_status(pid, 1).released
    model = s.fc.read_model()
    assert model.released == {(pid, 2): rid} and model.releases[rid].votes[s.c.address.lower()] == "no"


def test_a_rejected_release_releases_nothing(trained):
    s, pid = trained
    rid = _released(s, pid, 2, votes=(Vote.YES, Vote.NO, Vote.NO))
    assert s.A.releases.finalize(rid).value == ProposalState.REJECTED
    assert not s.fc.releases.model_status(pid, 2).released


def test_release_proposal_rules(trained):
    s, pid = trained
    with reverts("ConsortiumNotAMember"):
        s.O.releases.propose_release(pid, 2, *CARD)
    with reverts("ReleasesInvalidCardCid"):
        s.A.releases.propose_release(pid, 2, "not-a-cid", CARD[1])
    with reverts("ReleasesInvalidCardSha256"):
        s.A.releases.propose_release(pid, 2, CARD[0], b"\0" * 32)
    s.K.rounds.open_round(pid, 3)
    with reverts("ReleasesModelNotClosed", proposalId=pid, round=3):  # open: no model yet
        s.A.releases.propose_release(pid, 3, *CARD)
    with reverts("ReleasesModelNotClosed", proposalId=pid, round=4):  # never opened
        s.A.releases.propose_release(pid, 4, *CARD)
    with reverts("ReleasesModelNotClosed", proposalId=pid + 1, round=1):  # no such proposal
        s.A.releases.propose_release(pid + 1, 1, *CARD)


def test_a_failed_round_has_no_model_to_release(system):
    s = system
    pid = s.training_setup(rounds=1, min_participants=2, round_duration=3)
    s.commit(s.A, pid, 1, "ds-a")
    s.mine_past(s.fc.rounds.round_info(pid, 1).deadline)
    s.K.rounds.fail_round(pid, 1)
    with reverts("ReleasesModelNotClosed"):
        s.A.releases.propose_release(pid, 1, *CARD)


def test_a_model_is_released_once(trained):
    s, pid = trained
    first = s.A.releases.propose_release(pid, 2, *CARD).value
    second = s.B.releases.propose_release(pid, 2, cid("card-2"), sha("card-2")).value  # concurrent: allowed
    for member in (s.A, s.B):
        member.releases.vote(first, Vote.YES)
        member.releases.vote(second, Vote.YES)
    s.chain.mine(VOTING_PERIOD)
    s.A.releases.finalize(first)
    with reverts("ReleasesAlreadyReleased", proposalId=pid, round=2, releaseId=first):
        s.A.releases.finalize(second)
    with reverts("ReleasesAlreadyReleased", releaseId=first):
        s.C.releases.propose_release(pid, 2, *CARD)


def test_release_voting_rules(trained):
    s, pid = trained
    rid = s.A.releases.propose_release(pid, 2, *CARD).value
    with reverts("ConsortiumNotAMember"):
        s.O.releases.vote(rid, Vote.YES)
    with reverts("MemberVotingUnknown", id=rid + 1):
        s.A.releases.vote(rid + 1, Vote.YES)
    with reverts("MemberVotingInvalidChoice"):
        s.A.releases.transact("voteRelease", rid, 0)
    s.A.releases.vote(rid, Vote.YES)
    with reverts("MemberVotingAlreadyVoted"):
        s.A.releases.vote(rid, Vote.NO)
    with reverts("MemberVotingStillOpen"):
        s.A.releases.finalize(rid)
    s.chain.mine(VOTING_PERIOD)
    with reverts("MemberVotingClosed"):
        s.B.releases.vote(rid, Vote.YES)
    # quorum 50%: one vote of three eligible is not enough
    assert s.A.releases.finalize(rid).value == ProposalState.REJECTED
    with reverts("MemberVotingNotActive"):
        s.A.releases.finalize(rid)


def test_cancel_release_rules(trained):
    s, pid = trained
    rid = s.A.releases.propose_release(pid, 2, *CARD).value
    with reverts("ReleasesNotProposer", id=rid):
        s.B.releases.cancel(rid)
    s.A.releases.cancel(rid)
    assert s.fc.releases.release(rid).state == ProposalState.CANCELLED
    with reverts("MemberVotingNotActive"):
        s.B.releases.vote(rid, Vote.YES)
    other = s.A.releases.propose_release(pid, 2, *CARD).value
    s.B.releases.vote(other, Vote.YES)
    with reverts("ReleasesVotesAlreadyCast", id=other):
        s.A.releases.cancel(other)


# --------------------------------------------------------------- withdrawal


def test_a_revoked_dataset_marks_each_model_of_its_lineage(trained):
    s, pid = trained
    c1 = _commit_of(s, pid, 1, "ds-a")
    with reverts("ReleasesDatasetNotRevoked", datasetId="0x" + dataset_id("ds-a").hex()):
        s.O.releases.mark_withdrawn(pid, 2, c1)
    s.A.registry.revoke_dataset("ds-a")
    r = s.O.releases.mark_withdrawn(pid, 2, c1)  # anyone; round 1's commitment is in round 2's lineage
    assert r.gas_used < 110_000
    assert r.event("ModelWithdrawn").args["committedRound"] == 1
    assert s.fc.releases.is_marked(pid, 2, "ds-a") and not s.fc.releases.is_marked(pid, 2, "ds-b")
    assert s.fc.releases.model_status(pid, 2).withdrawals == 1
    assert not s.fc.releases.model_status(pid, 1).withdrawn  # one model per mark
    with reverts("ReleasesAlreadyMarked", proposalId=pid, round=2):
        s.O.releases.mark_withdrawn(pid, 2, _commit_of(s, pid, 2, "ds-a"))
    r1 = s.O.releases.mark_withdrawn(pid, 1, c1)
    assert abs(r1.gas_used - r.gas_used) < 8_000  # O(1): one more round read when the commitment is older
    model = s.fc.read_model()
    assert [(w.round, w.committed_round) for k in sorted(model.withdrawals) for w in model.withdrawals[k]] == [
        (1, 1), (2, 1)]
    with reverts("ReleasesModelWithdrawn", proposalId=pid, round=2):
        s.A.releases.propose_release(pid, 2, *CARD)


def test_a_mark_names_a_commitment_of_the_lineage(trained):
    s, pid = trained
    s.register(s.C, "ds-c")  # never a target, never committed
    for name in ("ds-a", "ds-c"):
        s.as_(s.a if name == "ds-a" else s.c).registry.revoke_dataset(name)
    c1 = _commit_of(s, pid, 1, "ds-a")
    with reverts("ReleasesNotInLineage", datasetId="0x" + dataset_id("ds-c").hex()):  # a dataset that never contributed
        s.O.releases.mark_withdrawn(pid, 2, dataclasses.replace(c1, dataset=dataset_id("ds-c")))
    with reverts("ReleasesNotInLineage"):  # another dataset's commitment, relabelled
        s.O.releases.mark_withdrawn(pid, 2, dataclasses.replace(_commit_of(s, pid, 1, "ds-b"), dataset=c1.dataset))
    with reverts("ReleasesNotInLineage"):  # right dataset, wrong hash
        s.O.releases.mark_withdrawn(pid, 2, dataclasses.replace(c1, sha256=sha("other")))
    with reverts("ReleasesNotInLineage", committedRound=0):
        s.O.releases.mark_withdrawn(pid, 2, dataclasses.replace(c1, round=0))
    with reverts("ReleasesNotInLineage", round=1, committedRound=2):  # a later round is not in round 1's lineage
        s.O.releases.mark_withdrawn(pid, 1, _commit_of(s, pid, 2, "ds-a"))
    s.K.rounds.open_round(pid, 3)
    s.commit(s.B, pid, 3, "ds-b")
    with reverts("ReleasesModelNotClosed", round=3):
        s.O.releases.mark_withdrawn(pid, 3, c1)


def test_a_failed_round_is_not_in_the_lineage(system):
    s = system
    pid = s.training_setup(rounds=2, min_participants=2, round_duration=3)
    s.commit(s.A, pid, 1, "ds-a")
    s.mine_past(s.fc.rounds.round_info(pid, 1).deadline)
    s.K.rounds.fail_round(pid, 1)
    s.K.rounds.open_round(pid, 2)
    s.commit(s.B, pid, 2, "ds-b")
    s.commit(s.A, pid, 2, "ds-a", tag="v")
    s.K.rounds.close_round(pid, 2, *AGG)
    s.A.registry.revoke_dataset("ds-a")
    failed = _commit_of(s, pid, 1, "ds-a")
    with reverts("ReleasesNotInLineage", committedRound=1):
        s.O.releases.mark_withdrawn(pid, 2, failed)
    s.O.releases.mark_withdrawn(pid, 2, _commit_of(s, pid, 2, "ds-a"))


def test_a_model_marked_during_its_release_vote_is_not_released(trained):
    s, pid = trained
    rid = _released(s, pid, 2)
    s.A.registry.revoke_dataset("ds-a")
    s.O.releases.mark_withdrawn(pid, 2, _commit_of(s, pid, 2, "ds-a"))
    with reverts("ReleasesModelWithdrawn", proposalId=pid, round=2):
        s.A.releases.finalize(rid)
    assert not s.fc.releases.model_status(pid, 2).released


def test_a_released_model_can_still_be_marked(trained):
    s, pid = trained
    rid = _released(s, pid, 2)
    s.A.releases.finalize(rid)
    s.B.registry.revoke_dataset("ds-b")
    s.O.releases.mark_withdrawn(pid, 2, _commit_of(s, pid, 1, "ds-b"))
    st = s.fc.releases.model_status(pid, 2)
    assert st.released and st.withdrawn
