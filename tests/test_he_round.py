"""mode = "he" end to end: nodes encrypt, the coordinator sums ciphertexts, only the decryptor decrypts.

* the decrypted aggregate equals plaintext FedAvg of the nodes' models within the stated CKKS tolerance,
  and replay VERIFIES every round (also with the decryptor's key: decryption re-checked);
* a coordinator that publishes another model than the decryptor signed, or an edited input,
  is a DISCREPANCY;
* the decryptor refuses what it must refuse (one input alone, an input that is not on chain, a second
  decryption in a round, a sum that is not the inputs' weighted sum);
* on anvil, with the decryptor in a separate process: the coordinator's process never holds a secret key;
* the long-running coordinator loop (``coordinator run``), which has no decryptor, opens no he round.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import subprocess
import types
import sys
from pathlib import Path

import numpy as np
import pytest
import tenseal as ts

from fedchain import he, he_round
from fedchain.cli.simulation import Simulation, he_commitments
from fedchain.content import pin_document
from fedchain.coordinator.audit.replay import DISCREPANCY, VERIFIED, replay_live, replay_trail
from fedchain.coordinator.audit.trail import export_trail, read_trail
from fedchain.coordinator.runner import Coordinator, CoordinatorService, sample_scores, scores_document
from fedchain.serialize import bytes_to_state_dict, state_dict_to_bytes
from fedchain.sample_data import demo_plan
from fedchain.validation import model_layout

ROUNDS = 2


def _he_sim(root: Path, chain_url: str = "eth-tester://", **he_kw):
    sim = Simulation.create(root, hospitals=3, seed=5, chain_url=chain_url, fsync=False)
    sim.register_datasets()
    plan = sim.he_plan(demo_plan(sim.data.hospitals, seed=5), rounds=ROUNDS, min_participants=2, **he_kw)
    return sim, plan, sim.approve(plan)


@pytest.fixture(scope="module")
def he_run(tmp_path_factory):
    """Two honest rounds; the plaintext models each node encrypted are recorded on the side."""
    sim, plan, pid = _he_sim(tmp_path_factory.mktemp("he"))
    seen: dict[int, list] = {}
    real = he_round.encrypt_update
    layout = model_layout(plan.model)
    nodes, coord = sim.nodes(), sim.coordinator()
    rounds = []
    mp_ = pytest.MonkeyPatch()
    try:
        for r in range(1, ROUNDS + 1):
            def spy(public, state, start, plan_, layout_, r=r):
                seen.setdefault(r, []).append(he_round.clip_update(state, start, plan_.robust.norm_bound, layout_))
                return real(public, state, start, plan_, layout_)
            mp_.setattr(he_round, "encrypt_update", spy)
            rounds.append(sim.run_round(pid, r, nodes, coord))
    finally:
        mp_.undo()
    return sim, plan, pid, rounds, seen, layout


def test_decrypted_aggregate_is_fedavg_within_ckks_tolerance(he_run):
    sim, plan, pid, rounds, seen, layout = he_run
    for r, done in enumerate(rounds, 1):
        assert done.result.closed, done.result.reason
        commits = sim.fed().rounds.commitments(pid, r)
        n = np.array([c.sample_count for c in commits], dtype=np.float64)
        xs = np.stack(seen[r])  # nodes commit in member order, as the events list them
        expected = (n[:, None] * xs).sum(0) / n.sum()
        model = sim.store.get(done.result.aggregate_cid)
        got = he_round.to_vector(bytes_to_state_dict(model), layout)
        err = np.max(np.abs(got - expected))
        assert 0 < err <= he_round.tolerance(float(np.max(np.abs(xs)))), err
        # what is on chain is a ciphertext: no node's plaintext model is in the store
        for c in commits:
            blob = sim.store.get(c.cid)
            assert blob[:4] == he.MAGIC and len(blob) > 10 * xs.shape[1]


def test_replay_verifies_every_he_round_with_and_without_the_key(he_run):
    sim, plan, pid, rounds, seen, layout = he_run
    report = replay_live(sim.fed(), sim.store, sim.auditor)
    assert [v.status for v in report.rounds] == [VERIFIED] * ROUNDS, [v.problems for v in report.rounds]
    key = sim.decryptor._key
    report = replay_live(sim.fed(), sim.store, sim.auditor, he_keys={plan.he.context_sha256: key})
    assert [v.status for v in report.rounds] == [VERIFIED] * ROUNDS


def test_decryptor_refuses_what_it_must(he_run):
    sim, plan, pid, rounds, seen, layout = he_run
    dec = sim.decryptor
    inputs = tuple(he_commitments(sim.fed(), pid, 1))
    req = he_round.DecryptRequest(sim.fed().deployment.chain_id, sim.fed().addresses["Rounds"], pid, 1, plan,
                                  inputs, "", "")
    # a second decryption of a round that was decrypted already
    with pytest.raises(he_round.HERoundError, match="decrypted already"):
        dec.decrypt_round(dataclasses.replace(req))
    dec._done.pop((pid, 1))
    try:
        # an input that is not the commitment on chain
        forged = dataclasses.replace(inputs[0], n_samples=inputs[0].n_samples + 1)
        with pytest.raises(he_round.HERoundError, match="not the commitment on chain"):
            dec.decrypt_round(dataclasses.replace(req, inputs=(forged, *inputs[1:])))
        # "the sum" is one hospital's ciphertext alone: the coordinator wants one update decrypted
        one = sim.store.get(inputs[0].cid)
        single = pin_document(sim.store, one)
        with pytest.raises(he_round.HERoundError, match="refusing to decrypt"):
            dec.decrypt_round(dataclasses.replace(req, inputs=inputs[:1], aggregate_cid=single.cid,
                                                  aggregate_sha256=single.sha256))
        # exactly the weighted "sum" of one input, listed alone: a sum must combine two or more
        public = he.PublicContext.decode(sim.store.get(plan.he.context_cid))
        lone = public.weighted_sum([he.EncryptedVector.decode(one)], [1.0]).encode()
        lone_pin = pin_document(sim.store, lone)
        with pytest.raises(he_round.HERoundError, match="at least 2 distinct inputs"):
            dec.decrypt_round(dataclasses.replace(req, inputs=inputs[:1], aggregate_cid=lone_pin.cid,
                                                  aggregate_sha256=lone_pin.sha256))
        # all inputs listed, but the ciphertext offered is one of them, not their weighted sum
        with pytest.raises(he_round.HERoundError, match="refusing to decrypt"):
            dec.decrypt_round(dataclasses.replace(req, aggregate_cid=lone_pin.cid, aggregate_sha256=lone_pin.sha256))
    finally:
        dec._done[(pid, 1)] = True


def test_a_coordinator_publishing_another_model_is_a_discrepancy(tmp_path):
    sim, plan, pid = _he_sim(tmp_path)
    nodes, coord = sim.nodes(), sim.coordinator()
    assert sim.run_round(pid, 1, nodes, coord).result.closed
    honest, seen = sim.decryptor, {}

    def swap(req):  # the decryptor answers honestly; the coordinator swaps the model it publishes
        d = honest(req)
        state = bytes_to_state_dict(sim.store.get(d.model_cid))
        name = next(iter(state))
        state[name] = state[name] + 0.5
        p = pin_document(sim.store, state_dict_to_bytes(state))
        seen.update(req=req, honest=d)
        return dataclasses.replace(d, model_cid=p.cid, model_sha256="0x" + p.sha256)

    coord.decryptor = swap
    # an honest coordinator checks the statement before it publishes anything
    with pytest.raises(he_round.HERoundError, match="does not name"):
        sim.run_round(pid, 2, nodes, coord)
    assert sim.fed().rounds.round_info(pid, 2).phase.name == "OPEN"
    # a dishonest one closes with the swapped model and the decryptor's honest statement
    d, req = seen["honest"], seen["req"]
    state = bytes_to_state_dict(sim.store.get(d.model_cid))
    name = next(iter(state))
    state[name] = state[name] + 0.5
    bad = pin_document(sim.store, state_dict_to_bytes(state))
    commits = sorted(coord.commitments(pid, 2), key=lambda c: c.participant.lower())
    weights = he_round.fedavg_weights([c.n_samples for c in commits])
    doc = scores_document(pid, 2, sample_scores({c.participant.lower(): w for c, w in zip(commits, weights)}),
                          commits, {},
                          decryption={"statement": d.statement, "signature": d.signature,
                                      "aggregate_cid": req.aggregate_cid})
    sc = pin_document(sim.store, doc)
    sim.fed(sim.ops).rounds.close_round(pid, 2, bad.cid, bad.sha256, sc.cid, sc.sha256)
    report = replay_live(sim.fed(), sim.store, sim.auditor)
    assert [v.status for v in report.rounds] == [VERIFIED, DISCREPANCY]
    assert any("not the one the decryptor published" in p for p in report.rounds[1].problems), report.rounds[1].problems


def test_an_edited_input_is_a_discrepancy(tmp_path):
    """The trail says one hospital trained on more samples than it committed: the weights change, so the
    encrypted sum the replay derives is not the one the decryptor signed."""
    sim, plan, pid = _he_sim(tmp_path)
    assert sim.run_round(pid, 1, sim.nodes(), sim.coordinator()).result.closed
    trail = tmp_path / "trail.jsonl"
    export_trail(sim.fed(), sim.store, trail)
    assert replay_trail(read_trail(trail), sim.store, sim.auditor).rounds[0].status == VERIFIED
    lines = [json.loads(x) for x in trail.read_text().splitlines()]
    ev = next(r for r in lines if r.get("kind") == "event" and r["event"] == "UpdateCommitted")
    ev["args"]["sampleCount"] += 1
    trail.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in lines))
    v = replay_trail(read_trail(trail), sim.store, sim.auditor).rounds[0]
    assert v.status == DISCREPANCY and any("decryptor decrypted" in p for p in v.problems), v.problems


@pytest.mark.anvil
def test_the_coordinators_process_never_holds_the_secret_key(tmp_path, anvil_node, monkeypatch):
    """anvil; the decryptor is another process that shares only the chain and the store. In the
    coordinator's (this) process no secret key is ever made or loaded, and none is found afterwards."""
    def no_key(*_a, **_k):
        raise AssertionError("a CKKS secret key was created in the coordinator's process")
    monkeypatch.setattr(he.DecryptorKey, "__init__", no_key)
    sim = Simulation.create(tmp_path / "run", hospitals=3, seed=5, chain_url=anvil_node.url, fsync=False)
    sim.deployment.save(tmp_path / "deployment.json")
    sim.register_datasets()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("he_decryptor_proc.py")), anvil_node.url,
         str(tmp_path / "deployment.json"), str(sim.store.root), str(len(sim.members) + 1)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    try:
        hello = json.loads(proc.stdout.readline())

        def remote(req: he_round.DecryptRequest) -> he_round.Decryption:
            proc.stdin.write(json.dumps({
                "chain_id": req.chain_id, "rounds": req.rounds, "proposal": req.proposal, "round": req.round,
                "plan": req.plan.to_canonical_bytes().decode(), "inputs": [dataclasses.astuple(i) for i in req.inputs],
                "aggregate_cid": req.aggregate_cid, "aggregate_sha256": req.aggregate_sha256}) + "\n")
            proc.stdin.flush()
            got = json.loads(proc.stdout.readline())
            assert "error" not in got, got
            return he_round.Decryption(**got)

        plan = sim.he_plan(demo_plan(sim.data.hospitals, seed=5), rounds=1, min_participants=2,
                           remote=(hello["address"], bytes.fromhex(hello["public"]), remote))
        assert plan.he.decryptor == sim.auditor.address.lower()
        pid = sim.approve(plan)
        coord = sim.coordinator()
        done = sim.run_round(pid, 1, sim.nodes(), coord)
        assert done.result.closed, done.result.reason
        assert replay_live(sim.fed(), sim.store, sim.auditor).rounds[0].status == VERIFIED
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    # nothing the coordinator holds reaches a secret key (other tests' in-process decryptors may exist)
    seen, todo = set(), [coord, sim]
    while todo:
        o = todo.pop()
        if id(o) in seen or isinstance(o, (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)) \
                or type(o).__module__.startswith(("torch", "numpy")):
            continue
        seen.add(id(o))
        assert type(o) is not he.DecryptorKey and not (type(o) is ts.Context and o.has_secret_key())
        todo.extend(gc.get_referents(o))
    assert len(seen) > 100


def test_the_role_loop_opens_no_he_round_it_could_not_close(tmp_path, caplog):
    """``coordinator run`` has no decryptor: it says so and opens nothing (no round left open for nodes to train on)."""
    caplog.set_level(logging.WARNING, logger="fedchain.coordinator")
    sim = Simulation.create(tmp_path, hospitals=3, seed=5, fsync=False)
    sim.register_datasets()
    pid = sim.approve(sim.he_plan(demo_plan(sim.data.hospitals, seed=5), rounds=1, min_participants=2))
    svc = CoordinatorService(Coordinator(sim.fed(sim.ops), sim.store, sim.ops))  # as `coordinator run` builds it
    height = sim.chain.block_number
    svc.serve(exit_when_done=True, timeout=30)
    assert sim.chain.block_number == height and sim.fed().rounds.last_round(pid) == 0
    assert pid in svc.skipped and "decryptor" in svc.skipped[pid]
    assert any("no round opens" in r.getMessage() for r in caplog.records)
