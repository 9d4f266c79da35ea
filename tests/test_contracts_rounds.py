"""Rounds: the phase machine, commitments, close/fail, evaluations - on both backends."""

from __future__ import annotations

import pytest

from fedchain.contracts.bindings import (
    POLICY_REASONS, Policy, ProposalState, RoundPhase, Vote, commitment_hash, dataset_id,
)
from fixtures_chain import ROWS, VOTING_PERIOD, cid, reverts, sha

AGG = ("bafy-aggregate", sha("aggregate"), "bafy-scores", sha("scores"))
UA = cid("update-a")


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


# ------------------------------------------------------------------ happy path


def test_full_round_cycle(system):
    s = system
    pid = s.training_setup(rounds=2, min_participants=2, round_duration=10)
    info = s.fc.rounds.round_info(pid, 1)
    assert info.phase == RoundPhase.OPEN and info.committed == 0
    assert info.deadline == info.opened_at + 10
    assert s.fc.rounds.last_round(pid) == 1

    r = s.A.rounds.commit_update(pid, 1, "ds-a", UA, sha("ua"), 934)
    assert r.gas_used <= 100_000
    assert r.event("UpdateCommitted").args == {
        "proposalId": pid, "round": 1, "member": s.a.address, "datasetId": _hex(dataset_id("ds-a")),
        "cid": UA, "updateSha256": _hex(sha("ua")), "sampleCount": 934,
    }
    stored = s.fc.rounds.commitment_of(pid, 1, s.a.address)
    assert stored == r.value == commitment_hash("ds-a", UA, sha("ua"), 934)
    assert stored == s.fc.rounds.call("commitmentHash", dataset_id("ds-a"), UA, sha("ua"), 934)
    assert s.fc.rounds.commitment_of(pid, 1, s.b.address) is None
    s.commit(s.B, pid, 1, "ds-b")
    assert s.fc.rounds.round_info(pid, 1).committed == 2

    close = s.K.rounds.close_round(pid, 1, *AGG)
    assert close.event("RoundClosed").args == {
        "proposalId": pid, "round": 1, "aggregateCid": AGG[0], "aggregateSha256": _hex(AGG[1]),
        "scoresCid": AGG[2], "scoresSha256": _hex(AGG[3]), "committed": 2,
    }
    info = s.fc.rounds.round_info(pid, 1)
    assert (info.phase, info.aggregate_cid, info.aggregate_sha256, info.scores_cid, info.scores_sha256) == (
        RoundPhase.CLOSED, *AGG
    )
    assert info.global_metric_ppm is None

    ev = s.A.rounds.submit_evaluation(pid, 1, "ds-a", 912_345, 300)
    assert ev.event("EvaluationSubmitted").args == {
        "proposalId": pid, "round": 1, "member": s.a.address, "datasetId": _hex(dataset_id("ds-a")),
        "metricPpm": 912_345, "sampleCount": 300,
    }
    assert s.fc.rounds.has_evaluated(pid, 1, s.a.address) and not s.fc.rounds.has_evaluated(pid, 1, s.b.address)
    g = s.K.rounds.record_global_metric(pid, 1, 900_000)
    assert g.event("GlobalMetricRecorded").args == {"proposalId": pid, "round": 1, "metricPpm": 900_000}
    info = s.fc.rounds.round_info(pid, 1)
    assert (info.global_metric_ppm, info.evaluations) == (900_000, 1)

    # round 2 follows round 1; there is no round 3
    assert s.K.rounds.open_round(pid, 2).value == s.fc.rounds.round_info(pid, 2).deadline
    s.commit(s.A, pid, 2, "ds-a")
    s.commit(s.B, pid, 2, "ds-b")
    s.K.rounds.close_round(pid, 2, *AGG)
    with reverts("RoundsBeyondPlan", proposalId=pid, round=3, rounds=2):
        s.K.rounds.open_round(pid, 3)
    names = [e.event for e in s.fc.events(s.deployment.deploy_block) if e.contract == "Rounds"]
    assert names.count("RoundOpened") == 2 and names.count("UpdateCommitted") == 4

    # per-round views built from the events
    c1 = s.fc.rounds.commitments(pid, 1)
    assert [(c.member, c.dataset, c.sample_count) for c in c1] == [
        (s.a.address, dataset_id("ds-a"), 934), (s.b.address, dataset_id("ds-b"), 100),
    ]
    assert (c1[0].cid, c1[0].sha256, c1[0].proposal_id, c1[0].round) == (UA, sha("ua"), pid, 1)
    assert len(s.fc.rounds.commitments(pid, 2)) == 2 and s.fc.rounds.commitments(pid + 1, 1) == []
    evs = s.fc.rounds.evaluations(pid, 1)
    assert [(e.member, e.dataset, e.metric_ppm, e.sample_count) for e in evs] == [
        (s.a.address, dataset_id("ds-a"), 912_345, 300)
    ]
    assert s.fc.rounds.evaluations(pid, 2) == []


