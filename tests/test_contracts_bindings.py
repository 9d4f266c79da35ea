"""The Python façade: events, waiting, deployments, errors, dev accounts - on both backends."""

from __future__ import annotations

import ast
import json
import threading
import time
from pathlib import Path

import pytest
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak

from fedchain.contracts import bindings
from fedchain.contracts.anvil import Anvil
from fedchain.contracts.bindings import (
    DEV_MNEMONIC,
    DEV_PRIVATE_KEYS,
    ERROR_PHRASES,
    POLICY_REASONS,
    Chain,
    ChainEvent,
    ChainRevert,
    ChainUnavailable,
    Deployment,
    DeploymentError,
    Policy,
    Vote,
)
from fedchain.contracts.bindings.codec import b32, decode_revert
from fedchain.contracts.bindings import tester
from fedchain.contracts.build import CONTRACT_NAMES, load_artifact
from fedchain.errors import FedchainError
from fixtures_chain import FOUNDER_NAMES, reverts, sha

REPO = Path(__file__).resolve().parent.parent


def test_dev_keys_are_the_mnemonic_accounts():
    Account.enable_unaudited_hdwallet_features()
    for i, key in enumerate(DEV_PRIVATE_KEYS):
        derived = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
        assert "0x" + derived.key.hex().removeprefix("0x") == key


def test_dev_accounts_funded_and_same_on_both_backends(system):
    s = system
    assert [a.address for a in s.chain.dev_accounts] == [Account.from_key(k).address for k in DEV_PRIVATE_KEYS]
    for acct in s.chain.dev_accounts:
        assert s.chain.balance(acct.address) > 100 * 10**18
    if s.backend == "anvil":
        assert s.chain.w3.eth.accounts[:10] == [a.address for a in s.chain.dev_accounts]


def test_mine_and_advance_time(system):
    s = system
    start = s.chain.block_number
    assert s.chain.mine(3) == start + 3
    t0 = s.chain.block_timestamp
    assert s.chain.advance_time(1000) >= t0 + 1000


def test_tx_result_and_events(system):
    s = system
    start = s.chain.block_number + 1
    r1 = s.A.registry.register_dataset("ds-a", "bafy-m", sha("m"), sha("s"), Policy.open(), row_count=10)
    pid = s.propose(s.A, ["ds-a"])
    s.B.proposals.vote(pid, Vote.NO)
    assert r1.tx_hash.startswith("0x") and len(r1.tx_hash) == 66
    assert r1.block_number == start and 50_000 < r1.gas_used < 1_000_000
    evs = s.fc.events(start)
    assert [(e.contract, e.event) for e in evs] == [
        ("DatasetRegistry", "DatasetRegistered"), ("DatasetRegistry", "PolicySet"),
        ("Proposals", "ProposalSubmitted"), ("Proposals", "Voted"),
    ]
    assert evs[:2] == list(r1.events)
    assert [(e.block_number, e.log_index) for e in evs] == sorted((e.block_number, e.log_index) for e in evs)
    assert evs[3].args == {"id": pid, "voter": s.b.address, "choice": Vote.NO}
    assert evs[0].gas_used == evs[1].gas_used == r1.gas_used
    assert evs[0].timestamp == s.chain.w3.eth.get_block(r1.block_number)["timestamp"] > 0
    bare = s.fc.events(start, details=False)
    assert [(e.timestamp, e.gas_used) for e in bare] == [(0, 0)] * 4
    assert [e.args for e in bare] == [e.args for e in evs]
    json.dumps([e.to_json() for e in evs])  # JSON-friendly
    # paging does not change the result, nor does the range split
    assert s.fc.events(start, page_size=1) == evs
    assert s.fc.events(start, evs[1].block_number) + s.fc.events(evs[1].block_number + 1) == evs
    everything = s.fc.events()
    assert everything[-4:] == evs and everything[0].event in ("MemberAdmitted", "RoleGranted")
    assert isinstance(evs[0], ChainEvent) and evs[0].args["id"] == "0x" + keccak(text="ds-a").hex()
    with pytest.raises(KeyError):
        r1.event("Voted")


def test_wait_for_events(system):
    s = system
    head = s.chain.block_number
    t0 = time.monotonic()
    assert s.fc.wait_for_events(head + 1, timeout=0.3, poll_interval=0.05) == []
    assert 0.25 < time.monotonic() - t0 < 3
    s.chain.mine(2)  # empty blocks are skipped
    s.A.consortium.set_x25519_key(sha("k2"))
    found = s.fc.wait_for_events(head + 1, timeout=5)
    assert [e.event for e in found] == ["X25519KeyUpdated"]


def test_wait_for_events_sees_a_concurrent_transaction(system):
    s = system
    if s.backend != "anvil":
        pytest.skip("the in-process backend is not shared across threads")
    head = s.chain.block_number
    other = Chain.connect(s.chain.url).attach(s.deployment, s.b)
    timer = threading.Timer(0.3, lambda: other.consortium.set_x25519_key(sha("later")))
    timer.start()
    try:
        found = s.fc.wait_for_events(head + 1, timeout=10, poll_interval=0.05)
    finally:
        timer.join()
    assert [e.event for e in found] == ["X25519KeyUpdated"]


