"""The hospital node: policy check, local training, sealed update, commitment.

A :class:`HospitalNode` serves one dataset of one member. For each round of
an approved proposal that targets its dataset it

1. fetches the plan by CID and refuses it unless its sha256 equals the
   on-chain hash (:class:`~fedchain.plan.PlanHashMismatch` stops the node);
2. checks, on chain, that its dataset's policy admits the proposal, that the
   dataset is one of the proposal's targets, and that the schema it holds
   hashes to the schema hash registered on chain — and *refuses* (saying why)
   when any of that fails;
3. refuses a plan whose model is larger than this node is configured to
   hold (``max_model_parameters``) before anything is allocated, and a round
   whose differential-privacy spend (the plan's ε for this round, from the
   accountant) its dataset's budget on chain cannot take - or a non-private
   plan on a budgeted dataset - before training (``PRIVACY_BUDGET_EXCEEDED``,
   :mod:`fedchain.usecases.privacy`); then trains
   with the plan's :func:`~fedchain.plan.train_config` from the current
   global model (round 1: the plan's seeded initialization; later rounds:
   the last aggregate closed on chain, fetched and checked against its
   on-chain hash);
4. serializes the update canonically (safetensors), seals it for the
   coordinator and the plan's auditors, pins it, and commits CID, sha256,
   sample count and the round's ε/δ on chain.

Under ``mode = "he"`` step 4 encrypts the (norm-bounded) model under the plan's
public CKKS context instead of sealing it; under ``mode = "secagg"`` the round runs
through the ``SecureRounds`` phases (:meth:`HospitalNode.secagg_advertise`,
``secagg_share``, ``secagg_mask``, ``secagg_unmask``) and the committed update is
the masked, sample-weighted model.

After a round closes it evaluates the new global model on its held-out split
and submits the metric on chain. Raw data never leaves this object.

:class:`NodeService` is the long-running loop of ``fedchain node run``; it
decides every step from the chain (see its docstring), so it can be stopped
and restarted anywhere.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Sequence

from fedchain import he_round, lifecycle, logs, secagg_round
from fedchain.config import load_role_config
from fedchain.content import Sealed, fetch_document, pin_document, seal_and_pin
from fedchain.contracts.bindings import Chain, ChainRevert, Deployment, TransactionConflict
from fedchain.errors import ConfigError, FedchainError
from fedchain.identity import is_dev_identity, require_chain_allows
from fedchain.ipfs import open_store
from fedchain.models import initial_state
from fedchain.node.commit import commit_update, recipients_for, seal_update
from fedchain.moments import moments_document
from fedchain.node.dataset import TabularData, feature_moments, load_dataset, split_for_plan
from fedchain.node.train import LocalResult, evaluate, train_local
from fedchain.plan import (
    DEFAULT_MAX_MODEL_PARAMETERS,
    MAX_PLAN_BYTES,
    PlanError,
    TrainingPlan,
    evaluate_config,
    train_config,
    verify_plan_bytes,
)
from fedchain.schema import DatasetSchema, load_schema, schema_hash
from fedchain.serialize import bytes_to_state_dict, state_dict_to_bytes
from fedchain.usecases import admission, progress, secure_rounds
from fedchain.usecases import statistics as uc_statistics
from fedchain.usecases.datasets import undo_pin
from fedchain.usecases.admission import AdmissionCheck
from fedchain.usecases.privacy import check_budget, expected_spend
from fedchain.usecases.refusals import Refused
from fedchain.validation import model_layout, model_size

PPM = 1_000_000
#: Admission refusals that come before the dataset is found among the proposal's targets: any other
#: answer (admitted, or refused by the policy or the local checks) confirms it is one.
NOT_SEEN_AS_TARGET = frozenset({"UNKNOWN_PROPOSAL", "PROPOSAL_NOT_APPROVED", "NOT_A_TARGET"})

log = logging.getLogger("fedchain.node")


def _log_event(msg: str, *, level: int = logging.INFO, **fields) -> None:
    logs.event(log, "%s", msg, level=level, **fields)


class PolicyRefusal(FedchainError):
    """The node will not train for this proposal (policy, target or schema)."""


@dataclass
class RoundOutcome:
    """What the node did in one round (for progress output and summaries)."""

    proposal_id: int
    round: int
    dataset: str
    committed: bool
    reason: str = ""
    cid: str = ""
    sha256: str = ""
    n_samples: int = 0
    train_metrics: dict[str, float] = field(default_factory=dict)
    gas_used: int = 0


@dataclass(frozen=True, eq=False)
class TrainingJob:
    """One round's local training, ready to run: no chain or store access left in it."""

    proposal_id: int
    round: int
    plan: TrainingPlan
    data: TabularData
    start: dict
    dataset_key: str
    spend: tuple[int, int] = (0, 0)  # (epsilon_micro, delta_pico) this round states (fedchain.usecases.privacy)

    def train(self) -> LocalResult:
        """:func:`~fedchain.node.train.train_local` from ``start`` (thread-safe; deterministic)."""
        return train_local(self.start, self.plan, self.data, config=train_config(self.plan, self.round),
                           dataset_seed_key=self.dataset_key)