def test_round_info_of_unopened_round(system):
    info = system.fc.rounds.round_info(5, 1)
    assert info.phase == RoundPhase.NONE and info.committed == 0 and info.aggregate_cid == ""


# --------------------------------------------------------------------- open


def test_open_round_rules(system):
    s = system
    s.register(s.A, "ds-a")
    pending = s.propose(s.A, ["ds-a"])
    with reverts("ConsortiumNotCoordinator", account=s.a.address):
        s.A.rounds.open_round(pending, 1)
    with reverts("RoundsProposalNotApproved", proposalId=pending, state=ProposalState.ACTIVE):
        s.K.rounds.open_round(pending, 1)
    with reverts("RoundsProposalNotApproved", state=ProposalState.NONE):
        s.K.rounds.open_round(77, 1)
    rejected = s.propose(s.A, ["ds-a"])
    s.A.proposals.vote(rejected, Vote.NO)
    s.B.proposals.vote(rejected, Vote.NO)
    s.mine_past(s.fc.proposals.proposal(rejected).deadline)
    s.A.proposals.finalize(rejected)
    with reverts("RoundsProposalNotApproved", state=ProposalState.REJECTED):
        s.K.rounds.open_round(rejected, 1)

    pid = s.approved_proposal(["ds-a"], rounds=2)
    with reverts("RoundsOutOfOrder", proposalId=pid, round=2, expected=1):
        s.K.rounds.open_round(pid, 2)
    with reverts("RoundsOutOfOrder", round=0, expected=1):
        s.K.rounds.open_round(pid, 0)
    s.K.rounds.open_round(pid, 1)
    with reverts("RoundsOutOfOrder", round=1, expected=2):
        s.K.rounds.open_round(pid, 1)
    with reverts("RoundsPreviousRoundOpen", proposalId=pid, round=1):
        s.K.rounds.open_round(pid, 2)

    single = s.approved_proposal(["ds-a"], rounds=1)
    s.K.rounds.open_round(single, 1)
    s.commit(s.A, single, 1, "ds-a")
    s.K.rounds.close_round(single, 1, *AGG)
    with reverts("RoundsBeyondPlan", proposalId=single, round=2, rounds=1):
        s.K.rounds.open_round(single, 2)


def test_new_coordinator_takes_over_rounds(system):
    s = system
    pid = s.training_setup(round_duration=40)
    new = s.outsiders[2]
    mid = s.A.consortium.propose_motion_coordinator(new.address).value
    for m in (s.A, s.B, s.C):
        m.consortium.vote_motion(mid, True)
    s.chain.mine(VOTING_PERIOD)
    s.A.consortium.finalize_motion(mid)
    s.commit(s.A, pid, 1, "ds-a")
    s.commit(s.B, pid, 1, "ds-b")
    with reverts("ConsortiumNotCoordinator", account=s.coord.address):
        s.K.rounds.close_round(pid, 1, *AGG)
    s.fc.as_(new).rounds.close_round(pid, 1, *AGG)


# ------------------------------------------------------------------- commit


def test_commit_phase_and_once_rules(system):
    s = system
    pid = s.training_setup(rounds=2, round_duration=10)
    with reverts("RoundsNotOpen", proposalId=pid, round=2, phase=RoundPhase.NONE):
        s.commit(s.A, pid, 2, "ds-a")
    s.commit(s.A, pid, 1, "ds-a")
    with reverts("RoundsAlreadyCommitted", proposalId=pid, round=1, member=s.a.address):
        s.commit(s.A, pid, 1, "ds-a", tag="again")
    with reverts("RoundsInvalidCid"):
        s.B.rounds.commit_update(pid, 1, "ds-b", "", sha("x"), 10)
    with reverts("RoundsInvalidSampleCount"):
        s.B.rounds.commit_update(pid, 1, "ds-b", cid("x"), sha("x"), 0)
    deadline = s.fc.rounds.round_info(pid, 1).deadline
    s.mine_past(deadline)
    with reverts("RoundsDeadlinePassed", proposalId=pid, round=1, deadline=deadline):
        s.commit(s.B, pid, 1, "ds-b")
    s.K.rounds.close_round(pid, 1, *AGG)
    with reverts("RoundsNotOpen", phase=RoundPhase.CLOSED):
        s.commit(s.B, pid, 1, "ds-b")


