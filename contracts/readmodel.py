"""The governance state rebuilt from contract events alone - the one event read model.

:class:`ReadModel` folds events, in chain order, into members (with the blocks they
joined and left and their key history), datasets with every policy version,
proposals with their votes, motions, and rounds with their commitments,
evaluations and outcomes. It reads only an event's name, arguments, block, block
timestamp, transaction hash and gas, so it folds events read from a live chain
(:class:`~fedchain.contracts.models.ChainEvent`) and events read back from an
exported audit trail alike, and it imports no web3.

It is fed incrementally: :meth:`ReadModel.apply` takes one event and
:attr:`ReadModel.last_block` says how far it got, so a long-lived connection keeps
one per deployment and folds only new blocks (``Fedchain.read_model()``). Values
are normalised as the trail stores them: addresses and hashes as lower-case
0x-hex strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

__all__ = [
    "CommitRecord", "DatasetRecord", "EventLike", "EvaluationRecord", "MemberRecord", "MotionRecord",
    "PolicyVersion", "ProposalRecord", "ReadModel", "ReleaseRecord", "RoundRecord", "StatisticsRecord",
    "WithdrawalRecord",
]

#: State names as the trail and the audit spell them (IMemberVoting.VoteState).
STATE_NAMES = {0: "None", 1: "Active", 2: "Approved", 3: "Rejected", 4: "Cancelled"}
#: Vote choices (IMemberVoting.Choice).
CHOICES = {0: "none", 1: "yes", 2: "no", 3: "abstain"}
APPROVED, REJECTED = "Approved", "Rejected"


class EventLike(Protocol):
    """What the read model reads of an event (``ChainEvent`` and the trail's events have it)."""

    event: str
    args: dict[str, Any]
    block: int
    tx: str
    timestamp: int
    gas_used: int


def _hex(v: Any) -> str:
    return v.lower() if isinstance(v, str) else "0x" + bytes(v).hex()


@dataclass
class MemberRecord:
    """A member: name, admissions and removals (``periods``), key history."""

    address: str
    name: str
    joined_block: int
    seq: int
    left_block: int | None = None
    keys: list[tuple[int, str]] = field(default_factory=list)  # (block, x25519 hex)
    periods: list[tuple[int, int | None]] = field(default_factory=list)  # (joined, left or None)

    @property
    def active(self) -> bool:
        return self.left_block is None

    @property
    def key(self) -> str:
        """The current X25519 key (0x-hex)."""
        return self.keys[-1][1]

    def member_at(self, block: int) -> bool:
        return any(j <= block and (left is None or block < left) for j, left in self.periods)

    def key_at(self, block: int) -> str:
        key = self.keys[0][1]
        for b, k in self.keys:
            if b <= block:
                key = k
        return key


@dataclass
class PolicyVersion:
    block: int
    purposes: list[str]
    proposal_ids: list[int]
    any_approved: bool
    requesters: list[str]
    expiry: int
    version: int = 0
    max_epsilon_milli: int = 0


@dataclass
class DatasetRecord:
    id: str
    name: str
    owner: str
    block: int
    schema_hash: str
    metadata_cid: str = ""
    metadata_sha256: str = ""
    policies: list[PolicyVersion] = field(default_factory=list)
    revoked_block: int | None = None
    row_count: int = 0  # rows registered (the most samples a commitment may claim)
    epsilon_spent_micro: int = 0  # the ε ledger: total spent, millionths (PrivacySpent's datasetSpentMicro)
    privacy_spends: list["PrivacySpend"] = field(default_factory=list)  # each charge, in chain order

    def policy_at(self, block: int) -> PolicyVersion | None:
        current = None
        for p in self.policies:
            if p.block <= block:
                current = p
        return current


@dataclass
class ProposalRecord:
    id: int
    proposer: str
    block: int
    plan_cid: str
    plan_sha256: str
    purpose: str
    purpose_hash: str
    targets: list[str]
    rounds: int
    min_participants: int
    votes: dict[str, str] = field(default_factory=dict)
    vote_blocks: dict[str, int] = field(default_factory=dict)
    final_state: str | None = None
    final_counts: tuple[int, int, int] | None = None
    final_block: int | None = None
    cancelled_block: int | None = None
    eligible: int | None = None  # the contract's quorum base (active members at submission)
    round_duration: int = 0
    deadline: int = 0
    target_owners: list[str] = field(default_factory=list)  # owner of each target, recorded at submission


@dataclass
class MotionRecord:
    id: int
    proposer: str
    kind: int
    target: str
    block: int
    deadline: int
    eligible: int
    votes: dict[str, bool] = field(default_factory=dict)
    final_state: str | None = None
    final_block: int | None = None
    expiry: int = 0  # last block in which it may be finalized (0: not in the event)


@dataclass
class PrivacySpend:
    """One PrivacySpent event: the ε (millionths) and δ (units of 1e-12) a commitment spent on its dataset."""

    proposal_id: int
    round: int
    dataset_id: str
    epsilon_micro: int
    delta_pico: int
    dataset_spent_micro: int
    block: int
    member: str = ""


@dataclass
class CommitRecord:
    member: str
    dataset_id: str
    cid: str
    sha256: str
    n_samples: int
    block: int
    timestamp: int
    tx: str = ""
    privacy: PrivacySpend | None = None  # None: the update claimed no differential privacy

@dataclass
class EvaluationRecord:
    member: str
    dataset_id: str
    metric_ppm: int
    n_samples: int
    block: int
    tx: str = ""

    # the audit reads evaluations as mappings
    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


@dataclass
class RoundRecord:
    proposal_id: int
    round: int
    opened_block: int
    deadline: int
    commits: list[CommitRecord] = field(default_factory=list)
    closed: dict | None = None
    closed_block: int | None = None
    closed_timestamp: int = 0  # 0 when the events carried no timestamps
    failed_block: int | None = None
    evaluations: list[EvaluationRecord] = field(default_factory=list)
    global_metric_ppm: int | None = None
    gas: int = 0  # gas of every transaction that touched the round (each counted once)
    txs: set[str] = field(default_factory=set, repr=False)


@dataclass
class ReleaseRecord:
    """A release vote on one model (``Releases``)."""

    id: int
    proposal_id: int
    round: int
    proposer: str
    aggregate_sha256: str
    card_cid: str
    card_sha256: str
    block: int
    deadline: int
    eligible: int
    votes: dict[str, str] = field(default_factory=dict)
    final_state: str | None = None
    final_counts: tuple[int, int, int] | None = None
    final_block: int | None = None
    cancelled_block: int | None = None


@dataclass
class WithdrawalRecord:
    """A model marked because a dataset in its lineage was revoked (``Releases.markWithdrawn``)."""

    proposal_id: int
    round: int
    dataset_id: str
    committed_round: int
    member: str
    by: str
    block: int
    tx: str = ""


@dataclass
class StatisticsRecord:
    """A proposal's statistics phase (``Statistics``): the sealed moments, then the published document."""

    proposal_id: int
    commits: list[CommitRecord] = field(default_factory=list)  # n_samples: the rows the moments cover
    published: dict | None = None  # {"cid", "sha256", "committed"}
    published_block: int | None = None


@dataclass
class SecureSessionRecord:
    """A secure-aggregation session (``SecureRounds``): its parameters and who sent what in each phase."""

    proposal_id: int
    round: int
    start_block: int
    threshold: int
    phase_blocks: int
    seed: str
    #: phase (0 keys, 1 shares, 3 unmasking) -> member -> (cid, sha256), in chain order
    messages: dict[int, dict[str, tuple[str, str]]] = field(default_factory=lambda: {0: {}, 1: {}, 3: {}})
    masked: list[str] = field(default_factory=list)  # members whose masked input was marked (U3)
    stage: str = "RUNNING"  # RUNNING, COMPLETED or FAILED
    concluded_block: int | None = None


class ReadModel:
    """Everything the events say, folded in chain order (see the module docstring)."""

    def __init__(self, events: Iterable[EventLike] = ()) -> None:
        self.members: dict[str, MemberRecord] = {}
        self.datasets: dict[str, DatasetRecord] = {}
        self.proposals: dict[int, ProposalRecord] = {}
        self.motions: dict[int, MotionRecord] = {}
        self.rounds: dict[tuple[int, int], RoundRecord] = {}
        self.secure: dict[tuple[int, int], SecureSessionRecord] = {}
        self.coordinators: list[tuple[int, str]] = []
        self.releases: dict[int, ReleaseRecord] = {}
        #: (proposal, round) -> the Approved release of that model.
        self.released: dict[tuple[int, int], int] = {}
        #: (proposal, round) -> its withdrawal marks, in chain order.
        self.withdrawals: dict[tuple[int, int], list[WithdrawalRecord]] = {}
        #: proposal -> its statistics phase (only proposals that have one).
        self.statistics: dict[int, StatisticsRecord] = {}
        self.problems: list[str] = []  # events that make no sense in order
        self.gas_by_tx: dict[str, int] = {}
        #: Highest block whose events were folded (-1: none yet).
        self.last_block = -1
        self.apply_all(events)

    # -- feeding ---------------------------------------------------------------

    def apply_all(self, events: Iterable[EventLike]) -> "ReadModel":
        """Fold events (in chain order, after those already folded)."""
        for ev in events:
            self.apply(ev)
        return self

    def apply(self, ev: EventLike) -> None:
        """Fold one event."""
        self.gas_by_tx[ev.tx] = ev.gas_used
        self.last_block = max(self.last_block, ev.block)
        handler = getattr(self, f"_on_{ev.event}", None)
        if handler is not None:
            handler(ev, ev.args)

    # -- queries ---------------------------------------------------------------

    @property
    def coordinator(self) -> str | None:
        return self.coordinators[-1][1] if self.coordinators else None

    def round(self, proposal_id: int, round_: int) -> RoundRecord | None:
        return self.rounds.get((int(proposal_id), int(round_)))

    def members_at(self, block: int) -> int:
        return sum(1 for m in self.members.values() if m.member_at(block))

    def dataset_name(self, dataset_id: str) -> str:
        d = self.datasets.get(dataset_id)
        return d.name if d else dataset_id

    def policy_refusal(self, d: DatasetRecord, p: ProposalRecord, block: int, timestamp: int) -> str:
        """The registry's reason code for refusing proposal ``p`` on dataset ``d`` at ``block``, or "".

        The same rule as ``DatasetRegistry``'s check (the proposal is taken as approved);
        ``NO_POLICY`` when the events show no policy yet.
        """
        if d.revoked_block is not None and d.revoked_block <= block:
            return "REVOKED"
        pol = d.policy_at(block)
        if pol is None:
            return "NO_POLICY"
        if pol.expiry and timestamp >= pol.expiry:  # as the registry: block.timestamp >= expiry
            return "EXPIRED"
        if pol.purposes and p.purpose_hash not in pol.purposes:
            return "PURPOSE_NOT_ALLOWED"
        if not pol.any_approved and p.id not in pol.proposal_ids:
            return "PROPOSAL_NOT_ALLOWED"
        if pol.requesters and p.proposer not in pol.requesters:
            return "REQUESTER_NOT_ALLOWED"
        return ""

    # -- folding ---------------------------------------------------------------

    def _on_MemberAdmitted(self, ev, a):
        address = a["account"].lower()
        key = (ev.block, _hex(a["x25519"]))
        m = self.members.get(address)
        if m is None:
            self.members[address] = MemberRecord(
                address, a["name"], ev.block, int(a.get("seq", 0)), keys=[key], periods=[(ev.block, None)]
            )
        else:  # admitted again after a removal
            m.name, m.joined_block, m.seq, m.left_block = a["name"], ev.block, int(a.get("seq", 0)), None
            m.keys.append(key)
            m.periods.append((ev.block, None))

    def _on_MemberRemoved(self, ev, a):
        m = self.members.get(a["account"].lower())
        if m is not None:
            m.left_block = ev.block
            m.periods[-1] = (m.periods[-1][0], ev.block)

    def _on_X25519KeyUpdated(self, ev, a):
        m = self.members.get(a["account"].lower())
        if m is not None:
            m.keys.append((ev.block, _hex(a["x25519"])))

    def _on_CoordinatorChanged(self, ev, a):
        self.coordinators.append((ev.block, a["current"].lower()))

    def _on_MotionProposed(self, ev, a):
        mid = int(a["id"])
        self.motions[mid] = MotionRecord(
            id=mid, proposer=a["proposer"].lower(), kind=int(a["kind"]), target=a["target"].lower(),
            block=ev.block, deadline=int(a["deadline"]), eligible=int(a["eligible"]),
            expiry=int(a.get("expiry", 0)),
        )

    def _on_MotionVoted(self, ev, a):
        m = self.motions.get(int(a["id"]))
        if m is not None:
            m.votes[a["voter"].lower()] = bool(a["support"])

    def _on_MotionFinalized(self, ev, a):
        m = self.motions.get(int(a["id"]))
        if m is not None:
            m.final_state = STATE_NAMES.get(int(a["state"]), str(a["state"]))
            m.final_block = ev.block

    def _on_DatasetRegistered(self, ev, a):
        did = _hex(a["id"])
        self.datasets[did] = DatasetRecord(
            did, a["name"], a["owner"].lower(), ev.block, _hex(a["schemaHash"]),
            metadata_cid=a.get("metadataCid", ""), metadata_sha256=_hex(a.get("metadataSha256", "0x")),
            row_count=int(a.get("rowCount", 0)),
        )

    def _on_PolicySet(self, ev, a):
        d = self.datasets.get(_hex(a["id"]))
        if d is None:
            self.problems.append(f"block {ev.block}: policy set for unknown dataset {_hex(a['id'])}")
            return
        p = a["policy"]
        d.policies.append(PolicyVersion(
            block=ev.block,
            purposes=[_hex(x) for x in p["purposes"]],
            proposal_ids=[int(x) for x in p["proposalIds"]],
            any_approved=bool(p["anyApprovedProposal"]),
            requesters=[x.lower() for x in p["requesters"]],
            expiry=int(p["expiry"]),
            version=int(a.get("version", len(d.policies) + 1)),
            max_epsilon_milli=int(p.get("maxEpsilonMilli", 0)),
        ))

    def _on_DatasetRevoked(self, ev, a):
        d = self.datasets.get(_hex(a["id"]))
        if d is not None:
            d.revoked_block = ev.block

    def _on_ProposalSubmitted(self, ev, a):
        pid = int(a["id"])
        self.proposals[pid] = ProposalRecord(
            id=pid, proposer=a["proposer"].lower(), block=ev.block, plan_cid=a["planCid"],
            plan_sha256=_hex(a["planSha256"]), purpose=a["purpose"], purpose_hash=_hex(a["purposeHash"]),
            targets=[_hex(t) for t in a["targets"]], rounds=int(a["rounds"]), min_participants=int(a["minParticipants"]),
            eligible=int(a["eligible"]) if a.get("eligible") is not None else None,
            round_duration=int(a.get("roundDuration", 0)), deadline=int(a.get("deadline", 0)),
            target_owners=[o.lower() for o in a.get("owners", [])],
        )

    def _on_Voted(self, ev, a):
        p = self.proposals.get(int(a["id"]))
        if p is None:
            self.problems.append(f"block {ev.block}: vote on unknown proposal {a['id']}")
            return
        voter = a["voter"].lower()
        if voter in p.votes:
            self.problems.append(f"proposal {p.id}: {voter} voted twice")
        p.votes[voter] = CHOICES.get(int(a["choice"]), str(a["choice"]))
        p.vote_blocks[voter] = ev.block

    def _on_ProposalFinalized(self, ev, a):
        p = self.proposals.get(int(a["id"]))
        if p is not None:
            p.final_state = STATE_NAMES.get(int(a["state"]), str(a["state"]))
            p.final_counts = (int(a["yes"]), int(a["no"]), int(a["abstain"]))
            p.final_block = ev.block

    def _on_ProposalCancelled(self, ev, a):
        p = self.proposals.get(int(a["id"]))
        if p is not None:
            p.cancelled_block = ev.block

    def _round_of(self, ev, a) -> RoundRecord | None:
        key = (int(a["proposalId"]), int(a["round"]))
        r = self.rounds.get(key)
        if r is None:
            self.problems.append(f"block {ev.block}: {ev.event} for round {key[1]} of proposal {key[0]} that never opened")
        else:
            self._add_round_gas(r, ev)
        return r

    def _add_round_gas(self, r: RoundRecord, ev) -> None:
        if ev.tx not in r.txs:
            r.txs.add(ev.tx)
            r.gas += int(ev.gas_used or 0)

    def _on_SessionStarted(self, ev, a):
        key = (int(a["proposalId"]), int(a["round"]))
        self.secure[key] = SecureSessionRecord(key[0], key[1], ev.block, int(a["threshold"]), int(a["phaseBlocks"]),
                                               _hex(a["seed"]))

    def _secure_of(self, ev, a) -> SecureSessionRecord | None:
        s = self.secure.get((int(a["proposalId"]), int(a["round"])))
        if s is None:
            self.problems.append(f"block {ev.block}: {ev.event} for a secure session that never started")
        return s

    def _on_PhaseMessage(self, ev, a):
        s = self._secure_of(ev, a)
        if s is not None and int(a["phase"]) in s.messages:
            s.messages[int(a["phase"])][a["member"].lower()] = (a["cid"], _hex(a["messageSha256"]))

    def _on_MaskedInputMarked(self, ev, a):
        s = self._secure_of(ev, a)
        if s is not None:
            s.masked.append(a["member"].lower())

    def _on_SessionConcluded(self, ev, a):
        s = self._secure_of(ev, a)
        if s is not None:
            s.stage = {2: "COMPLETED", 3: "FAILED"}.get(int(a["stage"]), str(a["stage"]))
            s.concluded_block = ev.block

    def _on_RoundOpened(self, ev, a):
        key = (int(a["proposalId"]), int(a["round"]))
        self.rounds[key] = r = RoundRecord(key[0], key[1], ev.block, int(a["deadline"]))
        self._add_round_gas(r, ev)

    def _on_UpdateCommitted(self, ev, a):
        r = self._round_of(ev, a)
        if r is not None:
            r.commits.append(CommitRecord(
                member=a["member"].lower(), dataset_id=_hex(a["datasetId"]), cid=a["cid"],
                sha256=_hex(a["updateSha256"]), n_samples=int(a["sampleCount"]), block=ev.block,
                timestamp=ev.timestamp, tx=ev.tx,
            ))

    def _on_PrivacySpent(self, ev, a):
        r = self._round_of(ev, a)
        did = _hex(a["datasetId"])
        spend = PrivacySpend(
            proposal_id=int(a["proposalId"]), round=int(a["round"]), dataset_id=did,
            epsilon_micro=int(a["epsilonMicro"]), delta_pico=int(a["deltaPico"]),
            dataset_spent_micro=int(a["datasetSpentMicro"]), block=ev.block,
        )
        if r is not None:  # it follows its UpdateCommitted in the same transaction
            for c in reversed(r.commits):
                if c.tx == ev.tx and c.dataset_id == did:
                    c.privacy = spend
                    spend.member = c.member
                    break
        d = self.datasets.get(did)
        if d is None:
            self.problems.append(f"block {ev.block}: privacy spent on unknown dataset {did}")
            return
        d.epsilon_spent_micro = spend.dataset_spent_micro
        d.privacy_spends.append(spend)

    def _on_RoundClosed(self, ev, a):
        r = self._round_of(ev, a)
        if r is not None:
            r.closed = {"aggregate_cid": a["aggregateCid"], "aggregate_sha256": _hex(a["aggregateSha256"]),
                        "scores_cid": a["scoresCid"], "scores_sha256": _hex(a["scoresSha256"]),
                        "committed": int(a["committed"])}
            r.closed_block = ev.block
            r.closed_timestamp = int(ev.timestamp or 0)

    def _on_RoundFailed(self, ev, a):
        r = self._round_of(ev, a)
        if r is not None:
            r.failed_block = ev.block

    def _on_EvaluationSubmitted(self, ev, a):
        r = self._round_of(ev, a)
        if r is not None:
            r.evaluations.append(EvaluationRecord(
                member=a["member"].lower(), dataset_id=_hex(a["datasetId"]), metric_ppm=int(a["metricPpm"]),
                n_samples=int(a["sampleCount"]), block=ev.block, tx=ev.tx,
            ))

    def _on_GlobalMetricRecorded(self, ev, a):
        r = self._round_of(ev, a)
        if r is not None:
            r.global_metric_ppm = int(a["metricPpm"])

    def _on_ReleaseProposed(self, ev, a):
        rid = int(a["id"])
        self.releases[rid] = ReleaseRecord(
            id=rid, proposal_id=int(a["proposalId"]), round=int(a["round"]), proposer=a["proposer"].lower(),
            aggregate_sha256=_hex(a["aggregateSha256"]), card_cid=a["cardCid"], card_sha256=_hex(a["cardSha256"]),
            block=ev.block, deadline=int(a["deadline"]), eligible=int(a["eligible"]),
        )

    def _on_ReleaseVoted(self, ev, a):
        r = self.releases.get(int(a["id"]))
        if r is None:
            self.problems.append(f"block {ev.block}: vote on unknown release {a['id']}")
            return
        r.votes[a["voter"].lower()] = CHOICES.get(int(a["choice"]), str(a["choice"]))

    def _on_ReleaseFinalized(self, ev, a):
        r = self.releases.get(int(a["id"]))
        if r is None:
            return
        r.final_state = STATE_NAMES.get(int(a["state"]), str(a["state"]))
        r.final_counts = (int(a["yes"]), int(a["no"]), int(a["abstain"]))
        r.final_block = ev.block
        if r.final_state == APPROVED:
            self.released[(r.proposal_id, r.round)] = r.id

    def _on_ReleaseCancelled(self, ev, a):
        r = self.releases.get(int(a["id"]))
        if r is not None:
            r.cancelled_block = ev.block

    def _on_ModelWithdrawn(self, ev, a):
        key = (int(a["proposalId"]), int(a["round"]))
        self.withdrawals.setdefault(key, []).append(WithdrawalRecord(
            proposal_id=key[0], round=key[1], dataset_id=_hex(a["datasetId"]),
            committed_round=int(a["committedRound"]), member=a["member"].lower(), by=a["by"].lower(),
            block=ev.block, tx=ev.tx,
        ))

    def _on_MomentsCommitted(self, ev, a):
        pid = int(a["proposalId"])
        rec = self.statistics.setdefault(pid, StatisticsRecord(pid))
        rec.commits.append(CommitRecord(
            member=a["member"].lower(), dataset_id=_hex(a["datasetId"]), cid=a["cid"], sha256=_hex(a["momentsSha256"]),
            n_samples=int(a["rowCount"]), block=ev.block, timestamp=ev.timestamp, tx=ev.tx,
        ))

    def _on_StatisticsPublished(self, ev, a):
        pid = int(a["proposalId"])
        rec = self.statistics.setdefault(pid, StatisticsRecord(pid))
        rec.published = {"cid": a["cid"], "sha256": _hex(a["statisticsSha256"]), "committed": int(a["committed"])}
        rec.published_block = ev.block
