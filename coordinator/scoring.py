"""A round's scores: what the defences did to each update, and what each member contributed.

The coordinator calls :func:`score_round` right after it aggregates a round, and
the auditor's replay calls it again on the same inputs; both write the result
into the round's scores document (:func:`fedchain.coordinator.runner.scores_document`),
so replay compares them bit for bit.

**Decisions** are the strategy's :attr:`~fedchain.coordinator.strategies.base.Strategy.last_decisions`
(who was excluded, clipped, re-weighted or trimmed, with a reason code and the
number behind it), in canonical order.

**Contribution** (the plan's ``[contribution]`` table, see
:mod:`fedchain.coordinator.contributions` for the three methods):

* a *member* is a participant address (a member with several datasets is one
  player: its datasets' updates are averaged by sample count);
* a member every one of whose updates the rule **excluded** scores value 0,
  share 0, and takes no part in any coalition;
* ``similarity`` (data-free): the cosine of the member's update direction with
  the round's published step ``new_global - global``, floored at 0;
* ``loo`` and ``shapley``: a coalition ``S`` is worth the plan's metric on the
  **public validation set the plan names** (accuracy, or minus the mean
  cross-entropy) of ``global + sum over S of n_i * delta_i / N``, where ``N``
  counts the samples of *every* player: each member owns its part of the
  sample-weighted step, the full coalition is the sample-weighted mean and the
  empty one the round's starting model. So a member whose update is the global
  model (a free-rider, ``delta = 0``) adds exactly nothing to any coalition --
  a null player, score 0 -- instead of being paid for damping the step, as a
  re-normalised mean of the coalition would pay it. Updates are judged as
  committed (a clipped attacker by what it sent). The coordinator holds
  no patient data: the validation set is public data the consortium approved
  with the plan, pinned in its store by hash (and size-bounded), so every
  auditor evaluates the same rows with the same deterministic code
  (:func:`fedchain.tabular.evaluate_state`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from fedchain.content import MAX_DOCUMENT_SIZE, fetch_document
from fedchain.errors import FedchainError
from fedchain.plan import TrainingPlan
from fedchain.schema import parse_schema
from fedchain.tabular import TabularData, evaluate_state, parse_dataset

from fedchain.coordinator.contributions import (
    Score,
    loo_scores,
    shapley_scores,
    shares,
    similarity_scores,
)
from fedchain.coordinator.strategies.base import ClientUpdate, Decision, canonical_order
from fedchain.coordinator.strategies.vectors import BLOCK, flatten, in_parallel, unflatten

__all__ = ["RoundScores", "ValidationSetError", "load_validation_set", "score_round"]


class ValidationSetError(FedchainError):
    """The plan's public validation set cannot be used (wrong hash or size, wrong schema for the model)."""


@dataclass(frozen=True)
class RoundScores:
    """One round's contribution scores (member -> :class:`Score`) and the defences' decisions."""

    method: str
    scores: dict[str, Score] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)

    @property
    def shares(self) -> dict[str, float]:
        return {m: s.share for m, s in self.scores.items()}

    @property
    def values(self) -> dict[str, float]:
        return {m: s.value for m, s in self.scores.items()}


def load_validation_set(store, plan: TrainingPlan) -> TabularData | None:
    """The plan's public validation set, fetched by hash (at most its declared size), or None if it names none.

    Raises :class:`~fedchain.errors.ContentUnavailable` when the store lacks it and
    :class:`ValidationSetError` when its bytes, schema or shape do not fit the plan.
    """
    v = plan.contribution.validation
    if v is None:
        return None
    raw = fetch_document(store, v.csv_cid, v.csv_sha256, max_size=v.size)
    if len(raw) != v.size:
        raise ValidationSetError(f"validation set {v.csv_cid} has {len(raw)} bytes, the plan says {v.size}")
    schema_raw = fetch_document(store, v.schema_cid, v.schema_sha256, max_size=MAX_DOCUMENT_SIZE)
    try:
        schema = parse_schema(json.loads(schema_raw), source=f"validation schema {v.schema_cid}")
    except ValueError as exc:
        raise ValidationSetError(f"validation schema {v.schema_cid} is not JSON: {exc}") from None
    data = parse_dataset(raw, schema, source=f"validation set {v.csv_cid}")
    if data.features.shape[1] != plan.model.n_features or len(data.label_values) != plan.model.n_classes:
        raise ValidationSetError(
            f"validation set {v.csv_cid} has {data.features.shape[1]} features and {len(data.label_values)} "
            f"classes; the plan's model takes {plan.model.n_features} and {plan.model.n_classes}")
    return data