def test_revert_messages_and_identity(system):
    s = system
    with reverts("ConsortiumNotAMember", account=s.outsiders[0].address) as box:
        s.O.consortium.set_x25519_key(sha("k"))
    exc = box[0]
    assert isinstance(exc, ChainRevert) and isinstance(exc, FedchainError)
    a = s.outsiders[0].address
    assert str(exc) == f"not a member ({a[:6]}…{a[-4:]})"
    assert exc.phrase == ERROR_PHRASES["ConsortiumNotAMember"] and exc.data.startswith("0x")
    with reverts("MemberVotingUnknown") as box:
        s.A.proposals.vote(5, Vote.YES)
    assert str(box[0]) == "no such proposal or motion (5)"


def test_no_signer(system):
    with pytest.raises(FedchainError, match="no signing account"):
        system.fc.consortium.set_x25519_key(sha("k"))


def test_deployment_roundtrip_and_attach_checks(system, tmp_path):
    s = system
    path = s.deployment.save(tmp_path / "dep" / "deployment.json")
    loaded = Deployment.load(path)
    assert loaded == s.deployment
    assert path.read_text().endswith("\n")
    fc = s.chain.attach(loaded, s.a)
    assert fc.consortium.member_count() == 3 and fc.address == s.a.address
    assert s.chain.is_deployed(loaded)
    assert fc.consortium.member_key(s.a.address) == fc.consortium.member(s.a.address).x25519_pub
    wrong_chain = Deployment(loaded.chain_id + 1, loaded.addresses, loaded.deploy_block, loaded.params)
    with pytest.raises(DeploymentError, match="chain"):
        s.chain.attach(wrong_chain)
    assert not s.chain.is_deployed(wrong_chain)
    no_code = Deployment(loaded.chain_id, {**loaded.addresses, "Rounds": s.outsiders[0].address}, 0, {})
    with pytest.raises(DeploymentError, match="no contract code for Rounds"):
        s.chain.attach(no_code)
    assert not s.chain.is_deployed(no_code)
    with pytest.raises(DeploymentError, match="lacks"):
        s.chain.attach(Deployment(loaded.chain_id, {"Consortium": loaded.addresses["Consortium"]}, 0, {}))
    with pytest.raises(DeploymentError, match="not found"):
        Deployment.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DeploymentError, match="invalid"):
        Deployment.load(tmp_path / "bad.json")
    assert loaded.params["quorum_bps"] == 5000 and len(loaded.params["founders"]) == 3


def test_every_custom_error_has_a_phrase():
    names = {
        item["name"]
        for name in CONTRACT_NAMES
        for item in load_artifact(name)["abi"]
        if item["type"] == "error"
    }
    assert len(names) > 40
    assert not names - set(ERROR_PHRASES), f"no phrase for {sorted(names - set(ERROR_PHRASES))}"


def test_generic_revert_decoding():
    err = decode_revert(keccak(text="Error(string)")[:4] + encode(["string"], ["boom"]))
    assert (err.error, err.args_dict, str(err)) == ("Error", {"message": "boom"}, "reverted: boom")
    panic = decode_revert(keccak(text="Panic(uint256)")[:4] + encode(["uint256"], [0x11]))
    assert (panic.error, panic.args_dict) == ("Panic", {"code": 0x11})
    unknown = decode_revert(b"\xde\xad\xbe\xef")
    assert unknown.error == "Unknown" and unknown.args_dict == {"data": "0xdeadbeef"}
    assert decode_revert(b"").error == "Unknown"
    # eth-tester renders revert data as a bytes literal inside its message
    data = keccak(text="ConsortiumLastMember()")[:4]
    assert decode_revert(data).error == "ConsortiumLastMember"

    class Fake(Exception):
        pass

    backend = tester.TesterBackend()
    assert backend.revert_data(Fake(f"execution reverted: {data!r}")) == data
    assert backend.revert_data(Fake({"data": "0x" + data.hex()})) is None
    assert ast.literal_eval(repr(data)) == data


def test_phrases_are_the_contracts_natspec():
    """One wording: each phrase is its error's (or reason constant's) @notice, read from the artifacts."""
    for name in CONTRACT_NAMES:
        doc = load_artifact(name)["userdoc"]
        for signature, entries in doc["errors"].items():
            assert ERROR_PHRASES[signature.split("(")[0]] == entries[0]["notice"]
    registry_doc = load_artifact("DatasetRegistry")["userdoc"]["methods"]
    assert set(POLICY_REASONS) == {
        "UNKNOWN_DATASET", "REVOKED", "EXPIRED", "PURPOSE_NOT_ALLOWED", "PROPOSAL_NOT_ALLOWED",
        "REQUESTER_NOT_ALLOWED", "PROPOSAL_NOT_APPROVED",
    }
    for code, phrase in POLICY_REASONS.items():
        assert registry_doc[f"REASON_{code}()"]["notice"] == phrase
    source = (REPO / "contracts" / "src" / "IRounds.sol").read_text()
    assert "/// @notice " + ERROR_PHRASES["RoundsPolicyDenied"] + "\n" in source


