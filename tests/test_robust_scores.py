"""Poisoning defences and contribution scores, end to end: published, then re-derived by the auditor.

Six hospitals (every policy open) run the demo plan on the embedded chain, some of
them :class:`~fedchain.cli.attacks.AttackingNode`\\ s. Checked here:

* two sign-flipping hospitals wreck FedAvg (so do two boosting label-flipped updates
  x10), Multi-Krum keeps the clean accuracy,
  and every exclusion (who, how, reason code, Krum score) is in the round's scores
  document; replay verifies every round;
* a coordinator that edits a decision or a score in the document (and points the
  round at the edited copy) is caught by replay: DISCREPANCY, the edit named;
* a free-rider (commits the global model it received) scores exactly zero under
  similarity, leave-one-out and Shapley, while informative members score clearly
  more; replay rebuilds the scores document byte for byte;
* sybils cannot double their pay under Shapley; the validation set is bounded and
  named in the plan, so a coordinator cannot swap it.

Runs are small (logistic regression, 2 rounds, ~5 s each); the module takes about
half a minute because the Done-when experiment needs a clean and two attacked runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from fedchain.cli.robustness import pick_attackers, run_experiment
from fedchain.content import fetch_document, pin_document
from fedchain.coordinator.audit.replay import DISCREPANCY, UNVERIFIABLE, VERIFIED, replay_trail
from fedchain.coordinator.audit.trail import export_trail, read_trail
from fedchain.coordinator.scoring import ValidationSetError, load_validation_set, score_round
from fedchain.coordinator.strategies.base import ClientUpdate
from fedchain.errors import FedchainError, SizeLimitExceeded
from fedchain.plan import MAX_VALIDATION_BYTES, PlanError, canonical_json
from fedchain.sample_data import demo_plan

ROUNDS = 2


def trail_of(exp, root: Path) -> Path:
    """Export the experiment's trail next to a copy of its store (the auditor's view)."""
    root.mkdir(parents=True, exist_ok=True)
    export_trail(exp.sim.fed(), exp.sim.store, root / "trail.jsonl")
    shutil.copytree(exp.sim.root / "store", root / "store")
    return root


class Audit:
    """A copy of a run's trail and store, with the coordinator's forgeries applied to it."""

    def __init__(self, exp, root: Path) -> None:
        from fedchain.ipfs.local import LocalStore

        trail_of(exp, root)
        self.trail = root / "trail.jsonl"
        self.store = LocalStore(root / "store", fsync=False)
        self.auditor = exp.sim.auditor

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.trail.read_text().splitlines()]

    def closed(self, round_: int) -> dict:
        return next(r["args"] for r in self.records()
                    if r.get("event") == "RoundClosed" and r["args"]["round"] == round_)

    def scores_doc(self, round_: int) -> dict:
        c = self.closed(round_)
        return json.loads(fetch_document(self.store, c["scoresCid"], c["scoresSha256"], max_size=1 << 20))

    def forge(self, round_: int, doc: dict) -> None:
        """Pin an edited scores document and point the round's RoundClosed event at it."""
        cid, sha = pin_document(self.store, canonical_json(doc))
        recs = self.records()
        for r in recs:
            if r.get("event") == "RoundClosed" and r["args"]["round"] == round_:
                r["args"].update(scoresCid=cid, scoresSha256="0x" + sha)
        self.trail.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in recs))

    def replay(self):
        return replay_trail(read_trail(self.trail), self.store, self.auditor)


def verdict(report, round_: int):
    return next(v for v in report.rounds if v.round == round_)


# ---------------------------------------------------------------- the Done-when experiment (sign-flip)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return run_experiment(tmp_path_factory.mktemp("clean"), rule="fedavg", rounds=ROUNDS)


@pytest.fixture(scope="module")
def krum_attacked(tmp_path_factory):
    return run_experiment(tmp_path_factory.mktemp("mk"), rule="multikrum", attackers=2, attack="sign-flip",
                          rounds=ROUNDS)


def test_multikrum_keeps_the_clean_accuracy_where_fedavg_falls_and_records_who_it_left_out(
        clean, krum_attacked, tmp_path):
    fedavg = run_experiment(tmp_path / "fa", rule="fedavg", attackers=2, attack="sign-flip", rounds=ROUNDS)
    assert abs(krum_attacked.final_accuracy - clean.final_accuracy) <= 0.02
    assert fedavg.final_accuracy < clean.final_accuracy - 0.02
    bad = {a for a, n in krum_attacked.names.items() if n in krum_attacked.attackers}
    assert len(bad) == 2
    for r in krum_attacked.rounds:
        excluded = {d["participant"] for d in r.decisions if d["action"] == "excluded"}
        assert excluded == bad
        assert all(d["reason"] == "KRUM_NOT_SELECTED" and d["value"] > 0 for d in r.decisions)
        assert all(r.scores[a] == 0.0 for a in bad)
    assert krum_attacked.replay == [VERIFIED] * ROUNDS and fedavg.replay == [VERIFIED] * ROUNDS
    assert clean.rounds[-1].decisions == [] and clean.replay == [VERIFIED] * ROUNDS


