"""The he decryptor as a service (``fedchain decryptor serve``): its key file and the checks of its endpoint.

Round 1 of an he plan is left open with all three ciphertexts committed (the coordinator's decryptor
captured the honest request and refused); each test asks a fresh service (its own answers file) about it.
Every request here is refused by exactly one defence, named in the test. The HTTP layer and the whole
flow across processes are ``tests/test_he_processes.py``.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from fedchain import he_round
from fedchain.cli.simulation import Simulation
from fedchain.content import pin_document
from fedchain.coordinator.runner import run_coordinator
from fedchain.errors import ConfigError
from fedchain.he import DecryptorKey
from fedchain.identity import LIGHT_KDF_N, KeystoreError
from fedchain.retry import RetryPolicy
from fedchain.sample_data import demo_plan
from fedchain.usecases import he_decryptor as hd


class Captured(Exception):
    pass


@pytest.fixture(scope="module")
def open_round(tmp_path_factory):
    sim = Simulation.create(tmp_path_factory.mktemp("hed"), hospitals=3, seed=5, fsync=False)
    sim.register_datasets()
    key = DecryptorKey.generate()
    plan = sim.he_plan(demo_plan(sim.data.hospitals, seed=5), rounds=2, min_participants=2, key=key)
    pid = sim.approve(plan)
    seen = {}

    def capture(req):
        seen["req"] = req
        raise Captured

    coord = sim.coordinator()
    coord.decryptor = capture
    with pytest.raises(Captured):
        sim.run_round(pid, 1, sim.nodes(), coord)
    assert len(sim.fed().rounds.commitments(pid, 1)) == 3
    return sim, key, pid, seen["req"]


def _service(open_round, path):
    sim, key, _pid, _req = open_round
    return hd.DecryptorService(key, sim.auditor.account, sim.fed(), sim.store, hd.Answers(path))


def _body(req) -> bytes:
    return json.dumps(hd.request_json(req)).encode()


def test_the_honest_request_is_answered_with_a_statement_the_coordinator_accepts(open_round, tmp_path):
    sim, _key, pid, req = open_round
    status, doc = _service(open_round, tmp_path / "a.json").handle(_body(req))
    assert status == 200, doc
    he_round.verify_statement(doc["statement"], doc["signature"], sim.auditor.address)


def test_bad_json_oversized_and_malformed_bodies_are_refused_before_any_lookup(open_round, tmp_path):
    svc = _service(open_round, tmp_path / "a.json")
    svc.fed = None  # any lookup would fail: these are refused on their bytes alone
    assert svc.handle(b"{not json")[0] == 400
    assert svc.handle(b" " * (hd.MAX_REQUEST_BYTES + 1))[0] == 413
    good = hd.request_json(open_round[3])
    for bad in ({**good, "extra": 1}, {**good, "round": "1"}, {**good, "inputs": []},
                {**good, "inputs": [["a", "b", "c", "d", -1]]}, [good]):
        assert svc.handle(json.dumps(bad).encode())[0] == 400, bad
    assert not (tmp_path / "a.json").exists()


def test_a_round_or_proposal_the_chain_does_not_have_and_a_forged_plan_are_refused(open_round, tmp_path):
    _sim, _key, pid, req = open_round
    svc = _service(open_round, tmp_path / "a.json")
    status, doc = svc.handle(_body(dataclasses.replace(req, round=2)))
    assert status == 409 and "not open on chain" in doc["error"], doc
    status, doc = svc.handle(_body(dataclasses.replace(req, proposal=pid + 7)))
    assert status == 409 and "not on chain" in doc["error"], doc
    forged = req.plan.with_changes(min_participants=1)
    status, doc = svc.handle(_body(dataclasses.replace(req, plan=forged)))
    assert status == 409 and "plan on chain" in doc["error"], doc


def test_a_subset_of_the_committed_inputs_is_refused(open_round, tmp_path):
    """Two of three valid ciphertexts, with their honest weighted sum: enough inputs for the Decryptor's own
    rule (min_participants 2), so only the service's no-subset check refuses it."""
    sim, key, pid, req = open_round
    two = sorted(req.inputs, key=lambda i: i.participant.lower())[:2]
    public = key.public_context()
    vectors = [he_round.EncryptedVector.decode(sim.store.get(i.cid), public.params) for i in two]
    s = public.weighted_sum(vectors, he_round.fedavg_weights([i.n_samples for i in two]))
    cid, sha = pin_document(sim.store, s.encode())
    sub = dataclasses.replace(req, inputs=tuple(two), aggregate_cid=cid, aggregate_sha256="0x" + sha)
    status, doc = _service(open_round, tmp_path / "a.json").handle(_body(sub))
    assert status == 422 and "leaves out" in doc["error"], doc
    # the same subset reaches the Decryptor itself without the check, which would decrypt it
    got = hd.DecryptorService(key, sim.auditor.account, sim.fed(), sim.store, hd.Answers(tmp_path / "b.json"))
    got._no_subset = lambda *a: None
    assert got.handle(_body(sub))[0] == 200


