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

import base64
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedchain.contracts.bindings import Policy, RoundPhase, Vote, dataset_id
from fedchain.contracts.bindings.codec import decode_revert
from fedchain.ipfs.unixfs import compute_cid
from fedchain.coordinator.audit.history import History, closed_with_refused_datasets, suspect_failures
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


# ------------------------------------------- the replay's share, on an exported trail


@dataclass
class _Ev:
    event: str
    args: dict
    block: int
    tx: str = "0x01"
    timestamp: int = 0
    gas_used: int = 0


def test_history_flags_what_the_chain_cannot_check_from_the_events_alone():
    a, b, ds = "0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "11" * 32
    policy = {"purposes": [], "proposalIds": [], "anyApprovedProposal": True, "requesters": [], "expiry": 5_000,
              "maxEpsilonMilli": 0}
    events = [
        _Ev("MemberAdmitted", {"account": a, "name": "A", "x25519": "0x" + "01" * 32, "seq": 1}, 1),
        _Ev("MemberAdmitted", {"account": b, "name": "B", "x25519": "0x" + "02" * 32, "seq": 2}, 1),
        _Ev("DatasetRegistered", {"id": ds, "owner": a, "name": "d", "metadataCid": "m", "metadataSha256": "0x00",
                                  "schemaHash": "0x00", "rowCount": 10}, 2),
        _Ev("PolicySet", {"id": ds, "version": 1, "policy": policy}, 2),
        _Ev("ProposalSubmitted", {"id": 1, "proposer": b, "planCid": "p", "planSha256": "0x00", "purpose": "x",
                                  "purposeHash": "0x00", "targets": [ds], "owners": [a], "rounds": 2,
                                  "minParticipants": 1, "roundDuration": 5, "deadline": 4, "eligible": 2}, 3),
        _Ev("ProposalFinalized", {"id": 1, "state": 2, "yes": 2, "no": 0, "abstain": 0}, 5),
        _Ev("RoundOpened", {"proposalId": 1, "round": 1, "deadline": 11}, 6),
        _Ev("UpdateCommitted", {"proposalId": 1, "round": 1, "member": a, "datasetId": ds, "cid": "c",
                                "updateSha256": "0x00", "sampleCount": 11}, 7, timestamp=4_000),
        _Ev("RoundClosed", {"proposalId": 1, "round": 1, "aggregateCid": "g", "aggregateSha256": "0x00",
                            "scoresCid": "s", "scoresSha256": "0x00", "committed": 1}, 12, timestamp=6_000),
        _Ev("RoundOpened", {"proposalId": 1, "round": 2, "deadline": 18}, 13),
        _Ev("UpdateCommitted", {"proposalId": 1, "round": 2, "member": a, "datasetId": ds, "cid": "c",
                                "updateSha256": "0x00", "sampleCount": 5}, 14),
        _Ev("RoundFailed", {"proposalId": 1, "round": 2, "committed": 1, "by": b}, 19),
    ]
    h = History(events)
    assert h.proposals[1].target_owners == [a] and h.datasets[ds].row_count == 10
    # the policy expired (timestamp 5000) between the commitment and the close
    assert closed_with_refused_datasets(h) == [(1, 1, a, "EXPIRED")]
    # a trail from contracts without the row rule: the over-claim is a governance problem
    assert any("claims 11 samples, but d registered 10 rows" in p for p in h.round_governance_problems(h.rounds[(1, 1)]))
    assert suspect_failures(h) == [(1, 2, 1, 1)]


# --------------------------------------------- the CID rule against a reference, fuzzed

_B58 = set("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")
_B32 = set("abcdefghijklmnopqrstuvwxyz234567")


def _well_formed(text: str) -> bool:
    """The rule of ``Cid.isWellFormed``, in Python."""
    n = len(text.encode())
    if not 9 <= n <= 128:
        return False
    if n == 46 and text.startswith("Qm"):
        return set(text) <= _B58
    return (text.startswith("ba") and text[2] in "efgh" and (n - 1) % 8 not in (1, 3, 6)
            and set(text) <= _B32)


def _cid_v1(body: bytes) -> str:
    return "b" + base64.b32encode(b"\x01" + body).decode().lower().rstrip("=")


def _mutated(draw_text: str, data) -> str:
    ops = data.draw(st.sampled_from(["keep", "swap", "cut", "grow"]))
    if ops == "keep" or not draw_text:
        return draw_text
    i = data.draw(st.integers(0, len(draw_text) - 1))
    if ops == "swap":
        return draw_text[:i] + data.draw(st.characters(max_codepoint=0x2FF)) + draw_text[i + 1:]
    if ops == "cut":
        return draw_text[:i]
    return draw_text + data.draw(st.text(alphabet="abcxyz0123Qm=", min_size=1, max_size=20))


@pytest.fixture(scope="module")
def cid_probe(chain_backend):
    """A round open for a commitment by founder A on eth-tester, to simulate commitments against."""
    if chain_backend.name != "eth-tester":
        pytest.skip("the fuzzed CID check runs on eth-tester (each example is one eth_call)")
    chain = chain_backend.chain
    snap = chain.snapshot()
    fc = chain.attach(chain_backend.deployment)
    a, k = chain.dev_accounts[0], chain.dev_accounts[3]
    fc.as_(a).registry.register_dataset("cid-probe", "m", sha("m"), sha("s"), Policy.open(), row_count=10)
    pid = fc.as_(a).proposals.submit_proposal("p", sha("p"), "x", ["cid-probe"], 1, 1, 10_000).value
    for founder in chain.dev_accounts[:3]:
        fc.as_(founder).proposals.vote(pid, Vote.YES)
    chain.mine(10)
    fc.as_(a).proposals.finalize(pid)
    fc.as_(k).rounds.open_round(pid, 1)
    yield fc, a, pid
    chain.revert(snap)
    chain_backend.snapshot = chain.snapshot()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_cid_check_matches_its_reference(cid_probe, data):
    fc, a, pid = cid_probe
    text = data.draw(st.one_of(
        st.builds(lambda b: compute_cid(b), st.binary(max_size=64)),
        st.builds(_cid_v1, st.binary(min_size=3, max_size=80)),
        st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=140),
        st.just("Qm" + "1" * 44),
    ))
    text = _mutated(text, data)
    fn = fc.rounds.contract.functions.commitUpdate(pid, 1, dataset_id("cid-probe"), text, sha("u"), 1, 0, 0)
    try:
        fn.call({"from": a.address})
        accepted = True
    except Exception as exc:  # noqa: BLE001 - web3's error, decoded as the bindings decode it
        revert = decode_revert(fc.chain.backend.revert_data(exc))
        assert revert.error == "RoundsInvalidCid", (text, revert)
        accepted = False
    assert accepted == _well_formed(text), text
