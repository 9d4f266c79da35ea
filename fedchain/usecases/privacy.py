"""The ε ledger as the members see it: what a round spends, whether the budget allows it, what is left.

Shared by the node (it computes the spend *before* training and refuses when the
dataset's budget would be exceeded), the coordinator (it leaves out an update whose
stated ε is not the plan's), the audit replay (it recomputes every round's ε) and
``fedchain dataset budget``. The numbers come from :mod:`fedchain.privacy` (the
library accountant) and the chain's events (the read model), so all four agree.

A dataset's *participation* in a round is its 1-based count among the proposal's
rounds it committed to: the k-th commitment of a dataset in a proposal states
``ε(k) - ε(k-1)`` of the accountant (see :func:`fedchain.privacy.round_spend`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedchain.contracts.bindings import dataset_id
from fedchain.errors import ConfigError
from fedchain.privacy import DELTA_UNIT, EPSILON_UNIT, round_spend
from fedchain.usecases.refusals import Refused

__all__ = ["Budget", "ProposalSpend", "participation", "expected_spend", "privacy_mismatch", "check_budget", "budget",
           "budget_from_events"]

#: The registry's charge of a non-private update (``IDatasetRegistry.NOT_PRIVATE``, 2**64 - 1): a
#: budget is capped just below it.
NOT_PRIVATE = 2**64 - 1


def _did(dataset: str | bytes) -> str:
    return "0x" + dataset_id(dataset).hex()


def participation(read_model: Any, proposal_id: int, dataset: str | bytes, round_: int) -> int:
    """The 1-based participation of ``dataset`` in round ``round_`` of the proposal: one more than the
    number of its commitments in the proposal's earlier rounds (from the UpdateCommitted events)."""
    did = _did(dataset)
    earlier = 0
    for (pid, r), rec in read_model.rounds.items():
        if pid == proposal_id and r < round_:
            earlier += sum(1 for c in rec.commits if c.dataset_id == did)
    return earlier + 1


def expected_spend(plan, read_model: Any, proposal_id: int, dataset: str | bytes, round_: int,
                   n_samples: int) -> tuple[int, int]:
    """``(epsilon_micro, delta_pico)`` the commitment of ``dataset`` in round ``round_`` must state."""
    return round_spend(plan, n_samples, participation(read_model, proposal_id, dataset, round_))


def privacy_mismatch(plan, read_model: Any, proposal_id: int, round_: int, member: str, dataset: str | bytes | None,
                     n_samples: int) -> str:
    """Why the commitment of ``member`` in the round does not state the plan's ε/δ ("" if it does).

    The coordinator leaves such an update out (``WRONG_PRIVACY``) and the audit replay derives the
    same: the ledger must charge what the plan's round spends, not what a node chose to state."""
    if dataset is None:
        return ""
    did = _did(dataset)
    rec = read_model.rounds.get((proposal_id, round_))
    commit = next((c for c in (rec.commits if rec is not None else []) if c.member == member.lower()
                   and c.dataset_id == did), None)
    if commit is None:
        return ""
    want = expected_spend(plan, read_model, proposal_id, did, round_, n_samples)
    got = (commit.privacy.epsilon_micro, commit.privacy.delta_pico) if commit.privacy is not None else (0, 0)
    if got == want:
        return ""
    return (f"it states epsilon {got[0] / EPSILON_UNIT:g} (delta {got[1] / 1e12:g}); the plan's round spends epsilon "
            f"{want[0] / EPSILON_UNIT:g} (delta {want[1] / 1e12:g}) for {n_samples} samples")


def budget_from_events(read_model: Any, dataset: str | bytes) -> tuple[int, int]:
    """``(budget, spent)`` in millionths of ε, as ``DatasetRegistry.privacyBudget`` answers, from the events.

    The budget is the latest policy's ``maxEpsilonMilli`` in millionths (capped below
    :data:`NOT_PRIVATE`, as the contract caps it; 0 = none), the spend the ledger's total
    in the last ``PrivacySpent`` event; an unknown dataset has neither.
    """
    rec = read_model.datasets.get(_did(dataset))
    if rec is None:
        return 0, 0
    milli = rec.policies[-1].max_epsilon_milli if rec.policies else 0
    return min(milli * 1000, NOT_PRIVATE - 1), rec.epsilon_spent_micro


