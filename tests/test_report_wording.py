"""The report's words: members vs data holders, validation (not test) metrics, the last closed round per
proposal, each proposal's model and strategy, what a contribution score is.

A hand-made history: three hospitals holding data plus the consortium's operations organisation, which
runs the coordinator and is a member without a dataset; proposal 1 trained 3 rounds (the third closed but
its metric not recorded yet), proposal 2 (later) one round with a lower metric, then an open round.
"""

from __future__ import annotations

import re

import pytest

from fedchain.coordinator.audit.history import History
from fedchain.coordinator.audit.plans import plans_from_documents, plans_from_store
from fedchain.coordinator.audit.report import data_holders, render_report
from fedchain.ipfs.local import LocalStore
from fedchain.modelcard import SCORE_MEANING
from fedchain.sample_data import demo_plan
from test_report import PARAMS, _Chain, h32

A, B, C = ("0x" + "a1" * 20), ("0x" + "b2" * 20), ("0x" + "c3" * 20)
OPS = "0x" + "0f" * 20
DATASETS = {A: h32("ds-a"), B: h32("ds-b"), C: h32("ds-c")}

PLAN_1 = demo_plan(seed=1).with_changes(datasets=["icu-a", "icu-b", "icu-c"], min_participants=2, rounds=3)
PLAN_2 = demo_plan(seed=2, strategy={"name": "fedprox", "mu": 0.1}).with_changes(
    datasets=["icu-a", "icu-b", "icu-c"], min_participants=2, rounds=2, metric="loss")


def events():
    ch = _Chain()
    ch.emit("CoordinatorChanged", previous="0x" + "00" * 20, current=OPS)
    for i, (addr, name) in enumerate([(A, "St Mary"), (B, "Northside"), (C, "Lakeview"), (OPS, "Consortium Ops")]):
        ch.emit("MemberAdmitted", account=addr, name=name, x25519=h32(f"k{i}"), seq=i + 1)
    for addr, did in DATASETS.items():
        ch.emit("DatasetRegistered", id=did, owner=addr, name=f"icu-{addr[2]}", metadataCid="bafymeta",
                metadataSha256=h32("meta"), schemaHash=h32("schema"), rowCount=100)
    for pid, plan in ((1, PLAN_1), (2, PLAN_2)):
        ch.emit("ProposalSubmitted", id=pid, proposer=A, planCid=f"bafyplan{pid}", planSha256=plan.sha256,
                purpose="diagnosis", purposeHash=h32("diagnosis"), targets=list(DATASETS.values()), owners=list(DATASETS), rounds=plan.rounds,
                minParticipants=2, roundDuration=20, deadline=ch.block + 10, eligible=4)
        for voter in (A, B, C, OPS):
            ch.emit("Voted", id=pid, voter=voter, choice=1)
        ch.emit("ProposalFinalized", id=pid, state=2, yes=4, no=0, abstain=0)

    def round_(pid, rnd, metric=None, close=True):
        ch.emit("RoundOpened", proposalId=pid, round=rnd, deadline=ch.block + 20)
        for m in (A, B, C):
            ch.emit("UpdateCommitted", proposalId=pid, round=rnd, member=m, datasetId=DATASETS[m],
                    cid=f"bafyu{pid}{rnd}{m[2]}", updateSha256=h32(f"u{pid}{rnd}{m}"), sampleCount=100)
        if close:
            ch.emit("RoundClosed", proposalId=pid, round=rnd, aggregateCid=f"bafyagg{pid}{rnd}",
                    aggregateSha256=h32(f"a{pid}{rnd}"), scoresCid=f"bafys{pid}{rnd}", scoresSha256=h32(f"s{pid}{rnd}"),
                    committed=3)
        if metric is not None:
            for m in (A, B, C):
                ch.emit("EvaluationSubmitted", proposalId=pid, round=rnd, member=m, datasetId=DATASETS[m],
                        metricPpm=metric, sampleCount=25)
            ch.emit("GlobalMetricRecorded", proposalId=pid, round=rnd, metricPpm=metric)

    round_(1, 1, 810_000)
    round_(1, 2, 876_500)
    round_(2, 1, 432_100)
    round_(1, 3)  # closed, evaluations not in yet
    round_(2, 2, close=False)  # open
    return ch.events