def test_commit_dataset_rules(system):
    s = system
    s.register(s.C, "ds-c")  # C's dataset, not a target
    pid = s.training_setup(round_duration=60)
    with reverts("ConsortiumNotAMember", account=s.outsiders[0].address):
        s.commit(s.O, pid, 1, "ds-a")
    with reverts("RoundsNotATarget", proposalId=pid, datasetId=_hex(dataset_id("ds-c"))):
        s.commit(s.C, pid, 1, "ds-c")
    with reverts("RoundsNotDatasetOwner", datasetId=_hex(dataset_id("ds-a")), account=s.c.address):
        s.commit(s.C, pid, 1, "ds-a")  # A's dataset
    # a member removed after registering can no longer commit
    mid = s.A.consortium.propose_motion_remove(s.b.address).value
    s.A.consortium.vote_motion(mid, True)
    s.C.consortium.vote_motion(mid, True)
    s.chain.mine(VOTING_PERIOD)
    s.A.consortium.finalize_motion(mid)
    with reverts("ConsortiumNotAMember", account=s.b.address):
        s.commit(s.B, pid, 1, "ds-b")


@pytest.mark.parametrize(
    "reason", ["REVOKED", "EXPIRED", "PURPOSE_NOT_ALLOWED", "PROPOSAL_NOT_ALLOWED", "REQUESTER_NOT_ALLOWED"]
)
def test_commit_enforces_dataset_policy(system, reason):
    s = system
    s.register(s.A, "ds-a")
    s.register(s.B, "ds-b", Policy.open(expiry=s.chain.block_timestamp + 3_600))
    pid = s.approved_proposal(["ds-a", "ds-b"], purpose="research", round_duration=20)
    s.K.rounds.open_round(pid, 1)
    assert s.fc.registry.admits("ds-b", pid).ok
    if reason == "REVOKED":
        s.B.registry.revoke_dataset("ds-b")
    elif reason == "EXPIRED":
        s.chain.advance_time(7_200)
    elif reason == "PURPOSE_NOT_ALLOWED":
        s.B.registry.set_policy("ds-b", Policy(purposes=("marketing",), any_approved_proposal=True))
    elif reason == "PROPOSAL_NOT_ALLOWED":
        s.B.registry.set_policy("ds-b", Policy(proposal_ids=(pid + 1,)))
    elif reason == "REQUESTER_NOT_ALLOWED":
        s.B.registry.set_policy("ds-b", Policy(requesters=(s.c.address,), any_approved_proposal=True))
    assert s.fc.registry.admits("ds-b", pid).reason == reason
    with reverts("RoundsPolicyDenied", datasetId=_hex(dataset_id("ds-b")), reason=_hex(reason.encode().ljust(32, b"\0"))) as box:
        s.commit(s.B, pid, 1, "ds-b")
    assert POLICY_REASONS[reason] in str(box[0])  # the message names the reason in words
    s.commit(s.A, pid, 1, "ds-a")  # the other dataset is unaffected


def test_commit_allowed_by_explicit_policy(system):
    s = system
    s.register(s.A, "ds-a")
    s.register(s.B, "ds-b", Policy())  # admits nothing yet
    pid = s.approved_proposal(["ds-a", "ds-b"], purpose="research")
    s.B.registry.set_policy("ds-b", Policy(purposes=("research",), proposal_ids=(pid,), requesters=(s.a.address,)))
    s.K.rounds.open_round(pid, 1)
    assert s.commit(s.B, pid, 1, "ds-b").gas_used <= 100_000


# ------------------------------------------------------------ close / fail


def test_close_rules(system):
    s = system
    pid = s.training_setup(min_participants=2)
    with reverts("ConsortiumNotCoordinator", account=s.a.address):
        s.A.rounds.close_round(pid, 1, *AGG)
    with reverts("RoundsNotOpen", round=2, phase=RoundPhase.NONE):
        s.K.rounds.close_round(pid, 2, *AGG)
    s.commit(s.A, pid, 1, "ds-a")
    with reverts("RoundsNotEnoughParticipants", proposalId=pid, round=1, committed=1, required=2):
        s.K.rounds.close_round(pid, 1, *AGG)
    s.commit(s.B, pid, 1, "ds-b")
    with reverts("RoundsEmptyCid"):
        s.K.rounds.close_round(pid, 1, "", AGG[1], AGG[2], AGG[3])
    with reverts("RoundsEmptyCid"):
        s.K.rounds.close_round(pid, 1, AGG[0], AGG[1], "", AGG[3])
    s.K.rounds.close_round(pid, 1, *AGG)
    with reverts("RoundsNotOpen", phase=RoundPhase.CLOSED):
        s.K.rounds.close_round(pid, 1, *AGG)