def test_read_model_is_incremental_and_survives_a_revert(system, monkeypatch):
    s = system
    fc = s.fc
    assert [m.name for m in fc.consortium.members()] == list(FOUNDER_NAMES)
    scanned: list[tuple[int, int | None]] = []
    real = type(fc).iter_events

    def spy(self, from_block=0, to_block=None, *args, **kw):
        scanned.append((from_block, to_block))
        return real(self, from_block, to_block, *args, **kw)

    monkeypatch.setattr(type(fc), "iter_events", spy)
    head = s.chain.block_number
    s.register(s.A, "ds-a")
    assert [d.name for d in s.B.registry.datasets()] == ["ds-a"]  # an as_ copy shares the index
    assert scanned == [(head + 1, s.chain.block_number)]  # only the new blocks were read
    assert [d.name for d in fc.registry.datasets()] == ["ds-a"] and len(scanned) == 1  # nothing new: no scan
    snap = s.chain.snapshot()
    s.register(s.B, "ds-b")
    assert [d.name for d in fc.registry.datasets()] == ["ds-a", "ds-b"]
    s.chain.revert(snap)
    s.chain.mine(3)  # the chain grows past the old head again, with other blocks
    assert [d.name for d in fc.registry.datasets()] == ["ds-a"]
    assert scanned[-1][0] == s.deployment.deploy_block  # rebuilt from the deployment


def test_read_model_folds_live_and_trail_events_alike(system, tmp_path):
    from fedchain.contracts.readmodel import ReadModel

    s = system
    s.register(s.A, "ds-a", Policy(purposes=("research",), any_approved_proposal=True, max_epsilon_milli=500))
    s.A.consortium.set_x25519_key(sha("rotated"))
    live = ReadModel(s.fc.events(s.deployment.deploy_block))
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e.to_json(), default=int) + "\n" for e in s.fc.events(s.deployment.deploy_block)))

    class TrailLike:  # the shape the audit trail reads back (block, tx, ...)
        def __init__(self, rec):
            self.__dict__.update(rec, block=rec["block_number"], tx=rec["tx_hash"])

    from_file = ReadModel(TrailLike(json.loads(line)) for line in path.read_text().splitlines())
    for model in (live, from_file):
        a = model.members[s.a.address.lower()]
        assert [k for _, k in a.keys] == ["0x" + sha("x25519:Alpha Hospital").hex(), "0x" + sha("rotated").hex()]
        (d,) = model.datasets.values()
        assert (d.name, d.policies[0].version, d.policies[0].max_epsilon_milli) == ("ds-a", 1, 500)
    assert live.members == from_file.members and live.datasets == from_file.datasets


def test_connection_failures():
    with pytest.raises(ChainUnavailable, match=r"http://127\.0\.0\.1:9"):
        Chain.connect("http://127.0.0.1:9")
    with pytest.raises(ChainUnavailable, match="unsupported URL"):
        Chain.connect("ws://localhost:8545")


@pytest.mark.anvil
def test_node_going_away_is_chain_unavailable(anvil_node):
    with Anvil() as node:
        chain = Chain.connect(node.url)
        assert chain.block_number == 0
        url = node.url
    with pytest.raises(ChainUnavailable, match=url):
        chain.block_number  # noqa: B018
    with pytest.raises(ChainUnavailable):
        chain.mine(1)


def test_only_bindings_imports_web3():
    offenders = []
    for folder in ("contracts", "fedchain", "node", "coordinator", "ipfs", "scripts"):
        for path in (REPO / folder).rglob("*"):
            if path.suffix != ".py" and not (path.parent.name == "scripts" and path.is_file()):
                continue
            if (REPO / "contracts" / "bindings") in path.parents or "__pycache__" in path.parts:
                continue
            text = path.read_text(errors="replace")
            for line in text.splitlines():
                stripped = line.strip()
                if stripped.startswith(("import ", "from ")) and any(
                    mod in stripped.split()[1] for mod in ("web3", "eth_tester")
                ):
                    offenders.append(f"{path.relative_to(REPO)}: {stripped}")
    assert not offenders, "\n".join(offenders)


def test_keccak_is_the_c_backend_and_hashes_as_the_other():
    """The bindings choose eth-hash's pysha3 backend (C, ~7x faster per hash than PyCryptodome's, which
    eth-hash would pick first); both give the same Keccak-256 (checked in a fresh process, where the
    choice is made at the first hash)."""
    import subprocess
    import sys

    code = (
        "import os; os.environ.pop('ETH_HASH_BACKEND', None)\n"
        "import fedchain.contracts.bindings as b\n"
        "from eth_hash.auto import keccak\n"
        "from eth_hash.backends import pycryptodome\n"
        "data = [b'', b'abc', bytes(range(256)) * 9]\n"
        "assert [keccak(d) for d in data] == [pycryptodome.keccak256(d) for d in data]\n"
        "assert b.dataset_id('ds-a') == pycryptodome.keccak256(b'ds-a')\n"
        "print(type(keccak.hasher.__self__).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PySha3Backend", out.stderr
