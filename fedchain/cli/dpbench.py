"""Federated training off chain, for privacy comparisons (``fedchain demo --dp``, ``scripts/bench_dp``).

The same code as a chain run - :func:`fedchain.node.train.train_local` at every hospital (with the
plan's differential privacy) and the plan's strategy (:func:`fedchain.coordinator.strategies.
registry.for_plan`, so server-side DP too) - without commitments, sealing or the store, which do
not change the numbers. Every hospital takes part in every round. It lives with the CLI because
it drives both roles.
"""

from __future__ import annotations

from typing import Sequence

from fedchain.coordinator.strategies.base import ClientUpdate
from fedchain.coordinator.strategies.registry import for_plan
from fedchain.models import initial_state
from fedchain.node.dataset import load_dataset, split_for_plan
from fedchain.node.train import evaluate, train_local
from fedchain.plan import TrainingPlan, train_config
from fedchain.privacy import run_epsilon
from fedchain.sample_data import HospitalData

__all__ = ["federated_run", "without_privacy"]


def without_privacy(plan: TrainingPlan) -> TrainingPlan:
    """The same plan with ``[privacy] mode = "none"``."""
    return plan.with_changes(privacy={"mode": "none"})


def federated_run(plan: TrainingPlan, hospitals: Sequence[HospitalData], test: HospitalData) -> dict:
    """Train ``plan`` on ``hospitals`` for all its rounds; the global model's test metrics and the ε
    each hospital spent (the accountant's total over the run)."""
    trains = []
    for h in hospitals:
        train, _val = split_for_plan(load_dataset(h.csv_path, h.schema_path), plan, h.name)
        trains.append((h.name, train))
    strategy = for_plan(plan)
    state = initial_state(plan.model, plan.seed)
    for r in range(1, plan.rounds + 1):
        updates = []
        for i, (name, train) in enumerate(trains):
            res = train_local(state, plan, train, config=train_config(plan, r), dataset_seed_key=name)
            updates.append(ClientUpdate(f"0x{i + 1:040x}", name, res.n_samples, res.state_dict))
        state = strategy.aggregate_train(r, state, updates)
    metrics = evaluate(state, plan, load_dataset(test.csv_path, test.schema_path))
    return {**metrics, "epsilon": {name: run_epsilon(plan, train.n_rows) for name, train in trains}}