def test_two_boosted_poisoned_updates_take_fedavg_down(clean, tmp_path):
    # The scaling attack boosts a label-flipped update x10: the plain mean follows the attackers.
    fedavg = run_experiment(tmp_path / "fa", rule="fedavg", attackers=2, attack="scale", rounds=ROUNDS)
    assert fedavg.final_accuracy < clean.final_accuracy - 0.02
    assert fedavg.replay == [VERIFIED] * ROUNDS


def test_label_flipping_by_the_two_largest_hospitals_takes_fedavg_down_and_multikrum_holds(clean, tmp_path):
    """Flipped labels from the two hospitals with the most rows (a third of the members, most of the
    weight in a sample-weighted mean): FedAvg follows them, Multi-Krum excludes exactly them."""
    fedavg = run_experiment(tmp_path / "fa", rule="fedavg", attackers=2, attack="label-flip", rounds=ROUNDS,
                            largest=True)
    assert fedavg.attackers == ["hospital-a", "hospital-b"]
    assert fedavg.final_accuracy < clean.final_accuracy - 0.02
    e = run_experiment(tmp_path / "mk", rule="multikrum", attackers=2, attack="label-flip", rounds=ROUNDS,
                       largest=True)
    bad = {a for a, n in e.names.items() if n in e.attackers}
    for r in e.rounds:
        assert {d["participant"] for d in r.decisions if d["action"] == "excluded"} == bad
    assert abs(e.final_accuracy - clean.final_accuracy) <= 0.02
    assert e.replay == [VERIFIED] * ROUNDS and fedavg.replay == [VERIFIED] * ROUNDS


def test_attackers_are_the_smallest_or_the_largest_hospitals():
    names = ["a", "b", "c", "d", "e"]
    rows = {"a": 50, "b": 90, "c": 90, "d": 10, "e": 70}
    assert pick_attackers(names, rows, 2) == ["d", "e"]
    assert pick_attackers(names, rows, 2, largest=True) == ["b", "c"]
    assert pick_attackers(names, rows, 3, largest=True) == ["b", "c", "e"]
    assert pick_attackers(names, rows, 0, largest=True) == []


@pytest.mark.parametrize("attack", ["scale", "label-flip"])
def test_multikrum_excludes_boosted_and_label_flipping_hospitals_and_replay_agrees(clean, attack, tmp_path):
    e = run_experiment(tmp_path / attack, rule="multikrum", attackers=2, attack=attack, rounds=ROUNDS)
    bad = {a for a, n in e.names.items() if n in e.attackers}
    for r in e.rounds:
        assert {d["participant"] for d in r.decisions if d["action"] == "excluded"} == bad
    assert abs(e.final_accuracy - clean.final_accuracy) <= 0.02
    assert e.replay == [VERIFIED] * ROUNDS


def test_the_published_document_holds_the_decisions(krum_attacked, tmp_path):
    audit = Audit(krum_attacked, tmp_path / "a")
    doc = audit.scores_doc(1)
    assert doc["format"] == "fedchain-scores/3" and doc["method"] == "similarity"
    assert [d["participant"] for d in doc["decisions"]] == sorted(
        a for a, n in krum_attacked.names.items() if n in krum_attacked.attackers)
    assert set(doc["values"]) == set(doc["scores"]) == set(krum_attacked.names)


def test_a_coordinator_that_hides_an_exclusion_is_named(krum_attacked, tmp_path):
    audit = Audit(krum_attacked, tmp_path / "a")
    doc = audit.scores_doc(1)
    hidden = doc["decisions"].pop(0)
    audit.forge(1, doc)
    report = audit.replay()
    v = verdict(report, 1)
    assert v.status == DISCREPANCY and verdict(report, 2).status == VERIFIED
    text = "\n".join(v.problems)
    assert f"excluded the update of {hidden['participant']} (KRUM_NOT_SELECTED" in text
    assert "does not record that decision" in text