def test_one_aggregate_per_round_survives_a_restart(open_round, tmp_path):
    """A second, different request for the round is refused, also by a restarted decryptor (new process:
    the Decryptor's in-memory record is gone; the answers file is not); the same request gets the same answer."""
    sim, key, _pid, req = open_round
    path = tmp_path / "answers.json"
    svc = _service(open_round, path)
    status, first = svc.handle(_body(req))
    assert status == 200
    other = dataclasses.replace(req, aggregate_cid=req.inputs[0].cid, aggregate_sha256=req.inputs[0].sha256)
    status, doc = svc.handle(_body(other))
    assert status == 409 and "one aggregate per round" in doc["error"], doc
    restarted = _service(open_round, path)
    assert restarted.handle(_body(other))[0] == 409
    assert restarted.handle(_body(req)) == (200, first)
    # without the file a restarted decryptor would decrypt the round again
    forgetful = _service(open_round, tmp_path / "fresh.json")
    assert forgetful.handle(_body(req))[0] == 200


def test_the_key_file_is_encrypted_bound_to_its_owner_and_not_editable(tmp_path):
    key = DecryptorKey.generate()
    addr = "0x" + "ab" * 20
    path = hd.save_key_file(tmp_path / "k.json", key, addr, "pw", kdf_n=LIGHT_KDF_N)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    raw = path.read_bytes()
    assert key.to_bytes()[7:200].hex() not in raw.decode()
    back = hd.load_key_file(path, "pw", address=addr)
    assert back.public_context().encode() == key.public_context().encode()
    with pytest.raises(KeystoreError, match="wrong password"):
        hd.load_key_file(path, "nope", address=addr)
    with pytest.raises(KeystoreError, match="not of this identity"):
        hd.load_key_file(path, "pw", address="0x" + "cd" * 20)
    doc = json.loads(raw)
    doc["address"] = "0x" + "cd" * 20
    (tmp_path / "moved.json").write_text(json.dumps(doc))
    with pytest.raises(KeystoreError, match="wrong password|modified"):
        hd.load_key_file(tmp_path / "moved.json", "pw", address=doc["address"])
    with pytest.raises(KeystoreError, match="overwrite"):
        hd.save_key_file(path, key, addr, "pw", kdf_n=LIGHT_KDF_N)


def test_the_coordinators_client_retries_an_unreachable_decryptor_then_gives_up(open_round, caplog):
    import socket  # a port nothing listens on

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = hd.HttpDecryptor(f"http://127.0.0.1:{port}", RetryPolicy(horizon=1.0, first_wait=0.1, max_wait=0.2,
                                                                      jitter=0.0))
    with pytest.raises(hd.DecryptorUnavailable):
        client(open_round[3])
    assert any("retrying" in r.getMessage() for r in caplog.records)


def test_config_keys_are_checked(tmp_path):
    net = '[network]\nchain = "eth-tester://"\ndeployment = "d.json"\nstore = "local:s"\n'
    (tmp_path / "c.toml").write_text(f'[identity]\ndev = 3\n\n{net}\n[coordinator]\ndecryptor_url = "ftp://x"\n')
    with pytest.raises(ConfigError, match="decryptor_url"):
        run_coordinator(tmp_path / "c.toml")
    (tmp_path / "d.toml").write_text(f'[identity]\ndev = 4\n\n{net}\n[decryptor]\nkey_file = "k"\nlisten = "x"\n')
    with pytest.raises(ConfigError, match="host:port"):
        hd.DecryptorConfig(tmp_path / "d.toml")
    (tmp_path / "e.toml").write_text(f'[identity]\ndev = 4\n\n{net}\n[decryptor]\nlisten = "127.0.0.1:1"\n')
    with pytest.raises(ConfigError, match="key_file"):
        hd.DecryptorConfig(tmp_path / "e.toml")
