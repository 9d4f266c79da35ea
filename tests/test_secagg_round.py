"""mode = "secagg" end to end: the coordinator holds masked vectors and the sum, never one update.

* the unmasked sum equals the plaintext sum within the fixed-point precision;
* what the coordinator holds of one update is independent of it (correlation ~ 0 over many trials);
* 6 hospitals, 2 vanish after their masked input: the round completes, its model is the sample-weighted
  mean of all six masked inputs, replay VERIFIES (eth-tester and anvil);
* 3 vanish: the session is Failed on chain, the round is Failed, nothing is published, replay VERIFIES;
* a coordinator that publishes another aggregate, or closes a round whose session failed: DISCREPANCY.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fedchain import secagg_round
from fedchain.cli.simulation import Simulation
from fedchain.contracts.models import RoundPhase, SessionStage
from fedchain.content import pin_document
from fedchain.coordinator.audit.replay import DISCREPANCY, VERIFIED, replay_live, replay_trail
from fedchain.coordinator.audit.trail import export_trail, read_trail
from fedchain.coordinator.runner import sample_scores, scores_document
from fedchain.sample_data import demo_plan
from fedchain.secagg import MaskedInput, SecAggConfig, decode_message, decode_vector
from fedchain.serialize import bytes_to_state_dict, state_dict_to_bytes
from fedchain.validation import model_layout


def _one_round(xs: list[np.ndarray], vanish_after_masked: set[int] = frozenset()):
    """The protocol between in-memory participants (ids 1..n) with the round's real config."""
    n = len(xs)
    cfg = SecAggConfig(os.urandom(32), os.urandom(32), n_clients=n, threshold=n - 1, degree=n - 1,
                       vector_length=xs[0].size, ring_bits=secagg_round.RING_BITS, frac_bits=secagg_round.FRAC_BITS,
                       clip=secagg_round.CLIP)
    parts = {i: secagg_round.Participant(cfg, i) for i in range(1, n + 1)}
    adv = {i: p.advertise() for i, p in parts.items()}
    shares = {i: p.share(adv) for i, p in parts.items()}
    masked = {i: p.masked(xs[i - 1], shares) for i, p in parts.items()}
    ids = sorted(masked)
    responses = {i: p.unmask(shares, ids) for i, p in parts.items() if i not in vanish_after_masked}
    return cfg, masked, secagg_round.reconstruct(cfg, adv, shares, masked, responses)


def test_unmasked_sum_is_the_plaintext_sum_within_fixed_point_precision():
    rng = np.random.default_rng(1)
    xs = [rng.normal(0, 3, 257) for _ in range(5)]
    cfg, masked, result = _one_round(xs, vanish_after_masked={2})
    exact = np.sum(xs, axis=0)
    err = np.max(np.abs(result.values - exact))
    assert err <= len(xs) * 2.0 ** -(secagg_round.FRAC_BITS + 1)
    assert result.survivors == (1, 2, 3, 4, 5)


def test_what_the_coordinator_holds_of_one_update_is_independent_of_it():
    """Over many rounds, client 1's masked vector (all the coordinator has of it) does not correlate
    with its input, while the unmasked sum does (the control shows the test can see a dependence)."""
    rng = np.random.default_rng(2)
    trials, held, inputs, sums = 300, [], [], []
    for _ in range(trials):
        xs = [rng.normal(0, 1, 4) for _ in range(3)]
        cfg, masked, result = _one_round(xs)
        y = decode_vector(decode_message(masked[1], MaskedInput).vector, cfg)
        held.append(y)
        inputs.append(xs[0])
        sums.append(result.values)
    held, inputs, sums = np.concatenate(held), np.concatenate(inputs), np.concatenate(sums)
    bound = 4 / np.sqrt(held.size)
    assert abs(np.corrcoef(inputs, held)[0, 1]) < bound
    assert np.corrcoef(inputs, sums)[0, 1] > 0.4  # the sum itself is revealed by design


# ------------------------------------------------------------------ on chain, six hospitals


def _sim(root, chain_url="eth-tester://"):
    sim = Simulation.create(root, hospitals=6, seed=11, chain_url=chain_url, fsync=False)
    sim.register_datasets()
    plan = sim.secagg_plan(demo_plan(sim.data.hospitals, seed=11), max_dropouts=2, rounds=2, min_participants=2)
    return sim, plan, sim.approve(plan)


