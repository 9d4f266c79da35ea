"""Audit replay: an honest run verifies bit for bit; every kind of tampering is named.

Two recorded runs are shared by the module:

* ``demo_run`` — ``fedchain demo`` (4 hospitals, one sits out by policy,
  FedAvg, 3 rounds): its folder holds the exported trail and the content
  store; its chain lived in that process and is gone;
* ``live`` — a small scenario built here from the same building blocks on a
  chain the test keeps: FedAdam (server state carries over), a round with an
  update the coordinator rightly rejects, a failed round, then a last round.

Tamper tests copy a run folder, change one thing (the trail is data; the
store is content-addressed) and check that the replay names the discrepancy
in the round it belongs to, and only there. (An edited trail is also caught by
anchoring it to the chain: ``tests/adversarial/test_trail_*.py``; here the
round-level checks are exercised on their own.)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedchain.coordinator.audit.anchor import ANCHORED, check_offline
from fedchain.coordinator.audit.replay import (
    CLOSED,
    DISCREPANCY,
    FAILED,
    UNVERIFIABLE,
    VERIFIED,
    replay_live,
    replay_trail,
)
from fedchain.coordinator.audit.trail import export_trail, read_trail
from fedchain.cli import main as cli_main
from fedchain.content import fetch_document, pin_document
from fedchain.identity import dev_identity
from fedchain.ipfs.local import LocalStore

AUDITOR_DEV = 5
DEMO_ROUNDS = 3


def _squash(text: str) -> str:
    """Console output without the line wrapping rich applies at 80 columns."""
    return " ".join(text.split())


# ---------------------------------------------------------------- run folders


class RunCopy:
    """A private copy of a run folder (trail.jsonl + store/), with editing helpers."""

    def __init__(self, src: Path, dst: Path) -> None:
        shutil.copytree(src, dst)
        self.dir = dst
        self.trail = dst / "trail.jsonl"
        self.store = LocalStore(dst / "store", fsync=False)

    # -- the trail as records ----------------------------------------------------

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.trail.read_text().splitlines()]

    def write(self, records: list[dict]) -> None:
        self.trail.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))

    def edit(self, fn) -> None:
        """``fn(records)`` edits the list in place."""
        recs = self.records()
        fn(recs)
        self.write(recs)

    def events(self, event: str, /, **args) -> list[dict]:
        return [r for r in self.records() if r.get("kind") == "event" and r["event"] == event
                and all(r["args"].get(k) == v for k, v in args.items())]

    def member(self, name: str) -> str:
        """Lower-cased address of the member admitted as ``name``."""
        return self.events("MemberAdmitted", name=name)[0]["args"]["account"].lower()

    def dataset_id(self, name: str) -> str:
        return self.events("DatasetRegistered", name=name)[0]["args"]["id"]

    def commitment(self, round_: int, member_name: str) -> dict:
        addr = self.member(member_name)
        return next(r for r in self.events("UpdateCommitted", round=round_) if r["args"]["member"].lower() == addr)

    def closed(self, round_: int) -> dict:
        return self.events("RoundClosed", round=round_)[0]["args"]

    # -- content ---------------------------------------------------------------

    def pin(self, data: bytes) -> tuple[str, str]:
        cid, sha = pin_document(self.store, data)
        return cid, "0x" + sha

    def scores_doc(self, round_: int) -> dict:
        c = self.closed(round_)
        return json.loads(fetch_document(self.store, c["scoresCid"], c["scoresSha256"], max_size=1 << 20))

    def point_round_at(self, round_: int, **new_args) -> None:
        """Rewrite the RoundClosed event of ``round_`` (e.g. aggregateCid=..., aggregateSha256=...)."""
        def fn(recs):
            for r in recs:
                if r.get("event") == "RoundClosed" and r["args"]["round"] == round_:
                    r["args"].update(new_args)
        self.edit(fn)

    def pin_scores(self, round_: int, doc: dict) -> None:
        from fedchain.plan import canonical_json

        cid, sha = self.pin(canonical_json(doc))
        self.point_round_at(round_, scoresCid=cid, scoresSha256=sha)

    # -- replay ----------------------------------------------------------------

    def replay(self):
        return replay_trail(read_trail(self.trail), self.store, dev_identity(AUDITOR_DEV))


def by_round(report) -> dict[int, object]:
    return {v.round: v for v in report.rounds}


def problems(report, round_: int) -> str:
    return "\n".join(by_round(report)[round_].problems)


def assert_only_round_flagged(report, round_: int, status: str = DISCREPANCY) -> None:
    rounds = by_round(report)
    assert rounds[round_].status == status, (rounds[round_].problems, rounds[round_].unverifiable)
    assert not report.ok
    for r, v in rounds.items():
        if r != round_:
            assert v.status == VERIFIED and not v.problems and not v.unverifiable, (r, v.problems, v.unverifiable)


def checkpoint(run_dir: Path) -> str:
    """The hash of the last block of a demo run's chain, as the demo printed it."""
    return json.loads((run_dir / "summary.json").read_text())["checkpoint"]["hash"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    from fedchain.cli.demo import run_demo

    out = tmp_path_factory.mktemp("demo") / "run"
    run_demo(out=out, rounds=DEMO_ROUNDS, quiet=True)
    return out


@pytest.fixture
def run(demo_run, tmp_path) -> RunCopy:
    return RunCopy(demo_run, tmp_path / "run")


# ---------------------------------------------------------------- honest demo run


def test_demo_trail_replays_verified_without_the_chain(demo_run, tmp_path, capsys):
    """Only the trail and the store, copied elsewhere: every round VERIFIED, exit 0."""
    d = tmp_path / "copy"
    d.mkdir()
    shutil.copy(demo_run / "trail.jsonl", d / "trail.jsonl")
    shutil.copytree(demo_run / "store", d / "store")
    summary = json.loads((demo_run / "summary.json").read_text())

    trail = read_trail(d / "trail.jsonl")
    anchor = check_offline(trail, checkpoint(demo_run))
    assert anchor.status == ANCHORED, anchor.detail
    report = replay_trail(trail, LocalStore(d / "store"), dev_identity(AUDITOR_DEV), anchor=anchor)
    assert report.ok and not report.governance
    assert [v.round for v in report.rounds] == list(range(1, DEMO_ROUNDS + 1))
    for v, s in zip(report.rounds, summary["rounds"]):
        assert v.status == VERIFIED and not v.problems
        assert v.aggregate_cid == s["aggregate_cid"]
        assert v.participants == sorted(p.lower() for p in s["participants"])
        assert len(v.participants) == 3 and v.rejected == {}
        assert sum(v.scores.values()) == pytest.approx(1.0)

    capsys.readouterr()
    code = cli_main(["audit", "replay", "--trail", str(d / "trail.jsonl"), "--store", str(d / "store"),
                     "--auditor-dev", str(AUDITOR_DEV), "--checkpoint", checkpoint(demo_run)])
    out = _squash(capsys.readouterr().out)
    assert code == 0
    assert out.count("VERIFIED") >= DEMO_ROUNDS
    assert f"{DEMO_ROUNDS}/{DEMO_ROUNDS} rounds VERIFIED" in out
    assert "discrepancies" not in out


def test_cli_finds_store_and_auditor_beside_the_trail(run, capsys):
    code = cli_main(["audit", "replay", "--trail", str(run.trail), "--checkpoint", checkpoint(run.dir)])
    assert code == 0
    assert f"{DEMO_ROUNDS}/{DEMO_ROUNDS} rounds VERIFIED" in _squash(capsys.readouterr().out)


def test_cli_without_an_anchor_is_unverifiable_unless_allowed(run, capsys):
    """No checkpoint and no node: nothing ties the trail to the chain, so it is not VERIFIED (exit 1)."""
    assert cli_main(["audit", "replay", "--trail", str(run.trail)]) == 1
    out = _squash(capsys.readouterr().out)
    assert "trail UNANCHORED" in out and "overall UNVERIFIABLE" in out
    assert cli_main(["audit", "replay", "--trail", str(run.trail), "--allow-unverifiable"]) == 0


def test_cli_exits_nonzero_and_names_the_discrepancy(run, capsys):
    victim = run.commitment(2, "hospital-b")
    run.edit(lambda recs: recs.remove(next(r for r in recs if r == victim)))
    code = cli_main(["audit", "replay", "--trail", str(run.trail), "--store", str(run.store.root)])
    out = _squash(capsys.readouterr().out)
    assert code == 1
    assert "proposal 1 round 2:" in out
    assert "round closed with 3 commitment(s) on chain, but the event history holds 2" in out
    assert f"{DEMO_ROUNDS - 1}/{DEMO_ROUNDS} rounds VERIFIED" in out
    assert "discrepancies found" in out


def test_same_seed_gives_the_same_aggregates(demo_run, tmp_path):
    from fedchain.cli.demo import run_demo

    again = run_demo(out=tmp_path / "again", rounds=DEMO_ROUNDS, quiet=True)
    first = json.loads((demo_run / "summary.json").read_text())
    second = json.loads((again.run_dir / "summary.json").read_text())
    cids = [r["aggregate_cid"] for r in first["rounds"]]
    assert len(set(cids)) == DEMO_ROUNDS  # the model moves every round
    assert [r["aggregate_cid"] for r in second["rounds"]] == cids
    assert second["plan_cid"] == first["plan_cid"]


# ---------------------------------------------------------------- (a) update blobs


def test_corrupted_update_block_is_unverifiable_not_rightly_rejected(run):
    """Rewrite the block file of an included update in the auditor's copy: its own store is corrupt, which says
    nothing about the member's bytes -- the round is UNVERIFIABLE (named), never VERIFIED and never blamed."""
    c = run.commitment(2, "hospital-b")["args"]
    path = run.store.block_path(c["cid"])
    block = bytearray(path.read_bytes())
    block[-5] ^= 0xFF
    path.write_bytes(bytes(block))

    report = run.replay()
    assert_only_round_flagged(report, 2, UNVERIFIABLE)
    text = "\n".join(by_round(report)[2].unverifiable)
    who = c["member"].lower()
    assert f"update of {who} ({c['cid']}) was included but cannot be checked" in text
    assert "could not deliver it" in text
    assert "the aggregate cannot be recomputed" in text


def test_missing_update_block_is_unverifiable(run):
    c = run.commitment(3, "hospital-c")["args"]
    run.store.block_path(c["cid"]).unlink()
    report = run.replay()
    assert_only_round_flagged(report, 3, UNVERIFIABLE)
    assert (f"update of {c['member'].lower()} ({c['cid']}) was included but cannot be checked: the blob is missing "
            "from the auditor's store") in by_round(report)[3].unverifiable


def test_commitment_pointing_at_another_blob_is_named(run):
    """Content-addressed: a "changed" update has another CID. Point the round-2 commitment at the
    member's own round-1 update (hash matches, but the envelope is bound to round 1)."""
    old = run.commitment(1, "hospital-a")["args"]

    def fn(recs):
        for r in recs:
            if r.get("event") == "UpdateCommitted" and r["args"]["round"] == 2 and r["args"]["member"] == old["member"]:
                r["args"]["cid"], r["args"]["updateSha256"] = old["cid"], old["updateSha256"]
    run.edit(fn)
    report = run.replay()
    assert_only_round_flagged(report, 2)
    assert f"update of {old['member'].lower()} ({old['cid']}) was included but fails verification: BAD_ENVELOPE" in problems(report, 2)


def test_commitment_hash_not_matching_the_blob_is_named(run):
    c = run.commitment(1, "hospital-c")["args"]

    def fn(recs):
        for r in recs:
            if r.get("event") == "UpdateCommitted" and r["args"]["cid"] == c["cid"]:
                r["args"]["updateSha256"] = "0x" + "ab" * 32
    run.edit(fn)
    report = run.replay()
    text = problems(report, 1)
    assert "was included but fails verification: HASH_MISMATCH" in text
    assert by_round(report)[1].status == DISCREPANCY


def test_rejection_of_an_update_that_verifies_is_named(run):
    """The coordinator's rejection list is inconsistent: it claims a valid update failed."""
    doc = run.scores_doc(2)
    victim = run.member("hospital-a")
    doc["included"] = [d for d in doc["included"] if d["participant"] != victim]
    doc["rejected"] = {victim: {"code": "HASH_MISMATCH", "detail": "made up"}}
    run.pin_scores(2, doc)
    report = run.replay()
    assert_only_round_flagged(report, 2)
    assert f"was rejected as HASH_MISMATCH but it verifies" in problems(report, 2)
    assert victim in problems(report, 2)


def test_rejection_of_an_update_nobody_committed_is_named(run):
    doc = run.scores_doc(3)
    outsider = run.member("hospital-d")  # sat out by policy: no commitment
    doc["rejected"] = {outsider: {"code": "BAD_ENVELOPE", "detail": "made up"}}
    run.pin_scores(3, doc)
    report = run.replay()
    assert_only_round_flagged(report, 3)
    assert (f"the scores document rejects an update of {outsider}, "
            "but no commitment by that member is in the event history") in problems(report, 3)


def test_update_verifying_but_missing_from_the_scores_document_is_named(run):
    doc = run.scores_doc(1)
    victim = run.member("hospital-c")
    doc["included"] = [d for d in doc["included"] if d["participant"] != victim]
    run.pin_scores(1, doc)
    report = run.replay()
    assert_only_round_flagged(report, 1)
    assert f"update of {victim} verifies but the scores document neither includes nor rejects it" in problems(report, 1)


# ---------------------------------------------------------------- (b) aggregates


def test_aggregate_that_the_updates_do_not_give_is_named(run):
    """Pin a different model and point the round's RoundClosed at it."""
    from fedchain.serialize import bytes_to_state_dict, state_dict_to_bytes

    c = run.closed(2)
    model = bytes_to_state_dict(fetch_document(run.store, c["aggregateCid"], c["aggregateSha256"], max_size=1 << 24))
    name = sorted(model)[0]
    model[name] = model[name] + 1e-3
    cid, sha = run.pin(state_dict_to_bytes(model))
    run.point_round_at(2, aggregateCid=cid, aggregateSha256=sha)

    report = run.replay()
    v = by_round(report)
    assert v[2].status == DISCREPANCY and v[2].aggregate_cid == cid
    assert v[1].status == VERIFIED
    assert f"aggregate differs from what the committed updates give: chain sha256 {sha}" in problems(report, 2)
    # The scores still match: only the aggregate is named.
    assert "contribution score" not in problems(report, 2)


def test_aggregate_missing_from_the_store_is_recomputed_and_its_cid_checked(run):
    """The auditor re-derives the aggregate's bytes and CID itself: a store that lost it changes nothing."""
    c = run.closed(3)
    run.store.block_path(c["aggregateCid"]).unlink()
    report = run.replay()
    assert by_round(report)[3].status == VERIFIED


def test_aggregate_cid_that_does_not_name_the_aggregate_is_named(run):
    """Right sha256, wrong CID (round 1's aggregate): members fetching the model by CID would get another one."""
    other = run.closed(1)["aggregateCid"]
    run.point_round_at(2, aggregateCid=other)
    report = run.replay()
    assert_only_round_flagged(report, 2)
    assert f"the aggregate CID {other} does not name the aggregate" in problems(report, 2)


# ---------------------------------------------------------------- (c) scores


def test_contribution_score_that_does_not_match_is_named(run):
    doc = run.scores_doc(2)
    a, b = run.member("hospital-a"), run.member("hospital-b")
    recorded = doc["scores"][a]
    doc["scores"][a] = round(recorded + 0.05, 12)
    doc["scores"][b] = round(doc["scores"][b] - 0.05, 12)
    run.pin_scores(2, doc)
    report = run.replay()
    assert_only_round_flagged(report, 2)
    text = problems(report, 2)
    assert f"contribution score of {a}: recorded {doc['scores'][a]}, recomputed" in text
    assert f"contribution score of {b}:" in text
    assert f"contribution score of {run.member('hospital-c')}" not in text


def test_scores_document_with_other_content_is_named(run):
    doc = run.scores_doc(1)
    doc["included"][0]["n_samples"] += 1
    run.pin_scores(1, doc)
    report = run.replay()
    assert_only_round_flagged(report, 1)
    assert "scores document differs from the recomputed one" in problems(report, 1)


def test_scores_document_that_does_not_hash_to_the_chain_value_is_named(run):
    c = run.closed(3)
    run.point_round_at(3, scoresSha256="0x" + "00" * 32)
    report = run.replay()
    assert by_round(report)[3].status == DISCREPANCY
    assert f"scores document {c['scoresCid']}: content {c['scoresCid']} does not match its on-chain hash" in problems(report, 3)


# ---------------------------------------------------------------- (d) event log


def test_removed_commitment_is_named(run):
    victim = run.commitment(1, "hospital-a")
    run.edit(lambda recs: recs.remove(next(r for r in recs if r == victim)))
    report = run.replay()
    assert_only_round_flagged(report, 1)
    text = problems(report, 1)
    who = victim["args"]["member"].lower()
    assert "round closed with 3 commitment(s) on chain, but the event history holds 2" in text
    assert (f"the scores document includes an update of {who} for hospital-a, "
            "but no such commitment is in the event history") in text


def test_added_commitment_is_named(run):
    """A commitment nobody saw at close time: counts disagree and the scores document lacks it."""
    extra = run.commitment(1, "hospital-a")

    def fn(recs):
        i = recs.index(extra)
        dup = json.loads(json.dumps(extra))
        recs.insert(i + 1, dup)
    run.edit(fn)
    report = run.replay()
    text = problems(report, 1)
    assert "round closed with 3 commitment(s) on chain, but the event history holds 4" in text
    assert "second commitment by the same member" in text


# ---------------------------------------------------------------- (e) governance


def test_edited_vote_choice_is_named(run):
    no_voter = run.member("hospital-c")

    def fn(recs):
        for r in recs:
            if r.get("event") == "Voted" and r["args"]["voter"].lower() == no_voter:
                r["args"]["choice"] = 1  # the "no" becomes a "yes"
    run.edit(fn)
    report = run.replay()
    assert not report.ok
    assert any("proposal 1: finalized with yes/no/abstain (3, 1, 1), but the vote events count (4, 0, 1)" in g
               for g in report.governance), report.governance
    assert all(v.status == VERIFIED for v in report.rounds)  # the rounds themselves replay


def test_removed_vote_is_named(run):
    voter = run.member("hospital-a")
    run.edit(lambda recs: recs.remove(next(
        r for r in recs if r.get("event") == "Voted" and r["args"]["voter"].lower() == voter)))
    report = run.replay()
    assert any("finalized with yes/no/abstain (3, 1, 1), but the vote events count (2, 1, 1)" in g
               for g in report.governance), report.governance


def test_approval_the_votes_do_not_give_is_named(run):
    """Votes and final counts agree, but 1 yes / 3 no does not pass at 60 % approval."""
    flip = {run.member("hospital-a"), run.member("hospital-b")}

    def fn(recs):
        for r in recs:
            if r.get("event") == "Voted" and r["args"]["voter"].lower() in flip:
                r["args"]["choice"] = 2
            if r.get("event") == "ProposalFinalized":
                r["args"].update(yes=1, no=3)
    run.edit(fn)
    report = run.replay()
    assert any("proposal 1: finalized Approved but 1 yes / 3 no / 1 abstain of 5 eligible gives Rejected" in g
               for g in report.governance), report.governance
    assert not any("vote events count" in g for g in report.governance)


def test_vote_by_a_non_member_is_named(run):
    stranger = "0x" + "12" * 20

    def fn(recs):
        for r in recs:
            if r.get("event") == "Voted" and r["args"]["voter"].lower() == run.member("hospital-d"):
                r["args"]["voter"] = stranger
    run.edit(fn)
    report = run.replay()
    assert any(f"vote by {stranger}, who was not an eligible member" in g for g in report.governance)


def test_quorum_base_uses_the_recorded_eligible_count(run):
    """Inflating the proposal's eligible count (the contract's quorum base) is named twice:
    it disagrees with the member events, and 5 votes of 11 miss the 50 % quorum."""
    def fn(recs):
        next(r for r in recs if r.get("event") == "ProposalSubmitted")["args"]["eligible"] = 11
    run.edit(fn)
    report = run.replay()
    text = "\n".join(report.governance)
    assert "proposal 1: submitted with 11 eligible member(s), but the member events give 5" in text
    assert "proposal 1: finalized Approved but 3 yes / 1 no / 1 abstain of 11 eligible gives Rejected" in text


def test_vote_after_the_voter_left_is_named(run):
    """A member removed before casting its vote: the contract would have refused the vote."""
    voter = run.member("hospital-d")
    vote = next(r for r in run.events("Voted") if r["args"]["voter"].lower() == voter)

    def fn(recs):
        removed = {"kind": "event", "block": vote["block"] - 1, "block_hash": vote["block_hash"],
                   "timestamp": vote["timestamp"] - 1,
                   "tx": "0x" + "55" * 32, "log_index": 0, "contract": "Consortium", "event": "MemberRemoved",
                   "args": {"account": vote["args"]["voter"]}, "gas_used": 0}
        recs.insert(recs.index(vote), removed)
    run.edit(fn)
    report = run.replay()
    assert any(f"proposal 1: vote by {voter}, who was not an eligible member" in g for g in report.governance)


def test_rounds_without_approval_are_named(run):
    run.edit(lambda recs: recs.remove(next(r for r in recs if r.get("event") == "ProposalFinalized")))
    report = run.replay()
    for v in report.rounds:
        assert v.status == DISCREPANCY
        assert "but the proposal was not approved then (not finalized)" in "\n".join(v.problems)


# ---------------------------------------------------------------- (f) dataset policies


def _purposes(run: RunCopy, dataset: str) -> list[str]:
    return run.events("PolicySet", id=run.dataset_id(dataset))[0]["args"]["policy"]["purposes"]


def test_policy_that_did_not_admit_the_proposal_is_named(run):
    """hospital-a's policy edited to research only: every commitment of hospital-a is named."""
    research_only = _purposes(run, "hospital-d")
    a_id = run.dataset_id("hospital-a")

    def fn(recs):
        for r in recs:
            if r.get("event") == "PolicySet" and r["args"]["id"] == a_id:
                r["args"]["policy"]["purposes"] = research_only
    run.edit(fn)
    report = run.replay()
    who = run.member("hospital-a")
    for v in report.rounds:
        assert v.status == DISCREPANCY
        text = "\n".join(v.problems)
        assert f"commitment by {who} (block " in text
        assert "the policy of hospital-a did not admit proposal 1 at that block (purpose not allowed)" in text
        assert "hospital-b" not in text and "hospital-c" not in text


def test_policy_changed_between_rounds_is_checked_at_each_block(run):
    """A new policy version after round 1: round 1 stays VERIFIED, later commitments are named."""
    a_id = run.dataset_id("hospital-a")
    opened2 = run.events("RoundOpened", round=2)[0]

    def fn(recs):
        first = next(r for r in recs if r.get("event") == "PolicySet" and r["args"]["id"] == a_id)
        new = json.loads(json.dumps(first))
        new.update(block=opened2["block"], tx="0x" + "77" * 32, log_index=9)
        new["args"]["version"] = 2
        new["args"]["policy"]["anyApprovedProposal"] = False
        new["args"]["policy"]["proposalIds"] = [42]
        recs.insert(recs.index(opened2), new)
    run.edit(fn)
    report = run.replay()
    v = by_round(report)
    assert v[1].status == VERIFIED
    for r in (2, 3):
        assert "the policy of hospital-a did not admit proposal 1 at that block (proposal not allowed)" in problems(report, r)


def test_policy_expired_at_the_commitment_is_named(run):
    """The registry refuses from the expiry second on (block.timestamp >= expiry)."""
    c_id = run.dataset_id("hospital-c")
    commit = run.commitment(2, "hospital-c")

    def fn(recs):
        for r in recs:
            if r.get("event") == "PolicySet" and r["args"]["id"] == c_id:
                r["args"]["policy"]["expiry"] = commit["timestamp"]
    run.edit(fn)
    report = run.replay()
    v = by_round(report)
    assert v[1].status == VERIFIED
    assert "the policy of hospital-c did not admit proposal 1 at that block (policy expired)" in problems(report, 2)
    assert "expired" in problems(report, 3)


def test_commitment_for_a_dataset_that_does_not_admit_is_named(run):
    """hospital-a's round-1 commitment edited to name hospital-d's dataset (research only, not its own)."""
    c = run.commitment(1, "hospital-a")
    d_id = run.dataset_id("hospital-d")

    def fn(recs):
        for r in recs:
            if r == c:
                r["args"]["datasetId"] = d_id
    run.edit(fn)
    report = run.replay()
    assert_only_round_flagged(report, 1)
    text = problems(report, 1)
    who = c["args"]["member"].lower()
    assert "the policy of hospital-d did not admit proposal 1 at that block (purpose not allowed)" in text
    assert f"dataset hospital-d is owned by {run.member('hospital-d')}" in text
    assert f"commitment by {who}" in text


# ---------------------------------------------------------------- live chain


@dataclass
class Live:
    fed: object
    store: LocalStore
    auditor: object
    dir: Path
    pid: int
    names: list[str]
    members: list


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Live:
    """A run on a chain this test keeps: FedAdam, 4 rounds.

    Round 1: all four hospitals. Round 2: hospital-d commits an update sealed
    for round 1 (a replay); the coordinator rejects it, the other three close
    the round. Round 3: only two commit; it fails after the deadline. Round 4:
    all four again, starting from round 2's aggregate.
    """
    from fedchain.cli.simulation import Simulation
    from fedchain.content import seal_and_pin
    from fedchain.contracts.bindings import Vote
    from fedchain.envelope import EnvelopeContext
    from fedchain.models import initial_state
    from fedchain.sample_data import demo_plan
    from fedchain.serialize import state_dict_to_bytes

    d = tmp_path_factory.mktemp("live")
    sim = Simulation.create(d, hospitals=4, seed=11, fsync=False)
    assert sim.auditor.address == dev_identity(AUDITOR_DEV).address
    sim.register_datasets()
    names, members, ops, auditor = sim.names, sim.members, sim.ops, sim.auditor
    chain, store, fed, deployment = sim.chain, sim.store, sim.fed(), sim.deployment
    plan = sim.plan(demo_plan(sim.data.hospitals, seed=11, strategy={"name": "fedadam", "server_lr": 0.3}), rounds=4)
    assert plan.min_participants == 3
    pid = sim.approve(plan, votes={members[1].name: Vote.NO})
    nodes, coord = sim.nodes(), sim.coordinator()

    def close(r):
        res = coord.close_round(pid, r)
        assert res.closed, res.reason
        return res

    # round 1
    coord.open_round(pid, 1)
    for n in nodes:
        assert n.train_and_commit(pid, 1).committed
    close(1)
    # round 2: hospital-d replays an update sealed for round 1
    coord.open_round(pid, 2)
    for n in nodes[:3]:
        assert n.train_and_commit(pid, 2).committed
    bad = members[3]
    ctx = EnvelopeContext(chain_id=deployment.chain_id, contract=fed.addresses["Rounds"], proposal_id=pid,
                          round=1, sender=bad.address)
    sealed = seal_and_pin(store, state_dict_to_bytes(initial_state(plan.model, plan.seed)), ctx, bad,
                          [ops.x25519_public, auditor.x25519_public])
    fed.as_(bad.account).rounds.commit_update(pid, 2, names[3], sealed.cid, sealed.sha256, 50)
    res2 = close(2)
    assert set(res2.rejected) == {bad.address}, res2.rejected
    # round 3: too few updates, failed after the deadline
    deadline = coord.open_round(pid, 3).value
    for n in nodes[:2]:
        assert n.train_and_commit(pid, 3).committed
    assert not coord.close_round(pid, 3).closed
    chain.mine(deadline - chain.block_number + 1)
    coord.fail_round(pid, 3)
    # round 4 starts from round 2's aggregate
    coord.open_round(pid, 4)
    for n in nodes:
        assert n.train_and_commit(pid, 4).committed
    close(4)

    export_trail(fed, store, d / "trail.jsonl")
    return Live(fed=fed, store=store, auditor=auditor, dir=d, pid=pid, names=names, members=members)


def _verdicts(report):
    return [(v.proposal_id, v.round, v.outcome, v.status, v.problems, v.unverifiable, v.aggregate_cid,
             v.participants, v.rejected, v.scores) for v in report.rounds]


def test_live_chain_replay_verifies(live):
    report = replay_live(live.fed, live.store, live.auditor)
    assert report.ok, (report.governance, [(v.round, v.problems) for v in report.rounds])
    v = by_round(report)
    assert [v[r].status for r in (1, 2, 3, 4)] == [VERIFIED] * 4
    assert [v[r].outcome for r in (1, 2, 3, 4)] == [CLOSED, CLOSED, FAILED, CLOSED]
    addrs = [m.address.lower() for m in live.members]
    assert v[1].participants == sorted(addrs) and v[4].participants == sorted(addrs)
    # The coordinator rightly rejected hospital-d's replayed update; the auditor agrees.
    assert v[2].participants == sorted(addrs[:3])
    assert v[2].rejected == {addrs[3]: "BAD_ENVELOPE"}
    for r in (1, 2, 4):
        info = live.fed.rounds.round_info(live.pid, r)
        assert v[r].aggregate_cid == info.aggregate_cid


def test_live_and_exported_trail_give_the_same_verdicts(live):
    live_report = replay_live(live.fed, live.store, live.auditor)
    trail_report = replay_trail(read_trail(live.dir / "trail.jsonl"), live.store, live.auditor)
    assert _verdicts(trail_report) == _verdicts(live_report)
    assert trail_report.governance == live_report.governance == []


def test_live_replay_names_a_missing_update(live, tmp_path):
    """The live history with a store that lost an update blob (its only block)."""
    shutil.copytree(live.store.root, tmp_path / "store")
    store = LocalStore(tmp_path / "store", fsync=False)
    c = live.fed.rounds.commitments(live.pid, 4)[0]
    store.block_path(c.cid).unlink()
    report = replay_live(live.fed, store, live.auditor)
    assert not report.ok and by_round(report)[4].status == UNVERIFIABLE
    assert (f"update of {c.member.lower()} ({c.cid}) was included but cannot be checked: the blob is missing"
            in "\n".join(by_round(report)[4].unverifiable))
    assert by_round(report)[1].status == VERIFIED


def test_server_optimizer_state_carries_over_in_replay(live, tmp_path):
    """FedAdam: a wrong round-1 aggregate on chain makes round 2 differ too (server state and start point)."""
    from fedchain.serialize import bytes_to_state_dict, state_dict_to_bytes

    run = RunCopy(live.dir, tmp_path / "run")
    c = run.closed(1)
    model = bytes_to_state_dict(fetch_document(run.store, c["aggregateCid"], c["aggregateSha256"], max_size=1 << 24))
    name = sorted(model)[0]
    model[name] = model[name] * 1.01
    cid, sha = run.pin(state_dict_to_bytes(model))
    run.point_round_at(1, aggregateCid=cid, aggregateSha256=sha)
    report = run.replay()
    v = by_round(report)
    assert "aggregate differs" in problems(report, 1)
    assert "aggregate differs" in problems(report, 2)
    assert v[3].outcome == FAILED


def test_coordinator_including_a_rejected_update_is_named(live, tmp_path):
    """Round 2's scores document edited to include hospital-d's replayed update instead of rejecting it."""
    run = RunCopy(live.dir, tmp_path / "run")
    doc = run.scores_doc(2)
    bad = run.member(live.names[3])
    c = run.commitment(2, live.names[3])["args"]
    doc["rejected"] = {}
    doc["included"].append({"participant": bad, "dataset": live.names[3], "cid": c["cid"], "n_samples": 50})
    run.pin_scores(2, doc)
    report = run.replay()
    assert_only_round_flagged(report, 2)
    assert f"update of {bad} ({c['cid']}) was included but fails verification: BAD_ENVELOPE" in problems(report, 2)


def test_exported_live_trail_replays_through_the_cli(live, capsys):
    head = read_trail(live.dir / "trail.jsonl").checkpoints[-1]
    assert head[1] == live.fed.chain.block_hash(head[0]).lower()
    code = cli_main(["audit", "replay", "--trail", str(live.dir / "trail.jsonl"), "--store", str(live.store.root),
                     "--auditor-dev", str(AUDITOR_DEV), "--checkpoint", live.fed.chain.block_hash(head[0])])
    out = _squash(capsys.readouterr().out)
    assert code == 0, out
    assert "4/4 rounds VERIFIED" in out and "FAILED" in out and "trail ANCHORED" in out
