"""Dataset names squatted to become the owner of a proposal's target (issue 10).

A proposal's targets are ``keccak(name)``. Before the fix they need not exist: a
plan could name "st-marys-icu" before St Mary's registered it, and whoever
registered that name first - by squatting it early or by front-running the
registration - became the owner of the target and trained for it with their own
data, under a vote the members cast for St Mary's. Now a target must be a
registered, unrevoked dataset when the proposal is submitted
(``ProposalsUnknownTarget``), the proposal records its owner (and row count), and
only that recorded owner may commit for it (``RoundsNotDatasetOwner``): the members
vote on whose data is used, and a name cannot be taken over after the vote.
"""

from __future__ import annotations

import pytest

from fedchain.contracts.bindings import ChainRevert, Policy, dataset_id
from fedchain.ipfs.local import LocalStore
from fedchain.ipfs.unixfs import compute_cid
from fedchain.sample_data import demo_plan, make_demo_data
from fedchain.schema import load_schema
from fedchain.usecases import datasets, proposals
from fedchain.usecases.refusals import Refused
from fixtures_chain import cid, reverts, sha

VICTIM = "st-marys-icu"


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp("demo"), n_hospitals=3, seed=3)


def _plan(demo, targets):
    return demo_plan(demo.hospitals).with_changes(datasets=list(targets), rounds=1, min_participants=1)


def test_proposal_cannot_name_a_dataset_before_it_is_registered(system, demo, tmp_path):
    s = system
    s.register(s.A, "ds-a")
    # through the bindings: the chain refuses the unregistered target by name
    with reverts("ProposalsUnknownTarget", datasetId=_hex(dataset_id(VICTIM))):
        s.A.proposals.submit_proposal(cid("plan"), sha("plan"), "diagnosis", ["ds-a", VICTIM], 1, 1, 20)
    # through the use case: refused before anything is pinned, naming the missing dataset
    store = LocalStore(tmp_path / "store", fsync=False)
    with pytest.raises(Refused) as info:
        proposals.propose(s.A, store, _plan(demo, ["ds-a", VICTIM]))
    assert info.value.code == "UNKNOWN_TARGET" and repr(VICTIM) in str(info.value)
    assert not store.is_pinned(compute_cid(_plan(demo, ["ds-a", VICTIM]).to_canonical_bytes()))
    assert s.fc.proposals.proposal_count() == 0
    # so the squatter that registers the name later has no proposal to hijack
    s.register(s.C, VICTIM)
    assert s.fc.proposals.proposal_count() == 0


def test_squatter_who_front_runs_a_registration_is_the_recorded_owner_for_all_to_see(system, demo, tmp_path):
    s = system
    store = LocalStore(tmp_path / "store", fsync=False)
    schema = load_schema(demo.hospitals[1].schema_path)
    # C registers St Mary's name before St Mary's (B) does ...
    s.register(s.C, VICTIM, Policy.open(), rows=100)
    with pytest.raises(Refused) as info:  # B's registration is refused, visibly
        datasets.register(s.B, store, name=VICTIM, schema=schema, n_rows=150, description="st mary's",
                          policy=Policy.open())
    assert info.value.code == "DATASET_EXISTS"
    with reverts("DatasetRegistryAlreadyRegistered", id=_hex(dataset_id(VICTIM))):
        s.B.registry.register_dataset(VICTIM, cid("meta"), sha("meta"), sha("schema"), Policy.open(), row_count=150)
    # ... so a proposal on it records C as the owner: the members vote knowing whose data it is
    s.register(s.A, "ds-a")
    pid = proposals.propose(s.A, store, _plan(demo, ["ds-a", VICTIM])).id
    p = s.fc.proposals.proposal(pid)
    assert dict(zip(p.targets, p.target_owners)) == {dataset_id("ds-a"): s.a.address, dataset_id(VICTIM): s.c.address}
    submitted = s.fc.read_model().proposals[pid]
    assert submitted.target_owners == [s.a.address.lower(), s.c.address.lower()]


def test_only_the_recorded_owner_may_commit_for_a_target(system):
    s = system
    s.register(s.A, "ds-a")
    s.register(s.B, VICTIM)
    pid = s.approved_proposal(["ds-a", VICTIM], round_duration=30)
    s.K.rounds.open_round(pid, 1)
    for intruder, who in ((s.A, s.a), (s.C, s.c)):
        with reverts("RoundsNotDatasetOwner", datasetId=_hex(dataset_id(VICTIM)), account=who.address):
            s.commit(intruder, pid, 1, VICTIM)
    s.commit(s.B, pid, 1, VICTIM)


def test_revoked_dataset_cannot_be_a_new_target(system):
    """A revoked name stays taken (nobody can re-register it) and cannot be proposed again."""
    s = system
    s.register(s.B, VICTIM)
    s.B.registry.revoke_dataset(VICTIM)
    with reverts("DatasetRegistryAlreadyRegistered"):
        s.register(s.C, VICTIM)
    with pytest.raises(ChainRevert) as info:
        s.propose(s.A, [VICTIM])
    assert info.value.error == "ProposalsUnknownTarget"
