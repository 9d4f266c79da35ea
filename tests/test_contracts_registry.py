"""DatasetRegistry: registration, versioned policies, revocation, admits() - on both backends."""

from __future__ import annotations

from eth_utils import keccak

from fedchain.contracts.bindings import Policy, dataset_id, purpose_hash
from fixtures_chain import reverts, sha


def test_register_dataset(system):
    s = system
    policy = Policy(
        purposes=("sepsis-research",), proposal_ids=(4, 5), requesters=(s.b.address,),
        expiry=s.chain.block_timestamp + 10_000, max_epsilon_milli=2500,
    )
    r = s.A.registry.register_dataset("icu-2024", "bafy-meta", sha("meta"), sha("schema"), policy, row_count=4321)
    did = r.value
    assert did == keccak(text="icu-2024") == dataset_id("icu-2024")
    assert [e.event for e in r.events] == ["DatasetRegistered", "PolicySet"]
    reg = r.event("DatasetRegistered").args
    assert reg == {
        "id": "0x" + did.hex(), "owner": s.a.address, "name": "icu-2024", "metadataCid": "bafy-meta",
        "metadataSha256": "0x" + sha("meta").hex(), "schemaHash": "0x" + sha("schema").hex(), "rowCount": 4321,
    }
    ps = r.event("PolicySet").args
    assert ps["version"] == 1
    assert ps["policy"] == {
        "purposes": ["0x" + purpose_hash("sepsis-research").hex()],
        "proposalIds": [4, 5],
        "anyApprovedProposal": False,
        "requesters": [s.b.address],
        "expiry": policy.expiry,
        "maxEpsilonMilli": 2500,
    }
    d = s.fc.registry.dataset("icu-2024")
    assert d == s.fc.registry.dataset(did) == s.fc.registry.dataset("0x" + did.hex())
    assert (d.owner, d.name, d.metadata_cid, d.policy_version, d.revoked, d.row_count) == (
        s.a.address, "icu-2024", "bafy-meta", 1, False, 4321
    )
    assert list(s.fc.registry.call("holding", did)) == [s.a.address, False, 4321]
    assert d.registered_at == r.block_number
    assert d.policy == Policy(
        purposes=(purpose_hash("sepsis-research"),), proposal_ids=(4, 5), requesters=(s.b.address,),
        expiry=policy.expiry, max_epsilon_milli=2500,
    )
    assert s.fc.registry.dataset_count() == 1
    assert s.fc.registry.dataset("nope") is None
    s.register(s.B, "second")
    s.B.registry.revoke_dataset("second")
    assert [d.name for d in s.fc.registry.datasets()] == ["icu-2024", "second"]
    assert [d.name for d in s.fc.registry.datasets(include_revoked=False)] == ["icu-2024"]
    assert [d.row_count for d in s.fc.registry.datasets()] == [4321, 1000]  # the read model has the rows too
    assert list(s.fc.registry.call("holding", dataset_id("second"))) == [s.b.address, True, 1000]


def test_register_rules(system):
    s = system
    with reverts("ConsortiumNotAMember", account=s.outsiders[0].address):
        s.register(s.O, "x")
    with reverts("DatasetRegistryInvalidName"):
        s.register(s.A, "")
    with reverts("DatasetRegistryInvalidName"):
        s.register(s.A, "n" * 129)
    with reverts("DatasetRegistryEmptyCid"):
        s.A.registry.register_dataset("x", "", sha("m"), sha("s"), Policy.open(), row_count=1)
    with reverts("DatasetRegistryInvalidRowCount"):
        s.register(s.A, "x", rows=0)
    s.register(s.A, "x")
    with reverts("DatasetRegistryAlreadyRegistered", id="0x" + dataset_id("x").hex()):
        s.register(s.B, "x")
    with reverts("DatasetRegistryTooManyPolicyEntries", given=33, max=32):
        s.register(s.A, "y", Policy(purposes=tuple(f"p{i}" for i in range(33))))
    with reverts("DatasetRegistryTooManyPolicyEntries", given=33):
        s.register(s.A, "y", Policy(proposal_ids=tuple(range(33))))
    with reverts("DatasetRegistryTooManyPolicyEntries", given=33):
        s.register(s.A, "y", Policy(requesters=tuple(f"0x{i + 1:040x}" for i in range(33))))
    now = s.chain.block_timestamp
    with reverts("DatasetRegistryInvalidExpiry", expiry=now - 1):
        s.register(s.A, "y", Policy.open(expiry=now - 1))
    with reverts("DatasetRegistryInvalidExpiry"):
        s.register(s.A, "y", Policy.open(expiry=2**40))
    s.register(s.A, "y", Policy(purposes=tuple(f"p{i}" for i in range(32))))


