"""Replay: re-derive every aggregate and score and compare bytes with the chain.

For every proposal and round in the history (live chain or exported trail):

* the plan is fetched by CID and must hash to the on-chain value;
* every committed update is fetched, its sha256 checked against the
  commitment, decrypted with the auditor key (the envelope binds chain,
  contract, proposal, round and sender) and deserialized;
* the updates the coordinator used (the scores document lists them, and the
  document itself must hash to the value recorded at close) must be exactly the
  updates that verify — a rejected update must really fail verification;
* the aggregation is re-run with the plan's strategy, in round order (server
  optimizer state carries over), and the resulting model bytes must hash to
  the aggregate sha256 recorded at close; contribution scores are recomputed
  and compared;
* governance invariants (approved proposal, members, policies at the block,
  vote counts, quorum) are checked from the events.

Replay never retrains, so it costs a fraction of the original run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from rich.table import Table

from fedchain.content import MAX_DOCUMENT_SIZE, fetch_document, fetch_model
from fedchain.coordinator.audit.history import History, RoundRecord
from fedchain.coordinator.audit.trail import Trail, chain_events
from fedchain.coordinator.runner import SCORES_FORMAT, Commitment, scores_document
from fedchain.coordinator.strategies.base import ClientUpdate
from fedchain.coordinator.strategies.registry import for_plan
from fedchain.envelope import EnvelopeContext
from fedchain.errors import FedchainError
from fedchain.models import initial_state
from fedchain.plan import MAX_PLAN_BYTES, sha256_hex, verify_plan_bytes
from fedchain.serialize import bytes_to_state_dict, state_dict_to_bytes
from fedchain.validation import model_size, update_size_limit

VERIFIED = "VERIFIED"
DISCREPANCY = "DISCREPANCY"
FAILED_ROUND = "FAILED (no aggregate)"
OPEN_ROUND = "OPEN (not closed yet)"


@dataclass
class RoundVerdict:
    proposal_id: int
    round: int
    status: str
    problems: list[str] = field(default_factory=list)
    aggregate_cid: str = ""
    participants: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class ReplayReport:
    rounds: list[RoundVerdict] = field(default_factory=list)
    governance: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.governance and all(v.ok for v in self.rounds)


class Replayer:
    """Replays a :class:`History` against a content store with an auditor identity."""

    def __init__(self, history: History, store, auditor, *, chain_id: int, rounds_address: str) -> None:
        self.h = history
        self.store = store
        self.auditor = auditor
        self.chain_id = chain_id
        self.rounds_address = rounds_address

    def run(self) -> ReplayReport:
        report = ReplayReport(governance=list(self.h.problems))
        for p in self.h.proposals.values():
            report.governance.extend(self.h.proposal_problems(p))
        by_proposal: dict[int, list[RoundRecord]] = {}
        for (pid, _r), rec in sorted(self.h.rounds.items()):
            by_proposal.setdefault(pid, []).append(rec)
        for pid, recs in by_proposal.items():
            report.rounds.extend(self._replay_proposal(pid, recs))
        return report

    # -- one proposal, rounds in order ----------------------------------------------

    def _replay_proposal(self, pid: int, recs: list[RoundRecord]) -> list[RoundVerdict]:
        p = self.h.proposals.get(pid)
        verdicts: list[RoundVerdict] = []
        if p is None:
            return [RoundVerdict(pid, r.round, DISCREPANCY, [f"round of proposal {pid}, which was never submitted"])
                    for r in recs]
        try:
            plan = verify_plan_bytes(fetch_document(self.store, p.plan_cid, p.plan_sha256, max_size=MAX_PLAN_BYTES),
                                     p.plan_sha256)
        except FedchainError as exc:
            return [RoundVerdict(pid, r.round, DISCREPANCY, [f"plan {p.plan_cid}: {exc}"]) for r in recs]
        strategy = for_plan(plan)
        global_state = initial_state(plan.model, plan.seed)
        for rec in recs:
            v = RoundVerdict(pid, rec.round, VERIFIED)
            v.problems.extend(self.h.round_governance_problems(rec))
            if rec.closed is None:
                v.status = FAILED_ROUND if rec.failed_block is not None else OPEN_ROUND
                if v.problems:
                    v.status = DISCREPANCY
                verdicts.append(v)
                continue
            global_state = self._replay_closed(plan, strategy, global_state, rec, v)
            if v.problems:
                v.status = DISCREPANCY
            verdicts.append(v)
        return verdicts

    def _replay_closed(self, plan, strategy, global_state, rec: RoundRecord, v: RoundVerdict):
        closed = rec.closed
        v.aggregate_cid = closed["aggregate_cid"]
        if closed["committed"] != len(rec.commits):
            v.problems.append(
                f"round closed with {closed['committed']} commitment(s) on chain, "
                f"but the event history holds {len(rec.commits)}"
            )
        # The scores document: which updates the coordinator used and which it rejected.
        try:
            doc = json.loads(fetch_document(self.store, closed["scores_cid"], closed["scores_sha256"],
                                            max_size=MAX_DOCUMENT_SIZE))
            if doc.get("format") != SCORES_FORMAT:
                raise FedchainError(f"not a {SCORES_FORMAT} document")
        except (FedchainError, ValueError) as exc:
            v.problems.append(f"scores document {closed['scores_cid']}: {exc}")
            doc = {"included": [], "rejected": {}, "scores": {}}
        used = {(d["participant"], d["dataset"]) for d in doc.get("included", [])}
        claimed_rejected = dict(doc.get("rejected", {}))
        v.rejected = claimed_rejected

        updates = []
        verified: list = []
        committed_keys = set()
        for c in rec.commits:
            name = self.h.dataset_name(c.dataset_id)
            committed_keys.add((c.member, name))
            try:
                state = self._open_update(plan, rec, c)
            except FedchainError as exc:
                if c.member in claimed_rejected:
                    continue  # rightly rejected: it fails for the auditor too
                v.problems.append(f"update of {c.member} ({c.cid}) fails verification but was not rejected: {exc}")
                continue
            if c.member in claimed_rejected:
                v.problems.append(f"update of {c.member} was rejected ({claimed_rejected[c.member]}) but verifies")
                continue
            if (c.member, name) not in used:
                v.problems.append(f"update of {c.member} verifies but the scores document does not include it")
            updates.append(ClientUpdate(c.member, name, c.n_samples, state))
            verified.append(c)
        for member, dataset in sorted(used - committed_keys):
            v.problems.append(f"the scores document includes an update of {member} for {dataset}, "
                              "but no such commitment is in the event history")
        for member in sorted(set(claimed_rejected) - {m for m, _ in committed_keys}):
            v.problems.append(f"the scores document rejects an update of {member}, "
                              "but no commitment by that member is in the event history")
        v.participants = sorted(u.participant for u in updates)

        # The aggregate.
        if len(updates) < plan.min_participants:
            v.problems.append(f"only {len(updates)} verifiable update(s); the plan needs {plan.min_participants}")
            return self._chain_aggregate(plan, closed, v) or global_state
        try:
            new_global = strategy.aggregate_train(rec.round, global_state, updates)
        except FedchainError as exc:
            v.problems.append(f"aggregation failed: {exc}")
            return self._chain_aggregate(plan, closed, v) or global_state
        model_bytes = state_dict_to_bytes(new_global)
        recomputed = sha256_hex(model_bytes)
        if recomputed.lower() != closed["aggregate_sha256"].lower():
            v.problems.append(
                f"aggregate differs from what the committed updates give: chain sha256 {closed['aggregate_sha256']}, "
                f"recomputed {recomputed}"
            )
        # Contribution scores.
        scores = strategy.contribution_scores(updates)
        v.scores = scores
        recorded = {k.lower(): float(s) for k, s in doc.get("scores", {}).items()}
        for member in sorted(set(scores) | set(recorded)):
            a, b = recorded.get(member), scores.get(member)
            if a is None or b is None or abs(a - round(b, 12)) > 1e-12:
                v.problems.append(f"contribution score of {member}: recorded {a}, recomputed {b}")
        doc_bytes = scores_document(rec.proposal_id, rec.round, scores, verified_as_commitments(verified, self.h), claimed_rejected)
        if not any("contribution score" in p for p in v.problems) and sha256_hex(doc_bytes).lower() != closed["scores_sha256"].lower():
            v.problems.append("scores document differs from the recomputed one (same scores, different content)")
        # The next round starts from the aggregate the chain recorded (checked above).
        return self._chain_aggregate(plan, closed, v) or new_global

    def _chain_aggregate(self, plan, closed, v: RoundVerdict):
        try:
            return bytes_to_state_dict(fetch_document(self.store, closed["aggregate_cid"], closed["aggregate_sha256"],
                                                      max_size=model_size(plan.model)))
        except FedchainError as exc:
            v.problems.append(f"aggregate {closed['aggregate_cid']}: {exc}")
            return None

    def _open_update(self, plan, rec: RoundRecord, c):
        member = self.h.members.get(c.member)
        if member is None:
            raise FedchainError(f"{c.member} has no registered key")
        ctx = EnvelopeContext(chain_id=self.chain_id, contract=self.rounds_address,
                              proposal_id=rec.proposal_id, round=rec.round, sender=c.member)
        return fetch_model(self.store, c.cid, c.sha256, ctx, self.auditor,
                           max_size=update_size_limit(plan.model, 1 + len(plan.auditors)))


def verified_as_commitments(commits, history: History):
    return [Commitment(c.member, history.dataset_name(c.dataset_id), c.cid, c.sha256, c.n_samples) for c in commits]


# -- entry points ------------------------------------------------------------------

def replay_trail(trail: Trail, store, auditor) -> ReplayReport:
    history = History(trail.events, trail.header.get("params"))
    return Replayer(history, store, auditor, chain_id=trail.chain_id,
                    rounds_address=trail.addresses["Rounds"]).run()


def replay_live(fed, store, auditor) -> ReplayReport:
    history = History(list(chain_events(fed, fed.deployment.deploy_block)), dict(fed.deployment.params))
    return Replayer(history, store, auditor, chain_id=fed.deployment.chain_id,
                    rounds_address=fed.deployment.addresses["Rounds"]).run()


def print_report(report: ReplayReport, console) -> None:
    t = Table(title="audit replay")
    for col in ("proposal", "round", "verdict", "participants", "aggregate CID"):
        t.add_column(col)
    for v in report.rounds:
        style = "green" if v.ok and v.status == VERIFIED else ("red" if not v.ok else "yellow")
        t.add_row(str(v.proposal_id), str(v.round), f"[{style}]{v.status}[/]", str(len(v.participants)), v.aggregate_cid)
    console.print(t)
    for v in report.rounds:
        for p in v.problems:
            console.print(f"[red]proposal {v.proposal_id} round {v.round}:[/] {p}")
    for g in report.governance:
        console.print(f"[red]governance:[/] {g}")
    n_ok = sum(1 for v in report.rounds if v.ok and v.status == VERIFIED)
    console.print(f"{n_ok}/{len(report.rounds)} rounds VERIFIED" + ("" if report.ok else " — [red]discrepancies found[/]"))
