"""Replay: re-derive every round from the committed bytes and judge what the coordinator did.

Every round gets one of three verdicts:

* **VERIFIED** -- every check below ran and passed;
* **DISCREPANCY** -- something the coordinator (or the record) claims is not
  what the bytes and events give; each problem is a sentence naming it;
* **UNVERIFIABLE** -- nothing contradicts the record, but the auditor could not
  check all of it, and each reason says why: the auditor is not a recipient of
  the plan's updates, a blob is missing from (or corrupt in) the auditor's
  store, the store is unreachable, a starting model or server state could not
  be re-derived. "Could not check" is never counted as "rightly rejected".

For every proposal, rounds in order:

* the plan is fetched by CID (or read from the trail's copy) and must hash to
  the on-chain value;
* every committed update is judged exactly as the coordinator judges it
  (:mod:`fedchain.coordinator.collect`): the dataset's policy at the close
  block (``NOT_ADMITTED``), the CID's syntax, fetch bounded and hash-checked,
  envelope v2 opened with the exact expected recipients (the coordinator's key
  on chain at the commitment and the plan's auditors), validation against the
  plan's model. The outcome is compared with the scores document: an included
  update must verify, a rejected one must fail with the **same code**, and no
  committed update may be left out without a code. A ``NOT_FOUND`` rejection of
  an update the auditor can fetch is UNVERIFIABLE (whether it was available at
  close cannot be re-derived later), as is any update the auditor cannot fetch;
* the aggregation is re-run with the plan's strategy, in round order (server
  optimizer state carries over); the result's sha256 and CID must be the ones
  recorded at close (so the aggregate need not even be in the store); the
  defences' decisions (who was excluded, clipped, re-weighted, with reason code
  and number) and the contribution scores (the plan's method; loo and shapley
  re-evaluate coalitions on the plan's public validation set, fetched by hash)
  are recomputed, each difference named, and the scores document rebuilt byte
  for byte;
* the coordinator's discretion: a round closed before its deadline while a
  target dataset whose policy admitted the proposal had not committed; a round
  the coordinator failed although enough updates verify; a recorded global
  metric that is not the strategy's ``aggregate_evaluate`` of the evaluations
  submitted before it;
* differential privacy: every commitment's ε and δ (the ``PrivacySpent`` event, or none)
  must be what the plan's round gives for the committed sample count and the
  dataset's participation, recomputed with the same accountant
  (:func:`fedchain.usecases.privacy.expected_spend`); each dataset's running ledger
  in the events must add up. With server-side DP the aggregate cannot be recomputed bit
  for bit (its noise is fresh): the clean clipped average is, and the published
  aggregate must differ from it by noise of the plan's size
  (:func:`~fedchain.coordinator.strategies.dpserver.noise_consistent`);
* governance invariants (approved proposal, members, policies at the block,
  vote counts, quorum) from the events.

Where the events come from matters too: :mod:`fedchain.coordinator.audit.anchor`
ties an exported trail to the chain (``ReplayReport.anchor``).

Replay never retrains, so it costs a fraction of the original run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Mapping

import numpy as np
from rich.markup import escape
from rich.table import Table

from fedchain import he_round
from fedchain.content import MAX_DOCUMENT_SIZE, HashMismatch, fetch_document
from fedchain.coordinator.audit.anchor import ANCHORED, UNANCHORED, AnchorVerdict
from fedchain.coordinator.audit.history import History, RoundRecord
from fedchain.coordinator.audit.trail import Trail, chain_events
from fedchain.coordinator.collect import (
    Outcome,
    StoreFailure,
    StoreOutage,
    UpdateJob,
    check_updates,
    cid_rejection,
)
from fedchain.coordinator.runner import PPM, SCORES_FORMAT, Commitment, sample_scores, scores_document
from fedchain.coordinator.statistics import pool_moments
from fedchain.coordinator.scoring import load_validation_set, score_round
from fedchain.coordinator.strategies.base import ClientUpdate, EvaluateResult
from fedchain.coordinator.strategies.dpserver import ServerSideDP, noise_consistent
from fedchain.coordinator.strategies.registry import for_plan
from fedchain.envelope import EnvelopeContext
from fedchain.errors import ContentUnavailable, FedchainError
from fedchain.ipfs.store import StoreError
from fedchain.ipfs.unixfs import compute_cid
from fedchain.models import initial_state
from fedchain.secagg_round import RoundFacts, message_bound, model_from_sum, reconstruct, round_config
from fedchain.plan import MAX_PLAN_BYTES, evaluate_config, sha256_hex, verify_plan_bytes
from fedchain.serialize import bytes_to_state_dict, json_depth, state_dict_to_bytes
from fedchain.privacy import EPSILON_UNIT
from fedchain.usecases.privacy import expected_spend, privacy_mismatch
from fedchain.usecases.statistics import has_phase
from fedchain.validation import Accepted, Reason, Rejection, model_layout, model_size

VERIFIED = "VERIFIED"
DISCREPANCY = "DISCREPANCY"
UNVERIFIABLE = "UNVERIFIABLE"
#: What the chain says happened to a round (``RoundVerdict.outcome``).
CLOSED, FAILED, OPEN = "CLOSED", "FAILED", "OPEN"
#: A scores document nests 3 levels (document, list or map, entry).
SCORES_MAX_DEPTH = 3


@dataclass(frozen=True)
class Unverifiable:
    """The auditor could not judge one update; ``why`` says what it lacked."""

    why: str


@dataclass
class RoundVerdict:
    proposal_id: int
    round: int
    outcome: str = OPEN
    problems: list[str] = field(default_factory=list)  # discrepancies
    unverifiable: list[str] = field(default_factory=list)  # what could not be checked, and why
    aggregate_cid: str = ""
    participants: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # participant -> code, as the coordinator published
    scores: dict[str, float] = field(default_factory=dict)  # member -> contribution share, as recomputed
    decisions: list[dict] = field(default_factory=list)  # the defences' decisions, as recomputed

    @property
    def status(self) -> str:
        if self.problems:
            return DISCREPANCY
        return UNVERIFIABLE if self.unverifiable else VERIFIED

    @property
    def ok(self) -> bool:
        return self.status == VERIFIED


@dataclass
class ReplayReport:
    rounds: list[RoundVerdict] = field(default_factory=list)
    governance: list[str] = field(default_factory=list)
    anchor: AnchorVerdict = field(default_factory=lambda: AnchorVerdict(UNANCHORED, "no anchor was checked"))

    @property
    def status(self) -> str:
        """DISCREPANCY if anything contradicts the record, else UNVERIFIABLE if anything went unchecked."""
        if self.governance or self.anchor.status == DISCREPANCY or any(v.status == DISCREPANCY for v in self.rounds):
            return DISCREPANCY
        if self.anchor.status != ANCHORED or any(v.status == UNVERIFIABLE for v in self.rounds):
            return UNVERIFIABLE
        return VERIFIED

    @property
    def ok(self) -> bool:
        return self.status == VERIFIED

    def passes(self, *, allow_unverifiable: bool = False) -> bool:
        """VERIFIED; or, when the caller accepts it, UNVERIFIABLE (but never a DISCREPANCY)."""
        return self.status == VERIFIED or (allow_unverifiable and self.status == UNVERIFIABLE)


class Replayer:
    """Replays a :class:`History` against a content store with an auditor identity."""

    def __init__(self, history: History, store, auditor, *, chain_id: int, rounds_address: str,
                 documents: Mapping[str, dict] | None = None, anchor: AnchorVerdict | None = None,
                 fetch_budget: float | None = None, statistics_address: str | None = None,
                 he_keys: Mapping[str, object] | None = None, secure_address: str = "") -> None:
        self.h = history
        self.statistics_address = statistics_address
        self.secure_address = secure_address  # the SecureRounds contract (mode = "secagg")
        #: ``mode = "he"``: decryptor keys the auditor holds, by their public context's sha256
        #: (then the published model is also checked against the sum's decryption).
        self.he_keys = {k.lower(): key for k, key in (he_keys or {}).items()}
        self.store = store
        self.auditor = auditor
        self.chain_id = chain_id
        self.rounds_address = rounds_address
        self.documents = dict(documents or {})
        self.anchor = anchor or AnchorVerdict(UNANCHORED, "the events were not checked against the chain")
        self.fetch_budget = fetch_budget

    def run(self) -> ReplayReport:
        report = ReplayReport(governance=list(self.h.problems), anchor=self.anchor)
        for p in self.h.proposals.values():
            report.governance.extend(self.h.proposal_problems(p))
        by_proposal: dict[int, list[RoundRecord]] = {}
        for (pid, _r), rec in sorted(self.h.rounds.items()):
            by_proposal.setdefault(pid, []).append(rec)
        for pid, recs in by_proposal.items():
            report.rounds.extend(self._replay_proposal(pid, recs))
        return report

    # -- one proposal, rounds in order ----------------------------------------------

    def _plan(self, p):
        """The plan from the store, else from the trail's copy; hash-checked either way."""
        try:
            data = fetch_document(self.store, p.plan_cid, p.plan_sha256, max_size=MAX_PLAN_BYTES)
        except ContentUnavailable:
            doc = self.documents.get(p.plan_cid)
            if not isinstance(doc, dict) or not isinstance(doc.get("content"), str):
                raise
            data = doc["content"].encode()
        return verify_plan_bytes(data, p.plan_sha256)

    def _replay_proposal(self, pid: int, recs: list[RoundRecord]) -> list[RoundVerdict]:
        p = self.h.proposals.get(pid)
        verdicts = [RoundVerdict(pid, r.round, _outcome(r)) for r in recs]
        if p is None:
            for v in verdicts:
                v.problems.append(f"round of proposal {pid}, which was never submitted")
            return verdicts
        try:
            plan = self._plan(p)
        except (ContentUnavailable, StoreError) as exc:
            for v in verdicts:
                v.unverifiable.append(f"the plan {p.plan_cid} is not in the auditor's store ({type(exc).__name__})")
            return verdicts
        except FedchainError as exc:
            for v in verdicts:
                v.problems.append(f"plan {p.plan_cid}: {exc}")
            return verdicts
        ctx = _ProposalContext(plan)
        if ("0x" + self.auditor.x25519_public.hex()) not in {k.lower() for k in plan.auditors}:
            ctx.not_recipient = "the auditor's key is not one of the plan's auditors, so it is not a recipient of any update"
        if has_phase(plan) and verdicts:
            self._check_statistics(pid, ctx, recs[0], verdicts[0])
        for rec, v in zip(recs, verdicts):
            v.problems.extend(self.h.round_governance_problems(rec))
            self._check_privacy(plan, rec, v)
            if rec.closed is not None:
                self._replay_closed(ctx, rec, v)
                self._check_metric(ctx, rec, v)
            elif rec.failed_block is not None:
                self._replay_failed(ctx, rec, v)
        return verdicts

    # -- the statistics phase ------------------------------------------------------

    def _check_statistics(self, pid: int, ctx: "_ProposalContext", first: RoundRecord, v: RoundVerdict) -> None:
        """A plan with a statistics phase: its pooled statistics were published before round 1 opened and are
        exactly what the committed moments give (rebuilt byte for byte as the auditor)."""
        st = self.h.statistics.get(pid)
        if st is None or st.published is None or st.published_block is None:
            v.problems.append("statistics phase: round 1 opened but no pooled statistics were published")
            return
        if first.round == 1 and first.opened_block <= st.published_block:
            v.problems.append(f"statistics phase: round 1 opened (block {first.opened_block}) before the statistics "
                              f"were published (block {st.published_block})")
        if ctx.not_recipient:
            v.unverifiable.append(f"statistics phase: {ctx.not_recipient}")
            return
        if self.statistics_address is None:
            v.unverifiable.append("statistics phase: the Statistics contract's address is not known to this replay")
            return
        coordinator = self.h.coordinator_at(st.published_block)
        member = self.h.members.get(coordinator) if coordinator else None
        if member is None:
            v.unverifiable.append("statistics phase: the coordinator had no encryption key on chain")
            return
        recipients = [bytes.fromhex(member.key_at(st.published_block).removeprefix("0x")), *ctx.auditor_keys]
        where = SimpleNamespace(chain_id=self.chain_id, addresses={"Statistics": self.statistics_address})
        try:
            pooled = pool_moments(self.h, self.store, where, pid, self.auditor, recipients)
        except (ContentUnavailable, StoreError) as exc:
            v.unverifiable.append(f"statistics phase: a committed moments document is not available ({exc})")
            return
        except FedchainError as exc:
            v.problems.append(f"statistics phase: the committed moments give no statistics ({exc}), yet some were "
                              "published")
            return
        if pooled.rejected and any(r["code"] == "UNREADABLE" for r in pooled.rejected):
            v.unverifiable.append("statistics phase: the auditor could not read every committed moments document")
        digest = sha256_hex(pooled.document)
        if digest != st.published["sha256"]:
            v.problems.append(f"statistics phase: the published statistics (sha256 {st.published['sha256']}) are not "
                              f"the pooled committed moments (sha256 {digest})")

    # -- each update, as the coordinator judges it ---------------------------------

    def _derive(self, ctx: "_ProposalContext", rec: RoundRecord, at_block: int, at_time: int) -> list[Outcome | Unverifiable]:
        """The auditor's outcome for every commitment of ``rec``, judged as at ``at_block`` / ``at_time``."""
        if ctx.plan.mode == "he":
            return self._derive_he(ctx, rec, at_block, at_time)
        p = self.h.proposals[rec.proposal_id]
        out: list[Outcome | Unverifiable | None] = [None] * len(rec.commits)
        jobs: list[UpdateJob] = []
        recipients_of: dict[str, list[bytes]] = {}
        for i, c in enumerate(rec.commits):
            d = self.h.datasets.get(c.dataset_id)
            refusal = self.h.policy_refusal(d, p, at_block, at_time) if d is not None else "NO_POLICY"
            if refusal:
                out[i] = Rejection(Reason.NOT_ADMITTED, f"policy: {refusal}")
                continue
            wrong = privacy_mismatch(ctx.plan, self.h, rec.proposal_id, rec.round, c.member, c.dataset_id, c.n_samples)
            if wrong:
                out[i] = Rejection(Reason.WRONG_PRIVACY, wrong)
                continue
            bad = cid_rejection(c.cid)
            if bad is not None:
                out[i] = bad
                continue
            if ctx.not_recipient:
                out[i] = Unverifiable(ctx.not_recipient)
                continue
            coordinator = self.h.coordinator_at(c.block)
            member = self.h.members.get(coordinator) if coordinator else None
            if member is None:
                out[i] = Unverifiable("the coordinator had no encryption key on chain, so the recipients "
                                      "the update had to be sealed for are unknown")
                continue
            key = str(i)
            recipients_of[key] = [bytes.fromhex(member.key_at(c.block).removeprefix("0x")), *ctx.auditor_keys]
            jobs.append(UpdateJob(key=key, cid=c.cid, sha256=c.sha256, ctx=EnvelopeContext(
                chain_id=self.chain_id, contract=self.rounds_address, proposal_id=rec.proposal_id,
                round=rec.round, sender=c.member)))
        # One batch per distinct recipient set (normally one: the coordinator's key rarely changes mid-round).
        groups: dict[tuple[bytes, ...], list[UpdateJob]] = {}
        for job in jobs:
            groups.setdefault(tuple(recipients_of[job.key]), []).append(job)
        for recipients, group in groups.items():
            try:
                results = check_updates(self.store, group, self.auditor, ctx.layout, list(recipients),
                                        budget=self.fetch_budget)
            except StoreOutage:
                results = {job.key: Unverifiable("the auditor's store is unreachable") for job in group}
            for key, outcome in results.items():
                out[int(key)] = _as_auditor(outcome)
        return out  # type: ignore[return-value]

    def _derive_he(self, ctx: "_ProposalContext", rec: RoundRecord, at_block: int, at_time: int) -> list:
        """``mode = "he"``: each commitment's ciphertext (as ``Accepted(state=EncryptedVector)``) or why
        it is left out, exactly as :meth:`fedchain.coordinator.runner.Coordinator.collect_he` judges it.
        Anyone can check a ciphertext: the auditor need not be a recipient of anything."""
        p = self.h.proposals[rec.proposal_id]
        public = ctx.he_public(self.store)
        out: list = []
        for c in rec.commits:
            d = self.h.datasets.get(c.dataset_id)
            refusal = self.h.policy_refusal(d, p, at_block, at_time) if d is not None else "NO_POLICY"
            if refusal:
                out.append(Rejection(Reason.NOT_ADMITTED, f"policy: {refusal}"))
                continue
            bad = cid_rejection(c.cid)
            if bad is not None:
                out.append(bad)
                continue
            if isinstance(public, str):
                out.append(Unverifiable(public))
                continue
            try:
                got = he_round.check_input(self.store, c.cid, c.sha256, public, ctx.layout)
            except (ContentUnavailable, StoreError):
                out.append(Unverifiable("the ciphertext is missing from the auditor's store"))
                continue
            out.append(got if isinstance(got, Rejection) else Accepted(state=got))  # type: ignore[arg-type]
        return out

    def _check_aggregate_he(self, ctx, rec, v, doc, claimed, updates, used, cannot_aggregate) -> None:
        """Re-derive the encrypted sum from the committed ciphertexts; the decryptor's signed statement
        must name it, the included inputs and the model closed on chain; with the decryptor's key,
        the published model must be the sum's decryption within the stated tolerance."""
        closed, plan = rec.closed, ctx.plan
        need = max(2, plan.min_participants)
        if cannot_aggregate:
            v.unverifiable.append(f"the encrypted sum cannot be recomputed: the ciphertext(s) of "
                                  f"{', '.join(cannot_aggregate)} cannot be checked")
        elif len(updates) < need:
            v.problems.append(f"only {len(updates)} verifiable ciphertext(s); mode he needs {need}")
        else:
            self._check_decryption(ctx, rec, v, doc, updates, used)
        shares = he_round.fedavg_weights([u.n_samples for u in updates]) if updates else []
        scores = {u.participant.lower(): w for u, w in zip(updates, shares)}
        v.scores = scores
        dec = doc.get("decryption") if isinstance(doc.get("decryption"), dict) else None
        doc_bytes = scores_document(rec.proposal_id, rec.round, sample_scores(scores), _as_commitments(used, self.h),
                                    claimed,
                                    decryption=dec)
        if sha256_hex(doc_bytes).lower() != closed["scores_sha256"].lower():
            v.problems.append("scores document differs from the recomputed one (weights, inputs or decryption)")
        ctx.global_state = self._chain_aggregate(plan, closed, v)

    def _check_decryption(self, ctx, rec, v, doc, updates, used) -> None:
        closed, plan = rec.closed, ctx.plan
        order = sorted(zip(updates, used), key=lambda uc: (uc[0].participant.lower(), uc[0].dataset_id))
        public = ctx.he_public(self.store)
        encrypted_sum = public.weighted_sum([u.state for u, _ in order],
                                            he_round.fedavg_weights([u.n_samples for u, _ in order]))
        sum_sha = sha256_hex(encrypted_sum.encode())
        dec = doc.get("decryption")
        if not isinstance(dec, dict):
            v.problems.append("the scores document carries no decryption statement")
            return
        try:
            he_round.verify_statement(dec.get("statement"), dec.get("signature"), plan.he.decryptor)
        except he_round.HERoundError as exc:
            v.problems.append(f"decryption statement: {exc}")
            return
        inputs = [he_round.HEInput(u.participant, u.dataset_id, c.cid, he_round.hex_sha256(c.sha256), c.n_samples)
                  for u, c in order]
        expected = he_round.statement_bytes(
            chain_id=self.chain_id, rounds=self.rounds_address, proposal=rec.proposal_id, round_=rec.round,
            context_sha256=plan.he.context_sha256, inputs=inputs, aggregate_sha256=sum_sha,
            model_sha256=closed["aggregate_sha256"])
        if expected.decode() != dec["statement"]:
            said = json.loads(dec["statement"])
            if said.get("aggregate_sha256") != sum_sha:
                v.problems.append(f"the decryptor decrypted {said.get('aggregate_sha256')}, but the committed "
                                  f"ciphertexts sum to {sum_sha}")
            if said.get("model_sha256") != he_round.hex_sha256(closed["aggregate_sha256"]):
                v.problems.append(f"the model closed on chain ({closed['aggregate_sha256']}) is not the one the "
                                  f"decryptor published ({said.get('model_sha256')})")
            if not any("decrypt" in p for p in v.problems):
                v.problems.append("the decryption statement does not match the round (chain, contract, "
                                  "proposal, round, context or inputs differ)")
            return
        key = self.he_keys.get(plan.he.context_sha256)
        if key is None:
            return  # without the secret key the chain of hashes and the signature is what can be checked
        model = self._chain_aggregate(plan, closed, v)
        if model is None:
            return
        values = key.decrypt(encrypted_sum)
        published = he_round.to_vector(model, ctx.layout)
        err = float(np.max(np.abs(values - published)))
        bound = he_round.tolerance(float(np.max(np.abs(values))))
        if err > bound:
            v.problems.append(f"the published model differs from the decrypted sum by {err:.3g} (tolerance {bound:.3g})")

    # -- mode = "secagg" ---------------------------------------------------------------

    def _secagg_facts(self, ctx, rec: RoundRecord, session) -> RoundFacts:
        p = self.h.proposals[rec.proposal_id]
        rows = sum(self.h.datasets[t].row_count for t in p.targets if t in self.h.datasets)
        return RoundFacts(self.chain_id, self.secure_address, rec.proposal_id, rec.round,
                          bytes.fromhex(session.seed.removeprefix("0x")), tuple(p.target_owners), rows)

    def _secagg_session_problems(self, ctx, rec: RoundRecord, session) -> list[str]:
        """The session's parameters must be the plan's."""
        plan, p = ctx.plan, self.h.proposals[rec.proposal_id]
        want_t = len(p.targets) - plan.secagg.max_dropouts
        want_p = plan.secagg.phase_blocks or max(1, (plan.round_deadline_blocks - 1) // 4)
        out = []
        if session.threshold != want_t:
            out.append(f"the secure-aggregation session ran with threshold {session.threshold}, the plan gives {want_t}")
        if session.phase_blocks != want_p:
            out.append(f"the secure-aggregation phases lasted {session.phase_blocks} blocks, the plan gives {want_p}")
        return out

    def _secagg_model(self, ctx, rec: RoundRecord, session) -> bytes:
        """The model the session's messages on chain give (the unmasked sum's weighted mean), or what stops it."""
        f = self._secagg_facts(ctx, rec, session)
        commits = {c.member: c for c in rec.commits}
        cfg = round_config(f, ctx.plan, ctx.layout)
        named = [session.messages[0], session.messages[1],
                 {m: (commits[m].cid, commits[m].sha256) for m in session.masked if m in commits},
                 session.messages[3]]
        msgs = []
        for phase, by_member in enumerate(named):
            msgs.append({f.ids[m]: fetch_document(self.store, cid, sha, max_size=message_bound(cfg, phase))
                         for m, (cid, sha) in by_member.items()})
        return state_dict_to_bytes(model_from_sum(reconstruct(cfg, *msgs), ctx.layout))

    def _replay_closed_secagg(self, ctx, rec: RoundRecord, v: RoundVerdict) -> None:
        """Re-derive the unmasked sum bit for bit from the masked inputs and the revealed shares the chain
        names; the model closed on chain must be its sample-weighted mean, over exactly U3."""
        closed, plan = rec.closed, ctx.plan
        v.aggregate_cid = closed["aggregate_cid"]
        self._check_early_close(rec, v)
        session = self.h.secure.get((rec.proposal_id, rec.round))
        if session is None:
            v.problems.append("the round closed under mode secagg, but no secure-aggregation session was started")
            self._skip_round(ctx, rec, closed, v)
            return
        v.problems.extend(self._secagg_session_problems(ctx, rec, session))
        if session.stage != "COMPLETED":
            v.problems.append(f"the round closed although its secure-aggregation session is {session.stage.lower()}")
            self._skip_round(ctx, rec, closed, v)
            return
        commits = {c.member: c for c in rec.commits}
        try:
            model_bytes = self._secagg_model(ctx, rec, session)
        except (ContentUnavailable, StoreError):
            v.unverifiable.append("a secure-aggregation message is missing from the auditor's store")
            self._skip_round(ctx, rec, closed, v)
            return
        except (FedchainError, KeyError) as exc:
            v.problems.append(f"the sum cannot be re-derived from the messages on chain: {exc}")
            self._skip_round(ctx, rec, closed, v)
            return
        recomputed = sha256_hex(model_bytes)
        if recomputed.lower() != closed["aggregate_sha256"].lower():
            v.problems.append(f"aggregate differs from the unmasked sum of the masked inputs: chain sha256 "
                              f"{closed['aggregate_sha256']}, recomputed {recomputed}")
        used = [commits[m] for m in session.masked if m in commits]
        v.participants = sorted(c.member for c in used)
        weights = he_round.fedavg_weights([c.n_samples for c in used])
        scores = {c.member: w for c, w in zip(used, weights)}
        v.scores = scores
        doc_bytes = scores_document(rec.proposal_id, rec.round, sample_scores(scores), _as_commitments(used, self.h),
                                    {})
        if sha256_hex(doc_bytes).lower() != closed["scores_sha256"].lower():
            v.problems.append("scores document differs from the recomputed one (the masked inputs it lists or "
                              "their weights)")
        ctx.global_state = bytes_to_state_dict(model_bytes)

    def _replay_closed(self, ctx: "_ProposalContext", rec: RoundRecord, v: RoundVerdict) -> None:
        if ctx.plan.mode == "secagg":
            return self._replay_closed_secagg(ctx, rec, v)
        closed = rec.closed
        v.aggregate_cid = closed["aggregate_cid"]
        if closed["committed"] != len(rec.commits):
            v.problems.append(
                f"round closed with {closed['committed']} commitment(s) on chain, "
                f"but the event history holds {len(rec.commits)}"
            )
        self._check_early_close(rec, v)
        doc = self._scores_doc(closed, v)
        if doc is None:  # nothing to compare the updates with
            self._skip_round(ctx, rec, closed, v)
            return
        included, claimed = self._claims(doc, v)
        v.rejected = {m: str(r.code) for m, r in claimed.items()}
        derived = self._derive(ctx, rec, rec.closed_block, self.h.ended_at.get((rec.proposal_id, rec.round), 0))

        updates: list[ClientUpdate] = []
        used: list = []
        committed_keys = set()
        cannot_aggregate: list[str] = []
        for c, got in zip(rec.commits, derived):
            name = self.h.dataset_name(c.dataset_id)
            committed_keys.add((c.member, name))
            who = f"update of {c.member} ({c.cid})"
            is_included = (c.member, name) in included
            if is_included and c.member in claimed:
                v.problems.append(f"{who} is both included and rejected by the scores document")
                continue
            if is_included:
                if isinstance(got, Accepted):
                    updates.append(ClientUpdate(c.member, name, c.n_samples, got.state))
                    used.append(c)
                elif isinstance(got, Rejection):
                    v.problems.append(f"{who} was included but fails verification: {got.code} ({got.detail})")
                else:
                    v.unverifiable.append(f"{who} was included but cannot be checked: {got.why}")
                    cannot_aggregate.append(c.member)
                continue
            if c.member in claimed:
                said = claimed[c.member]
                if isinstance(got, Rejection) and got.code == Reason.NOT_ADMITTED:
                    pass  # its dataset's policy no longer admitted the proposal: left out, whatever the code said
                elif said.code == Reason.NOT_ADMITTED:
                    v.problems.append(f"{who} was rejected as NOT_ADMITTED, but the policy of "
                                      f"{name} admitted the proposal when the round closed")
                elif isinstance(got, Rejection):
                    if got.code != said.code:
                        v.problems.append(f"{who} was rejected as {said.code}, but it fails with {got.code} "
                                          f"({got.detail})")
                elif isinstance(got, Accepted):
                    if said.code == Reason.NOT_FOUND:
                        v.unverifiable.append(f"{who} was rejected as NOT_FOUND but the auditor can fetch it and it "
                                              "verifies: whether it was available when the round closed cannot be "
                                              "re-derived")
                    else:
                        v.problems.append(f"{who} was rejected as {said.code} but it verifies")
                else:
                    v.unverifiable.append(f"{who} was rejected as {said.code}; the auditor cannot check it: {got.why}")
                continue
            if isinstance(got, Accepted):
                v.problems.append(f"update of {c.member} verifies but the scores document neither includes "
                                  "nor rejects it")
            else:
                v.problems.append(f"{who} was left out of the scores document without a reason code")
        for member, dataset in sorted(included - committed_keys):
            v.problems.append(f"the scores document includes an update of {member} for {dataset}, "
                              "but no such commitment is in the event history")
        for member in sorted(set(claimed) - {m for m, _ in committed_keys}):
            v.problems.append(f"the scores document rejects an update of {member}, "
                              "but no commitment by that member is in the event history")
        v.participants = sorted(u.participant for u in updates)
        self._check_aggregate(ctx, rec, v, doc, claimed, updates, used, cannot_aggregate)

    def _check_privacy(self, plan, rec: RoundRecord, v: RoundVerdict) -> None:
        """Each commitment states the ε/δ the plan's round gives it; the events' ledger adds up."""
        for c in rec.commits:
            want = expected_spend(plan, self.h, rec.proposal_id, c.dataset_id, rec.round, c.n_samples)
            got = (c.privacy.epsilon_micro, c.privacy.delta_pico) if c.privacy is not None else (0, 0)
            if got != want:
                v.problems.append(
                    f"update of {c.member} states privacy epsilon {got[0] / EPSILON_UNIT:g} (delta {got[1] / 1e12:g}), "
                    f"but the plan's round {rec.round} gives epsilon {want[0] / EPSILON_UNIT:g} "
                    f"(delta {want[1] / 1e12:g}) for {c.n_samples} samples"
                )
        for did in sorted({c.dataset_id for c in rec.commits if c.privacy is not None}):
            d = self.h.datasets.get(did)
            running = 0
            for s in (d.privacy_spends if d is not None else []):
                running += s.epsilon_micro
                if s.dataset_spent_micro != running and (s.proposal_id, s.round) == (rec.proposal_id, rec.round):
                    v.problems.append(f"the privacy ledger of {self.h.dataset_name(did)} says "
                                      f"{s.dataset_spent_micro / EPSILON_UNIT:g} spent after this round, but its "
                                      f"spends add up to {running / EPSILON_UNIT:g}")

    def _check_server_dp(self, ctx, rec, v, clean) -> bool:
        """Server-side DP: the published aggregate is the clean one plus noise of the plan's size."""
        closed = rec.closed
        chain_model = self._chain_aggregate(ctx.plan, closed, v)
        if chain_model is None:
            v.unverifiable.append("the noised aggregate is not in the auditor's store, so its noise cannot be checked")
            ctx.global_state = clean
            return False
        ok, ratio = noise_consistent(chain_model, clean, ctx.strategy.last_noise_std)
        if not ok:
            v.problems.append(f"the aggregate is not the clipped average plus the plan's noise (residual "
                              f"{ratio:.3g} x the expected variance {ctx.strategy.last_noise_std:.3g}^2)")
        ctx.global_state = chain_model
        return True

    def _check_aggregate(self, ctx, rec, v, doc, claimed, updates, used, cannot_aggregate) -> None:
        if ctx.plan.mode == "he":
            return self._check_aggregate_he(ctx, rec, v, doc, claimed, updates, used, cannot_aggregate)
        closed = rec.closed
        plan, strategy = ctx.plan, ctx.strategy
        if cannot_aggregate or ctx.lost_state or ctx.global_state is None:
            why = (f"the update(s) of {', '.join(cannot_aggregate)} cannot be checked" if cannot_aggregate
                   else ctx.lost_state or "the round's starting model is not available")
            v.unverifiable.append(f"the aggregate cannot be recomputed: {why}")
            self._skip_round(ctx, rec, closed, v)
            return
        if len(updates) < plan.min_participants:
            v.problems.append(f"only {len(updates)} verifiable update(s); the plan needs {plan.min_participants}")
            self._skip_round(ctx, rec, closed, v)
            return
        start = ctx.global_state
        try:
            new_global = strategy.aggregate_train(rec.round, start, updates)
        except FedchainError as exc:
            v.problems.append(f"aggregation failed: {exc}")
            self._skip_round(ctx, rec, closed, v)
            return
        decisions = list(strategy.last_decisions)
        model_bytes = state_dict_to_bytes(new_global)
        recomputed = sha256_hex(model_bytes)
        scored = None  # the model the coordinator scored against: the published one
        if isinstance(strategy, ServerSideDP):  # its noise is fresh: test it instead of the hash
            if not self._check_server_dp(ctx, rec, v, new_global):
                return  # no published model to score against: already named unverifiable
            scored = ctx.global_state
        elif recomputed.lower() != closed["aggregate_sha256"].lower():
            v.problems.append(
                f"aggregate differs from what the committed updates give: chain sha256 {closed['aggregate_sha256']}, "
                f"recomputed {recomputed}"
            )
            chain_model = self._chain_aggregate(plan, closed, v)
            ctx.global_state = chain_model if chain_model is not None else new_global
        else:
            if compute_cid(model_bytes) != closed["aggregate_cid"]:
                v.problems.append(f"the aggregate CID {closed['aggregate_cid']} does not name the aggregate "
                                  f"(its CID is {compute_cid(model_bytes)})")
            ctx.global_state = bytes_to_state_dict(model_bytes)
        self._check_scores(ctx, rec, v, doc, claimed, updates, used, start,
                           scored if scored is not None else bytes_to_state_dict(model_bytes), decisions)

    def _check_scores(self, ctx, rec, v, doc, claimed, updates, used, start, new_global, decisions) -> None:
        """Decisions and contribution scores recomputed from the same inputs; each difference named."""
        closed = rec.closed
        validation = ctx.validation_set(self.store, v)
        if validation is _MISSING:
            return
        try:
            scores = score_round(ctx.plan, rec.round, start, new_global, updates, decisions, validation)
        except FedchainError as exc:
            v.problems.append(f"contribution scores cannot be computed: {exc}")
            return
        v.scores = scores.shares
        v.decisions = [d.to_dict() for d in scores.decisions]
        named = len(v.problems)
        if doc.get("method") != scores.method:
            v.problems.append(f"contribution method recorded as {doc.get('method')!r}, the plan says "
                              f"{scores.method!r}")
        recorded_decisions = doc.get("decisions") if isinstance(doc.get("decisions"), list) else []
        for d in v.decisions:
            if d not in recorded_decisions:
                v.problems.append(f"the plan's rule {d['action']} the update of {d['participant']} ({d['reason']} "
                                  f"{d['value']:.6g}), but the scores document does not record that decision")
        for d in recorded_decisions:
            if d not in v.decisions:
                who = d.get("participant") if isinstance(d, dict) else d
                v.problems.append(f"the scores document records a decision the plan's rule does not take: {d!r} "
                                  f"(update of {who})")
        for key, mine in (("scores", scores.shares), ("values", scores.values)):
            raw = doc.get(key)
            recorded = {str(k).lower(): x for k, x in raw.items()} if isinstance(raw, dict) else {}
            for member in sorted(set(mine) | set(recorded)):
                a, b = recorded.get(member), mine.get(member)
                if not isinstance(a, (int, float)) or isinstance(a, bool) or b is None or abs(a - round(b, 12)) > 1e-12:
                    what = "contribution score" if key == "scores" else f"contribution value ({scores.method})"
                    v.problems.append(f"{what} of {member}: recorded {a}, recomputed {b}")
        doc_bytes = scores_document(rec.proposal_id, rec.round, scores, _as_commitments(used, self.h), claimed)
        if len(v.problems) == named and sha256_hex(doc_bytes).lower() != closed["scores_sha256"].lower():
            v.problems.append("scores document differs from the recomputed one (same scores, different content)")

    def _skip_round(self, ctx, rec, closed, v) -> None:
        """The round's aggregation was not re-run: continue from the chain's aggregate (server state is lost)."""
        if ctx.stateful:
            ctx.lost_state = ctx.lost_state or (f"the server optimizer state after round {rec.round} "
                                                "could not be re-derived")
        ctx.global_state = self._chain_aggregate(ctx.plan, closed, v)

    def _chain_aggregate(self, plan, closed, v: RoundVerdict):
        try:
            return bytes_to_state_dict(fetch_document(self.store, closed["aggregate_cid"], closed["aggregate_sha256"],
                                                      max_size=model_size(plan.model)))
        except HashMismatch as exc:
            v.problems.append(f"aggregate {closed['aggregate_cid']}: {exc}")
        except (ContentUnavailable, StoreError):
            v.unverifiable.append(f"the aggregate {closed['aggregate_cid']} is not in the auditor's store: "
                                  "the next round's starting model is unknown")
        except FedchainError as exc:
            v.problems.append(f"aggregate {closed['aggregate_cid']}: {exc}")
        return None

    # -- the scores document ----------------------------------------------------------

    def _scores_doc(self, closed, v: RoundVerdict) -> dict | None:
        try:
            raw = fetch_document(self.store, closed["scores_cid"], closed["scores_sha256"], max_size=MAX_DOCUMENT_SIZE)
            if json_depth(raw) > SCORES_MAX_DEPTH:  # before the parser recurses (see fedchain.serialize.json_depth)
                raise FedchainError(f"nested deeper than a scores document ({SCORES_MAX_DEPTH} levels)")
            doc = json.loads(raw)
        except (ContentUnavailable, StoreError):
            v.unverifiable.append(f"the scores document {closed['scores_cid']} is not in the auditor's store")
            return None
        except (FedchainError, ValueError, RecursionError) as exc:
            v.problems.append(f"scores document {closed['scores_cid']}: {exc}")
            return None
        if not isinstance(doc, dict) or doc.get("format") != SCORES_FORMAT:
            v.problems.append(f"scores document {closed['scores_cid']}: not a {SCORES_FORMAT} document")
            return None
        return doc

    def _claims(self, doc: dict, v: RoundVerdict) -> tuple[set[tuple[str, str]], dict[str, Rejection]]:
        """(included (member, dataset) pairs, {member: Rejection}) as the scores document states them."""
        included: set[tuple[str, str]] = set()
        claimed: dict[str, Rejection] = {}
        for d in doc.get("included", []) if isinstance(doc.get("included"), list) else []:
            if isinstance(d, dict) and isinstance(d.get("participant"), str) and isinstance(d.get("dataset"), str):
                included.add((d["participant"].lower(), d["dataset"]))
            else:
                v.problems.append("scores document: an included entry is malformed")
        rejected = doc.get("rejected", {})
        if not isinstance(rejected, dict):
            v.problems.append("scores document: 'rejected' is not an object")
            return included, claimed
        for member, entry in rejected.items():
            code = entry.get("code") if isinstance(entry, dict) else None
            detail = entry.get("detail") if isinstance(entry, dict) else None
            try:
                claimed[member.lower()] = Rejection(Reason(code), detail if isinstance(detail, str) else "")
            except ValueError:
                v.problems.append(f"scores document: the rejection of {member} has no known reason code ({code!r})")
        return included, claimed

    # -- the coordinator's discretion --------------------------------------------------

    def _check_early_close(self, rec: RoundRecord, v: RoundVerdict) -> None:
        """Closed before the deadline while a dataset whose policy admitted the proposal had not committed.

        The rule of ``Rounds.awaitedCommitments``, from the events: a target is not waited for when its
        owner is not a member, already committed this round (for another of its datasets), or its
        policy refused the proposal at the close.
        """
        if rec.closed_block is None or rec.closed_block > rec.deadline:
            return
        p = self.h.proposals[rec.proposal_id]
        ts = self.h.ended_at.get((rec.proposal_id, rec.round), 0)
        committed = {c.dataset_id for c in rec.commits}
        committers = {c.member.lower() for c in rec.commits}  # a member commits once a round, for one dataset
        for did in p.targets:
            d = self.h.datasets.get(did)
            if d is None or did in committed or d.owner.lower() in committers:
                continue
            owner = self.h.members.get(d.owner)
            if owner is None or not owner.member_at(rec.closed_block):
                continue
            if not self.h.policy_refusal(d, p, rec.closed_block, ts):
                v.problems.append(f"closed at block {rec.closed_block}, before the deadline (block {rec.deadline}), "
                                  f"while dataset {d.name}, whose policy admitted the proposal, had not committed")

    def _replay_failed(self, ctx: "_ProposalContext", rec: RoundRecord, v: RoundVerdict) -> None:
        """A round the coordinator failed must not have had min_participants valid updates."""
        key = (rec.proposal_id, rec.round)
        if ctx.plan.mode == "secagg":  # whether it could complete is the session's outcome on chain
            session = self.h.secure.get(key)
            if session is not None:
                v.problems.extend(self._secagg_session_problems(ctx, rec, session))
                if session.stage == "COMPLETED":
                    # justified only when the messages on chain give no sum (a member's bad message)
                    try:
                        self._secagg_model(ctx, rec, session)
                    except (ContentUnavailable, StoreError):
                        v.unverifiable.append("the round was failed although its secure-aggregation session "
                                              "completed, and a message it needs is missing from the auditor's "
                                              "store (a member's missing message would justify it)")
                    except (FedchainError, KeyError):
                        pass  # the sum cannot be derived from what the chain names: failing it was right
                    else:
                        v.problems.append("the round was failed although its secure-aggregation session completed "
                                          "and its messages give the sum")
            return
        by = self.h.failed_by.get(key, "")
        coordinator = self.h.coordinator_at(rec.failed_block)
        need = ctx.plan.min_participants
        if by != coordinator or len(rec.commits) < need:
            return  # anyone may fail a round with too few commitments: the contract checked that
        derived = self._derive(ctx, rec, rec.failed_block, self.h.ended_at.get(key, 0))
        valid = sum(1 for d in derived if isinstance(d, Accepted))
        unknown = [d.why for d in derived if isinstance(d, Unverifiable)]
        if valid >= need:
            v.problems.append(f"the coordinator failed the round at block {rec.failed_block} although {valid} "
                              f"committed update(s) verify (the plan needs {need})")
        elif valid + len(unknown) >= need:
            v.unverifiable.append(f"the coordinator failed the round with {valid} verifiable update(s) of the {need} "
                                  f"needed; {len(unknown)} cannot be checked ({unknown[0]})")

    def _check_metric(self, ctx: "_ProposalContext", rec: RoundRecord, v: RoundVerdict) -> None:
        """The recorded global metric must be the strategy's mean of the evaluations submitted before it."""
        if rec.global_metric_ppm is None:
            return
        basis = rec.evaluations[: self.h.metric_basis.get((rec.proposal_id, rec.round), len(rec.evaluations))]
        if not basis:
            v.problems.append(f"a global metric ({rec.global_metric_ppm} ppm) was recorded before any evaluation "
                              "was submitted")
            return
        metric = evaluate_config(ctx.plan, rec.round).metric
        try:
            results = [EvaluateResult(e.member, self.h.dataset_name(e.dataset_id), e.n_samples,
                                      {metric: e.metric_ppm / PPM}) for e in basis]
            value = ctx.strategy.aggregate_evaluate(rec.round, results)[metric]
        except FedchainError as exc:
            v.problems.append(f"the recorded global metric cannot be the evaluations' mean: {exc}")
            return
        expected = int(round(value * PPM))
        if expected != rec.global_metric_ppm:
            v.problems.append(f"global metric recorded as {rec.global_metric_ppm} ppm, but the {len(basis)} "
                              f"evaluation(s) submitted before it give {expected} ppm")


class _ProposalContext:
    """What replaying one proposal carries from round to round."""

    def __init__(self, plan) -> None:
        self.plan = plan
        self.layout = model_layout(plan.model)
        self.auditor_keys = [bytes.fromhex(k.removeprefix("0x")) for k in plan.auditors]
        self.strategy = for_plan(plan, dp_noise=False)  # server-side DP: the clean average, its noise is tested
        self.stateful = bool(self.strategy.state())
        self.global_state = initial_state(plan.model, plan.seed)
        self.lost_state = ""
        self.not_recipient = ""
        self._validation = None
        self._validation_loaded = False
        self._validation_why = ""
        self._he_public = None

    def validation_set(self, store, v: "RoundVerdict"):
        """The plan's validation set (None if it names none); ``_MISSING`` (and a reason on ``v``) if unusable."""
        if not self._validation_loaded:
            self._validation_loaded = True
            try:
                self._validation = load_validation_set(store, self.plan)
            except (ContentUnavailable, StoreError) as exc:
                self._validation = _MISSING
                self._validation_why = (f"the plan's validation set is not in the auditor's store "
                                        f"({type(exc).__name__}): contribution scores cannot be recomputed")
            except FedchainError as exc:
                self._validation = _MISSING
                self._validation_why = f"the plan's validation set cannot be used: {exc}"
        if self._validation is _MISSING:
            if "cannot be used" in self._validation_why:
                v.problems.append(self._validation_why)
            else:
                v.unverifiable.append(self._validation_why)
        return self._validation

    def he_public(self, store):
        """``mode = "he"``: the plan's public context, or a sentence saying why the auditor lacks it."""
        if self._he_public is None:
            try:
                self._he_public = he_round.load_public_context(store, self.plan)
            except (ContentUnavailable, StoreError):
                self._he_public = "the plan's public CKKS context is not in the auditor's store"
            except FedchainError as exc:
                self._he_public = f"the plan's public CKKS context does not load: {exc}"
        return self._he_public


#: The validation set could not be loaded (the reason is on the round's verdict).
_MISSING = object()


def _outcome(rec: RoundRecord) -> str:
    if rec.closed is not None:
        return CLOSED
    return FAILED if rec.failed_block is not None else OPEN


def _as_auditor(outcome) -> Outcome | Unverifiable:
    """The coordinator's outcome types as the auditor reads them: absence or a store failure proves nothing."""
    if isinstance(outcome, Unverifiable):
        return outcome
    if isinstance(outcome, StoreFailure):
        return Unverifiable(f"the auditor's store could not deliver it ({outcome.why})")
    if isinstance(outcome, Rejection) and outcome.code == Reason.NOT_FOUND:
        return Unverifiable("the blob is missing from the auditor's store")
    return outcome


def _as_commitments(commits, history: History) -> list[Commitment]:
    return [Commitment(c.member, history.dataset_name(c.dataset_id), c.cid, c.sha256, c.n_samples) for c in commits]


# -- entry points ------------------------------------------------------------------

def replay_trail(trail: Trail, store, auditor, *, anchor: AnchorVerdict | None = None,
                 he_keys: Mapping[str, object] | None = None) -> ReplayReport:
    history = History(trail.events, trail.header.get("params"))
    return Replayer(history, store, auditor, chain_id=trail.chain_id, rounds_address=trail.addresses["Rounds"],
                    documents=trail.documents, anchor=anchor, he_keys=he_keys,
                    statistics_address=trail.addresses.get("Statistics"),
                    secure_address=trail.addresses.get("SecureRounds", "")).run()


def replay_live(fed, store, auditor, *, he_keys: Mapping[str, object] | None = None) -> ReplayReport:
    history = History(list(chain_events(fed, fed.deployment.deploy_block)), dict(fed.deployment.params))
    return Replayer(history, store, auditor, chain_id=fed.deployment.chain_id,
                    rounds_address=fed.deployment.addresses["Rounds"],
                    anchor=AnchorVerdict(ANCHORED, f"events read from the node at {fed.chain.url}"),
                    statistics_address=fed.deployment.addresses.get("Statistics"),
                    he_keys=he_keys, secure_address=fed.deployment.addresses.get("SecureRounds", "")).run()


_STYLE = {VERIFIED: "green", DISCREPANCY: "red", UNVERIFIABLE: "yellow"}


def print_report(report: ReplayReport, console) -> None:
    t = Table(title="audit replay")
    for col in ("proposal", "round", "chain", "verdict", "participants", "aggregate CID"):
        t.add_column(col)
    for v in report.rounds:
        t.add_row(str(v.proposal_id), str(v.round), v.outcome, f"[{_STYLE[v.status]}]{v.status}[/]",
                  str(len(v.participants)), v.aggregate_cid)
    console.print(t)
    for v in report.rounds:
        for p in v.problems:
            console.print(f"[red]proposal {v.proposal_id} round {v.round}:[/] {escape(p)}")
        for u in v.unverifiable:
            console.print(f"[yellow]proposal {v.proposal_id} round {v.round} unverifiable:[/] {escape(u)}")
    for g in report.governance:
        console.print(f"[red]governance:[/] {escape(g)}")
    a = report.anchor
    console.print(f"[{_STYLE.get(a.status, 'yellow')}]trail {a.status}[/]: {escape(a.detail)}")
    n_ok = sum(1 for v in report.rounds if v.ok)
    n_unv = sum(1 for v in report.rounds if v.status == UNVERIFIABLE)
    n_bad = sum(1 for v in report.rounds if v.status == DISCREPANCY)
    parts = [f"{n_ok}/{len(report.rounds)} rounds VERIFIED"]
    if n_unv:
        parts.append(f"{n_unv} UNVERIFIABLE")
    if n_bad:
        parts.append(f"{n_bad} with a DISCREPANCY")
    tail = {VERIFIED: "", UNVERIFIABLE: " — [yellow]not everything could be checked[/]",
            DISCREPANCY: " — [red]discrepancies found[/]"}[report.status]
    console.print(", ".join(parts) + f"; overall {report.status}" + tail)
