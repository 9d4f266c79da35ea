"""The coordinator: drive approved proposals round by round.

For each round ``r`` (1-based on chain) of an approved proposal the
:class:`Coordinator`

1. refuses on its own unless the proposal is Approved on chain and ``r`` is
   within its approved rounds (the contract refuses too);
2. opens the round on chain;
3. once enough commitments are in (or the deadline passed) collects and
   verifies every committed update (:mod:`fedchain.coordinator.collect`: the
   dataset's policy at close, then fetch bounded and hash-checked, envelope v2
   opened with the exact expected recipients, validation against the plan's
   model), all of the round's updates concurrently under one time budget.
   An update failing any check is *rejected* with a stable reason code and a
   short public detail and left out; nothing a member sends can raise out of
   the round;
4. aggregates the valid updates with the plan's strategy, pins the new
   global model (canonical safetensors, public to the consortium's store) and
   a scores document (each member's contribution score by the plan's
   ``[contribution]`` method, what the defences did to each update with a
   reason code and a number, the updates used, ``{participant: {code,
   detail}}`` for the rejected ones), and closes the round with both hashes --
   or reports that too few valid updates remain (the service marks the round
   Failed after its deadline);
5. after the nodes submitted their evaluations, records the sample-weighted
   mean metric on chain.

Under ``mode = "he"`` step 3-4 become: fetch and check each committed CKKS
ciphertext, sum them with the plan's public context (no secret key here), have the
plan's decryptor (``decryptor=``) decrypt the sum, check its signed statement and
publish the model with the statement in the scores document. Under ``mode =
"secagg"`` the round also runs a ``SecureRounds`` session (:meth:`Coordinator.secagg_start`
after opening); at close the session is concluded and, only if Completed, the sum
is unmasked from the messages the chain names and published (a Failed session
publishes nothing). See :mod:`fedchain.he_round` and :mod:`fedchain.secagg_round`.

Everything in steps 3-5 is re-derived by ``audit replay`` (codes compared, the
aggregate and scores recomputed, the metric recomputed from the evaluation
events, the timing of a close or fail judged against the deadline).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from fedchain import he_round, lifecycle, logs, secagg_round
from fedchain.config import load_role_config
from fedchain.content import MAX_DOCUMENT_SIZE, fetch_document, pin_document
from fedchain.contracts.bindings import Chain, ChainRevert, Deployment, TransactionConflict
from fedchain.contracts.errors import policy_reason
from fedchain.contracts.readmodel import APPROVED
from fedchain.coordinator.collect import (
    DEFAULT_FETCH_WORKERS,
    Outcome,
    StoreOutage,
    UpdateJob,
    check_update,
    check_updates,
    cid_rejection,
    public_rejection,
)
from fedchain.coordinator.contributions import Score
from fedchain.coordinator.scoring import RoundScores, load_validation_set, score_round
from fedchain.coordinator.strategies.base import ClientUpdate, Decision, EvaluateResult, Strategy
from fedchain.coordinator.strategies.registry import for_plan
from fedchain.envelope import EnvelopeContext
from fedchain.errors import ConfigError, ContentUnavailable, FedchainError
from fedchain.ipfs.store import StoreError, StoreUnavailable
from fedchain.identity import is_dev_identity, require_chain_allows
from fedchain.ipfs import open_store
from fedchain.models import initial_state
from fedchain.plan import (
    MAX_PLAN_BYTES,
    TrainingPlan,
    canonical_json,
    evaluate_config,
    sha256_hex,
    train_config,
    verify_plan_bytes,
)
from fedchain.serialize import bytes_to_state_dict, state_dict_to_bytes
from fedchain.coordinator.statistics import pool_moments
from fedchain.usecases import progress, secure_rounds
from fedchain.usecases import statistics as uc_statistics
from fedchain.usecases.he_decryptor import HttpDecryptor
from fedchain.usecases.privacy import privacy_mismatch
from fedchain.validation import Accepted, ModelLayout, Reason, Rejection, model_layout, model_size

PPM = 1_000_000
SCORES_FORMAT = "fedchain-scores/3"  # 3: method, values and the defences' decisions
#: Seconds the coordinator waits for all of a round's updates together (see ``collect``).
DEFAULT_FETCH_BUDGET = 120.0

log = logging.getLogger("fedchain.coordinator")


def _log_event(msg: str, *, level: int = logging.INFO, **fields) -> None:
    logs.event(log, "%s", msg, level=level, **fields)


class NotApproved(FedchainError):
    """The coordinator will not open a round the chain has not approved."""


@dataclass
class Commitment:
    """One update commitment as recorded on chain."""

    participant: str
    dataset: str
    cid: str
    sha256: str
    n_samples: int
    block: int | None = None  # block of the commitment (the sender's key is read as of it)
    dataset_id: bytes | None = None  # the dataset's on-chain id (its policy is checked at close)


@dataclass
class RoundResult:
    """What happened to one round."""

    proposal_id: int
    round: int
    closed: bool
    participants: list[str] = field(default_factory=list)
    rejected: dict[str, Rejection] = field(default_factory=dict)  # participant -> code and public detail
    aggregate_cid: str = ""
    aggregate_sha256: str = ""
    scores: dict[str, float] = field(default_factory=dict)  # member -> contribution share (sums to 1 or 0)
    values: dict[str, float] = field(default_factory=dict)  # member -> the method's raw value
    decisions: list[Decision] = field(default_factory=list)  # what the defences did, with reason codes
    scores_cid: str = ""
    gas_used: int = 0
    aggregate_seconds: float = 0.0  # wall time of the strategy's aggregation (robust rules included)
    reason: str = ""


def scores_document(proposal_id: int, round_: int, scores: RoundScores,
                    included: list[Commitment], rejected: Mapping[str, Rejection],
                    decryption: Mapping[str, str] | None = None) -> bytes:
    """Canonical JSON of a round's scores document (what is pinned and hashed on chain).

    * ``method``, ``scores`` (member -> share of the positive contribution, the
      number the report plots) and ``values`` (member -> the method's raw value;
      see :mod:`fedchain.coordinator.scoring`);
    * ``decisions``: what the plan's defences did to each update -- excluded,
      clipped, re-weighted or trimmed, with the reason code and the number behind
      it (a Krum score, a norm, a weight, a trimmed share);
    * ``included``: the updates aggregated; ``rejected`` maps each left-out
      participant to its :class:`~fedchain.validation.Rejection` (the stable code,
      which replay compares, and the short public detail);
    * ``decryption`` (``mode = "he"``): the decryptor's signed statement
      (``{"statement": ..., "signature": ...}``, see :mod:`fedchain.he_round`).
    """
    extra = {"decryption": dict(decryption)} if decryption is not None else {}
    return canonical_json({
        **extra,
        "format": SCORES_FORMAT,
        "proposal": proposal_id,
        "round": round_,
        "method": scores.method,
        "scores": {p: round(s.share, 12) for p, s in sorted(scores.scores.items())},
        "values": {p: round(s.value, 12) for p, s in sorted(scores.scores.items())},
        "decisions": [d.to_dict() for d in scores.decisions],
        "included": sorted(
            ({"participant": c.participant.lower(), "dataset": c.dataset, "cid": c.cid, "n_samples": c.n_samples}
             for c in included),
            key=lambda d: (d["participant"], d["dataset"]),
        ),
        "rejected": {p.lower(): {"code": str(r.code), "detail": r.detail} for p, r in sorted(rejected.items())},
    })


def sample_scores(shares: Mapping[str, float]) -> RoundScores:
    """Scores under ``secagg`` / ``he``: each member's share of the samples (method ``samples``).

    The coordinator never sees one update in those modes, so no marginal value can be
    measured and no defence decides anything; the weights are all it knows.
    """
    return RoundScores("samples", {m: Score(w, w) for m, w in shares.items()}, [])


class Coordinator:
    """Drives rounds; ``fed`` is the contracts façade acting as the coordinator.

    ``log(msg, level=…, **fields)`` receives progress lines with structured fields
    (``proposal``, ``round`` …); by default they go to the ``fedchain.coordinator`` logger.
    """

    def __init__(self, fed, store, identity, *, log: Callable[..., None] | None = None,
                 fetch_budget: float | None = DEFAULT_FETCH_BUDGET, fetch_workers: int = DEFAULT_FETCH_WORKERS,
                 decryptor: Callable[[he_round.DecryptRequest], he_round.Decryption] | None = None) -> None:
        self.fed = fed
        #: ``mode = "he"``: who decrypts the encrypted sum (the plan's decryptor, reached however the
        #: deployment wires it); the coordinator itself never holds a CKKS secret key.
        self.decryptor = decryptor
        self.store = store
        self.identity = identity
        self.log = log or _log_event
        #: Seconds for fetching all of a round's updates together (None: no limit).
        self.fetch_budget = fetch_budget
        self.fetch_workers = fetch_workers
        self._layouts: dict[int, ModelLayout] = {}
        self._plans: dict[int, TrainingPlan] = {}
        self._strategies: dict[int, Strategy] = {}
        self._globals: dict[int, dict] = {}
        self._names: dict[bytes, str] = {}
        self._validation: dict[int, object] = {}
        self._he_public: dict[int, object] = {}
        self._early: dict[tuple[int, int], dict[UpdateJob, Future]] = {}  # (proposal, round) -> checks begun
        self._early_lock = threading.Lock()
        self._early_queue: queue.SimpleQueue = queue.SimpleQueue()
        self._early_worker: threading.Thread | None = None

    # -- plan, approval, models --------------------------------------------------

    def plan(self, proposal_id: int) -> TrainingPlan:
        if proposal_id not in self._plans:
            p = self.fed.proposals.proposal(proposal_id)
            self._plans[proposal_id] = verify_plan_bytes(
                fetch_document(self.store, p.plan_cid, p.plan_sha256, max_size=MAX_PLAN_BYTES), p.plan_sha256
            )
        return self._plans[proposal_id]

    def publish_statistics(self, proposal_id: int):
        """The statistics phase: pool the committed moments, pin the statistics document, publish it on chain."""
        pooled = pool_moments(self.fed.read_model(), self.store, self.fed.deployment, proposal_id, self.identity,
                              self.recipients(proposal_id))
        pinned = pin_document(self.store, pooled.document)
        tx = self.fed.statistics.publish_statistics(proposal_id, pinned.cid, pinned.sha256)
        self.log(f"published the pooled statistics of proposal {proposal_id}: {pooled.contributors} hospital(s), "
                 f"{len(pooled.rejected)} left out; {pinned.cid}", proposal=proposal_id, round=0, cid=pinned.cid,
                 tx=tx.tx_hash)
        return tx

    def check_approved(self, proposal_id: int, round_: int) -> None:
        """Raise :class:`NotApproved` unless the chain approved this proposal and round.

        Approval is final, so the events suffice once they show it (the contract's ``openRound``
        checks it again); otherwise the proposal is read for its current state.
        """
        seen = self.fed.read_model().proposals.get(int(proposal_id))
        if seen is not None and seen.final_state == APPROVED:
            if not 1 <= round_ <= seen.rounds:
                raise NotApproved(f"proposal {proposal_id} was approved for rounds 1..{seen.rounds}, not round {round_}")
            return
        p = self.fed.proposals.proposal(proposal_id)
        if p is None:
            raise NotApproved(f"proposal {proposal_id} does not exist: no round opens")
        if p.state.name != "APPROVED":
            raise NotApproved(f"proposal {proposal_id} is {p.state.name.lower()}, not approved: no round opens")
        if not 1 <= round_ <= p.rounds:
            raise NotApproved(f"proposal {proposal_id} was approved for rounds 1..{p.rounds}, not round {round_}")

    def strategy(self, proposal_id: int) -> Strategy:
        if proposal_id not in self._strategies:
            plan = self.plan(proposal_id)
            self._strategies[proposal_id] = for_plan(plan)
            self._globals[proposal_id] = initial_state(plan.model, plan.seed)
            self._catch_up(proposal_id)
        return self._strategies[proposal_id]

    def _catch_up(self, proposal_id: int) -> None:
        """Rebuild the global model and server-optimizer state from rounds already closed on chain.

        A coordinator that restarts mid-proposal re-aggregates every closed round
        from the updates its scores document lists (decrypting them again) and
        checks each result against the aggregate hash on chain, so FedAdam/FedYogi
        continue with exactly the state they had.
        """
        strategy = self._strategies[proposal_id]
        state = self._globals[proposal_id]
        plan = self.plan(proposal_id)
        for r in range(1, self.fed.rounds.last_round(proposal_id) + 1):
            info = self.fed.rounds.round_info(proposal_id, r)
            if info.phase.name != "CLOSED":
                continue
            if plan.mode != "plain":  # the updates are hidden; the mean strategies keep no server state
                state = bytes_to_state_dict(fetch_document(self.store, info.aggregate_cid, info.aggregate_sha256,
                                                           max_size=model_size(plan.model)))
                continue
            doc = json.loads(fetch_document(self.store, info.scores_cid, info.scores_sha256, max_size=MAX_DOCUMENT_SIZE))
            used = {(d["participant"], d["dataset"]) for d in doc["included"]}
            listed = [c for c in self.commitments(proposal_id, r) if (c.participant.lower(), c.dataset) in used]
            outcomes = self._verify(proposal_id, r, listed)
            updates = []
            for c in listed:
                got = outcomes[c.participant.lower()]
                if not isinstance(got, Accepted):
                    raise FedchainError(f"cannot resume proposal {proposal_id}: the update of {c.participant} that "
                                        f"round {r} aggregated does not verify now ({public_rejection(got).code})")
                updates.append(ClientUpdate(c.participant, c.dataset, c.n_samples, got.state))
            raw = state_dict_to_bytes(strategy.aggregate_train(r, state, updates))
            if self.plan(proposal_id).privacy.mode == "server":
                # server-side DP noise is fresh, never re-derivable: continue from the chain's aggregate
                # (its inner strategies, FedAvg/FedProx, keep no server state)
                raw = fetch_document(self.store, info.aggregate_cid, info.aggregate_sha256,
                                     max_size=model_size(self.plan(proposal_id).model))
            elif sha256_hex(raw) != "0x" + bytes(info.aggregate_sha256).hex():
                raise FedchainError(f"cannot resume proposal {proposal_id}: round {r}'s aggregate on chain "
                                    "is not what its listed updates give")
            state = bytes_to_state_dict(raw)
            self.log(f"resumed round {r} of proposal {proposal_id} from the chain", proposal=proposal_id, round=r)
        self._globals[proposal_id] = state

    def validation_set(self, proposal_id: int):
        """The plan's public validation set (fetched once, by hash), or None when the plan names none."""
        if proposal_id not in self._validation:
            self._validation[proposal_id] = load_validation_set(self.store, self.plan(proposal_id))
        return self._validation[proposal_id]

    def global_state(self, proposal_id: int) -> dict:
        self.strategy(proposal_id)
        return self._globals[proposal_id]

    def forget(self, proposal_id: int) -> None:
        """Drop the in-memory aggregation state of a proposal; the next use rebuilds it from the chain."""
        self._strategies.pop(proposal_id, None)
        self._globals.pop(proposal_id, None)

    # -- round steps -------------------------------------------------------------

    def open_round(self, proposal_id: int, round_: int):
        self.check_approved(proposal_id, round_)
        plan = self.plan(proposal_id)  # a plan that does not verify stops us before anything opens
        config = self.strategy(proposal_id).configure_train(
            round_, self.global_state(proposal_id), train_config(plan, round_))
        tx = self.fed.rounds.open_round(proposal_id, round_)
        opt = config.optimizer
        self.log(f"opened round {round_} of proposal {proposal_id} (deadline block {tx.value}): nodes train "
                 f"{config.local_epochs} epoch(s), batch {config.batch_size}, {opt.name} lr {opt.lr:g}"
                 + (f", proximal mu {config.proximal_mu:g}" if config.proximal_mu else ""),
                 proposal=proposal_id, round=round_, deadline=tx.value)
        return tx

    def commitments(self, proposal_id: int, round_: int) -> list[Commitment]:
        """The round's update commitments, from the chain's events."""
        return [
            Commitment(participant=c.member, dataset=self._dataset_name(c.dataset), cid=c.cid, sha256=c.sha256,
                       n_samples=c.sample_count, block=c.block_number, dataset_id=bytes(c.dataset))
            for c in self.fed.rounds.commitments(proposal_id, round_)
        ]

    def _dataset_name(self, dataset_id: bytes) -> str:
        if dataset_id not in self._names:
            info = self.fed.registry.dataset(dataset_id)
            self._names[dataset_id] = info.name if info is not None else "0x" + dataset_id.hex()
        return self._names[dataset_id]

    def layout(self, proposal_id: int) -> ModelLayout:
        """The plan model's layout (names, dtypes, shapes) every update must have."""
        if proposal_id not in self._layouts:
            self._layouts[proposal_id] = model_layout(self.plan(proposal_id).model)
        return self._layouts[proposal_id]

    def recipients(self, proposal_id: int) -> list[bytes]:
        """The exact X25519 keys every update must be sealed for: this coordinator's and the plan's auditors'."""
        auditors = [bytes.fromhex(k.removeprefix("0x")) for k in self.plan(proposal_id).auditors]
        return [self.identity.x25519_public, *auditors]

    def _jobs(self, proposal_id: int, round_: int, commitments: Sequence[Commitment]) -> list[UpdateJob]:
        return [
            UpdateJob(key=c.participant.lower(), cid=c.cid, sha256=c.sha256, ctx=EnvelopeContext(
                chain_id=self.fed.deployment.chain_id, contract=self.fed.addresses["Rounds"],
                proposal_id=proposal_id, round=round_, sender=c.participant))
            for c in commitments
        ]

    def _verify(self, proposal_id: int, round_: int, commitments: list[Commitment]) -> dict[str, Outcome]:
        """Fetch, open and validate ``commitments`` together (see :func:`~fedchain.coordinator.collect.check_updates`),
        taking what :meth:`check_early` already found.

        Every update goes through ``check_updates`` under its one time budget: an early check that
        has not begun is dropped and done now beside the others; one under way (or done) is waited
        for there, so an early check stuck on a CID that exists nowhere costs the round the budget
        once, as at the close, and never delays the other updates.
        """
        with self._early_lock:
            early = self._early.pop((proposal_id, round_), {})
        for future in early.values():
            future.cancel()  # not begun yet: checked now, in parallel with the rest

        def check(store, job: UpdateJob, *args) -> Outcome:
            future = early.get(job)
            if future is not None and not future.cancelled():
                try:
                    got = future.result()
                except StoreError:  # our store was down then: ask again now
                    got = None
                if isinstance(got, (Accepted, Rejection)):
                    return got
            return check_update(store, job, *args)  # a store failure says nothing about the member's bytes

        return check_updates(self.store, self._jobs(proposal_id, round_, commitments), self.identity,
                             self.layout(proposal_id), self.recipients(proposal_id), budget=self.fetch_budget,
                             workers=self.fetch_workers, check=check)

    def check_early(self, proposal_id: int, round_: int) -> int:
        """Begin checking the round's commitments already on chain, on a background thread, so that the
        close finds them done; returns how many checks began.

        Only steps 2 and 3 of :mod:`~fedchain.coordinator.collect` run early (the CID, then fetch,
        sha256, open, validate): their outcome is fixed by the bytes the chain's sha256 names, so it is
        the same at the close. The dataset's policy and the privacy charged are still asked at the
        close, as always, and an update the store failed to deliver early is fetched again then. Plans
        under ``he`` or ``secagg`` close their own way: nothing begins.
        """
        if self.plan(proposal_id).mode in ("he", "secagg"):
            return 0
        layout, recipients = self.layout(proposal_id), self.recipients(proposal_id)
        jobs = self._jobs(proposal_id, round_, self.commitments(proposal_id, round_))
        begun = 0
        with self._early_lock:
            for key in [k for k in self._early if k[0] == proposal_id and k[1] < round_]:
                del self._early[key]  # a round that never closed: its checks are of no use now
            running = self._early.setdefault((proposal_id, round_), {})
            for job in jobs:
                if job not in running:
                    running[job] = future = Future()
                    self._early_queue.put((future, job, layout, recipients))
                    begun += 1
            if begun and self._early_worker is None:
                # a daemon thread: a stopping coordinator never waits for an early fetch (the close redoes it)
                self._early_worker = threading.Thread(target=self._check_early_loop, name="fedchain-early",
                                                      daemon=True)
                self._early_worker.start()
        return begun

    def _check_early_loop(self) -> None:
        while True:
            future, job, layout, recipients = self._early_queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(check_update(self.store, job, self.identity, layout, recipients))
            except BaseException as exc:  # noqa: BLE001 - handed to the close, which checks again
                future.set_exception(exc)

    def collect(self, proposal_id: int, round_: int) -> list[tuple[Commitment, Outcome]]:
        """Every commitment of the round with its outcome: the tensors, or why it is left out.

        The dataset's policy is asked first (as of now, just before the close): an
        update whose policy no longer admits the proposal is ``NOT_ADMITTED`` and is
        not fetched. The rest are verified together under :attr:`fetch_budget`.
        Raises :class:`~fedchain.coordinator.collect.StoreOutage` (our store is
        down), never anything a member caused.
        """
        commitments = self.commitments(proposal_id, round_)
        outcomes: dict[str, Outcome] = {}
        admitted: list[Commitment] = []
        plan, model = self.plan(proposal_id), self.fed.read_model()
        for c in commitments:
            verdict = self.fed.registry.admits(c.dataset_id, proposal_id) if c.dataset_id is not None else None
            wrong = privacy_mismatch(plan, model, proposal_id, round_, c.participant, c.dataset_id, c.n_samples)
            if verdict is not None and not verdict.ok:
                outcomes[c.participant.lower()] = Rejection(
                    Reason.NOT_ADMITTED,
                    f"the dataset's policy no longer admits the proposal ({policy_reason(verdict.reason)})")
            elif wrong:
                outcomes[c.participant.lower()] = Rejection(Reason.WRONG_PRIVACY, wrong)
            else:
                admitted.append(c)
        outcomes.update(self._verify(proposal_id, round_, admitted))
        return [(c, outcomes[c.participant.lower()]) for c in commitments]

    def close_round(self, proposal_id: int, round_: int) -> RoundResult:
        """Verify, aggregate, publish and close — or report that too few valid updates remain."""
        plan = self.plan(proposal_id)
        strategy = self.strategy(proposal_id)
        if plan.mode == "he":
            return self._close_he(proposal_id, round_, plan)
        if plan.mode == "secagg":
            return self._close_secagg(proposal_id, round_, plan)
        valid: list[tuple[Commitment, dict]] = []
        rejected: dict[str, Rejection] = {}
        for c, outcome in self.collect(proposal_id, round_):
            if isinstance(outcome, Accepted):
                valid.append((c, outcome.state))
                continue
            rejected[c.participant] = rej = public_rejection(outcome)
            self.log(f"rejected update of {c.participant} in round {round_}: {rej.code} ({rej.detail})",
                     level=logging.WARNING, proposal=proposal_id, round=round_, participant=c.participant,
                     code=rej.code)
        n_valid = len({c.participant.lower() for c, _ in valid})
        if n_valid < plan.min_participants:
            why = f"{n_valid} participant(s) with valid updates, the plan needs {plan.min_participants}"
            return RoundResult(proposal_id, round_, closed=False, rejected=rejected, reason=why)
        updates = [ClientUpdate(c.participant, c.dataset, c.n_samples, state) for c, state in valid]
        validation = self.validation_set(proposal_id)  # before aggregating: a missing set changes nothing
        start = self.global_state(proposal_id)
        t0 = time.perf_counter()
        new_global = strategy.aggregate_train(round_, start, updates)
        seconds = time.perf_counter() - t0
        model_bytes = state_dict_to_bytes(new_global)
        published = bytes_to_state_dict(model_bytes)
        # The aggregate is pinned while the scores are computed (both only read the published bytes; a
        # close that then fails leaves it pinned, as a refused closeRound does).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedchain-pin") as pinner:
            pinning = pinner.submit(pin_document, self.store, model_bytes)
            scores = score_round(plan, round_, start, published, updates, strategy.last_decisions, validation)
            agg_cid, agg_sha = pinning.result()
        for d in scores.decisions:
            self.log(f"round {round_}: {d.action} the update of {d.participant} ({d.reason} {d.value:.6g})",
                     proposal=proposal_id, round=round_, participant=d.participant, action=d.action,
                     reason=d.reason, value=d.value)
        doc = scores_document(proposal_id, round_, scores, [c for c, _ in valid], rejected)
        sc_cid, sc_sha = pin_document(self.store, doc)
        tx = self.fed.rounds.close_round(proposal_id, round_, agg_cid, agg_sha, sc_cid, sc_sha)
        # Keep exactly what was published as the next round's starting point (scoring only read it).
        self._globals[proposal_id] = published
        self.log(f"closed round {round_} of proposal {proposal_id}: {agg_cid} ({len(valid)} update(s), "
                 f"{len(rejected)} rejected)", proposal=proposal_id, round=round_, aggregate=agg_cid,
                 participants=len(valid), rejected=len(rejected))
        return RoundResult(
            proposal_id, round_, closed=True, participants=[c.participant for c, _ in valid], rejected=rejected,
            aggregate_cid=agg_cid, aggregate_sha256=agg_sha, scores=scores.shares, values=scores.values,
            decisions=list(scores.decisions), scores_cid=sc_cid, gas_used=tx.gas_used, aggregate_seconds=seconds,
        )

    # -- mode = "secagg" --------------------------------------------------------------

    def phase_blocks(self, proposal_id: int) -> int:
        """Blocks per secure-aggregation phase: the plan's, or a quarter of the round's deadline."""
        plan = self.plan(proposal_id)
        return plan.secagg.phase_blocks or max(1, (plan.round_deadline_blocks - 1) // 4)

    def secagg_start(self, proposal_id: int, round_: int):
        """Start the round's SecureRounds session (right after opening the round)."""
        plan = self.plan(proposal_id)
        n = len(self.fed.proposals.proposal(proposal_id).targets)
        tx = self.fed.secure.start(proposal_id, round_, n - plan.secagg.max_dropouts, self.phase_blocks(proposal_id))
        self.log(f"started the secure-aggregation session of round {round_} of proposal {proposal_id} "
                 f"(threshold {n - plan.secagg.max_dropouts} of {n})", proposal=proposal_id, round=round_)
        return tx

    def _close_secagg(self, proposal_id: int, round_: int, plan: TrainingPlan) -> RoundResult:
        """Conclude the session; if Completed, unmask the sum from the chain's messages, publish, close.
        A Failed session publishes nothing (the round is failed after its deadline)."""
        session = self.fed.secure.session(proposal_id, round_)
        if session.stage.name == "RUNNING":
            try:
                self.fed.secure.conclude(proposal_id, round_)
            except ChainRevert as exc:
                if exc.error != "SecureRoundsTooEarly":
                    raise
                return RoundResult(proposal_id, round_, closed=False, reason="the secure-aggregation session is "
                                                                             "not decided yet")
            session = self.fed.secure.session(proposal_id, round_)
        if session.stage.name != "COMPLETED":
            why = (f"the secure-aggregation session {session.stage.name.lower()}: keys {session.advertised}, shares "
                   f"{session.shared}, masked inputs {session.masked}, unmasking {session.unmasked}; threshold "
                   f"{session.threshold}")
            self.log(f"round {round_} of proposal {proposal_id}: {why}; nothing is published", level=logging.WARNING,
                     proposal=proposal_id, round=round_)
            return RoundResult(proposal_id, round_, closed=False, reason=why)
        f, cfg = secure_rounds.config(self.fed, plan, proposal_id, round_)
        msgs = [secure_rounds.phase_messages(self.fed, self.store, f, cfg, k) for k in range(4)]
        result = secagg_round.reconstruct(cfg, *msgs)
        model_bytes = state_dict_to_bytes(secagg_round.model_from_sum(result, self.layout(proposal_id)))
        agg_cid, agg_sha = pin_document(self.store, model_bytes)
        u3 = set(self.fed.secure.record(proposal_id, round_).masked)
        used = [c for c in self.commitments(proposal_id, round_) if c.participant.lower() in u3]
        weights = he_round.fedavg_weights([c.n_samples for c in used])
        shares = {c.participant.lower(): w for c, w in zip(used, weights)}
        sc_cid, sc_sha = pin_document(self.store, scores_document(proposal_id, round_, sample_scores(shares), used, {}))
        tx = self.fed.rounds.close_round(proposal_id, round_, agg_cid, agg_sha, sc_cid, sc_sha)
        self._globals[proposal_id] = bytes_to_state_dict(model_bytes)
        self.log(f"closed round {round_} of proposal {proposal_id} under secagg: {agg_cid} (sum of {len(used)} "
                 f"masked input(s), {session.unmasked} unmasking response(s))", proposal=proposal_id, round=round_,
                 aggregate=agg_cid, participants=len(used))
        return RoundResult(proposal_id, round_, closed=True, participants=[c.participant for c in used],
                           aggregate_cid=agg_cid, aggregate_sha256=agg_sha, scores=shares, scores_cid=sc_cid,
                           gas_used=tx.gas_used)

    # -- mode = "he" ------------------------------------------------------------------

    def public_context(self, proposal_id: int):
        """The plan's public CKKS context (hash-checked; a context with a secret key is refused)."""
        if proposal_id not in self._he_public:
            self._he_public[proposal_id] = he_round.load_public_context(self.store, self.plan(proposal_id))
        return self._he_public[proposal_id]

    def collect_he(self, proposal_id: int, round_: int) -> list[tuple[Commitment, object]]:
        """Every commitment with its ciphertext, or the :class:`Rejection` that leaves it out
        (policy at close, CID, size, hash, context, shape: what replay re-derives)."""
        public, layout = self.public_context(proposal_id), self.layout(proposal_id)
        out = []
        for c in self.commitments(proposal_id, round_):
            verdict = self.fed.registry.admits(c.dataset_id, proposal_id) if c.dataset_id is not None else None
            if verdict is not None and not verdict.ok:
                out.append((c, Rejection(Reason.NOT_ADMITTED, "the dataset's policy no longer admits the proposal "
                                                              f"({policy_reason(verdict.reason)})")))
                continue
            bad = cid_rejection(c.cid)
            if bad is not None:
                out.append((c, bad))
                continue
            try:
                out.append((c, he_round.check_input(self.store, c.cid, c.sha256, public, layout)))
            except StoreUnavailable:
                raise StoreOutage("the content store is unreachable; the round's updates cannot be checked now") from None
            except (StoreError, ContentUnavailable):
                out.append((c, Rejection(Reason.NOT_FOUND, "the coordinator could not fetch it")))
        return out

    def _close_he(self, proposal_id: int, round_: int, plan: TrainingPlan) -> RoundResult:
        """Sum the ciphertexts (public context only), have the decryptor decrypt the sum, publish, close."""
        if self.decryptor is None:
            raise ConfigError("mode = \"he\": this coordinator has no way to reach the plan's decryptor")
        valid, rejected = [], {}
        for c, got in self.collect_he(proposal_id, round_):
            if isinstance(got, Rejection):
                rejected[c.participant] = got
                self.log(f"rejected update of {c.participant} in round {round_}: {got.code} ({got.detail})",
                         level=logging.WARNING, proposal=proposal_id, round=round_, participant=c.participant,
                         code=got.code)
            else:
                valid.append((c, got))
        n_valid = len({c.participant.lower() for c, _ in valid})
        need = max(2, plan.min_participants)
        if n_valid < need:
            why = (f"{n_valid} participant(s) with valid ciphertexts, mode he needs {need} (the plan's "
                   "min_participants, and never one alone)")
            return RoundResult(proposal_id, round_, closed=False, rejected=rejected, reason=why)
        valid.sort(key=lambda cv: (cv[0].participant.lower(), cv[0].dataset))
        weights = he_round.fedavg_weights([c.n_samples for c, _ in valid])
        encrypted_sum = self.public_context(proposal_id).weighted_sum([v for _, v in valid], weights)
        sum_cid, sum_sha = pin_document(self.store, encrypted_sum.encode())
        inputs = tuple(he_round.HEInput(c.participant, c.dataset, c.cid, he_round.hex_sha256(c.sha256), c.n_samples)
                       for c, _ in valid)
        dec = self.decryptor(he_round.DecryptRequest(
            chain_id=self.fed.deployment.chain_id, rounds=self.fed.addresses["Rounds"], proposal=proposal_id,
            round=round_, plan=plan, inputs=inputs, aggregate_cid=sum_cid, aggregate_sha256="0x" + sum_sha))
        # What we publish is what the decryptor signed: check before closing.
        doc = he_round.verify_statement(dec.statement, dec.signature, plan.he.decryptor)
        if doc.get("model_sha256") != dec.model_sha256.lower() or doc.get("aggregate_sha256") != "0x" + sum_sha:
            raise he_round.HERoundError("the decryptor's statement does not name the sum and the model it returned")
        model_bytes = fetch_document(self.store, dec.model_cid, dec.model_sha256, max_size=model_size(plan.model))
        shares = {c.participant.lower(): w for (c, _), w in zip(valid, weights)}
        scores_doc = scores_document(proposal_id, round_, sample_scores(shares), [c for c, _ in valid], rejected,
                                     decryption={"statement": dec.statement, "signature": dec.signature,
                                                 "aggregate_cid": sum_cid})
        sc_cid, sc_sha = pin_document(self.store, scores_doc)
        tx = self.fed.rounds.close_round(proposal_id, round_, dec.model_cid, dec.model_sha256, sc_cid, sc_sha)
        self._globals[proposal_id] = bytes_to_state_dict(model_bytes)
        self.log(f"closed round {round_} of proposal {proposal_id} under he: {dec.model_cid} ({len(valid)} "
                 f"ciphertext(s) summed, {len(rejected)} rejected)", proposal=proposal_id, round=round_,
                 aggregate=dec.model_cid, participants=len(valid), rejected=len(rejected))
        return RoundResult(
            proposal_id, round_, closed=True, participants=[c.participant for c, _ in valid], rejected=rejected,
            aggregate_cid=dec.model_cid, aggregate_sha256=dec.model_sha256, scores=shares, scores_cid=sc_cid,
            gas_used=tx.gas_used,
        )

    def fail_round(self, proposal_id: int, round_: int):
        return self.fed.rounds.fail_round(proposal_id, round_)

    def record_metric(self, proposal_id: int, round_: int) -> float | None:
        """Sample-weighted mean of the evaluations submitted for the round; recorded on chain."""
        strategy = self.strategy(proposal_id)
        config = strategy.configure_evaluate(
            round_, self.global_state(proposal_id), evaluate_config(self.plan(proposal_id), round_))
        results = [
            EvaluateResult(e.member, self._dataset_name(e.dataset), e.sample_count, {config.metric: e.metric_ppm / PPM})
            for e in self.fed.rounds.evaluations(proposal_id, round_)
        ]
        if not results:
            return None
        value = strategy.aggregate_evaluate(round_, results)[config.metric]
        self.fed.rounds.record_global_metric(proposal_id, round_, int(round(value * PPM)))
        self.log(f"recorded round {round_}'s global {config.metric} {value:.4f} (mean of {len(results)} "
                 "evaluation(s) weighted by samples)", proposal=proposal_id, round=round_,
                 **{config.metric: round(value, 6)}, evaluations=len(results))
        return value


# -- long-running service -------------------------------------------------------------

#: Reverts that mean "another coordinator (or the deadline) got there first": the step is
#: dropped with a log line and the loop reads the chain again.
MOVED_ON = frozenset({
    "RoundsOutOfOrder", "RoundsPreviousRoundOpen", "RoundsNotOpen", "RoundsNotClosed",
    "RoundsGlobalMetricAlreadyRecorded", "RoundsBeyondPlan", "RoundsEnoughParticipants", "RoundsDeadlineNotReached",
    "StatisticsAlreadyPublished", "StatisticsTrainingStarted",
    "SecureRoundsAlreadyStarted", "SecureRoundsNotRunning", "SecureRoundsRoundNotOpen",
})


def session_verdict(rec, next_block: int) -> str:
    """What ``SecureRounds.conclude`` would decide for a running session in ``next_block``:
    ``"failed"``, ``"completed"`` or ``"undecided"`` (the contract's rule, from the read model's record)."""
    p = rec.phase_blocks
    ended = 0 if next_block <= rec.start_block else (next_block - rec.start_block - 1) // p
    adv, shared, masked, unmasked = (len(rec.messages[0]), len(rec.messages[1]), len(rec.masked),
                                     len(rec.messages[3]))
    t = rec.threshold
    if (ended >= 1 and adv < t) or (ended >= 2 and shared < t) or (ended >= 3 and masked < t) \
            or (ended >= 4 and unmasked < t):
        return "failed"
    if ended >= 4 or (ended == 3 and unmasked == masked):
        return "completed"
    return "undecided"


class CoordinatorService:
    """Drive proposals round by round; every step is decided from the chain, never from memory.

    Each pass reads the chain's events (the read model) and, for the last round
    opened, does what is due: open round 1; close an open round once every
    target dataset that could commit has (one whose policy refuses the proposal
    is not waited for; the chain refuses an earlier close), or at the
    deadline if at least ``min_participants`` did (else mark it Failed); after a
    close, wait up to ``eval_grace_blocks`` (counted from the close, on chain)
    for the participants' evaluations and record the mean metric, unless it is
    recorded already; then open the next round. So a coordinator killed after
    any step and started again redoes nothing that is on chain; two
    coordinators racing never do a step twice (the contract refuses the second,
    which is logged and dropped); and a coordinator that finds a round closed by
    another one rebuilds its aggregation state from the chain before it
    aggregates again.

    Under ``mode = "secagg"`` the open round also carries a ``SecureRounds`` session, started,
    concluded and closed (or failed) from what the chain records of it (see :meth:`_step_secagg`).
    Under ``mode = "he"`` the close goes through the plan's decryptor (``coordinator run``: over HTTP
    to ``[coordinator] decryptor_url``); a refusal leaves the round open (it fails at its deadline).
    A coordinator without a decryptor opens no round and says why (:attr:`skipped`).

    ``proposals``: drive exactly these; None: every proposal that is approved (or
    still in its vote) and not finished. :meth:`serve` returns when none is left.
    """

    def __init__(self, coordinator: Coordinator, *, poll_seconds: float = 1.0, eval_grace_blocks: int = 10,
                 proposals: Sequence[int] | None = None) -> None:
        self.c = coordinator
        self.poll = poll_seconds
        self.eval_grace = eval_grace_blocks
        self.only = list(dict.fromkeys(int(p) for p in proposals)) if proposals else None
        self.results: dict[tuple[int, int], RoundResult] = {}
        self.metrics: dict[tuple[int, int], float | None] = {}
        self._expected: dict[int, int] = {}  # proposal -> its target datasets (fixed at submission)
        self._awaited: dict[tuple[int, int], tuple[int, int, int]] = {}  # (pid, r) -> (commitments, head, awaited)
        self._tried_close: dict[tuple[int, int], int] = {}  # commitments seen at a close that fell short
        self._basis: dict[int, frozenset[int]] = {}  # closed rounds our in-memory aggregation state reflects
        self._unmask_failed: dict[tuple[int, int], str] = {}  # secure rounds whose sum could not be unmasked
        self.skipped: dict[int, str] = {}  # proposals this coordinator cannot drive, and why
        self._said: set[tuple] = set()

    def _once(self, key: tuple, msg: str, level: int = logging.INFO, **fields) -> None:
        if key not in self._said:
            self._said.add(key)
            self.c.log(msg, level=level, **fields)

    def proposals(self, rm, head: int) -> list[int]:
        """The proposals to look at now (see the class docstring)."""
        if self.only is not None:
            return list(self.only)
        return [pid for pid in sorted(rm.proposals) if progress.stage(rm, pid, head).pending]

    def expected(self, pid: int, r: int) -> int:
        """Commitments that let a round close before its deadline: one per target dataset.

        The chain refuses an earlier close (so a coordinator cannot cut a round short
        to leave out a hospital it dislikes). A proposal's targets are fixed at submission:
        they are taken once per proposal from the submission event (the contract is asked
        only if the read model has not seen the proposal), the same for every round ``r``.
        """
        if pid not in self._expected:
            seen = self.c.fed.read_model().proposals.get(pid)
            self._expected[pid] = len(seen.targets) if seen is not None else \
                len(self.c.fed.proposals.proposal(pid).targets)
        return self._expected[pid]

    def none_awaited(self, pid: int, r: int, n: int, head: int) -> bool:
        """Whether no target the round could still hear from is left (``awaitedCommitments`` is 0).

        Asked of the chain once per (commitment count, block): a policy can change with any block.
        """
        seen = self._awaited.get((pid, r))
        if seen is None or seen[:2] != (n, head):
            seen = (n, head, self.c.fed.rounds.awaited_commitments(pid, r))
            self._awaited[(pid, r)] = seen
        return seen[2] == 0

    def _sync(self, pid: int, rm) -> None:
        """Forget our aggregation state if a round was closed by someone else since we built it."""
        closed = frozenset(r for (p, r), rr in rm.rounds.items() if p == pid and rr.closed is not None)
        basis = self._basis.get(pid)
        if basis is not None and basis != closed:
            self.c.forget(pid)
            self.c.log(f"round(s) {', '.join(map(str, sorted(closed - basis)))} of proposal {pid} were closed by "
                       "another coordinator: rebuilding the aggregation state from the chain",
                       level=logging.WARNING, proposal=pid)
        if basis != closed:
            self._basis[pid] = closed

    def _attempt(self, pid: int, r: int, what: str, fn):
        """Run one step; a refusal because the chain moved on is logged and dropped (returns None)."""
        try:
            return fn()
        except ChainRevert as exc:
            if exc.error not in MOVED_ON:
                raise
            self.c.log(f"did not {what} round {r} of proposal {pid}: {exc} (another coordinator was first, "
                       "or the chain moved on)", level=logging.WARNING, proposal=pid, round=r)
        except TransactionConflict as exc:
            self.c.log(f"did not {what} round {r} of proposal {pid}: {exc}", level=logging.WARNING,
                       proposal=pid, round=r)
        self.c.forget(pid)  # whoever was first may have changed what our state should be
        self._basis.pop(pid, None)
        return None

    def step(self, pid: int) -> bool:
        """Advance one proposal by what is due now; True when all its rounds are done."""
        fed = self.c.fed
        rm = fed.read_model()
        head = fed.chain.block_number
        stage = progress.stage(rm, pid, head)
        if stage is not progress.Stage.APPROVED:
            if stage is progress.Stage.VOTING:
                self._once(("voting", pid), f"proposal {pid} is in its vote: waiting for it to be approved",
                           proposal=pid)
                return False
            self._once(("stage", pid), f"proposal {pid} is {stage.value}: no round opens", proposal=pid)
            return True
        p = rm.proposals[pid]
        if self.c.plan(pid).mode == "he" and self.c.decryptor is None:
            self.skipped[pid] = ("its plan runs mode he and this coordinator has no way to reach the plan's "
                                 "decryptor (set [coordinator] decryptor_url to its 'fedchain decryptor serve')")
            self._once(("he", pid), f"proposal {pid}: no round opens: {self.skipped[pid]}", level=logging.WARNING,
                       proposal=pid)
            return True
        self._sync(pid, rm)
        last = progress.last_round(rm, pid)
        if last is None and uc_statistics.has_phase(self.c.plan(pid)):
            st = rm.statistics.get(pid)
            if st is None or st.published is None:
                n = len(st.commits) if st is not None else 0
                deadline = (p.final_block or head) + self.c.plan(pid).round_deadline_blocks
                if n >= max(self.expected(pid, 0), 1) or (head > deadline and n >= p.min_participants):
                    lifecycle.set_activity(f"publishing the statistics of proposal {pid}")
                    self._attempt(pid, 0, "publish the statistics of", lambda: self.c.publish_statistics(pid))
                else:
                    self._once(("stats", pid), f"proposal {pid}: statistics phase, waiting for the hospitals' "
                               "moments", proposal=pid)
                return False
        if last is None:
            lifecycle.set_activity(f"opening round 1 of proposal {pid}")
            self._attempt(pid, 1, "open", lambda: self.c.open_round(pid, 1))
            return False
        r, ph = last.round, progress.phase(last)
        key = (pid, r)
        if ph == "open" and self.c.plan(pid).mode == "secagg":
            self._step_secagg(pid, r, last, head, rm)
            return False
        if ph == "open":
            n = len(last.commits)
            past = head > last.deadline
            enough = n >= max(p.min_participants, 1)
            if n >= max(self.expected(pid, r), 1) or (enough and (past or self.none_awaited(pid, r, n, head))):
                if self._tried_close.get(key) == n and not past:
                    return False  # fell short with these commitments already; wait for more or the deadline
                lifecycle.set_activity(f"closing round {r} of proposal {pid}")
                # Rebuild the aggregation state from the chain *before* looking again: a round
                # closed by someone else after this point makes our close revert (handled), never
                # our state skip a round.
                self.c.strategy(pid)
                if fed.rounds.round_info(pid, r).phase.name != "OPEN":
                    self.c.log(f"did not close round {r} of proposal {pid}: it is no longer open (another "
                               "coordinator was first)", level=logging.WARNING, proposal=pid, round=r)
                    self.c.forget(pid)
                    return False
                try:
                    res = self._attempt(pid, r, "close", lambda: self.c.close_round(pid, r))
                except he_round.HERoundError as exc:  # the decryptor refused, or answered something else
                    res = RoundResult(pid, r, closed=False, reason=f"the decryptor did not decrypt: {exc}")
                if res is not None:
                    self.results[key] = res
                    if res.closed:
                        self._basis[pid] = self._basis.get(pid, frozenset()) | {r}
                    else:
                        self._tried_close[key] = n
                        self.c.log(f"round {r} of proposal {pid} cannot close: {res.reason}",
                                   level=logging.WARNING, proposal=pid, round=r)
                        if past:
                            lifecycle.set_activity(f"failing round {r} of proposal {pid}")
                            self._attempt(pid, r, "fail", lambda: self.c.fail_round(pid, r))
            elif not past:
                self.c.check_early(pid, r)  # check what has arrived while the rest train
            else:
                lifecycle.set_activity(f"failing round {r} of proposal {pid}")
                if self._attempt(pid, r, "fail", lambda: self.c.fail_round(pid, r)) is not None:
                    self.c.log(f"round {r} of proposal {pid} failed: {n} commitment(s) by the deadline, "
                               f"the plan needs {p.min_participants}", level=logging.WARNING, proposal=pid, round=r)
            return False
        if ph == "closed" and last.global_metric_ppm is None:
            want, have = len(last.commits), len(last.evaluations)
            waited = head - (last.closed_block or head)
            if have < want and waited < self.eval_grace:
                return False
            if have == 0:
                self._once(("no-eval", pid, r), f"round {r} of proposal {pid}: no evaluation was submitted; "
                           "no global metric to record", level=logging.WARNING, proposal=pid, round=r)
            else:
                lifecycle.set_activity(f"recording the metric of round {r} of proposal {pid}")
                value = self._attempt(pid, r, "record the metric of", lambda: self.c.record_metric(pid, r))
                if value is not None:
                    self.metrics[key] = value
        if r < p.rounds:
            lifecycle.set_activity(f"opening round {r + 1} of proposal {pid}")
            self._attempt(pid, r + 1, "open", lambda: self.c.open_round(pid, r + 1))
            return False
        return True

    def _step_secagg(self, pid: int, r: int, last, head: int, rm) -> None:
        """An open round of a ``secagg`` plan, decided from the chain alone (so a restart resumes it):

        * no session on chain yet: start it (once: the contract refuses a second start, and a
          session found on chain after a restart is never started again); if the phases would no
          longer fit before the round's deadline, the round is left to fail at its deadline;
        * session running: wait until the contract's rule decides it (:func:`session_verdict`);
          a session that cannot complete any more (too few members in a phase) is concluded Failed;
        * session Completed (or completing): close - unmask the sum from the messages the chain
          names, publish, close - as soon as the Rounds contract allows (every target that could
          commit did, else after the deadline);
        * session Failed, or the sum cannot be unmasked: nothing is published; the round is
          failed after its deadline.
        """
        key = (pid, r)
        rec = rm.secure.get(key)
        past = head > last.deadline
        if rec is None:
            if past:
                self._fail_secagg(pid, r, "no secure-aggregation session was started")
                return
            blocks = self.c.phase_blocks(pid)
            if head + 1 + 3 * blocks > last.deadline:  # the contract would refuse: the phases no longer fit
                self._once(("late-start", pid, r), f"round {r} of proposal {pid}: too late to start its "
                           f"secure-aggregation session (its phases end after the deadline, block "
                           f"{last.deadline}); the round fails at the deadline", level=logging.WARNING,
                           proposal=pid, round=r)
                return
            lifecycle.set_activity(f"starting the secure session of round {r} of proposal {pid}")
            self._attempt(pid, r, "start the secure-aggregation session of", lambda: self.c.secagg_start(pid, r))
            return
        verdict = {"COMPLETED": "completed", "FAILED": "failed"}.get(rec.stage) or session_verdict(rec, head + 1)
        if verdict == "undecided":
            return
        if verdict == "failed" or key in self._unmask_failed:
            if rec.stage == "RUNNING":
                lifecycle.set_activity(f"concluding the secure session of round {r} of proposal {pid}")
                self._attempt(pid, r, "conclude the secure-aggregation session of",
                              lambda: self.c.fed.secure.conclude(pid, r))
            self._fail_secagg(pid, r, self._unmask_failed.get(key) or "the secure-aggregation session failed "
                              f"(keys {len(rec.messages[0])}, shares {len(rec.messages[1])}, masked inputs "
                              f"{len(rec.masked)}, unmasking {len(rec.messages[3])}; threshold {rec.threshold})",
                              past=past)
            return
        if len(last.commits) < max(self.expected(pid, r), 1) and not past \
                and not self.none_awaited(pid, r, len(last.commits), head):
            self._once(("secagg-wait", pid, r), f"round {r} of proposal {pid}: the secure-aggregation session "
                       f"completed with {len(rec.masked)} masked input(s); {len(last.commits)} of "
                       f"{self.expected(pid, r)} targets committed and the others may still, so the round closes at its deadline "
                       f"(block {last.deadline})", proposal=pid, round=r)
            return
        lifecycle.set_activity(f"closing round {r} of proposal {pid}")
        self.c.strategy(pid)
        if self.c.fed.rounds.round_info(pid, r).phase.name != "OPEN":
            self.c.log(f"did not close round {r} of proposal {pid}: it is no longer open (another coordinator "
                       "was first)", level=logging.WARNING, proposal=pid, round=r)
            self.c.forget(pid)
            return
        try:
            res = self._attempt(pid, r, "close", lambda: self.c.close_round(pid, r))
        except secure_rounds.MESSAGE_FAULTS as exc:  # a member's message is missing, does not decode or check
            self._unmask_failed[key] = f"the sum cannot be unmasked: {exc}"
            self.c.log(f"round {r} of proposal {pid}: {self._unmask_failed[key]}; nothing is published, the "
                       "round fails at its deadline", level=logging.WARNING, proposal=pid, round=r)
            return
        if res is None:
            return
        self.results[key] = res
        if res.closed:
            self._basis[pid] = self._basis.get(pid, frozenset()) | {r}
        elif "not decided" not in res.reason:  # concluded Failed after all: fail at the deadline
            self._fail_secagg(pid, r, res.reason, past=past)

    def _fail_secagg(self, pid: int, r: int, why: str, *, past: bool = True) -> None:
        """Fail a secure round whose session cannot give a sum (after its deadline; nothing is published)."""
        if not past:
            self._once(("secagg-failed", pid, r), f"round {r} of proposal {pid} cannot close: {why}; nothing is "
                       "published, the round fails at its deadline", level=logging.WARNING, proposal=pid, round=r)
            return
        lifecycle.set_activity(f"failing round {r} of proposal {pid}")
        if self._attempt(pid, r, "fail", lambda: self.c.fail_round(pid, r)) is not None:
            self.c.log(f"round {r} of proposal {pid} failed: {why}; nothing was published", level=logging.WARNING,
                       proposal=pid, round=r)

    def serve(self, proposal: int | Sequence[int] | None = None, *, exit_when_done: bool = True,
              timeout: float | None = None) -> None:
        """Step until no proposal is left (``exit_when_done``) or forever; waits through :func:`lifecycle.sleep`.

        ``proposal`` (one id or several) overrides the constructor's ``proposals``.
        """
        if proposal is not None:
            self.only = [proposal] if isinstance(proposal, int) else list(proposal)
        fed = self.c.fed
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            lifecycle.check()
            head = fed.chain.block_number
            rm = fed.read_model()
            active = [pid for pid in self.proposals(rm, head) if not self.step(pid)]
            if exit_when_done and not active:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise FedchainError(f"coordinator: gave up waiting after {timeout:.0f} s")
            lifecycle.set_activity("waiting for the chain")
            progress.wait_for_block(fed.chain, head, self.poll)


def run_coordinator(config_path, *, proposals: Sequence[int] | None = None, exit_when_done: bool = True,
                    log_json: bool | None = None) -> None:
    """``fedchain coordinator run``: load the config, connect, drive rounds (see :class:`CoordinatorService`).

    Raises :class:`~fedchain.lifecycle.StopRequested` when a signal stopped it (after
    saying so), and the transports' ``ChainUnavailable`` / ``StoreUnavailable`` when a
    peer stayed unreachable for the whole retry horizon; the CLI maps each to its exit code.
    """
    cfg = load_role_config(config_path, extra_sections={"coordinator"})
    opts = cfg.raw.get("coordinator", {})
    if not isinstance(opts, dict) or set(opts) - {"eval_grace_blocks", "fetch_budget_seconds", "decryptor_url"}:
        raise ConfigError(f"{cfg.source}: [coordinator] takes only eval_grace_blocks = N, "
                          "fetch_budget_seconds = S and decryptor_url = \"http://...\"")
    url = opts.get("decryptor_url")
    if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
        raise ConfigError(f"{cfg.source}: [coordinator] decryptor_url must be an http(s) URL")
    # mode = "he": the plan's decryptor runs elsewhere ('fedchain decryptor serve'); this process only
    # ever holds public contexts.
    decryptor = HttpDecryptor(url, cfg.retry) if url is not None else None
    grace = opts.get("eval_grace_blocks", 10)
    if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= 100_000:
        raise ConfigError(f"{cfg.source}: [coordinator] eval_grace_blocks must be an integer from 0 to 100000")
    budget = opts.get("fetch_budget_seconds", DEFAULT_FETCH_BUDGET)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 1 <= budget <= 86_400:
        raise ConfigError(f"{cfg.source}: [coordinator] fetch_budget_seconds must be a number from 1 to 86400")
    json_lines = cfg.log_json if log_json is None else log_json
    logs.setup(role="coordinator", json_lines=json_lines, level=cfg.log_level.upper())
    identity = cfg.identity.load()
    dev = is_dev_identity(identity)
    logs.setup(role="coordinator", who=logs.identity_label(identity.name, identity.address, dev), dev=dev,
               json_lines=json_lines, level=cfg.log_level.upper())
    with lifecycle.handling(log):
        chain = Chain.connect(cfg.chain_url, retry=cfg.retry)
        require_chain_allows(identity, chain.chain_id)  # DEV ONLY keys act on dev chains only
        fed = chain.attach(Deployment.load(cfg.deployment_file)).as_(identity.account)
        with open_store(cfg.store, retry=cfg.retry) as store:
            coord = Coordinator(fed, store, identity, fetch_budget=float(budget), decryptor=decryptor)
            svc = CoordinatorService(coord, poll_seconds=cfg.poll_seconds, eval_grace_blocks=grace,
                                     proposals=proposals)
            progress.check_proposals_exist(fed, svc.only)
            driving = f"proposal(s) {', '.join(map(str, svc.only))}" if svc.only else \
                "every approved proposal that is not finished"
            logs.event(log, "%scoordinating on %s, store %s: %s", "DEV ONLY identity (public key): " if dev else "",
                       cfg.chain_url, cfg.store, driving, address=identity.address)
            svc.serve(exit_when_done=exit_when_done)
            for pid, why in sorted(svc.skipped.items()):
                logs.event(log, "did not drive proposal %d: %s", pid, why, level=logging.WARNING, proposal=pid)
            for (pid, r), res in sorted(svc.results.items()):
                state = "closed" if res.closed else f"not closed ({res.reason})"
                logs.event(log, "round %d: %s; participants %d, rejected %d", r, state, len(res.participants),
                           len(res.rejected), proposal=pid, round=r)
            logs.event(log, "done: no proposal left to drive" if not svc.only else
                       f"done: {driving} finished")