# ~15 s per backend alone (6 hospitals x 2 rounds x 4 phases); on anvil a separate auditor process replays too
@pytest.mark.parametrize("chain", ["eth-tester", pytest.param("anvil", marks=pytest.mark.anvil)])
def test_six_hospitals_two_vanish_after_masking_then_three(tmp_path, chain, request):
    url = request.getfixturevalue("anvil_node").url if chain == "anvil" else "eth-tester://"
    sim, plan, pid = _sim(tmp_path, url)
    nodes, coord = sim.nodes(), sim.coordinator()
    names = sim.names
    layout = model_layout(plan.model)
    seen = []
    real = secagg_round.weighted_input

    def spy(state, start, n, total, plan_, layout_):
        seen.append((real(state, start, n, total, plan_, layout_), n))
        return seen[-1][0]
    secagg_round.weighted_input = spy
    try:
        done = sim.run_secagg_round(pid, 1, nodes, coord, vanish={names[0]: 2, names[4]: 2})
    finally:
        secagg_round.weighted_input = real
    assert done.result.closed, done.result.reason
    session = sim.fed().secure.session(pid, 1)
    assert (session.stage, session.masked, session.unmasked) == (SessionStage.COMPLETED, 6, 4)
    # the published model is the sample-weighted mean of all six masked inputs
    total = np.sum([x for x, _ in seen], axis=0)
    expected = total[:-1] / total[-1]
    from fedchain.he_round import to_vector
    got = to_vector(bytes_to_state_dict(sim.store.get(done.result.aggregate_cid)), layout)
    assert np.max(np.abs(got - expected)) <= 6 * 2.0 ** -33 / total[-1] + 1e-6  # fixed point, then float32
    assert len(done.result.participants) == 6

    # round 2: three vanish after masking -> fewer than the threshold 4 unmask
    done = sim.run_secagg_round(pid, 2, nodes, coord, vanish={names[0]: 2, names[1]: 2, names[2]: 2})
    assert not done.result.closed
    assert sim.fed().secure.session(pid, 2).stage == SessionStage.FAILED
    info = sim.fed().rounds.round_info(pid, 2)
    assert info.phase == RoundPhase.FAILED and info.aggregate_cid == ""
    report = replay_live(sim.fed(), sim.store, sim.auditor)
    assert [v.status for v in report.rounds] == [VERIFIED, VERIFIED], [v.problems for v in report.rounds]
    if chain == "anvil":  # an auditor in its own process, from the trail anchored to the node and the store
        trail = tmp_path / "trail.jsonl"
        export_trail(sim.fed(), sim.store, trail)
        proc = subprocess.run(
            [sys.executable, "-m", "fedchain.cli", "audit", "replay", "--trail", str(trail), "--chain", url,
             "--store", str(sim.store.root), "--auditor-dev", str(len(sim.members) + 1)],
            capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "2/2 rounds VERIFIED" in " ".join(proc.stdout.split()), proc.stdout + proc.stderr


def test_an_edited_input_and_a_close_despite_a_failed_session_are_discrepancies(tmp_path):
    sim, plan, pid = _sim(tmp_path)
    nodes, coord = sim.nodes(), sim.coordinator()
    names = sim.names
    done = sim.run_secagg_round(pid, 1, nodes, coord)
    assert done.result.closed
    assert replay_live(sim.fed(), sim.store, sim.auditor).rounds[0].status == VERIFIED
    # an edited input: the trail says one masked input carried more samples -> the published weights differ
    trail = tmp_path / "trail.jsonl"
    export_trail(sim.fed(), sim.store, trail)
    lines = [json.loads(x) for x in trail.read_text().splitlines()]
    ev = next(r for r in lines if r.get("kind") == "event" and r["event"] == "UpdateCommitted")
    ev["args"]["sampleCount"] += 1
    trail.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in lines))
    v = replay_trail(read_trail(trail), sim.store, sim.auditor).rounds[0]
    assert v.status == DISCREPANCY and any("scores document" in p for p in v.problems), v.problems
    # round 2: the session fails (three vanish), yet a dishonest coordinator closes the round
    k = sim.fed(sim.ops)
    k.rounds.open_round(pid, 2)
    coord.secagg_start(pid, 2)
    s = k.secure.session(pid, 2)
    jobs = {n.dataset_name: (n, n.prepare(pid, 2)) for n in nodes}
    for phase in range(4):
        sim._mine_to(s.window(phase)[0])
        for name, (n, job) in jobs.items():
            if phase == 3 and name in names[:3]:
                continue
            [lambda: n.secagg_advertise(pid, 2), lambda: n.secagg_share(pid, 2),
             lambda: n.secagg_mask(job, job.train()), lambda: n.secagg_unmask(pid, 2)][phase]()
    sim._mine_to(s.window(3)[1] + 1)
    assert k.secure.conclude(pid, 2).value == SessionStage.FAILED
    model = bytes_to_state_dict(sim.store.get(done.result.aggregate_cid))
    name = next(iter(model))
    model[name] = model[name] + 0.25
    agg = pin_document(sim.store, state_dict_to_bytes(model))
    used = coord.commitments(pid, 2)
    sc = pin_document(sim.store, scores_document(pid, 2, sample_scores({}), used, {}))
    k.rounds.close_round(pid, 2, agg.cid, agg.sha256, sc.cid, sc.sha256)
    v = replay_live(sim.fed(), sim.store, sim.auditor).rounds[1]
    assert v.status == DISCREPANCY and any("session is failed" in p for p in v.problems), v.problems
