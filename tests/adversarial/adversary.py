"""Scenario helpers for the adversarial tests: a consortium, and members and coordinators that misbehave.

Everything goes through the public code path: the in-process :class:`Simulation`
(real chain, real store, real nodes and coordinator), members acting through the
bindings or sealing envelopes they craft, a coordinator whose *decisions* are
altered (:class:`LyingCoordinator`) but which then pins and closes through the
real ``close_round``, and the audit through ``replay_live`` / ``replay_trail`` or
``fedchain.cli.main``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from fedchain.cli.simulation import Simulation
from fedchain.content import MAX_DOCUMENT_SIZE, fetch_document, seal_and_pin
from fedchain.coordinator.audit.replay import ReplayReport, replay_live
from fedchain.coordinator.collect import Outcome
from fedchain.coordinator.runner import Commitment, Coordinator
from fedchain.envelope import EnvelopeContext
from fedchain.models import initial_state
from fedchain.plan import TrainingPlan
from fedchain.sample_data import demo_plan
from fedchain.serialize import state_dict_to_bytes

__all__ = ["World", "LyingCoordinator", "make_world", "bad_update"]


@dataclass
class World:
    """A consortium of hospitals with an approved proposal; :meth:`fresh` rewinds the chain to that point."""

    sim: Simulation
    pid: int
    plan: TrainingPlan
    snapshot: object = None
    coordinator_factory: Callable[..., Coordinator] = Coordinator
    nodes: list = field(default_factory=list)
    coord: Coordinator | None = None
    saved: dict = field(default_factory=dict)

    # -- set-up --------------------------------------------------------------------

    def fresh(self, coordinator_cls: type[Coordinator] = Coordinator, **kw) -> "World":
        """Back to the approved proposal (no round opened); new nodes and a new coordinator."""
        return self.restore("", coordinator_cls, **kw)

    def save(self, name: str) -> None:
        """Remember the chain as it is now under ``name`` (e.g. after the honest commitments of a round)."""
        self.saved[name] = self.sim.chain.snapshot()

    def restore(self, name: str, coordinator_cls: type[Coordinator] = Coordinator, **kw) -> "World":
        """Back to the state saved as ``name`` ("": the approved proposal); new nodes and a new coordinator."""
        chain = self.sim.chain
        if not name:
            chain.revert(self.snapshot)
            self.snapshot = chain.snapshot()  # (anvil reverts to a snapshot once)
        else:
            chain.revert(self.saved[name])
            self.saved[name] = chain.snapshot()
        self.nodes = self.sim.nodes()
        self.coord = coordinator_cls(self.sim.fed(self.sim.ops), self.sim.store, self.sim.ops, **kw)
        return self

    @property
    def fed(self):
        return self.sim.fed()

    def member(self, i: int):
        return self.sim.members[i]

    def address(self, i: int) -> str:
        return self.sim.members[i].address

    # -- acting ----------------------------------------------------------------------

    def open(self, round_: int = 1):
        return self.coord.open_round(self.pid, round_)

    def commit_honest(self, round_: int, which) -> None:
        for i in which:
            assert self.nodes[i].train_and_commit(self.pid, round_).committed

    def seal_and_commit(self, i: int, round_: int, payload: bytes, *, recipients: list[bytes] | None = None,
                        n_samples: int = 50) -> str:
        """Member ``i`` seals ``payload`` itself (for the coordinator and the auditor unless told) and commits it."""
        m = self.member(i)
        ctx = EnvelopeContext(chain_id=self.sim.deployment.chain_id, contract=self.fed.addresses["Rounds"],
                              proposal_id=self.pid, round=round_, sender=m.address)
        keys = recipients if recipients is not None else [self.sim.ops.x25519_public, self.sim.auditor.x25519_public]
        sealed = seal_and_pin(self.sim.store, payload, ctx, m, keys)
        self.commit_raw(i, round_, sealed.cid, sealed.sha256, n_samples)
        return sealed.cid

    def commit_raw(self, i: int, round_: int, cid: str, sha256: str, n_samples: int = 50) -> None:
        """Member ``i`` commits whatever CID and hash it likes, through the bindings."""
        self.sim.fed(self.member(i)).rounds.commit_update(self.pid, round_, self.sim.names[i], cid, sha256, n_samples)

    def evaluate(self, round_: int, which) -> None:
        for i in which:
            self.nodes[i].evaluate_and_submit(self.pid, round_)

    # -- reading ---------------------------------------------------------------------

    def scores_doc(self, round_: int) -> dict:
        info = self.fed.rounds.round_info(self.pid, round_)
        return json.loads(fetch_document(self.sim.store, info.scores_cid, info.scores_sha256,
                                         max_size=MAX_DOCUMENT_SIZE))

    def replay(self, auditor=None) -> ReplayReport:
        return replay_live(self.fed, self.sim.store, auditor or self.sim.auditor)

    def verdict(self, round_: int = 1, auditor=None):
        report = self.replay(auditor)
        assert not report.governance, report.governance
        return next(v for v in report.rounds if v.round == round_)


def make_world(root: Path, *, hospitals: int = 4, seed: int = 5, store=None, chain_url: str = "eth-tester://",
               **plan_changes) -> World:
    """``hospitals`` hospitals (all admitting the plan's purpose), the demo plan approved; snapshot taken."""
    sim = Simulation.create(root, hospitals=hospitals, seed=seed, store=store, fsync=False, chain_url=chain_url)
    sim.register_datasets()
    plan_changes.setdefault("local_epochs", 1)  # the attacks do not need a good model, just a real one
    plan = sim.plan(demo_plan(sim.data.hospitals, seed=seed), **plan_changes)
    pid = sim.approve(plan)
    world = World(sim=sim, pid=pid, plan=plan, snapshot=sim.chain.snapshot())
    return world.fresh()


def bad_update(plan: TrainingPlan, kind: str) -> bytes:
    """Canonical safetensors of the plan's model, broken one way (what a member can seal validly)."""
    state = {k: v.clone() for k, v in initial_state(plan.model, plan.seed).items()}
    first = sorted(state)[0]
    if kind == "NOT_FINITE":
        state[first].view(-1)[0] = float("nan")
    elif kind == "WRONG_SHAPE":
        state[first] = torch.zeros(*(d + 1 for d in state[first].shape))
    elif kind == "WRONG_TENSORS":
        state["extra.weight"] = torch.zeros(3)
    elif kind == "INFINITE":
        state[first].view(-1)[-1] = float("inf")
    else:  # pragma: no cover - test helper
        raise ValueError(kind)
    return state_dict_to_bytes(state)


class LyingCoordinator(Coordinator):
    """A coordinator whose verdicts on updates are rewritten by ``tamper(commitments_and_outcomes)``.

    Everything else -- aggregating what it keeps, pinning, closing on chain -- is
    the real code, so what reaches the chain is what such a coordinator would
    publish.
    """

    def __init__(self, *a, tamper: Callable[[list[tuple[Commitment, Outcome]]], list] | None = None,
                 skip_policy: bool = False, **kw) -> None:
        super().__init__(*a, **kw)
        self.tamper = tamper or (lambda items: items)
        self.skip_policy = skip_policy

    def collect(self, proposal_id: int, round_: int):
        if self.skip_policy:  # ignores the dataset's policy at close: verifies every update anyway
            commitments = self.commitments(proposal_id, round_)
            outcomes = self._verify(proposal_id, round_, commitments)
            items = [(c, outcomes[c.participant.lower()]) for c in commitments]
        else:
            items = super().collect(proposal_id, round_)
        return self.tamper(items)