class SharedAggregates:
    """Aggregates one node fetched and checked, handed to the other nodes of the same simulation.

    A simulated consortium (:class:`fedchain.cli.simulation.Simulation`) runs every
    hospital's node in one process, and each would fetch the same aggregate from the
    same store and check it against the same on-chain hash. With one of these shared,
    the first node does, and the others take its checked copy. An entry is keyed by the
    CID *and* the sha256 the chain names, so it only ever answers a node asking for
    exactly those bytes; its size is kept, so a node whose plan allows less still
    refuses it. The tensors are read-only, as :meth:`HospitalNode.aggregate` says. Nodes
    of real hospitals (one per process) have none. Holds the last ``keep`` aggregates.
    """

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._items: OrderedDict[tuple[str, bytes], tuple[int, dict]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, cid: str, sha256: bytes, max_size: int) -> dict | None:
        with self._lock:
            hit = self._items.get((cid, bytes(sha256)))
        return hit[1] if hit is not None and hit[0] <= max_size else None

    def put(self, cid: str, sha256: bytes, size: int, state: dict) -> None:
        with self._lock:
            self._items[(cid, bytes(sha256))] = (size, state)
            while len(self._items) > self.keep:
                self._items.popitem(last=False)


class HospitalNode:
    """One member's node for one dataset.

    ``fed`` is the contracts façade already acting as this member
    (``Fedchain.as_(identity.account)``); ``store`` any
    :class:`ipfs.store.ContentStore`; ``max_model_parameters`` the largest
    model this node agrees to build (a plan above it is refused). ``log(msg,
    level=…, **fields)`` receives progress lines with structured fields
    (``proposal``, ``round``, ``loss``, ``accuracy`` …); by default they go to
    the ``fedchain.node`` logger.
    """

    def __init__(
        self,
        fed,
        store,
        identity,
        dataset_name: str,
        schema: DatasetSchema,
        data: TabularData,
        *,
        log: Callable[..., None] | None = None,
        max_model_parameters: int = DEFAULT_MAX_MODEL_PARAMETERS,
        shared: SharedAggregates | None = None,
    ) -> None:
        self.fed = fed
        self.shared = shared
        self.max_model_parameters = max_model_parameters
        self.store = store
        self.identity = identity
        self.dataset_name = dataset_name
        self.schema = schema
        self.data = data
        self.log = log or _log_event
        self._plans: dict[int | tuple, TrainingPlan] = {}
        self._he_contexts: dict[int, tuple] = {}  # proposal -> (public CKKS context, model layout)
        self._secagg: dict[tuple[int, int], tuple] = {}  # (proposal, round) -> (facts, config, participant)
        self._aggregate: tuple[tuple, dict] | None = None  # the last aggregate fetched (see aggregate())
        self._identity_confirmed: int | None = None  # chain epoch in which owner and schema were confirmed
        self._targeted: dict[int, int] = {}  # proposal -> chain epoch in which it was seen to target this dataset

    # -- plan and admission ----------------------------------------------------

    def signed_plan(self, proposal_id: int) -> TrainingPlan:
        """The proposal's plan as voted, fetched by CID and verified against the chain."""
        key = ("signed", proposal_id)
        if key not in self._plans:
            p = self.fed.proposals.proposal(proposal_id)
            raw = fetch_document(self.store, p.plan_cid, p.plan_sha256, max_size=MAX_PLAN_BYTES)
            self._plans[key] = verify_plan_bytes(raw, p.plan_sha256)
        return self._plans[key]

    def plan(self, proposal_id: int) -> TrainingPlan:
        """The plan as this node applies it: with a statistics phase, the published pooled mean/std in place of
        ``"federated"`` (:class:`~fedchain.usecases.statistics.StatisticsPending` until it is published)."""
        if proposal_id not in self._plans:
            signed = self.signed_plan(proposal_id)
            self._plans[proposal_id] = uc_statistics.effective_plan(self.fed.read_model(), self.store, proposal_id,
                                                                    signed)
        return self._plans[proposal_id]

    def commit_moments(self, proposal_id: int) -> RoundOutcome:
        """The statistics phase: this dataset's moments (count, sums, sums of squares; no row), sealed for the
        coordinator and the plan's auditors, pinned and committed to the Statistics contract."""
        check = self.admission(proposal_id)
        if not check:
            self.log(f"refusing the statistics phase of proposal {proposal_id} for dataset {self.dataset_name!r}: "
                     f"{check.words}", level=logging.WARNING, proposal=proposal_id, round=0)
            return RoundOutcome(proposal_id, 0, self.dataset_name, committed=False, reason=check.words)
        plan = self.signed_plan(proposal_id)
        fm = feature_moments(self.data)
        doc = moments_document(self.schema.feature_names, fm.n, fm.sums, fm.sums_sq)
        try:
            recipients = recipients_for(self.fed, plan, coordinator_key=self.coordinator_key())
        except Refused as exc:
            raise PolicyRefusal(str(exc)) from None
        ctx = uc_statistics.moments_context(self.fed.deployment, proposal_id, self.identity.address)
        sealed = seal_and_pin(self.store, doc.to_json().encode("utf-8"), ctx, self.identity, recipients)
        try:
            tx = self.fed.statistics.commit_moments(proposal_id, self.dataset_name, sealed.cid, sealed.sha256, fm.n)
        except BaseException:
            undo_pin(self.store, sealed.cid, True)
            raise
        self.log(f"committed the moments of {fm.n} rows for the statistics phase of proposal {proposal_id}: "
                 f"{sealed.cid}", proposal=proposal_id, round=0, cid=sealed.cid, samples=fm.n, tx=tx.tx_hash)
        return RoundOutcome(proposal_id, 0, self.dataset_name, committed=True, cid=sealed.cid, sha256=sealed.sha256,
                            n_samples=fm.n, gas_used=tx.gas_used)

    def admission(self, proposal_id: int) -> AdmissionCheck:
        """Whether this node may train for the proposal; if not, the rule that refuses it.

        A registered dataset's owner and schema hash, and a proposal's targets, never change,
        so once the chain has confirmed them they are not asked for again (until the chain is
        reverted); the proposal's state and the dataset's policy are checked every time.
        """
        epoch = self.fed.chain.epoch
        confirmed = self._identity_confirmed == epoch
        check = admission.check(
            self.fed, self.dataset_name, proposal_id,
            owner=None if confirmed else self.identity.address,
            local_schema_hash=None if confirmed else schema_hash(self.schema),
            known_target=self._targeted.get(proposal_id) == epoch,
        )
        if check:
            self._identity_confirmed = epoch
        if check or check.code not in NOT_SEEN_AS_TARGET:  # the rules before the policy passed
            self._targeted[proposal_id] = epoch
        return check

    def fits(self, plan: TrainingPlan) -> tuple[bool, str]:
        """``(True, "")`` when the plan's model is within what this node holds."""
        size = plan.model.size
        if size.parameters > self.max_model_parameters:
            return False, (f"the plan's model has {size}, more than this node is configured to hold "
                           f"({self.max_model_parameters:,} parameters; [limits] max_model_parameters)")
        return True, ""

    # -- models ----------------------------------------------------------------

    def closed_aggregate(self, proposal_id: int, round_: int) -> tuple[str, bytes] | None:
        """``(cid, sha256)`` of round ``round_``'s aggregate if it closed, else None.

        Read from the RoundClosed event in the connection's read model (folded
        incrementally: no contract call, nothing re-read).
        """
        rec = self.fed.read_model().round(proposal_id, round_)
        if rec is None or rec.closed is None:
            return None
        return rec.closed["aggregate_cid"], bytes.fromhex(rec.closed["aggregate_sha256"].removeprefix("0x"))

    def aggregate(self, proposal_id: int, round_: int) -> dict:
        """Round ``round_``'s aggregate, fetched and checked against its on-chain hash.

        The last one is kept: the node evaluates it after the round and starts
        the next round from it, and a closed round's aggregate never changes.
        Callers must not modify the tensors.
        """
        closed = self.closed_aggregate(proposal_id, round_)
        if closed is None:
            raise FedchainError(f"round {round_} of proposal {proposal_id} has not closed: no aggregate yet")
        key = (proposal_id, round_, *closed)
        if self._aggregate is None or self._aggregate[0] != key:
            limit = model_size(self.plan(proposal_id).model)
            state = self.shared.get(*closed, limit) if self.shared is not None else None
            if state is None:
                raw = fetch_document(self.store, closed[0], closed[1], max_size=limit)
                state = bytes_to_state_dict(raw)
                if self.shared is not None:
                    self.shared.put(*closed, len(raw), state)
            self._aggregate = (key, state)
        return self._aggregate[1]

    def global_state(self, proposal_id: int, round_: int):
        """The model round ``round_`` starts from: the last closed aggregate before it."""
        plan = self.plan(proposal_id)
        for r in range(round_ - 1, 0, -1):
            if self.closed_aggregate(proposal_id, r) is not None:
                return self.aggregate(proposal_id, r)
        return initial_state(plan.model, plan.seed)

    def coordinator_key(self) -> bytes | None:
        """The coordinator's X25519 key from the member events, or None when it is not a member."""
        rm = self.fed.read_model()
        member = rm.members.get(rm.coordinator or "")
        return bytes.fromhex(member.key.removeprefix("0x")) if member is not None and member.active else None

    # -- the two things a node does per round ----------------------------------

    def train_and_commit(self, proposal_id: int, round_: int) -> RoundOutcome:
        """Train on the local split and commit the sealed update, or refuse."""
        job = self.prepare(proposal_id, round_)
        if isinstance(job, RoundOutcome):
            return job
        return self.commit(job, job.train())

    def prepare(self, proposal_id: int, round_: int) -> "TrainingJob | RoundOutcome":
        """Everything before training that reads the chain or the store: admission, the plan, the
        model size, the split and the starting model. A refusal comes back as its outcome.

        :meth:`TrainingJob.train` then touches neither, so a caller may run it on another thread
        while this node, or another, talks to the chain; :meth:`commit` finishes the round.
        """
        check = self.admission(proposal_id)
        if not check:
            self.log(f"refusing round {round_} of proposal {proposal_id} for dataset {self.dataset_name!r}: "
                     f"{check.words}", level=logging.WARNING, proposal=proposal_id, round=round_)
            return RoundOutcome(proposal_id, round_, self.dataset_name, committed=False, reason=check.words)
        try:
            plan = self.plan(proposal_id)
        except PlanError as exc:  # a plan that does not validate (integrity failures still stop the node)
            ok, reason = False, f"the plan cannot be used: {exc}"
        else:
            ok, reason = self.fits(plan)
        if not ok:
            self.log(f"refusing round {round_} of proposal {proposal_id} for dataset {self.dataset_name!r}: "
                     f"{reason}", level=logging.WARNING, proposal=proposal_id, round=round_)
            return RoundOutcome(proposal_id, round_, self.dataset_name, committed=False, reason=reason)
        train, _val = split_for_plan(self.data, plan, self.dataset_name)
        spend = expected_spend(plan, self.fed.read_model(), proposal_id, self.dataset_name, round_, train.n_rows)
        try:  # before training: a round the dataset's privacy budget cannot take is not trained at all
            check_budget(self.fed, self.dataset_name, spend[0], f"round {round_} of proposal {proposal_id}", spend[1])
        except Refused as exc:
            self.log(f"refusing round {round_} of proposal {proposal_id} for dataset {self.dataset_name!r}: {exc}",
                     level=logging.WARNING, proposal=proposal_id, round=round_)
            return RoundOutcome(proposal_id, round_, self.dataset_name, committed=False, reason=str(exc))
        config = train_config(plan, round_)
        self.log(f"training round {round_} of proposal {proposal_id} on {train.n_rows} rows "
                 f"({config.local_epochs} epoch(s), batch {config.batch_size})", proposal=proposal_id, round=round_)
        return TrainingJob(proposal_id, round_, plan, train, self.global_state(proposal_id, round_), self.dataset_name,
                           spend)

    def recipients(self, plan: TrainingPlan) -> list[bytes]:
        """The keys this node's update is sealed for (the coordinator's from the chain, the plan's auditors')."""
        try:
            return recipients_for(self.fed, plan, coordinator_key=self.coordinator_key())
        except Refused as exc:
            raise PolicyRefusal(str(exc)) from None

    def seal(self, job: "TrainingJob", result: LocalResult, recipients: Sequence[bytes]) -> Sealed:
        """Serialize, seal and pin a trained update without a chain request (thread-safe: a simulation
        runs it on the thread that trained); :meth:`commit` then sends it. Not for ``mode = "he"``."""
        return seal_update(self.fed, self.store, self.identity, proposal_id=job.proposal_id, round_=job.round,
                           payload=state_dict_to_bytes(result.state_dict), recipients=recipients)

    def commit(self, job: "TrainingJob", result: LocalResult, sealed: Sealed | None = None) -> RoundOutcome:
        """Seal the trained update for the coordinator and the auditors, pin it and commit it on chain
        (``sealed``: already sealed and pinned by :meth:`seal`)."""
        plan, proposal_id, round_ = job.plan, job.proposal_id, job.round
        payload = b""
        if plan.mode == "he":  # a CKKS ciphertext under the plan's public context: no envelope
            payload = self.encrypt_he(proposal_id, job, result)
        elif sealed is None:
            sealed = self.seal(job, result, self.recipients(plan))
        done = commit_update(  # unpins the sealed update if the chain refuses it
            self.fed, self.store, self.identity, plan, proposal_id=proposal_id, round_=round_,
            dataset=self.dataset_name, payload=payload, n_samples=result.n_samples,
            precheck=False, seal=plan.mode != "he",  # admitted in prepare()
            epsilon_micro=job.spend[0], delta_pico=job.spend[1], sealed=sealed,
        )
        m = result.metrics
        self.log(f"committed round {round_}: {done.cid} ({result.n_samples} samples; train loss "
                 f"{result.train_loss:.4f}, accuracy {m.get('accuracy', float('nan')):.3f})",
                 proposal=proposal_id, round=round_, cid=done.cid, samples=result.n_samples,
                 loss=round(result.train_loss, 6), accuracy=round(m.get("accuracy", float("nan")), 6),
                 tx=done.tx.tx_hash)
        return RoundOutcome(
            proposal_id, round_, self.dataset_name, committed=True, cid=done.cid, sha256=done.sha256,
            n_samples=result.n_samples, train_metrics=result.metrics, gas_used=done.tx.gas_used,
        )

    def encrypt_he(self, proposal_id: int, job: "TrainingJob", result: LocalResult) -> bytes:
        """``mode = "he"``: the trained model, norm-bounded here, encrypted under the plan's public context."""
        plan = job.plan
        if proposal_id not in self._he_contexts:
            self._he_contexts[proposal_id] = (he_round.load_public_context(self.store, plan), model_layout(plan.model))
        public, layout = self._he_contexts[proposal_id]
        return he_round.encrypt_update(public, result.state_dict, job.start, plan, layout)

    # -- mode = "secagg": one method per SecureRounds phase (see fedchain.secagg_round) ------------

    def _secagg_state(self, proposal_id: int, round_: int):
        key = (proposal_id, round_)
        if key not in self._secagg:
            raise FedchainError(f"round {round_} of proposal {proposal_id}: this node did not advertise keys")
        return self._secagg[key]

    @staticmethod
    def _from_others(phase: int, fn):
        """``fn()``, which reads other members' phase-``phase`` messages; what a bad one causes is a
        :class:`~fedchain.secagg_round.SecAggRoundError` (the round cannot go on), never a crash."""
        try:
            return fn()
        except secure_rounds.MESSAGE_FAULTS as exc:
            raise secagg_round.SecAggRoundError(f"a phase-{phase} message cannot be used ({exc}); the chain names "
                                                "who posted it") from exc

    def secagg_advertise(self, proposal_id: int, round_: int):
        """Phase 0: fresh keys for this round, pinned and named on chain."""
        plan = self.plan(proposal_id)
        f, cfg = secure_rounds.config(self.fed, plan, proposal_id, round_)
        me = f.ids.get(self.identity.address.lower())
        if me is None:
            raise FedchainError(f"{self.identity.address} owns no target of proposal {proposal_id}")
        part = secagg_round.Participant(cfg, me)
        self._secagg = {k: v for k, v in self._secagg.items() if k[0] != proposal_id}  # earlier rounds' secrets go
        self._secagg[(proposal_id, round_)] = (f, cfg, part)
        pinned = pin_document(self.store, part.advertise())
        return self.fed.secure.advertise_keys(proposal_id, round_, self.dataset_name, pinned.cid, pinned.sha256)

    def secagg_share(self, proposal_id: int, round_: int):
        """Phase 1: Shamir shares of this round's secrets, each encrypted to its holder."""
        f, cfg, part = self._secagg_state(proposal_id, round_)
        blob = self._from_others(0, lambda: part.share(secure_rounds.phase_messages(self.fed, self.store, f, cfg, 0)))
        pinned = pin_document(self.store, blob)
        return self.fed.secure.share_keys(proposal_id, round_, pinned.cid, pinned.sha256)

    def secagg_mask(self, job: "TrainingJob", result: LocalResult) -> RoundOutcome:
        """Phase 2: the masked, sample-weighted model, committed in Rounds and marked in SecureRounds."""
        proposal_id, round_, plan = job.proposal_id, job.round, job.plan
        f, cfg, part = self._secagg_state(proposal_id, round_)
        shares = self._from_others(1, lambda: secure_rounds.phase_messages(self.fed, self.store, f, cfg, 1))
        x = secagg_round.weighted_input(result.state_dict, job.start, result.n_samples, f.total_rows, plan,
                                        model_layout(plan.model))
        payload = self._from_others(1, lambda: part.masked(x, shares))
        done = commit_update(
            self.fed, self.store, self.identity, plan, proposal_id=proposal_id, round_=round_,
            dataset=self.dataset_name, payload=payload, n_samples=result.n_samples,
            precheck=False, seal=False,  # admitted in prepare(); the mask hides it from everyone
        )
        tx = self.fed.secure.mark_masked(proposal_id, round_, self.dataset_name, done.cid, done.sha256,
                                         result.n_samples)
        return RoundOutcome(proposal_id, round_, self.dataset_name, committed=True, cid=done.cid, sha256=done.sha256,
                            n_samples=result.n_samples, train_metrics=result.metrics,
                            gas_used=done.tx.gas_used + tx.gas_used)

    def secagg_unmask(self, proposal_id: int, round_: int):
        """Phase 3: reveal the shares the chain's U2/U3 call for (self-mask shares of survivors,
        mask-key shares of those that dropped before their masked input)."""
        f, cfg, part = self._secagg_state(proposal_id, round_)
        rec = self.fed.secure.record(proposal_id, round_)
        masked_ids = sorted(f.ids[m] for m in rec.masked)
        blob = self._from_others(1, lambda: part.unmask(secure_rounds.phase_messages(self.fed, self.store, f, cfg, 1),
                                                        masked_ids))
        pinned = pin_document(self.store, blob)
        return self.fed.secure.unmask(proposal_id, round_, pinned.cid, pinned.sha256)

    def evaluate_and_submit(self, proposal_id: int, round_: int) -> dict[str, float]:
        """Evaluate round ``round_``'s aggregate on the held-out split and submit the metric."""
        metrics, n_rows = self.evaluation(proposal_id, round_)()
        return self.submit_evaluation(proposal_id, round_, metrics, n_rows)

    def evaluation(self, proposal_id: int, round_: int) -> Callable[[], tuple[dict[str, float], int]]:
        """:meth:`evaluate_and_submit`'s computation as a job: the plan and the checked aggregate are
        read now (on this thread, which may ask the chain); the returned call only computes
        ``(metrics, held-out rows)`` (any thread: no chain request, a model of its own)."""
        plan = self.plan(proposal_id)
        model = self.aggregate(proposal_id, round_)
        _train, val = split_for_plan(self.data, plan, self.dataset_name)
        return lambda: (evaluate(model, plan, val), val.n_rows)

    def submit_evaluation(self, proposal_id: int, round_: int, metrics: dict[str, float],
                          n_rows: int) -> dict[str, float]:
        """Submit the plan's metric of :meth:`evaluation`'s ``metrics`` for the round; returns them."""
        plan = self.plan(proposal_id)
        value = metrics.get(evaluate_config(plan, round_).metric, metrics["accuracy"])
        self.fed.rounds.submit_evaluation(proposal_id, round_, self.dataset_name, metric_to_ppm(value), n_rows)
        self.log(f"evaluated round {round_}'s global model on {n_rows} held-out rows: loss "
                 f"{metrics.get('loss', float('nan')):.4f}, accuracy {metrics.get('accuracy', float('nan')):.3f}",
                 proposal=proposal_id, round=round_, samples=n_rows,
                 loss=round(metrics.get("loss", float("nan")), 6), accuracy=round(metrics.get("accuracy", float("nan")), 6))
        return metrics


