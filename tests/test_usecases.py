"""The use-case layer: one implementation per governance action, on both chain backends.

What a member is promised by it: a refused action publishes nothing (what it
pinned is unpinned again, and only what it pinned), the chain's terms come from
the plan itself, and every refusal names its rule with a stable code and the one
wording the contracts use.
"""

from __future__ import annotations

import datetime as dt

import pytest

from fedchain import usecases as uc
from fedchain.contracts.bindings import ChainRevert, Policy, ProposalState
from fedchain.content import pin_document
from fedchain.errors import ConfigError
from fedchain.identity import dev_identity
from fedchain.ipfs.unixfs import compute_cid
from fedchain.models import initial_state
from fedchain.node.commit import commit_update
from fedchain.sample_data import demo_plan, demo_schema
from fedchain.schema import metadata_document, parse_schema, schema_hash
from fedchain.serialize import state_dict_to_bytes

SCHEMA = parse_schema(demo_schema())


@pytest.fixture(params=["local", "js-ipfs"])
def store(request, tmp_path):
    """The embedded store and the real js-ipfs daemon: unpinning is store behaviour.

    The daemon lives for the session, so each test's documents carry the test's own
    name (``tag``) to keep one test's pins from meeting another's."""
    if request.param == "local":
        from fedchain.ipfs.local import LocalStore

        yield LocalStore(tmp_path / "store", fsync=False)
    else:
        yield request.getfixturevalue("kubo_store")


@pytest.fixture(autouse=True)
def tag(request):
    global TAG
    TAG = request.node.name


TAG = ""


def _description(name: str) -> str:
    return f"{name} rows ({TAG})"


def _register(system, who, store, name, policy=None, n_rows=40):
    return uc.datasets.register(who, store, name=name, schema=SCHEMA, n_rows=n_rows, description=_description(name),
                                policy=policy or Policy.open())


def _plan(targets, **changes):
    base = dict(datasets=list(targets), rounds=2, min_participants=1, round_deadline_blocks=10, name=_plan_name())
    base.update(changes)
    return demo_plan(seed=5).with_changes(**base)


# -- registering -----------------------------------------------------------------------------------


def test_register_publishes_the_metadata_document_and_the_schema_hash(system, store):
    done = _register(system, system.A, store, "icu-2024")
    info = system.fc.registry.dataset("icu-2024")
    assert info.owner == system.a.address and done.id == info.id
    assert info.metadata_cid == done.metadata_cid and store.is_pinned(done.metadata_cid)
    assert "0x" + info.metadata_sha256.hex() == "0x" + done.metadata_sha256
    assert "0x" + info.schema_hash.hex() == schema_hash(SCHEMA)
    assert compute_cid(metadata_document(SCHEMA, 40, _description("icu-2024"))) == done.metadata_cid


def test_a_registration_the_chain_refuses_leaves_nothing_pinned(system, store):
    meta_cid = compute_cid(metadata_document(SCHEMA, 40, _description("x")))
    with pytest.raises(ChainRevert) as exc:
        _register(system, system.O, store, "x")  # an outsider: not a member
    assert exc.value.error == "ConsortiumNotAMember"
    assert not store.is_pinned(meta_cid)
    assert system.fc.registry.dataset("x") is None


def test_a_refused_registration_never_unpins_what_someone_else_pinned(system, store):
    meta = metadata_document(SCHEMA, 40, _description("x"))
    theirs = pin_document(store, meta)  # the same document, pinned before by someone else
    with pytest.raises(ChainRevert):
        _register(system, system.O, store, "x")
    assert store.is_pinned(theirs.cid)


def test_a_taken_name_is_refused_before_anything_is_published(system, store):
    _register(system, system.A, store, "shared-name")
    before = compute_cid(metadata_document(SCHEMA, 7, _description("shared-name")))
    with pytest.raises(uc.Refused) as exc:
        _register(system, system.B, store, "shared-name", n_rows=7)
    assert exc.value.code == "DATASET_EXISTS" and "shared-name" in str(exc.value)
    assert not store.is_pinned(before)


# -- proposing ----------------------------------------------------------------------------------


def test_propose_pins_the_plan_and_copies_its_terms_to_the_chain(system, store):
    _register(system, system.A, store, "ds-a")
    _register(system, system.B, store, "ds-b")
    plan = _plan(["ds-a", "ds-b"], rounds=3, min_participants=2, round_deadline_blocks=17)
    done = uc.proposals.propose(system.A, store, plan)
    p = system.fc.proposals.proposal(done.id)
    assert (p.plan_cid, "0x" + p.plan_sha256.hex()) == (done.plan_cid, plan.sha256)
    assert (p.purpose, p.rounds, p.min_participants, p.round_duration) == (plan.purpose, 3, 2, 17)
    assert p.targets == tuple(system.fc.registry.dataset_id(n) for n in plan.datasets)
    assert p.target_owners == (system.a.address, system.b.address)
    assert uc.proposals.fetch_plan(store, p) == plan