def test_set_policy_versions_and_rules(system):
    s = system
    s.register(s.A, "ds-a", Policy(purposes=("old-purpose",), any_approved_proposal=True))
    old = s.approved_proposal(["ds-a"], purpose="old-purpose")
    new = s.approved_proposal(["ds-a"], purpose="new-purpose")
    assert s.fc.registry.admits("ds-a", old).ok and s.fc.registry.admits("ds-a", new).reason == "PURPOSE_NOT_ALLOWED"
    r = s.A.registry.set_policy("ds-a", Policy(purposes=("new-purpose",), any_approved_proposal=True))
    assert r.value == 2 and r.event("PolicySet").args["version"] == 2
    # entries of version 1 are ignored without having been cleared
    assert s.fc.registry.admits("ds-a", old).reason == "PURPOSE_NOT_ALLOWED"
    assert s.fc.registry.admits("ds-a", new).ok
    assert s.fc.registry.dataset("ds-a").policy_version == 2
    with reverts("DatasetRegistryNotOwner", datasetId="0x" + dataset_id("ds-a").hex(), account=s.b.address):
        s.B.registry.set_policy("ds-a", Policy.open())
    with reverts("DatasetRegistryUnknownDataset", id="0x" + dataset_id("missing").hex()):
        s.A.registry.set_policy("missing", Policy.open())
    with reverts("DatasetRegistryInvalidExpiry"):
        s.A.registry.set_policy("ds-a", Policy.open(expiry=1))
    with reverts("DatasetRegistryTooManyPolicyEntries"):
        s.A.registry.set_policy("ds-a", Policy(proposal_ids=tuple(range(40))))


def test_revoke(system):
    s = system
    s.register(s.A, "ds-a")
    pid = s.approved_proposal(["ds-a"])
    assert s.fc.registry.admits("ds-a", pid).ok
    with reverts("DatasetRegistryNotOwner"):
        s.B.registry.revoke_dataset("ds-a")
    r = s.A.registry.revoke_dataset("ds-a")
    assert r.event("DatasetRevoked").args == {"id": "0x" + dataset_id("ds-a").hex()}
    assert s.fc.registry.dataset("ds-a").revoked
    assert s.fc.registry.admits("ds-a", pid).reason == "REVOKED"
    with reverts("DatasetRegistryRevoked"):
        s.A.registry.revoke_dataset("ds-a")
    with reverts("DatasetRegistryRevoked"):
        s.A.registry.set_policy("ds-a", Policy.open())
    with reverts("DatasetRegistryUnknownDataset"):
        s.A.registry.revoke_dataset("missing")


def test_admits_reasons(system):
    s = system
    now = s.chain.block_timestamp
    s.register(s.A, "open")
    s.register(s.A, "purpose", Policy(purposes=("other",), any_approved_proposal=True))
    s.register(s.A, "requester", Policy(requesters=(s.b.address,), any_approved_proposal=True))
    s.register(s.A, "expiring", Policy.open(expiry=now + 1_000))
    s.register(s.A, "closed", Policy())  # no proposal admitted
    pending = s.propose(s.A, ["open"])
    assert not s.fc.registry.admits("open", pending)
    assert s.fc.registry.admits("open", pending).reason == "PROPOSAL_NOT_APPROVED"
    pid = s.approved_proposal(["open"])
    listed = s.register(s.B, "listed", Policy(proposal_ids=(pid,)))
    assert s.fc.registry.admits("open", pid).ok and s.fc.registry.admits("open", pid).reason == ""
    assert s.fc.registry.admits(listed, pid).ok
    assert s.fc.registry.admits("closed", pid).reason == "PROPOSAL_NOT_ALLOWED"
    assert s.fc.registry.admits("purpose", pid).reason == "PURPOSE_NOT_ALLOWED"
    assert s.fc.registry.admits("requester", pid).reason == "REQUESTER_NOT_ALLOWED"
    assert s.fc.registry.admits("missing", pid).reason == "UNKNOWN_DATASET"
    assert s.fc.registry.admits("expiring", pid).ok
    ok, reason = s.fc.registry.admits("purpose", pid)
    assert (ok, reason) == (False, "PURPOSE_NOT_ALLOWED")
    s.chain.advance_time(2_000)
    assert s.fc.registry.admits("expiring", pid).reason == "EXPIRED"
    assert s.fc.registry.admits("open", 999).reason == "PROPOSAL_NOT_APPROVED"


def test_admits_asks_for_the_proposal_state_until_it_saw_approval_which_is_final(system, monkeypatch):
    """Approved is a final state, so once seen it is not asked again on this connection; a proposal
    not (yet) approved is asked every time, and a chain reverted past the approval is asked again."""
    s = system
    s.register(s.A, "final")
    pending = s.propose(s.A, ["final"])
    asked = []
    real = s.fc.proposals.call
    monkeypatch.setattr(s.fc.proposals, "call", lambda fn, *a, **kw: asked.append(fn) or real(fn, *a, **kw))
    snap = s.chain.snapshot()
    for _ in range(2):
        assert s.fc.registry.admits("final", pending).reason == "PROPOSAL_NOT_APPROVED"
    assert asked.count("stateOf") == 2
    pid = s.approved_proposal(["final"])
    asked.clear()
    for _ in range(3):
        assert s.fc.registry.admits("final", pid).ok
    assert asked.count("stateOf") == 1
    s.chain.revert(snap)  # the approval is gone with the blocks that held it
    assert s.fc.registry.admits("final", pid).reason == "PROPOSAL_NOT_APPROVED"
    assert asked.count("stateOf") == 2
