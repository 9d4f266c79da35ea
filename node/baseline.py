"""The centralised (pooled) baseline the demo compares federated training with.

It trains exactly the way a hospital node does (same loader, split and
training loop), but on the union of the hospitals' training splits, for the
plan's whole epoch budget (``rounds * local_epochs``). Only a demo or a study
with synthetic or public data can do this; real hospitals never pool.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from fedchain.errors import ConfigError
from fedchain.models import initial_state
from fedchain.plan import TrainingPlan, train_config
from fedchain.sample_data import HospitalData
from fedchain.node.dataset import TabularData, load_dataset, split_for_plan
from fedchain.node.train import evaluate, train_local


def train_pooled(plan: TrainingPlan, hospitals: Sequence[HospitalData], test: HospitalData) -> dict[str, float]:
    """Centralised baseline: train ``plan``'s model on the union of the
    hospitals' training splits for ``rounds * local_epochs`` epochs (same
    optimizer, batch size and seed) and return its metrics on ``test``."""
    if not hospitals:
        raise ConfigError("train_pooled needs at least one hospital")
    parts = []
    for h in hospitals:
        data = load_dataset(h.csv_path, h.schema_path)
        train, _val = split_for_plan(data, plan, h.name)
        parts.append(train)
    pooled = TabularData.concat(parts)
    # One long "round": the plan's whole epoch budget, same optimizer and batch size, no proximal term.
    config = replace(train_config(plan, 1), local_epochs=plan.rounds * plan.local_epochs, proximal_mu=0.0)
    result = train_local(initial_state(plan.model, plan.seed), plan, pooled, config=config, dataset_seed_key="pooled")
    return evaluate(result.state_dict, plan, load_dataset(test.csv_path, test.schema_path))