def test_a_proposal_the_chain_refuses_leaves_its_plan_unpinned(system, store):
    _register(system, system.A, store, "ds-a")
    plan = _plan(["ds-a"])
    with pytest.raises(ChainRevert) as exc:
        uc.proposals.propose(system.O, store, plan)
    assert exc.value.error == "ConsortiumNotAMember"
    assert not store.is_pinned(compute_cid(plan.to_canonical_bytes()))


def test_votes_are_words_and_a_bad_word_is_named(system, store):
    _register(system, system.A, store, "ds-a")
    pid = uc.proposals.propose(system.A, store, _plan(["ds-a"])).id
    uc.proposals.vote(system.A, pid, "yes")
    uc.proposals.vote(system.B, pid, " Abstain ")
    with pytest.raises(ConfigError, match="yes, no or abstain"):
        uc.proposals.vote(system.C, pid, "perhaps")
    system.mine_past(system.fc.proposals.proposal(pid).deadline)
    assert uc.proposals.finalize(system.C, pid).value == ProposalState.APPROVED
    p = system.fc.proposals.proposal(pid)
    assert (p.yes, p.no, p.abstain) == (1, 0, 1)


# -- admission: one answer, one wording ---------------------------------------------------------------


def test_admission_names_each_rule_with_a_code_and_the_contracts_wording(system, store):
    _register(system, system.A, store, "open")
    _register(system, system.B, store, "research-only", Policy.open(purposes=("research",)))
    pid = uc.proposals.propose(system.A, store, _plan(["open", "research-only"])).id

    check = uc.admission.check(system.fc, "open", pid)
    assert not check and check.code == "PROPOSAL_NOT_APPROVED"  # still voting
    system.approve(pid)

    assert uc.admission.check(system.fc, "open", pid, owner=system.a.address, local_schema_hash=schema_hash(SCHEMA))
    assert uc.admission.check(system.fc, "open", 999).code == "UNKNOWN_PROPOSAL"
    assert uc.admission.check(system.fc, "elsewhere", pid).code == "NOT_A_TARGET"
    refused = uc.admission.check(system.fc, "research-only", pid)
    assert refused.code == "PURPOSE_NOT_ALLOWED"
    # the same words the contract's revert carries when a commitment tries anyway
    with pytest.raises(ChainRevert) as exc:
        system.K.rounds.open_round(pid, 1)
        system.commit(system.B, pid, 1, "research-only", samples=10)
    assert exc.value.phrase in refused.words and refused.reason in refused.words
    assert uc.admission.check(system.fc, "open", pid, owner=system.b.address).code == "NOT_OWNER"
    mismatch = uc.admission.check(system.fc, "open", pid, local_schema_hash="0x" + "ab" * 32)
    assert mismatch.code == "SCHEMA_MISMATCH" and "0x" + "ab" * 32 in mismatch.words
    with pytest.raises(uc.Refused) as raised:
        refused.raise_if_refused()
    assert raised.value.code == "PURPOSE_NOT_ALLOWED" and str(raised.value) == refused.words


def test_admission_of_a_known_target_skips_only_the_proposal_read(system, store, monkeypatch):
    """A node that saw its dataset among a proposal's targets does not read the proposal again each round,
    but a refusal (the proposal or the policy changed) is still found, in the same words as a full check."""
    _register(system, system.A, store, "open")
    pid = uc.proposals.propose(system.A, store, _plan(["open"])).id
    assert uc.admission.check(system.fc, "open", pid, known_target=True).code == "PROPOSAL_NOT_APPROVED"
    system.approve(pid)
    real = system.fc.proposals.proposal
    reads = []
    monkeypatch.setattr(system.fc.proposals, "proposal", lambda p: reads.append(p) or real(p))
    assert uc.admission.check(system.fc, "open", pid, known_target=True) and reads == []
    assert uc.admission.check(system.fc, "open", pid) and reads == [pid]
    uc.datasets.set_policy(system.A, "open", uc.datasets.make_policy(purposes=["elsewhere"]))
    reads.clear()
    known = uc.admission.check(system.fc, "open", pid, known_target=True)
    assert reads == []  # a policy's refusal is worded without reading the proposal
    full = uc.admission.check(system.fc, "open", pid)
    assert not known and known.code == full.code == "PURPOSE_NOT_ALLOWED" and known.words == full.words


# -- committing an update (the node's use case) ------------------------------------------------------------


def _plan_name() -> str:
    """A plan name unique to the test (plans are pinned on the session's daemon too)."""
    import hashlib

    return "p-" + hashlib.sha256(TAG.encode()).hexdigest()[:16]


