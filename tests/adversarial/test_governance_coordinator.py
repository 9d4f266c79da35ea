"""The coordinator's discretion, bounded where the chain can bound it (issue 10).

Before the fix the coordinator could close a round the moment ``minParticipants``
had committed, shutting out members that still had time. Now it may close before
the deadline only once every target dataset has committed (``RoundsEarlyClose``).
It may fail a round only after the deadline (``RoundsDeadlineNotReached``); a round
failed with ``minParticipants`` or more commitments is the coordinator's claim that
too few updates were valid, which the chain cannot check - the audit history lists
such rounds (``coordinator.audit.history.suspect_failures``) for the replay to
re-verify, and closes whose aggregated datasets no longer admitted the proposal
(``closed_with_refused_datasets``), which the contract cannot re-check without a
loop over participants. Commitments must name a well-formed CID (``RoundsInvalidCid``).
"""

from __future__ import annotations

import pytest

from fedchain.contracts.bindings import Policy, RoundPhase
from fedchain.coordinator.audit.history import closed_with_refused_datasets, suspect_failures
from fixtures_chain import cid, reverts, sha

AGG = (cid("aggregate"), sha("aggregate"), cid("scores"), sha("scores"))


def _three_targets(s, **kw):
    for owner, name in ((s.A, "ds-a"), (s.B, "ds-b"), (s.C, "ds-c")):
        s.register(owner, name)
    pid = s.approved_proposal(["ds-a", "ds-b", "ds-c"], **kw)
    s.K.rounds.open_round(pid, 1)
    return pid


def test_coordinator_cannot_shut_out_a_member_that_still_has_time(system):
    s = system
    pid = _three_targets(s, min_participants=2, round_duration=30)
    s.commit(s.A, pid, 1, "ds-a")
    s.commit(s.B, pid, 1, "ds-b")  # minParticipants reached, C has 25+ blocks left
    with reverts("RoundsEarlyClose", proposalId=pid, round=1, committed=2, targets=3):
        s.K.rounds.close_round(pid, 1, *AGG)
    s.commit(s.C, pid, 1, "ds-c")  # the late committer gets in
    s.K.rounds.close_round(pid, 1, *AGG)  # every target committed: closing early is fine
    assert s.fc.rounds.round_info(pid, 1).committed == 3


def test_after_the_deadline_the_coordinator_may_close_without_every_target(system):
    s = system
    pid = _three_targets(s, min_participants=2, round_duration=10)
    s.commit(s.A, pid, 1, "ds-a")
    s.commit(s.B, pid, 1, "ds-b")
    deadline = s.fc.rounds.round_info(pid, 1).deadline
    s.mine_past(deadline - 1)  # the close would land in the deadline block: still early
    with reverts("RoundsEarlyClose", committed=2, targets=3):
        s.K.rounds.close_round(pid, 1, *AGG)
    s.mine_past(deadline)
    s.K.rounds.close_round(pid, 1, *AGG)


def test_coordinator_cannot_fail_a_subscribed_round_early_and_a_late_fail_is_flagged(system):
    s = system
    pid = _three_targets(s, rounds=2, min_participants=2, round_duration=10)
    s.commit(s.A, pid, 1, "ds-a")
    s.commit(s.B, pid, 1, "ds-b")
    deadline = s.fc.rounds.round_info(pid, 1).deadline
    with reverts("RoundsDeadlineNotReached", proposalId=pid, round=1, deadline=deadline):
        s.K.rounds.fail_round(pid, 1)
    s.mine_past(deadline)
    with reverts("RoundsEnoughParticipants", committed=2):  # nobody else may fail it
        s.fc.as_(s.outsiders[0]).rounds.fail_round(pid, 1)
    s.K.rounds.fail_round(pid, 1)  # allowed, but it is a claim the replay must check
    assert s.fc.rounds.round_info(pid, 1).phase == RoundPhase.FAILED
    # an under-subscribed round failed by anyone is not suspect
    s.K.rounds.open_round(pid, 2)
    s.commit(s.A, pid, 2, "ds-a")
    s.mine_past(s.fc.rounds.round_info(pid, 2).deadline)
    s.fc.as_(s.outsiders[0]).rounds.fail_round(pid, 2)
    assert suspect_failures(s.fc.read_model()) == [(pid, 1, 2, 2)]


def test_close_after_a_committed_dataset_was_revoked_is_flagged_for_replay(system):
    s = system
    pid = _three_targets(s, min_participants=2, round_duration=30)
    for m, name in ((s.A, "ds-a"), (s.B, "ds-b"), (s.C, "ds-c")):
        s.commit(m, pid, 1, name)
    s.B.registry.revoke_dataset("ds-b")  # after committing, before the close
    s.K.rounds.close_round(pid, 1, *AGG)  # the chain cannot re-check every commitment at close
    assert closed_with_refused_datasets(s.fc.read_model()) == [(pid, 1, s.b.address.lower(), "REVOKED")]


@pytest.mark.parametrize("bad", [
    "", "bafy-not-a-cid", "Qm" + "0" * 44, "Qm" + "1" * 43, "Qm" + "1" * 45, "QM" + "1" * 44,
    "zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA",  # a CIDv1 in base58btc: not the canonical base32
    "BAFKREIHDWDCEFGH4DQKJV67UZCMW7OJEE6XEDZDETOJUZJEVTENXQUVYKU",  # upper-case base32
    "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk1",  # '1' is not base32
    "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvykuu",  # 60 chars: no base32 length
    "bqfkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",  # version byte is not 1
    "b" + "a" * 200,
])
def test_commitment_cid_must_be_well_formed(system, bad):
    s = system
    pid = s.training_setup(round_duration=30)
    with reverts("RoundsInvalidCid"):
        s.A.rounds.commit_update(pid, 1, "ds-a", bad, sha("u"), 10)
    assert s.fc.rounds.round_info(pid, 1).committed == 0


def test_commitment_cid_forms_accepted(system):
    s = system
    pid = s.training_setup(round_duration=30)
    v0 = cid("an update")  # what the content store names a blob
    assert v0.startswith("Qm") and len(v0) == 46
    s.A.rounds.commit_update(pid, 1, "ds-a", v0, sha("u"), 10)
    v1 = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"  # raw sha2-256, base32
    s.B.rounds.commit_update(pid, 1, "ds-b", v1, sha("v"), 10)
    assert [c.cid for c in s.fc.rounds.commitments(pid, 1)] == [v0, v1]


def test_policy_cannot_be_dodged_by_a_new_version_mid_round(system):
    """Policies are checked on every commitment; a restricting new version bites at once."""
    s = system
    pid = _three_targets(s, round_duration=30)
    s.C.registry.set_policy("ds-c", Policy())  # C withdraws consent for everything
    with reverts("RoundsPolicyDenied"):
        s.commit(s.C, pid, 1, "ds-c")