def test_a_coordinator_that_invents_an_exclusion_or_edits_its_number_is_named(krum_attacked, tmp_path):
    audit = Audit(krum_attacked, tmp_path / "a")
    doc = audit.scores_doc(2)
    doc["decisions"][0]["value"] = round(doc["decisions"][0]["value"] * 2, 12)
    honest = next(a for a, n in krum_attacked.names.items() if n not in krum_attacked.attackers)
    doc["decisions"].append({"participant": honest, "dataset": krum_attacked.names[honest], "action": "excluded",
                             "reason": "KRUM_NOT_SELECTED", "value": 1.0})
    audit.forge(2, doc)
    v = verdict(audit.replay(), 2)
    assert v.status == DISCREPANCY
    text = "\n".join(v.problems)
    assert "records a decision the plan's rule does not take" in text and honest in text
    assert text.count("records a decision the plan's rule does not take") == 2  # the edited number and the invented one


def test_an_edited_contribution_value_is_named(krum_attacked, tmp_path):
    audit = Audit(krum_attacked, tmp_path / "a")
    doc = audit.scores_doc(1)
    member = sorted(doc["values"])[0]
    doc["values"][member] = round(doc["values"][member] + 0.25, 12)
    audit.forge(1, doc)
    v = verdict(audit.replay(), 1)
    assert v.status == DISCREPANCY
    assert f"contribution value (similarity) of {member}: recorded {doc['values'][member]}" in "\n".join(v.problems)


# ---------------------------------------------------------------- free-rider


@pytest.fixture(scope="module", params=["loo", "shapley"])
def free_ride(request, tmp_path_factory):
    return run_experiment(tmp_path_factory.mktemp(request.param), rule="fedavg", attackers=1, attack="free-ride",
                          rounds=ROUNDS, contribution={"method": request.param, "permutations": 8})


def test_a_free_rider_scores_zero_and_informative_members_clearly_more(free_ride, tmp_path):
    rider = next(a for a, n in free_ride.names.items() if n in free_ride.attackers)
    first = free_ride.rounds[0]
    assert first.values[rider] == 0.0 and first.scores[rider] == 0.0
    others = sorted((v for a, v in first.values.items() if a != rider), reverse=True)
    assert others[0] > 0.005  # the best honest member clearly helped (loss on the validation set)
    assert sum(1 for v in others if v > 0) >= 3
    for r in free_ride.rounds:
        assert r.values[rider] == 0.0
    # The auditor recomputes both, and the whole document, bit for bit.
    assert free_ride.replay == [VERIFIED] * ROUNDS
    audit = Audit(free_ride, tmp_path / "a")
    doc = audit.scores_doc(1)
    doc["values"][rider] = 0.01  # the coordinator pays its friend
    audit.forge(1, doc)
    v = verdict(audit.replay(), 1)
    assert v.status == DISCREPANCY and f"of {rider}: recorded 0.01, recomputed 0.0" in "\n".join(v.problems)


def test_similarity_gives_a_free_rider_exactly_nothing(clean, tmp_path):
    rider = run_experiment(tmp_path / "s", rule="fedavg", attackers=1, attack="free-ride", rounds=1)
    address = next(a for a, n in rider.names.items() if n in rider.attackers)
    assert rider.rounds[0].values[address] == 0.0
    assert min(v for a, v in rider.rounds[0].values.items() if a != address) > 0.5
    assert rider.replay == [VERIFIED]


def test_replay_without_the_validation_set_cannot_check_the_scores(free_ride, tmp_path):
    audit = Audit(free_ride, tmp_path / "a")
    plan = free_ride.sim.coordinator().plan(1)
    audit.store.block_path(plan.contribution.validation.csv_cid).unlink()
    report = audit.replay()
    assert all(v.status == UNVERIFIABLE for v in report.rounds)
    assert "validation set is not in the auditor's store" in "\n".join(report.rounds[0].unverifiable)


# ---------------------------------------------------------------- sybils and the validation set


def _state(w: float, b: float) -> dict[str, torch.Tensor]:
    return {"linear.bias": torch.tensor([b, -b]), "linear.weight": torch.tensor([[w, 0.0], [-w, 0.0]])}


def _validation(n: int = 64):
    from fedchain.tabular import TabularData

    x = torch.linspace(-1, 1, n).reshape(-1, 1).repeat(1, 2).to(torch.float32)
    return TabularData(x, (x[:, 0] > 0).to(torch.int64), ("a", "b"), ("0", "1"))