def _update(plan) -> bytes:
    return state_dict_to_bytes(initial_state(plan.model, plan.seed))


def _committing(system, store):
    """ds-a of A in an approved proposal with round 1 open; returns (plan, pid, A's identity)."""
    _register(system, system.A, store, "ds-a")
    plan = _plan(["ds-a"], auditors=[])
    pid = uc.proposals.propose(system.A, store, plan).id
    system.approve(pid)
    system.K.rounds.open_round(pid, 1)
    return plan, pid, dev_identity(0)


def _committing_second(system, store):
    """ds-b of B (40 rows) in a second approved proposal with round 1 open; returns its id."""
    _register(system, system.B, store, "ds-b")
    pid = uc.proposals.propose(system.A, store, _plan(["ds-b"], auditors=[])).id
    system.approve(pid)
    system.K.rounds.open_round(pid, 1)
    return pid


def test_commit_refused_by_the_precheck_publishes_nothing(system, store):
    plan, pid, me = _committing(system, store)
    key = [dev_identity(3).x25519_public]  # the coordinator is not a member here: its key is given
    done = commit_update(system.A, store, me, plan, proposal_id=pid, round_=1, dataset="ds-a",
                         payload=_update(plan), n_samples=30, recipients=key)
    assert system.fc.rounds.commitment_of(pid, 1, me.address) is not None and store.is_pinned(done.cid)
    second = _committing_second(system, store)
    pins = set(store.pins()) if hasattr(store, "pins") else None
    with pytest.raises(uc.Refused) as exc:  # a second commitment: refused before sealing or pinning
        commit_update(system.A, store, me, plan, proposal_id=pid, round_=1, dataset="ds-a",
                      payload=_update(plan), n_samples=30, recipients=key)
    assert exc.value.code == "ALREADY_COMMITTED"
    with pytest.raises(uc.Refused) as exc:
        commit_update(system.A, store, me, plan, proposal_id=pid, round_=2, dataset="ds-a",
                      payload=_update(plan), n_samples=30, recipients=key)
    assert exc.value.code == "ROUND_NOT_OPEN"
    with pytest.raises(uc.Refused) as exc:  # more samples than the 40 rows B registered
        commit_update(system.B, store, dev_identity(1), plan, proposal_id=second, round_=1, dataset="ds-b",
                      payload=_update(plan), n_samples=41, recipients=key)
    assert exc.value.code == "TOO_MANY_SAMPLES" and "41 claimed, 40 registered" in str(exc.value)
    assert exc.value.reason == "the sample count exceeds the rows registered for the dataset"
    if pins is not None:
        try:
            assert set(store.pins()) == pins
        except NotImplementedError:
            pass


def test_a_commitment_the_chain_refuses_after_sealing_is_unpinned(system, store):
    plan, pid, me = _committing(system, store)
    system.mine_past(system.fc.rounds.round_info(pid, 1).deadline + 1)  # the deadline passes meanwhile
    pinned: list[str] = []
    real_put = store.put

    def put(data, **kw):
        pinned.append(real_put(data, **kw))
        return pinned[-1]

    store.put = put
    with pytest.raises(ChainRevert) as exc:
        commit_update(system.A, store, me, plan, proposal_id=pid, round_=1, dataset="ds-a", payload=_update(plan),
                      n_samples=30, recipients=[dev_identity(3).x25519_public], precheck=False)
    assert exc.value.error == "RoundsDeadlinePassed"
    assert len(pinned) == 1 and not store.is_pinned(pinned[0])


# -- policies from words ----------------------------------------------------------------------------------------


def test_make_policy_keeps_what_is_not_given_and_names_conflicts():
    base = uc.datasets.make_policy(purposes=["diagnosis"], proposals=["3", "any"], expires="2031-01-02", epsilon=2.5)
    assert base.purposes == ("diagnosis",) and base.proposal_ids == (3,) and base.any_approved_proposal
    assert base.max_epsilon_milli == 2500 and base.expiry == int(dt.datetime(2031, 1, 2, tzinfo=dt.timezone.utc).timestamp())
    changed = uc.datasets.make_policy(base, proposals=["none", "7"])
    assert changed.purposes == ("diagnosis",) and changed.proposal_ids == (7,) and not changed.any_approved_proposal
    assert changed.expiry == base.expiry and changed.max_epsilon_milli == 2500
    assert uc.datasets.make_policy(base, any_purpose=True).purposes == ()
    for bad in (dict(purposes=["x"], any_purpose=True), dict(proposals=["-1"]), dict(expires="30/06/2027"),
                dict(epsilon=-1.0), dict(epsilon=0.0001), dict(purposes=[" "])):
        with pytest.raises(ConfigError):
            uc.datasets.make_policy(**bad)
