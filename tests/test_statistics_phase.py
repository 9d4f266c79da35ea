"""The federated statistics phase: contract rules (both backends), the pooled result, training on it, replay.

* Every rule of ``Statistics`` reverts with its named error on eth-tester and anvil.
* An in-process consortium (``Simulation``) with ``standardize = "federated"``: each node commits its
  moments sealed for the coordinator and the auditor; the published mean/std are exactly those of the
  pooled rows; nodes cannot train before the publication and train on it after; replay re-derives it
  (VERIFIED) and names a coordinator that publishes other statistics, or opens round 1 first.
"""

from __future__ import annotations

import io
import json

import pytest
import torch

from fedchain.cli.simulation import Simulation
from fedchain.content import pin_document
from fedchain.contracts.bindings import ChainRevert, Policy
from fedchain.coordinator.audit.replay import replay_live
from fedchain.coordinator.statistics import pool_moments
from fedchain.moments import parse_statistics, statistics_document
from fedchain.node.dataset import load_dataset
from fedchain.sample_data import demo_plan
from fedchain.usecases import statistics as uc_statistics
from fixtures_chain import cid, reverts, sha

# ------------------------------------------------------------------ contract rules


def test_statistics_contract_rules(system):
    s = system
    s.register(s.A, "ds-a", rows=100)
    s.register(s.B, "ds-b", rows=100)
    s.register(s.C, "ds-c", rows=100)
    pid = s.propose(s.A, ["ds-a", "ds-b"], min_participants=2)
    m = (cid("moments-a"), sha("moments-a"))
    with reverts("StatisticsNotApproved", proposalId=pid):
        s.A.statistics.commit_moments(pid, "ds-a", *m, 100)
    s.approve(pid)
    with reverts("ConsortiumNotAMember"):
        s.O.statistics.commit_moments(pid, "ds-a", *m, 100)
    with reverts("StatisticsNotATarget"):
        s.C.statistics.commit_moments(pid, "ds-c", *m, 100)
    with reverts("StatisticsNotDatasetOwner"):
        s.B.statistics.commit_moments(pid, "ds-a", *m, 100)
    with reverts("StatisticsRowCountTooHigh", rowCount=101, registered=100):
        s.A.statistics.commit_moments(pid, "ds-a", *m, 101)
    with reverts("StatisticsInvalidRowCount"):
        s.A.statistics.commit_moments(pid, "ds-a", *m, 0)
    with reverts("StatisticsInvalidCid"):
        s.A.statistics.commit_moments(pid, "ds-a", "not a cid", m[1], 100)
    s.A.statistics.commit_moments(pid, "ds-a", *m, 100)
    with reverts("StatisticsAlreadyCommitted"):
        s.A.statistics.commit_moments(pid, "ds-a", *m, 100)
    with reverts("ConsortiumNotCoordinator"):
        s.A.statistics.publish_statistics(pid, cid("stats"), sha("stats"))
    with reverts("StatisticsNotEnoughParticipants", committed=1, minParticipants=2):
        s.K.statistics.publish_statistics(pid, cid("stats"), sha("stats"))
    s.B.registry.set_policy("ds-b", Policy(proposal_ids=(pid + 1,)))  # no longer admits this proposal
    with reverts("StatisticsPolicyDenied"):
        s.B.statistics.commit_moments(pid, "ds-b", cid("moments-b"), sha("moments-b"), 100)
    s.B.registry.set_policy("ds-b", Policy.open())
    s.B.statistics.commit_moments(pid, "ds-b", cid("moments-b"), sha("moments-b"), 100)
    with reverts("StatisticsInvalidCid"):
        s.K.statistics.publish_statistics(pid, "", sha("stats"))
    s.K.statistics.publish_statistics(pid, cid("stats"), sha("stats"))
    assert s.fc.statistics.phase_of(pid) == {"committed": 2, "published": True, "cid": cid("stats"),
                                              "sha256": sha("stats")}
    with reverts("StatisticsAlreadyPublished"):
        s.K.statistics.publish_statistics(pid, cid("stats"), sha("stats"))
    rec = s.fc.read_model().statistics[pid]
    assert [c.n_samples for c in rec.commits] == [100, 100] and rec.published["committed"] == 2
    # once training started, the phase is closed (a second proposal, no statistics: round 1 opened)
    other = s.approved_proposal(["ds-a", "ds-b"])
    s.K.rounds.open_round(other, 1)
    with reverts("StatisticsTrainingStarted", proposalId=other):
        s.A.statistics.commit_moments(other, "ds-a", *m, 100)
    with reverts("StatisticsTrainingStarted", proposalId=other):
        s.K.statistics.publish_statistics(other, cid("stats"), sha("stats"))