def check_budget(gov: Any, dataset: str, epsilon_micro: int, where: str = "", delta_pico: int | None = None) -> None:
    """Raise :class:`Refused` (``PRIVACY_BUDGET_EXCEEDED``, the contract's wording) if the dataset's
    budget cannot take ``epsilon_micro`` more (0 = a non-private update, which no budget takes), or
    (``INVALID_DELTA``) if a private update's δ is not below 1/rows of the dataset.

    The budget is read from the events (:func:`budget_from_events`: no contract call); this is the
    node's check before it trains, the contract charges the budget itself at the commitment."""
    prefix = f"{where}: " if where else ""
    if epsilon_micro > 0 and delta_pico is not None:
        info = gov.registry.dataset(dataset)
        if info is not None and delta_pico * info.row_count >= DELTA_UNIT:
            raise Refused("INVALID_DELTA", f"{prefix}delta {delta_pico / DELTA_UNIT:g} is not below 1/{info.row_count}, "
                                           f"the rows of dataset {dataset!r}")
    max_micro, spent = budget_from_events(gov.read_model(), dataset)
    if max_micro == 0:
        return
    if epsilon_micro == 0:
        raise Refused("PRIVACY_BUDGET_EXCEEDED",
                      f"{prefix}the plan adds no differential privacy and dataset {dataset!r} has a budget of "
                      f"epsilon {max_micro / EPSILON_UNIT:g}")
    if spent + epsilon_micro > max_micro:
        raise Refused("PRIVACY_BUDGET_EXCEEDED",
                      f"{prefix}this round spends epsilon {epsilon_micro / EPSILON_UNIT:g}, dataset {dataset!r} has "
                      f"{(max_micro - spent) / EPSILON_UNIT:g} left of {max_micro / EPSILON_UNIT:g}")


@dataclass
class ProposalSpend:
    """What one proposal spent on a dataset, round by round (ε in millionths)."""

    proposal_id: int
    rounds: dict[int, int] = field(default_factory=dict)  # round -> epsilon_micro
    delta_pico: int = 0

    @property
    def total_micro(self) -> int:
        return sum(self.rounds.values())


@dataclass
class Budget:
    """A dataset's privacy budget: allowed, spent (per proposal and round, from the events) and left."""

    dataset: str
    max_micro: int  # 0: no budget
    spent_micro: int  # the registry's ledger
    proposals: list[ProposalSpend] = field(default_factory=list)

    @property
    def left_micro(self) -> int | None:
        return None if self.max_micro == 0 else self.max_micro - self.spent_micro

    @property
    def events_total_micro(self) -> int:
        return sum(p.total_micro for p in self.proposals)

    def to_dict(self) -> dict[str, Any]:
        f = EPSILON_UNIT
        return {
            "dataset": self.dataset,
            "allowed": self.max_micro / f if self.max_micro else None,
            "spent": self.spent_micro / f,
            "left": None if self.left_micro is None else self.left_micro / f,
            "proposals": [{"proposal": p.proposal_id, "spent": p.total_micro / f, "delta": p.delta_pico / 1e12,
                           "rounds": {str(r): e / f for r, e in sorted(p.rounds.items())}} for p in self.proposals],
        }


def budget(gov: Any, dataset: str) -> Budget:
    """The dataset's budget from the chain: the registry's allowance and ledger, and every spend's event."""
    info = gov.registry.dataset(dataset)
    if info is None:
        raise ConfigError(f"no dataset {dataset!r} is registered")
    max_micro, spent = gov.registry.privacy_budget(dataset)
    rec = gov.read_model().datasets.get(_did(dataset))
    by_proposal: dict[int, ProposalSpend] = {}
    for s in (rec.privacy_spends if rec is not None else []):
        p = by_proposal.setdefault(s.proposal_id, ProposalSpend(s.proposal_id))
        p.rounds[s.round] = p.rounds.get(s.round, 0) + s.epsilon_micro
        p.delta_pico = s.delta_pico
    return Budget(dataset, max_micro, spent, [by_proposal[k] for k in sorted(by_proposal)])
