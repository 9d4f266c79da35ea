"""Governance history rebuilt from events alone (live chain or exported trail), and its checks.

:class:`History` is the contracts layer's event read model
(:class:`fedchain.contracts.readmodel.ReadModel`: members with the blocks they
joined and left and their key history, datasets with every policy version,
proposals with their votes, rounds with their commitments) plus the deploy
parameters, and the governance invariants an auditor cares about, each violation
returned as a sentence.

Two checks are the replay's share of rules the contracts cannot enforce without a
loop over participants (pure functions over any read model):
:func:`suspect_failures` (rounds the coordinator failed although enough members had
committed - its claim that too few updates were valid, to be re-verified) and
:func:`closed_with_refused_datasets` (rounds closed with an update whose dataset no
longer admitted the proposal at the close: revoked, policy replaced or expired, or
its owner removed, after it committed).
"""

from __future__ import annotations

from typing import Iterable

from fedchain.contracts.errors import policy_reason
from fedchain.contracts.readmodel import (  # noqa: F401  (re-exported for the audit's readers)
    APPROVED,
    REJECTED,
    CommitRecord,
    DatasetRecord,
    EvaluationRecord,
    MemberRecord,
    PolicyVersion,
    ProposalRecord,
    ReadModel,
    RoundRecord,
)
from fedchain.coordinator.audit.trail import TrailEvent


class History(ReadModel):
    """Everything the events say, folded in chain order, with the deploy parameters.

    On top of the read model it keeps what the audit judges a round's close,
    fail and metric by: the close's block timestamp (policies expire by time),
    who failed a round, and how many evaluations had been submitted when the
    global metric was recorded (the metric must be their mean).
    """

    def __init__(self, events: Iterable[TrailEvent], params: dict | None = None) -> None:
        self.params = params or {}
        #: (proposal, round) -> timestamp of the block the round closed or failed in.
        self.ended_at: dict[tuple[int, int], int] = {}
        #: (proposal, round) -> lower-case address of whoever marked the round Failed.
        self.failed_by: dict[tuple[int, int], str] = {}
        #: (proposal, round) -> number of evaluations folded when the global metric was recorded.
        self.metric_basis: dict[tuple[int, int], int] = {}
        super().__init__(events)

    def _on_RoundClosed(self, ev, a):
        super()._on_RoundClosed(ev, a)
        self.ended_at[(int(a["proposalId"]), int(a["round"]))] = ev.timestamp

    def _on_RoundFailed(self, ev, a):
        super()._on_RoundFailed(ev, a)
        key = (int(a["proposalId"]), int(a["round"]))
        self.ended_at[key] = ev.timestamp
        self.failed_by[key] = str(a.get("by", "")).lower()

    def _on_GlobalMetricRecorded(self, ev, a):
        super()._on_GlobalMetricRecorded(ev, a)
        key = (int(a["proposalId"]), int(a["round"]))
        r = self.rounds.get(key)
        if r is not None:
            self.metric_basis.setdefault(key, len(r.evaluations))

    def coordinator_at(self, block: int) -> str | None:
        """The coordinator's address as of ``block`` (None before the first CoordinatorChanged)."""
        current = None
        for b, addr in self.coordinators:
            if b <= block:
                current = addr
        return current

    # -- invariants -----------------------------------------------------------

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
            if d.row_count and c.n_samples > d.row_count:
                out.append(f"{who}: claims {c.n_samples} samples, but {d.name} registered {d.row_count} rows")
            reason = self.policy_refusal(d, p, c.block, c.timestamp)
            if reason:
                out.append(f"{who}: the policy of {d.name} did not admit proposal {p.id} at that block "
                           f"({policy_reason(reason)})")
            if c.block > r.deadline:
                out.append(f"{who}: after the round deadline (block {r.deadline})")
        return out


def suspect_failures(model: ReadModel) -> list[tuple[int, int, int, int]]:
    """Rounds marked Failed with at least ``minParticipants`` commitments, as
    ``(proposal, round, committed, min_participants)``.

    The contract lets only the coordinator fail such a round, and only after its
    deadline; whether too few of the updates were valid is a claim the chain cannot
    check, so the replay must re-verify every committed update of these rounds.
    """
    out = []
    for (pid, rnd), r in sorted(model.rounds.items()):
        p = model.proposals.get(pid)
        if r.failed_block is not None and p is not None and len(r.commits) >= p.min_participants:
            out.append((pid, rnd, len(r.commits), p.min_participants))
    return out


def closed_with_refused_datasets(model: ReadModel) -> list[tuple[int, int, str, str]]:
    """Commitments of closed rounds whose dataset no longer admitted the proposal at the close,
    as ``(proposal, round, member, reason)`` (a policy reason code, or ``NOT_A_MEMBER``).

    The contract checks the policy at each commitment but cannot re-check every committed
    dataset at close (that would loop over participants, and would let one participant veto
    the close): a coordinator should leave such updates out. ``EXPIRED`` is judged only when
    the events carry block timestamps (an exported trail does).
    """
    out = []
    for (pid, rnd), r in sorted(model.rounds.items()):
        p = model.proposals.get(pid)
        if r.closed_block is None or p is None:
            continue
        for c in r.commits:
            m = model.members.get(c.member)
            d = model.datasets.get(c.dataset_id)
            if m is None or not m.member_at(r.closed_block):
                out.append((pid, rnd, c.member, "NOT_A_MEMBER"))
            elif d is not None and (reason := model.policy_refusal(d, p, r.closed_block, r.closed_timestamp)):
                out.append((pid, rnd, c.member, reason))
    return out