def _member_deltas(base: np.ndarray,
                   updates: Sequence[ClientUpdate]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Each member's sample-weighted mean delta (float64, canonical order) and its sample count.

    ``base`` is the flattened global state. Every step is done in place in the update's
    own flattened buffer: the same IEEE operations as ``((w - base) * n + ...) / N``
    written out, without a fresh vector per operation. Each update's ``(w - base) * n`` is
    computed on the vector threads (:func:`in_parallel`), the sums in canonical order.
    """
    ordered = canonical_order(updates)

    def weighted(u: ClientUpdate, _local: dict) -> np.ndarray:
        d = flatten(u.state)
        np.subtract(d, base, out=d)
        np.multiply(d, float(u.n_samples), out=d)
        return d

    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for u, d in zip(ordered, in_parallel(ordered, weighted, parallel=base.size >= BLOCK)):
        m = u.participant.lower()
        if m in sums:
            np.add(sums[m], d, out=sums[m])
        else:
            sums[m] = d
        counts[m] = counts.get(m, 0) + u.n_samples
    for m, s in sums.items():
        np.divide(s, float(counts[m]), out=s)
    return sums, counts


def score_round(plan: TrainingPlan, round_: int, global_state: Mapping[str, torch.Tensor],
                new_global: Mapping[str, torch.Tensor], updates: Sequence[ClientUpdate],
                decisions: Sequence[Decision], validation: TabularData | None) -> RoundScores:
    """The round's :class:`RoundScores` (see the module docstring); deterministic in its inputs."""
    spec = plan.contribution
    ordered = canonical_order(updates)
    decided = sorted(decisions, key=lambda d: (d.participant.lower(), d.dataset_id, d.action, d.reason))
    excluded_keys = {(d.participant.lower(), d.dataset_id) for d in decisions if d.action == "excluded"}
    members = sorted({u.participant.lower() for u in ordered})
    kept = [u for u in ordered if u.key not in excluded_keys]
    players = sorted({u.participant.lower() for u in kept})
    left_out = {m: 0.0 for m in members if m not in players}
    if not players:
        return RoundScores(spec.method, shares(left_out), decided)
    base = flatten(global_state)
    deltas, counts = _member_deltas(base, kept)
    if spec.method == "similarity":
        step = flatten(new_global)
        np.subtract(step, base, out=step)
        got = similarity_scores(deltas, step)
        return RoundScores(spec.method, shares({**{m: s.value for m, s in got.items()}, **left_out}), decided)
    if validation is None:
        raise ValidationSetError(f"contribution method {spec.method!r} needs the plan's validation set")

    everyone = float(sum(counts.values()))

    def value(coalition: frozenset[str]) -> float:
        if coalition:
            acc = np.zeros_like(base)
            for m in sorted(coalition):  # fixed order: the same float64 sums everywhere
                acc += deltas[m] * float(counts[m])
            state = unflatten(base + acc / everyone, global_state)
        else:
            state = {k: v.detach().to(torch.float64) for k, v in global_state.items()}
        metrics = evaluate_state({k: v.to(torch.float32) for k, v in state.items()}, plan, validation)
        v = metrics["accuracy"] if spec.metric == "accuracy" else -metrics["loss"]
        return v if math.isfinite(v) else -1e12  # a diverged coalition is worth (very) little

    if spec.method == "loo":
        got = loo_scores(players, value)
    else:
        got = shapley_scores(players, value, seed=plan.seed, round_=round_, permutations=spec.permutations,
                             truncation=spec.truncation)
    return RoundScores(spec.method, shares({**{m: s.value for m, s in got.items()}, **left_out}), decided)