def metric_to_ppm(value: float) -> int:
    """A metric in [0, ∞) as an integer in millionths (what the chain stores)."""
    return max(0, min(int(round(value * PPM)), 2**32 - 1))


# -- long-running service -------------------------------------------------------------

#: Reverts that mean "the chain moved on without us" (a deadline passed, another process
#: with our key did it first): the step is dropped with a log line and the loop reads the
#: chain again.
MOVED_ON = frozenset({
    "RoundsNotOpen", "RoundsDeadlinePassed", "RoundsAlreadyCommitted", "RoundsNotClosed", "RoundsAlreadyEvaluated",
    "StatisticsAlreadyCommitted", "StatisticsAlreadyPublished", "StatisticsTrainingStarted",
    "SecureRoundsNotRunning", "SecureRoundsOutsidePhase", "SecureRoundsNotEligible",
})

SECAGG_PHASES = ("advertise keys", "share keys", "train, mask and commit", "unmask")


class NodeService:
    """Serve rounds as they open; every step is decided from the chain, never from memory.

    Each pass reads the chain's events (the read model) and does what is due:
    commit to an open round this member has not committed to (before its
    deadline), and evaluate a closed round it committed to whose global metric is
    not recorded yet. Under ``mode = "secagg"``: the ``SecureRounds`` phase due in
    the current window that this member's phase byte on chain does not show done
    (see :meth:`_step_secagg`, which also says what a restarted node can and
    cannot do). So a node stopped at any point and started again redoes
    nothing that is on chain and misses nothing that is still due. An unreachable
    chain node or store is waited for inside the transports (their retry policy);
    a step the chain refuses because it moved on (deadline passed, already done)
    is dropped with a log line.

    ``proposals``: serve exactly these; None: every proposal that targets this
    node's dataset and is approved or still in its vote. :meth:`serve` returns when
    none of them has anything left to do.
    """

    def __init__(self, node: HospitalNode, *, poll_seconds: float = 1.0,
                 proposals: Sequence[int] | None = None) -> None:
        self.node = node
        self.poll = poll_seconds
        self.only = list(dict.fromkeys(int(p) for p in proposals)) if proposals else None
        self.refused: dict[int, str] = {}
        self.outcomes: list[RoundOutcome] = []
        self._said: set[tuple] = set()
        self._dataset_hex: str | None = None
        self._jobs: dict[tuple[int, int], TrainingJob] = {}  # secure rounds: prepared at advertising, trained to mask
        self._sat_out: set[tuple[int, int]] = set()  # secure rounds another member's bad message stopped for us

    # -- helpers -----------------------------------------------------------------

    def _once(self, key: tuple, msg: str, *args, level: int = logging.INFO, **fields) -> None:
        if key not in self._said:
            self._said.add(key)
            self.node.log(msg % args if args else msg, level=level, **fields)

    @property
    def dataset_hex(self) -> str:
        if self._dataset_hex is None:
            self._dataset_hex = "0x" + self.node.fed.registry.dataset_id(self.node.dataset_name).hex()
        return self._dataset_hex

    def _ours(self, rm, pid: int) -> bool:
        p = rm.proposals.get(pid)
        return p is not None and self.dataset_hex in p.targets

    def proposals(self, rm, head: int) -> list[int]:
        """The proposals to look at now (see the class docstring)."""
        if self.only is not None:
            return list(self.only)
        return [pid for pid in sorted(rm.proposals)
                if self._ours(rm, pid) and progress.stage(rm, pid, head).pending]

    # -- one pass ------------------------------------------------------------------

    def step(self, pid: int) -> bool:
        """Do what is due for one proposal; True when nothing is left to do for it."""
        fed = self.node.fed
        rm = fed.read_model()
        head = fed.chain.block_number
        stage = progress.stage(rm, pid, head)
        if stage is not progress.Stage.APPROVED:
            if stage is progress.Stage.VOTING:
                self._once(("voting", pid), "proposal %d is in its vote: waiting for it to be approved", pid,
                           proposal=pid)
                return False
            self._once(("stage", pid), "proposal %d is %s: nothing to do", pid, stage.value, proposal=pid)
            return True
        if not self._ours(rm, pid):
            self._once(("target", pid), "proposal %d does not target dataset %r: nothing to do", pid,
                       self.node.dataset_name, proposal=pid)
            return True
        if pid in self.refused:
            return True
        me = self.node.identity.address.lower()
        total = rm.proposals[pid].rounds
        last = progress.last_round(rm, pid)
        if uc_statistics.has_phase(self.node.signed_plan(pid)):
            st = rm.statistics.get(pid)
            if st is None or st.published is None:
                if last is None and not (st and any(c.member == me for c in st.commits)):
                    lifecycle.set_activity(f"statistics phase of proposal {pid}")
                    out = self._guard(pid, 0, "moments", lambda: self.node.commit_moments(pid))
                    if out is not None:
                        self.outcomes.append(out)
                        if not out.committed:
                            self.refused[pid] = out.reason
                            return True
                self._once(("stats", pid), "proposal %d: waiting for the coordinator to publish the pooled "
                           "statistics", pid, proposal=pid)
                return False
        if last is None:
            self._once(("wait-open", pid), "proposal %d approved: waiting for round 1 to open", pid, proposal=pid)
            return False
        for r in range(1, last.round + 1):
            rr = rm.round(pid, r)
            if rr is None:
                continue
            committed = any(c.member == me for c in rr.commits)
            ph = progress.phase(rr)
            if ph == "open" and self.node.signed_plan(pid).mode == "secagg":
                if self._step_secagg(pid, r, rr, head, committed) is False:
                    return True  # refused: nothing more for this proposal
            elif ph == "open" and not committed:
                if head > rr.deadline:
                    self._once(("late", pid, r), "round %d of proposal %d passed its deadline (block %d) "
                               "before this node committed", r, pid, rr.deadline, proposal=pid, round=r)
                    continue
                lifecycle.set_activity(f"training round {r} of proposal {pid}")
                out = self._guard(pid, r, "commit", lambda: self.node.train_and_commit(pid, r))
                if out is not None:
                    self.outcomes.append(out)
                    if not out.committed:
                        self.refused[pid] = out.reason
                        return True
            elif ph == "closed" and committed and rr.global_metric_ppm is None \
                    and not any(e.member == me for e in rr.evaluations):
                lifecycle.set_activity(f"evaluating round {r} of proposal {pid}")
                self._guard(pid, r, "evaluation", lambda: self.node.evaluate_and_submit(pid, r))
        lifecycle.set_activity("waiting for the chain")
        return last.round >= total and progress.phase(last) != "open"

    def _step_secagg(self, pid: int, r: int, rr, head: int, committed: bool) -> bool | None:
        """An open round of a ``secagg`` plan: the SecureRounds phase that is due now, if this member has not
        done it (the chain's phase byte for this member says which it did). False: refused (sits out the plan).

        The round's secrets (key-agreement and mask keys) live only in this process's memory
        (:attr:`HospitalNode._secagg`); a node restarted after advertising keys cannot share, mask or
        unmask in that round. It then sits the round out - the protocol treats it as a dropout (its
        masked input, if it committed one, is unmasked from the others' shares, its own keys are
        never re-sent, nothing is committed twice) - and takes part again from the next round on.
        One exception needs no secret: a masked input committed in Rounds but not yet marked (the
        process died between the two transactions) is marked from its on-chain commitment.
        """
        node, fed = self.node, self.node.fed
        rec = fed.read_model().secure.get((pid, r))
        if rec is None:
            if head > rr.deadline:
                self._once(("late", pid, r), "round %d of proposal %d passed its deadline (block %d) before its "
                           "secure-aggregation session started", r, pid, rr.deadline, proposal=pid, round=r)
            else:
                self._once(("secagg-wait", pid, r), "round %d of proposal %d: waiting for the coordinator to start "
                           "its secure-aggregation session", r, pid, proposal=pid, round=r)
            return None
        bits = fed.secure.phases(pid, r, node.identity.address)
        k = 0
        while k < 4 and bits & (1 << k):
            k += 1
        if k == 4:
            return None  # every phase done
        p = rec.phase_blocks
        first = rec.start_block + k * p + 1
        last = first + p - 1
        nxt = head + 1  # the block our transaction lands in, at the earliest
        markable = k == 2 and committed and rec.stage == "RUNNING" and first <= nxt <= last
        if k > 0 and (pid, r) not in node._secagg and not markable:
            self._once(("secagg-lost", pid, r), "round %d of proposal %d: this node advertised keys for the round "
                       "in an earlier process and its secrets for it are gone (they are never written to disk), so "
                       "it cannot %s; sitting this round out (the others unmask without it; nothing is sent "
                       "twice) and taking part again from the next round", r, pid, SECAGG_PHASES[k],
                       level=logging.WARNING, proposal=pid, round=r)
            return None
        if rec.stage != "RUNNING" or (pid, r) in self._sat_out:
            return None
        if nxt > last:
            if k == 0:
                self._once(("secagg-missed", pid, r), "round %d of proposal %d: the window to advertise keys "
                           "closed (block %d) before this node did; sitting this round out", r, pid, last,
                           level=logging.WARNING, proposal=pid, round=r)
            else:
                self._once(("secagg-missed", pid, r, k), "round %d of proposal %d: the window to %s closed (block "
                           "%d) before this node did; the protocol counts it as a dropout from here on", r, pid,
                           SECAGG_PHASES[k], last, level=logging.WARNING, proposal=pid, round=r)
            return None
        if nxt < first:
            return None  # the phase's window has not opened yet
        if markable:  # committed in Rounds but not marked (a restart between the two transactions)
            c = next(c for c in rr.commits if c.member == node.identity.address.lower())
            lifecycle.set_activity(f"marking the masked input of round {r} of proposal {pid}")
            tx = self._guard(pid, r, "marking the masked input", lambda: fed.secure.mark_masked(
                pid, r, node.dataset_name, c.cid, c.sha256, c.n_samples))
            if tx is not None:
                node.log(f"marked the masked input committed earlier in round {r} of proposal {pid} ({c.cid})",
                         proposal=pid, round=r, cid=c.cid)
            return None
        lifecycle.set_activity(f"secure round {r} of proposal {pid}: {SECAGG_PHASES[k]}")
        try:
            return self._secagg_phase(pid, r, k)
        except secagg_round.SecAggRoundError as exc:  # e.g. another member's message: the round cannot go on
            self._sat_out.add((pid, r))
            self._once(("secagg-bad", pid, r), "round %d of proposal %d cannot go on for this node: %s; sitting "
                       "this round out", r, pid, exc, level=logging.WARNING, proposal=pid, round=r)
            return None

    def _secagg_phase(self, pid: int, r: int, k: int) -> bool | None:
        """Phase ``k`` of secure round ``r`` (its window is open; see :meth:`_step_secagg`)."""
        node = self.node
        if k == 0:
            job = node.prepare(pid, r)  # admission, plan, model size, privacy budget: refused before any key
            if isinstance(job, RoundOutcome):
                self.outcomes.append(job)
                self.refused[pid] = job.reason
                return False
            self._jobs[(pid, r)] = job
            if self._guard(pid, r, "advertising keys", lambda: node.secagg_advertise(pid, r)) is not None:
                node.log(f"advertised keys for round {r} of proposal {pid}", proposal=pid, round=r)
        elif k == 1:
            if self._guard(pid, r, "sharing keys", lambda: node.secagg_share(pid, r)) is not None:
                node.log(f"shared keys for round {r} of proposal {pid}", proposal=pid, round=r)
        elif k == 2:
            job = self._jobs.get((pid, r)) or node.prepare(pid, r)
            if isinstance(job, RoundOutcome):
                self.outcomes.append(job)
                self.refused[pid] = job.reason
                return False
            out = self._guard(pid, r, "the masked input", lambda: node.secagg_mask(job, job.train()))
            if out is not None:
                self.outcomes.append(out)
                self._jobs.pop((pid, r), None)
                node.log(f"committed the masked input of round {r} of proposal {pid}: {out.cid} "
                         f"({out.n_samples} samples)", proposal=pid, round=r, cid=out.cid, samples=out.n_samples)
        else:
            if self._guard(pid, r, "unmasking", lambda: node.secagg_unmask(pid, r)) is not None:
                node.log(f"sent the unmasking shares of round {r} of proposal {pid}", proposal=pid, round=r)
        return None

    def _guard(self, pid: int, r: int, what: str, fn):
        """Run one step; a refusal because the chain moved on is logged and dropped."""
        try:
            return fn()
        except ChainRevert as exc:
            if exc.error not in MOVED_ON:
                raise
            self.node.log(f"{what} for round {r} of proposal {pid} not needed any more: {exc}",
                          level=logging.WARNING, proposal=pid, round=r)
        except TransactionConflict as exc:
            self.node.log(f"{what} for round {r} of proposal {pid} dropped: {exc}", level=logging.WARNING,
                          proposal=pid, round=r)
        return None

    def serve(self, proposal: int | Sequence[int] | None = None, *, exit_when_done: bool = True,
              timeout: float | None = None) -> None:
        """Step until nothing is left (``exit_when_done``) or forever; waits through :func:`lifecycle.sleep`.

        ``proposal`` (one id or several) overrides the constructor's ``proposals``.
        """
        if proposal is not None:
            self.only = [proposal] if isinstance(proposal, int) else list(proposal)
        fed = self.node.fed
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            lifecycle.check()
            head = fed.chain.block_number
            rm = fed.read_model()
            active = [pid for pid in self.proposals(rm, head) if not self.step(pid)]
            if exit_when_done and not active:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise FedchainError(f"node {self.node.dataset_name}: gave up waiting after {timeout:.0f} s")
            lifecycle.set_activity("waiting for the chain")
            progress.wait_for_block(fed.chain, head, self.poll)


