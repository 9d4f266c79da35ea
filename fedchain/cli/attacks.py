"""Malicious hospitals for the demo, the tests and the benchmarks -- never on the honest node's path.

:class:`AttackingNode` is a :class:`~fedchain.node.runner.HospitalNode` whose
training job is wrapped: it trains honestly (or on flipped labels) and then
tampers with what it commits. Everything else -- admission, sealing, pinning,
committing on chain, evaluating -- is the honest node's code, so the coordinator
and the auditor see exactly what a compromised member could send.

Attacks (``delta`` is the honest update minus the round's global model):

``sign-flip``
    commits ``global - s * delta`` (``s`` = strength, default 4): the update
    points the other way, boosted so that two of six outweigh the honest four.
``scale``
    trains on flipped labels (as ``label-flip``) and commits ``global + s * delta``
    (default 10): the boosted poisoned update of the scaling / model-replacement
    attack (Bagdasaryan et al., "How to Backdoor Federated Learning", AISTATS 2020;
    the scaling attack in Cao et al., "FLTrust", NDSS 2021), made to dominate a plain
    mean. Boosting an *honest* update, as this attack first did, is no attack on
    accuracy: with 2 of 6 hospitals at x10 FedAvg still ended at 0.956 (clean 0.965).
``noise``
    commits ``global + N(0, s^2)`` per weight (default 1), seeded per round and
    hospital: an update that carries no information.
``label-flip``
    trains honestly on its data with every label replaced by its mirror class
    (``n_classes - 1 - y``): data poisoning; the update looks like an honest one.
``free-ride``
    commits the global model it received, unchanged (claiming its samples):
    contributes nothing and hopes to be paid.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import torch

from fedchain.errors import ConfigError
from fedchain.node.runner import HospitalNode, RoundOutcome, TrainingJob
from fedchain.node.train import LocalResult
from fedchain.tabular import TabularData

#: Attack name -> default strength.
ATTACKS = {"sign-flip": 4.0, "scale": 10.0, "noise": 1.0, "label-flip": 0.0, "free-ride": 0.0}


@dataclass(frozen=True)
class Attack:
    """One attack and its strength (``None``: the attack's default)."""

    name: str
    strength: float | None = None

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            raise ConfigError(f"unknown attack {self.name!r} (choose one of: {', '.join(ATTACKS)})")

    @property
    def s(self) -> float:
        return ATTACKS[self.name] if self.strength is None else float(self.strength)


def flip_labels(data: TabularData) -> TabularData:
    """The same rows with every label mirrored (class ``k`` becomes ``n_classes - 1 - k``)."""
    return TabularData(data.features, (len(data.label_values) - 1 - data.labels).contiguous(), data.feature_names,
                       data.label_values, data.source)


@dataclass(frozen=True, eq=False)
class AttackJob:
    """A :class:`~fedchain.node.runner.TrainingJob` whose result is tampered with (thread-safe, deterministic)."""

    inner: TrainingJob
    attack: Attack

    def __getattr__(self, name: str) -> Any:  # proposal_id, round, plan, ... as the honest job has them
        return getattr(self.inner, name)

    def train(self) -> LocalResult:
        job, name, s = self.inner, self.attack.name, self.attack.s
        start = {k: v.detach().to(torch.float32) for k, v in job.start.items()}
        if name == "free-ride":
            return LocalResult({k: v.clone() for k, v in start.items()}, job.data.n_rows, 0.0, {})
        if name == "label-flip":
            return replace(job, data=flip_labels(job.data)).train()
        if name == "noise":
            seed = int.from_bytes(hashlib.sha256(f"noise/{job.round}/{job.dataset_key}".encode()).digest()[:8], "big")
            gen = torch.Generator().manual_seed(seed)
            state = {k: (v + s * torch.randn(v.shape, generator=gen, dtype=torch.float32)).contiguous()
                     for k, v in start.items()}
            return LocalResult(state, job.data.n_rows, 0.0, {})
        trained = replace(job, data=flip_labels(job.data)).train() if name == "scale" else job.train()
        factor = -s if name == "sign-flip" else s
        state = {k: (start[k] + factor * (v - start[k])).contiguous() for k, v in trained.state_dict.items()}
        return replace(trained, state_dict=state)


class AttackingNode(HospitalNode):
    """A compromised member's node: the honest node with its training job wrapped by :class:`AttackJob`."""

    def __init__(self, *args: Any, attack: Attack, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.attack = attack

    def prepare(self, proposal_id: int, round_: int) -> "AttackJob | RoundOutcome":
        job = super().prepare(proposal_id, round_)
        return job if isinstance(job, RoundOutcome) else AttackJob(job, self.attack)