def test_sybils_split_their_shapley_value_instead_of_doubling_it():
    """One party joining twice with the same update gets what it would get once, split in two."""
    plan = demo_plan(seed=1).with_changes(
        model={"kind": "logreg", "in_features": 2, "n_classes": 2}, preprocessing={"standardize": "none"},
        contribution={"method": "shapley", "permutations": 200, "validation": {
            "csv_cid": "Qm" + "a" * 44, "csv_sha256": "0x" + "0" * 64, "size": 1,
            "schema_cid": "Qm" + "a" * 44, "schema_sha256": "0x" + "0" * 64}})
    start, good = _state(0.0, 0.0), _state(4.0, 0.0)
    a, b, c = ("0x" + k * 40 for k in "abc")
    alone = score_round(plan, 1, start, good, [ClientUpdate(a, "d-a", 10, good), ClientUpdate(c, "d-c", 10, good)],
                        [], _validation())
    twice = score_round(plan, 1, start, good, [ClientUpdate(a, "d-a", 10, good), ClientUpdate(b, "d-b", 10, good),
                                               ClientUpdate(c, "d-c", 20, good)], [], _validation())
    # c brings half the samples in both games; the sybil pair a+b gets what a alone got, not twice it.
    assert twice.scores[a].value + twice.scores[b].value == pytest.approx(alone.scores[a].value, rel=0.05)
    assert twice.scores[c].value == pytest.approx(alone.scores[c].value, rel=0.05)


def test_the_validation_set_is_bounded_and_must_fit_the_plan(tmp_path):
    from fedchain.ipfs.local import LocalStore

    base = demo_plan(seed=1)
    big = {"csv_cid": "Qm" + "a" * 44, "csv_sha256": "0x" + "0" * 64, "size": MAX_VALIDATION_BYTES + 1,
           "schema_cid": "Qm" + "a" * 44, "schema_sha256": "0x" + "0" * 64}
    with pytest.raises(PlanError, match="validation"):
        base.with_changes(contribution={"method": "loo", "validation": big})
    with pytest.raises(PlanError, match="contribution.validation"):
        base.with_changes(contribution={"method": "shapley"})
    store = LocalStore(tmp_path / "store", fsync=False)
    csv = b"a,b,label\n" + b"1,2,0\n" * 100
    schema = json.dumps({"version": 1, "features": [{"name": "a", "type": "float"}, {"name": "b", "type": "float"}],
                         "label": {"name": "label", "values": ["0", "1"]}, "id_columns": []}).encode()
    (csv_cid, csv_sha), (schema_cid, schema_sha) = pin_document(store, csv), pin_document(store, schema)
    spec = {"csv_cid": csv_cid, "csv_sha256": "0x" + csv_sha, "size": 50, "schema_cid": schema_cid,
            "schema_sha256": "0x" + schema_sha}
    with pytest.raises(SizeLimitExceeded):  # larger than the plan declares: never read past the bound
        load_validation_set(store, base.with_changes(contribution={"method": "loo", "validation": spec}))
    spec["size"] = len(csv)
    with pytest.raises(ValidationSetError, match="2 features"):  # the demo model takes 30
        load_validation_set(store, base.with_changes(contribution={"method": "loo", "validation": spec}))
    spec["csv_sha256"] = "0x" + "1" * 64
    with pytest.raises(FedchainError, match="does not match"):  # a swapped set does not hash to the plan's value
        load_validation_set(store, base.with_changes(contribution={"method": "loo", "validation": spec}))


# ---------------------------------------------------------------- accumulated per member


def test_scores_accumulate_per_member_with_the_defences_decisions(krum_attacked):
    from fedchain.usecases import scores

    sim = krum_attacked.sim
    ledger = scores.accumulate(sim.fed().read_model(), sim.store)
    assert ledger.rounds == [(1, r) for r in range(1, ROUNDS + 1)] and not ledger.unreadable
    assert ledger.methods == {1: "similarity"}
    for address, name in krum_attacked.names.items():
        m = ledger.members[address]
        assert m.total == pytest.approx(sum(r.scores[address] for r in krum_attacked.rounds))
        assert m.excluded == (ROUNDS if name in krum_attacked.attackers else 0)
        if name in krum_attacked.attackers:
            assert m.total == 0.0
    assert sum(m.total for m in ledger.members.values()) == pytest.approx(ROUNDS)
    assert scores.accumulate(sim.fed().read_model(), sim.store, proposals=[2]).rounds == []


def test_plan_show_names_the_contribution_method_and_validation_set():
    from fedchain.plandoc import describe

    base = demo_plan(seed=1)
    assert "data-free" in dict(describe(base))["contribution"]
    v = {"csv_cid": "Qm" + "a" * 44, "csv_sha256": "0x" + "ab" * 32, "size": 1234,
         "schema_cid": "Qm" + "b" * 44, "schema_sha256": "0x" + "cd" * 32}
    words = dict(describe(base.with_changes(contribution={"method": "shapley", "permutations": 30,
                                                          "validation": v})))["contribution"]
    assert "Shapley, estimated over 30 seeded orders" in words and v["csv_cid"] in words and "1,234 bytes" in words