def test_fail_rules(system):
    s = system
    pid = s.training_setup(rounds=3, min_participants=2, round_duration=10)
    anyone = s.fc.as_(s.outsiders[3])
    with reverts("RoundsNotOpen", round=3, phase=RoundPhase.NONE):
        anyone.rounds.fail_round(pid, 3)
    s.commit(s.A, pid, 1, "ds-a")
    deadline = s.fc.rounds.round_info(pid, 1).deadline
    with reverts("RoundsDeadlineNotReached", proposalId=pid, round=1, deadline=deadline):
        anyone.rounds.fail_round(pid, 1)
    with reverts("RoundsDeadlineNotReached"):
        s.K.rounds.fail_round(pid, 1)
    s.mine_past(deadline)
    r = anyone.rounds.fail_round(pid, 1)  # 1 < 2 participants: anyone may
    assert r.event("RoundFailed").args == {
        "proposalId": pid, "round": 1, "committed": 1, "by": s.outsiders[3].address,
    }
    assert s.fc.rounds.round_info(pid, 1).phase == RoundPhase.FAILED
    with reverts("RoundsNotOpen", phase=RoundPhase.FAILED):
        s.K.rounds.fail_round(pid, 1)
    with reverts("RoundsNotClosed", phase=RoundPhase.FAILED):
        s.A.rounds.submit_evaluation(pid, 1, "ds-a", 1, 1)

    # round 2 reaches its minimum: only the coordinator may fail it
    s.K.rounds.open_round(pid, 2)  # allowed after a Failed round
    s.commit(s.A, pid, 2, "ds-a")
    s.commit(s.B, pid, 2, "ds-b")
    s.mine_past(s.fc.rounds.round_info(pid, 2).deadline)
    with reverts("RoundsEnoughParticipants", proposalId=pid, round=2, committed=2):
        anyone.rounds.fail_round(pid, 2)
    s.K.rounds.fail_round(pid, 2)
    assert s.fc.rounds.round_info(pid, 2).phase == RoundPhase.FAILED
    s.K.rounds.open_round(pid, 3)


# --------------------------------------------------------------- evaluation


def test_evaluation_rules(system):
    s = system
    s.register(s.C, "ds-c")
    pid = s.training_setup(rounds=2)
    with reverts("RoundsNotClosed", proposalId=pid, round=1, phase=RoundPhase.OPEN):
        s.A.rounds.submit_evaluation(pid, 1, "ds-a", 500_000, 10)
    s.commit(s.A, pid, 1, "ds-a")
    s.mine_past(s.fc.rounds.round_info(pid, 1).deadline)  # B never commits
    s.K.rounds.close_round(pid, 1, *AGG)
    with reverts("RoundsMetricOutOfRange", metricPpm=1_000_001):
        s.A.rounds.submit_evaluation(pid, 1, "ds-a", 1_000_001, 10)
    with reverts("RoundsInvalidSampleCount"):
        s.A.rounds.submit_evaluation(pid, 1, "ds-a", 1, 0)
    with reverts("ConsortiumNotAMember"):
        s.O.rounds.submit_evaluation(pid, 1, "ds-a", 1, 10)
    with reverts("RoundsNotATarget"):
        s.C.rounds.submit_evaluation(pid, 1, "ds-c", 1, 10)
    with reverts("RoundsNotDatasetOwner", account=s.c.address):
        s.C.rounds.submit_evaluation(pid, 1, "ds-b", 1, 10)
    s.A.rounds.submit_evaluation(pid, 1, "ds-a", 1_000_000, 10)
    with reverts("RoundsAlreadyEvaluated", proposalId=pid, round=1, member=s.a.address):
        s.A.rounds.submit_evaluation(pid, 1, "ds-a", 10, 10)
    # B did not commit but owns a target dataset: may evaluate - unless its policy no longer admits
    s.B.registry.revoke_dataset("ds-b")
    with reverts("RoundsPolicyDenied"):
        s.B.rounds.submit_evaluation(pid, 1, "ds-b", 10, 10)


def test_global_metric_rules(system):
    s = system
    pid = s.training_setup()
    with reverts("RoundsNotClosed", phase=RoundPhase.OPEN):
        s.K.rounds.record_global_metric(pid, 1, 10)
    s.commit(s.A, pid, 1, "ds-a")
    s.commit(s.B, pid, 1, "ds-b")
    s.K.rounds.close_round(pid, 1, *AGG)
    with reverts("ConsortiumNotCoordinator", account=s.a.address):
        s.A.rounds.record_global_metric(pid, 1, 10)
    with reverts("RoundsMetricOutOfRange", metricPpm=2_000_000):
        s.K.rounds.record_global_metric(pid, 1, 2_000_000)
    s.K.rounds.record_global_metric(pid, 1, 0)
    assert s.fc.rounds.round_info(pid, 1).global_metric_ppm == 0
    with reverts("RoundsGlobalMetricAlreadyRecorded", proposalId=pid, round=1):
        s.K.rounds.record_global_metric(pid, 1, 10)
