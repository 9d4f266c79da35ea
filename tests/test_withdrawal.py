"""Consent withdrawal in a running proposal: nodes stop at once, the models of the lineage get marked.

An in-process consortium (``Simulation`` on eth-tester): three hospitals, three rounds. After round 1,
hospital 0 revokes its dataset: its node refuses round 2 before touching its data, the round closes
on the others. In round 3 hospital 1 revokes while its node is training: the contract refuses the
commitment (nothing of it stays on chain or pinned). Then every model of each revoked dataset's lineage
is marked, none twice, and a marked model cannot be released.
"""

from __future__ import annotations

import pytest

from fedchain.cli.simulation import Simulation
from fedchain.coordinator.audit.history import History
from fedchain.coordinator.audit.replay import replay_live
from fedchain.coordinator.audit.report import render_report
from fedchain.coordinator.audit.trail import chain_events
from fedchain.contracts.bindings import ChainRevert, dataset_id
from fedchain.sample_data import demo_plan
from fedchain.usecases import datasets as uc_datasets
from fedchain.usecases import releases as uc_releases
from fixtures_chain import cid, sha


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    s = Simulation.create(tmp_path_factory.mktemp("withdrawal"), hospitals=3, seed=5, fsync=False)
    s.register_datasets()
    return s


def test_revocation_mid_proposal_stops_the_node_and_marks_the_lineage(sim):
    plan = sim.plan(demo_plan(sim.data.hospitals, seed=5), rounds=3, min_participants=1)
    pid = sim.approve(plan)
    nodes, coord = sim.nodes(), sim.coordinator()
    first = sim.run_round(pid, 1, nodes, coord)
    assert sorted(first.committed) == sorted(sim.names)

    gone, later = sim.names[0], sim.names[1]
    uc_datasets.revoke(sim.fed(sim.members[0]), gone)
    second = sim.run_round(pid, 2, nodes, coord)
    assert gone not in second.committed and "revoked" in second.refused[gone]
    assert second.result.closed and sorted(second.committed) == sorted(sim.names[1:])

    # Round 3: hospital 1 is admitted and trains; it revokes before its commitment lands.
    coord.open_round(pid, 3)
    job = nodes[1].prepare(pid, 3)
    result = job.train()
    uc_datasets.revoke(sim.fed(sim.members[1]), later)
    pinned_before = set(sim.store.pins())
    with pytest.raises(ChainRevert) as info:
        nodes[1].commit(job, result)
    assert info.value.error == "RoundsPolicyDenied"
    assert sim.fed().rounds.commitment_of(pid, 3, sim.members[1].address) is None
    assert set(sim.store.pins()) == pinned_before  # the sealed update was unpinned
    assert nodes[1].prepare(pid, 3).committed is False  # and it refuses from now on
    nodes[2].commit(j := nodes[2].prepare(pid, 3), j.train())
    sim.chain.mine(max(0, sim.fed().rounds.round_info(pid, 3).deadline - sim.chain.block_number + 1))
    assert coord.close_round(pid, 3).closed

    # Lineage: hospital 0 committed in round 1 only, so the models of rounds 1, 2 and 3 hold it; hospital 1
    # committed in rounds 1 and 2: the same three. Hospital 2 revoked nothing: nothing to mark for it.
    anyone = sim.fed(sim.auditor)
    model = sim.fed().read_model()
    plan_marks = uc_releases.withdrawal_marks(model, dataset_id(gone))
    assert [(m.round, m.commitment.round) for m in plan_marks] == [(1, 1), (2, 1), (3, 1)]
    txs = uc_releases.mark_withdrawn(anyone, dataset_id(gone))
    assert len(txs) == 3 and max(t.gas_used for t in txs) < 110_000
    assert len(uc_releases.mark_withdrawn(anyone, dataset_id(later))) == 3
    assert uc_releases.mark_withdrawn(anyone, dataset_id(gone)) == []  # nothing marked twice
    with pytest.raises(ChainRevert) as info:  # the third hospital has not withdrawn: no mark
        anyone.releases.mark_withdrawn(pid, 3, sim.fed().rounds.commitments(pid, 3)[0])
    assert info.value.error == "ReleasesDatasetNotRevoked"
    for rnd in (1, 2, 3):
        st = sim.fed().releases.model_status(pid, rnd)
        assert st.withdrawals == 2 and not st.released
    with pytest.raises(ChainRevert) as info:
        sim.fed(sim.members[2]).releases.propose_release(pid, 3, cid("card"), sha("card"))
    assert info.value.error == "ReleasesModelWithdrawn"

    # The report shows the marks; the replay still verifies every round (a mark changes no round).
    fed = sim.fed()
    history = History(list(chain_events(fed, fed.deployment.deploy_block)), dict(fed.deployment.params))
    html = render_report(history, title="t")
    assert "withdrawn</span> round(s) 1, 2, 3" in html and gone in html and later in html
    report = replay_live(fed, sim.store, sim.auditor)
    assert [(v.round, v.status) for v in report.rounds] == [(1, "VERIFIED"), (2, "VERIFIED"), (3, "VERIFIED")]