def max_model_parameters(raw: dict, source) -> int:
    """The node config's ``[limits] max_model_parameters`` (default: the
    consortium default), the largest model this node agrees to build."""

    limits = raw.get("limits", {})
    value = limits.get("max_model_parameters", DEFAULT_MAX_MODEL_PARAMETERS) if isinstance(limits, dict) else None
    if (not isinstance(limits, dict) or set(limits) - {"max_model_parameters"}
            or isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{source}: [limits] takes only max_model_parameters = N (a positive integer)")
    return value


def run_node(config_path, *, proposals: Sequence[int] | None = None, exit_when_done: bool = True,
             log_json: bool | None = None) -> None:
    """``fedchain node run``: load the config, connect, serve until nothing is left (see :class:`NodeService`).

    Raises :class:`~fedchain.lifecycle.StopRequested` when a signal stopped it (after
    saying so), and the transports' ``ChainUnavailable`` / ``StoreUnavailable`` when a
    peer stayed unreachable for the whole retry horizon; the CLI maps each to its exit code.
    """
    cfg = load_role_config(config_path, extra_sections={"dataset", "limits"})
    ds = cfg.section("dataset")
    max_params = max_model_parameters(cfg.raw, cfg.source)
    for key in ("name", "csv", "schema"):
        if key not in ds:
            raise ConfigError(f"{cfg.source}: [dataset] needs {key} = ...")
    json_lines = cfg.log_json if log_json is None else log_json
    logs.setup(role="node", json_lines=json_lines, level=cfg.log_level.upper())
    identity = cfg.identity.load()
    dev = is_dev_identity(identity)
    logs.setup(role="node", who=logs.identity_label(identity.name, identity.address, dev), dev=dev,
               json_lines=json_lines, level=cfg.log_level.upper())
    schema = load_schema(cfg.path(ds["schema"]))
    data = load_dataset(cfg.path(ds["csv"]), schema)
    with lifecycle.handling(log):
        chain = Chain.connect(cfg.chain_url, retry=cfg.retry)
        require_chain_allows(identity, chain.chain_id)  # DEV ONLY keys act on dev chains only
        fed = chain.attach(Deployment.load(cfg.deployment_file)).as_(identity.account)
        with open_store(cfg.store, retry=cfg.retry) as store:
            node = HospitalNode(fed, store, identity, ds["name"], schema, data, max_model_parameters=max_params)
            svc = NodeService(node, poll_seconds=cfg.poll_seconds, proposals=proposals)
            progress.check_proposals_exist(fed, svc.only)
            serving = f"proposal(s) {', '.join(map(str, svc.only))}" if svc.only else "every proposal that targets it"
            logs.event(log, "%sserving dataset %r (%d rows) on %s, store %s: %s",
                       "DEV ONLY identity (public key): " if dev else "", ds["name"], data.n_rows, cfg.chain_url,
                       cfg.store, serving, address=identity.address, dataset=ds["name"])
            svc.serve(exit_when_done=exit_when_done)
            for pid, why in svc.refused.items():
                logs.event(log, "refused proposal %d: %s", pid, why, level=logging.WARNING, proposal=pid)
            logs.event(log, "done: nothing left to do for %s", serving.replace("every", "any"))