@pytest.fixture(scope="module")
def history():
    return History(events(), PARAMS)


def _cards(page: str) -> dict[str, str]:
    return {label: value for value, label in re.findall(r'<div class="card"><b>(.*?)</b><span>(.*?)</span></div>', page)}


def _proposal_row(page: str, pid: int) -> str:
    table = page[page.index("<h3>Training proposals</h3>"):]
    return re.search(rf'<tr><td class="num">{pid}</td>(.*?)</tr>', table, re.S).group(1)


def test_members_and_data_holders_are_counted_apart(history):
    assert data_holders(history) == {A, B, C}
    page = render_report(history, None, title="t")
    cards = _cards(page)
    assert cards["members (every organisation, the coordinator&#x27;s included)"] == "4"
    assert cards["data holders (members with a registered dataset)"] == "3"
    assert "member hospitals" not in page
    ops_row = re.search(r"<tr><td><bdi class=\"who\">Consortium Ops</bdi></td><td>(.*?)</td>", page).group(1)
    assert ops_row == "runs the coordinator"
    assert re.search(r"<bdi class=\"who\">St Mary</bdi></td><td>data holder \(1 dataset\)</td>", page)


def test_validation_metric_of_the_last_closed_round_per_proposal(history):
    page = render_report(history, None, title="t", plans={1: PLAN_1, 2: PLAN_2})
    cards = _cards(page)
    # One figure per proposal, each from its own last closed round with a metric: not proposal 2's
    # (more recent) number passed off as the model's, not an open round's.
    assert cards["validation accuracy of proposal #1, round 2 (its last closed round with a metric)"] == "87.7%"
    assert cards["validation loss of proposal #2, round 1 (its last closed round with a metric)"] == "0.4321"
    assert "global accuracy" not in page
    row1 = _proposal_row(page, 1)
    assert "round 2: validation accuracy 87.7%" in row1 and "round 3 closed; its metric is not recorded yet" in row1
    assert "round 1: validation loss 0.4321" in _proposal_row(page, 2)
    assert "Validation metric, not a test" in page and "held-out validation rows" in page


def test_each_proposal_names_its_model_and_strategy(history):
    page = render_report(history, None, title="t", plans={1: PLAN_1, 2: PLAN_2})
    assert "logreg, 62 parameters · strategy fedavg · metric accuracy" in _proposal_row(page, 1)
    assert "strategy fedprox (mu 0.1) · metric loss" in _proposal_row(page, 2)
    without = render_report(history, None, title="t", plans={1: PLAN_1})
    assert "plan not available to this report" in _proposal_row(without, 2)
    assert "validation metric of proposal #2" in "".join(_cards(without))


def test_scores_are_explained(history):
    from test_report import ReplayReport, RoundVerdict

    rep = ReplayReport(rounds=[RoundVerdict(1, 1, "VERIFIED", participants=sorted([A, B, C]),
                                            scores={A: 0.5, B: 0.3, C: 0.2})])
    page = render_report(history, rep, title="t", plans={1: PLAN_1})
    assert SCORE_MEANING.replace("'", "&#x27;") in page
    assert "helped the aggregated model" not in page  # the old, wrong, explanation


def test_plans_are_taken_only_when_they_hash_to_the_chain(history, tmp_path):
    docs = {"bafyplan1": {"content": PLAN_1.to_canonical_bytes().decode()},
            "bafyplan2": {"content": PLAN_1.to_canonical_bytes().decode()}}  # proposal 2's CID, another plan
    assert plans_from_documents(history, docs) == {1: PLAN_1}
    store = LocalStore(tmp_path / "store", fsync=False)
    cid2 = store.put(PLAN_2.to_canonical_bytes())
    h = History([ev for ev in events()], PARAMS)
    h.proposals[2].plan_cid = cid2
    assert plans_from_store(h, store) == {2: PLAN_2}  # proposal 1's CID is not in this store