# ------------------------------------------------------------------ the phase, end to end in process


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    sim = Simulation.create(tmp_path_factory.mktemp("stats"), hospitals=3, seed=3, fsync=False)
    sim.register_datasets()
    return sim


def _federated_plan(sim):
    return sim.plan(demo_plan(sim.data.hospitals, seed=3), rounds=1, min_participants=2,
                    preprocessing={"standardize": "federated"})


def test_statistics_phase_pools_exactly_trains_and_replays(consortium):
    sim = consortium
    pid = sim.approve(_federated_plan(sim))
    nodes, coord = sim.nodes(), sim.coordinator()
    with pytest.raises(uc_statistics.StatisticsPending):  # nobody trains before the statistics exist
        nodes[0].prepare(pid, 1)
    outcomes = sim.run_statistics(pid, nodes, coord)
    assert all(o.committed and o.round == 0 for o in outcomes)
    stats = uc_statistics.published(sim.fed().read_model(), sim.store, pid)
    pooled = torch.cat([load_dataset(h.csv_path, h.schema_path).features for h in sim.data.hospitals]).double()
    assert torch.allclose(torch.tensor(stats.mean, dtype=torch.float64), pooled.mean(0), rtol=1e-12, atol=1e-12)
    assert torch.allclose(torch.tensor(stats.std, dtype=torch.float64), pooled.std(0, unbiased=False),
                          rtol=1e-9, atol=1e-12)
    assert stats.n == pooled.shape[0] and len(stats.contributors) == 3 and stats.rejected == ()
    # the moments on chain are sealed: the store holds no readable moments document
    for c in sim.fed().read_model().statistics[pid].commits:
        buf = io.BytesIO()
        sim.store.get_to(c.cid, buf)
        assert buf.tell() > 0 and b"sums_sq" not in buf.getvalue()
    plan = nodes[0].plan(pid)
    assert plan.preprocessing.standardize == "plan" and tuple(plan.preprocessing.mean) == stats.mean
    first = sim.run_round(pid, 1, nodes, coord)
    assert first.result.closed and first.validation_metric > 0.8
    report = replay_live(sim.fed(), sim.store, sim.auditor)
    mine = [v for v in report.rounds if v.proposal_id == pid]
    assert [(v.round, v.status, v.problems) for v in mine] == [(1, "VERIFIED", [])]


def test_replay_names_statistics_that_are_not_the_pooled_moments(consortium):
    """A coordinator publishing other statistics (here: a shifted mean) is named; without the check, VERIFIED."""
    sim = consortium
    pid = sim.approve(_federated_plan(sim))
    nodes, coord = sim.nodes(), sim.coordinator()
    for n in nodes:
        n.commit_moments(pid)
    honest = pool_moments(sim.fed().read_model(), sim.store, sim.fed().deployment, pid, sim.ops,
                          coord.recipients(pid))
    doc = parse_statistics(honest.document)
    forged = json.loads(honest.document)
    forged["mean"] = [m + 1.0 for m in doc.mean]
    data = statistics_document(pid, type("S", (), {"features": doc.features, "mean": tuple(forged["mean"]),
                                                   "std": doc.std, "n_rows": doc.n})(), doc.contributors)
    pinned = pin_document(sim.store, data)
    sim.fed(sim.ops).statistics.publish_statistics(pid, pinned.cid, pinned.sha256)
    sim.run_round(pid, 1, nodes, coord)
    report = replay_live(sim.fed(), sim.store, sim.auditor)
    v = next(v for v in report.rounds if v.proposal_id == pid)
    assert v.status == "DISCREPANCY" and any("not the pooled committed moments" in p for p in v.problems)
