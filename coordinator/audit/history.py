"""Governance history rebuilt from events alone (live chain or exported trail).

:class:`History` folds the ordered event list into members (with the blocks
they joined and left and their key history), datasets with every policy
version, proposals with their votes, and rounds with their commitments. It
also checks the governance invariants an auditor cares about and returns each
violation as a sentence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from fedchain.coordinator.audit.trail import TrailEvent

APPROVED, REJECTED = "Approved", "Rejected"
_STATE_NAMES = {0: "None", 1: "Active", 2: "Approved", 3: "Rejected", 4: "Cancelled"}
_CHOICES = {0: "none", 1: "yes", 2: "no", 3: "abstain"}


def _hex(v) -> str:
    return v.lower() if isinstance(v, str) else "0x" + bytes(v).hex()


@dataclass
class MemberRecord:
    address: str
    name: str
    joined_block: int
    seq: int
    left_block: int | None = None
    keys: list[tuple[int, str]] = field(default_factory=list)  # (block, x25519 hex)

    def member_at(self, block: int) -> bool:
        return self.joined_block <= block and (self.left_block is None or block < self.left_block)

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


@dataclass
class DatasetRecord:
    id: str
    name: str
    owner: str
    block: int
    schema_hash: str
    policies: list[PolicyVersion] = field(default_factory=list)
    revoked_block: int | None = None

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


@dataclass
class CommitRecord:
    member: str
    dataset_id: str
    cid: str
    sha256: str
    n_samples: int
    block: int
    timestamp: int


@dataclass
class RoundRecord:
    proposal_id: int
    round: int
    opened_block: int
    deadline: int
    commits: list[CommitRecord] = field(default_factory=list)
    closed: dict | None = None
    closed_block: int | None = None
    failed_block: int | None = None
    evaluations: list[dict] = field(default_factory=list)
    global_metric_ppm: int | None = None
    gas: int = 0


class History:
    """Everything the events say, folded in chain order."""

    def __init__(self, events: Iterable[TrailEvent], params: dict | None = None) -> None:
        self.params = params or {}
        self.members: dict[str, MemberRecord] = {}
        self.datasets: dict[str, DatasetRecord] = {}
        self.proposals: dict[int, ProposalRecord] = {}
        self.rounds: dict[tuple[int, int], RoundRecord] = {}
        self.coordinators: list[tuple[int, str]] = []
        self.problems: list[str] = []  # events that make no sense in order
        self.gas_by_tx: dict[str, int] = {}
        self._round_txs: dict[tuple[int, int], set[str]] = {}
        for ev in events:
            handler = getattr(self, f"_on_{ev.event}", None)
            self.gas_by_tx[ev.tx] = ev.gas_used
            if handler is not None:
                handler(ev, ev.args)
        for key, txs in self._round_txs.items():
            self.rounds[key].gas = sum(self.gas_by_tx.get(t, 0) for t in txs)

    # -- folding --------------------------------------------------------------

    def _on_MemberAdmitted(self, ev, a):
        addr = a["account"].lower()
        self.members[addr] = MemberRecord(addr, a["name"], ev.block, a.get("seq", 0), keys=[(ev.block, _hex(a["x25519"]))])

    def _on_MemberRemoved(self, ev, a):
        m = self.members.get(a["account"].lower())
        if m is not None:
            m.left_block = ev.block

    def _on_X25519KeyUpdated(self, ev, a):
        m = self.members.get(a["account"].lower())
        if m is not None:
            m.keys.append((ev.block, _hex(a["x25519"])))

    def _on_CoordinatorChanged(self, ev, a):
        self.coordinators.append((ev.block, a["current"].lower()))

    def _on_DatasetRegistered(self, ev, a):
        did = _hex(a["id"])
        self.datasets[did] = DatasetRecord(did, a["name"], a["owner"].lower(), ev.block, _hex(a["schemaHash"]))

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
        )

    def _on_Voted(self, ev, a):
        p = self.proposals.get(int(a["id"]))
        if p is None:
            self.problems.append(f"block {ev.block}: vote on unknown proposal {a['id']}")
            return
        voter = a["voter"].lower()
        if voter in p.votes:
            self.problems.append(f"proposal {p.id}: {voter} voted twice")
        p.votes[voter] = _CHOICES.get(int(a["choice"]), str(a["choice"]))
        p.vote_blocks[voter] = ev.block

    def _on_ProposalFinalized(self, ev, a):
        p = self.proposals.get(int(a["id"]))
        if p is not None:
            p.final_state = _STATE_NAMES.get(int(a["state"]), str(a["state"]))
            p.final_counts = (int(a["yes"]), int(a["no"]), int(a["abstain"]))
            p.final_block = ev.block

    def _on_ProposalCancelled(self, ev, a):
        p = self.proposals.get(int(a["id"]))
        if p is not None:
            p.cancelled_block = ev.block

    def _round(self, ev, a) -> RoundRecord | None:
        key = (int(a["proposalId"]), int(a["round"]))
        r = self.rounds.get(key)
        if r is None:
            self.problems.append(f"block {ev.block}: {ev.event} for round {key[1]} of proposal {key[0]} that never opened")
        else:
            self._round_txs.setdefault(key, set()).add(ev.tx)
        return r

    def _on_RoundOpened(self, ev, a):
        key = (int(a["proposalId"]), int(a["round"]))
        self.rounds[key] = RoundRecord(key[0], key[1], ev.block, int(a["deadline"]))
        self._round_txs.setdefault(key, set()).add(ev.tx)

    def _on_UpdateCommitted(self, ev, a):
        r = self._round(ev, a)
        if r is not None:
            r.commits.append(CommitRecord(
                member=a["member"].lower(), dataset_id=_hex(a["datasetId"]), cid=a["cid"],
                sha256=_hex(a["updateSha256"]), n_samples=int(a["sampleCount"]), block=ev.block, timestamp=ev.timestamp,
            ))

    def _on_RoundClosed(self, ev, a):
        r = self._round(ev, a)
        if r is not None:
            r.closed = {"aggregate_cid": a["aggregateCid"], "aggregate_sha256": _hex(a["aggregateSha256"]),
                        "scores_cid": a["scoresCid"], "scores_sha256": _hex(a["scoresSha256"]),
                        "committed": int(a["committed"])}
            r.closed_block = ev.block

    def _on_RoundFailed(self, ev, a):
        r = self._round(ev, a)
        if r is not None:
            r.failed_block = ev.block

    def _on_EvaluationSubmitted(self, ev, a):
        r = self._round(ev, a)
        if r is not None:
            r.evaluations.append({"member": a["member"].lower(), "dataset_id": _hex(a["datasetId"]),
                                  "metric_ppm": int(a["metricPpm"]), "n_samples": int(a["sampleCount"])})

    def _on_GlobalMetricRecorded(self, ev, a):
        r = self._round(ev, a)
        if r is not None:
            r.global_metric_ppm = int(a["metricPpm"])

    # -- invariants -----------------------------------------------------------

    def members_at(self, block: int) -> int:
        return sum(1 for m in self.members.values() if m.member_at(block))

    def proposal_problems(self, p: ProposalRecord) -> list[str]:
        """Votes counted right, quorum and threshold applied right."""
        out = []
        eligible = {a for a, m in self.members.items() if m.member_at(p.block) and m.joined_block < p.block}
        for voter, block in p.vote_blocks.items():
            if voter not in eligible or not self.members[voter].member_at(block):
                out.append(f"proposal {p.id}: vote by {voter}, who was not an eligible member")
        if p.eligible is not None and p.eligible != len(eligible):
            out.append(f"proposal {p.id}: submitted with {p.eligible} eligible member(s), "
                       f"but the member events give {len(eligible)}")
        yes = sum(1 for v in p.votes.values() if v == "yes")
        no = sum(1 for v in p.votes.values() if v == "no")
        abstain = sum(1 for v in p.votes.values() if v == "abstain")
        if p.final_counts is not None:
            if p.final_counts != (yes, no, abstain):
                out.append(f"proposal {p.id}: finalized with yes/no/abstain {p.final_counts}, "
                           f"but the vote events count {(yes, no, abstain)}")
            quorum_bps = self.params.get("quorum_bps")
            approval_bps = self.params.get("approval_bps")
            if quorum_bps is not None and approval_bps is not None:
                # The contract's quorum base is the count it recorded at submission.
                n_eligible = p.eligible if p.eligible is not None else max(len(eligible), 1)
                quorum_met = (yes + no + abstain) * 10_000 >= quorum_bps * n_eligible
                approved = quorum_met and yes + no > 0 and yes * 10_000 >= approval_bps * (yes + no)
                expected = APPROVED if approved else REJECTED
                if p.final_state in (APPROVED, REJECTED) and p.final_state != expected:
                    out.append(f"proposal {p.id}: finalized {p.final_state} but {yes} yes / {no} no / {abstain} "
                               f"abstain of {n_eligible} eligible gives {expected}")
        return out

    def round_governance_problems(self, r: RoundRecord) -> list[str]:
        """Round opened only under an approved proposal; commitments admitted by policy at their block."""
        out = []
        p = self.proposals.get(r.proposal_id)
        if p is None:
            return [f"round {r.round} opened for unknown proposal {r.proposal_id}"]
        if p.final_state != APPROVED or (p.final_block is not None and p.final_block > r.opened_block):
            out.append(f"round {r.round} of proposal {p.id} opened at block {r.opened_block} "
                       f"but the proposal was not approved then ({p.final_state or 'not finalized'})")
        if r.round > p.rounds:
            out.append(f"round {r.round} opened but proposal {p.id} was approved for {p.rounds} rounds")
        seen = set()
        for c in r.commits:
            who = f"commitment by {c.member} (block {c.block})"
            if c.member in seen:
                out.append(f"{who}: second commitment by the same member")
            seen.add(c.member)
            m = self.members.get(c.member)
            if m is None or not m.member_at(c.block):
                out.append(f"{who}: not a member at that block")
            d = self.datasets.get(c.dataset_id)
            if d is None:
                out.append(f"{who}: unknown dataset {c.dataset_id}")
                continue
            if d.owner != c.member:
                out.append(f"{who}: dataset {d.name} is owned by {d.owner}")
            if c.dataset_id not in p.targets:
                out.append(f"{who}: dataset {d.name} is not a target of proposal {p.id}")
            reason = self.policy_refusal(d, p, c.block, c.timestamp)
            if reason:
                out.append(f"{who}: the policy of {d.name} did not admit proposal {p.id} at that block ({reason})")
            if c.block > r.deadline:
                out.append(f"{who}: after the round deadline (block {r.deadline})")
        return out

    def policy_refusal(self, d: DatasetRecord, p: ProposalRecord, block: int, timestamp: int) -> str:
        if d.revoked_block is not None and d.revoked_block <= block:
            return "revoked"
        pol = d.policy_at(block)
        if pol is None:
            return "no policy"
        if pol.expiry and timestamp >= pol.expiry:  # as the registry: block.timestamp >= expiry
            return "expired"
        if pol.purposes and p.purpose_hash not in pol.purposes:
            return "purpose not allowed"
        if not pol.any_approved and p.id not in pol.proposal_ids:
            return "proposal not allowed"
        if pol.requesters and p.proposer not in pol.requesters:
            return "requester not allowed"
        return ""

    def dataset_name(self, dataset_id: str) -> str:
        d = self.datasets.get(dataset_id)
        return d.name if d else dataset_id
