"""The aggregation-strategy interface (after Flower's ``Strategy`` verbs).

A strategy is built from a :class:`~fedchain.plan.TrainingPlan` and offers

* ``initialize(plan)`` -- the round-0 global model, from the plan seed;
* ``configure_fit(round, global_state)`` -- the config a node needs for the
  round (``node.train.train_local(config=...)`` accepts it);
* ``aggregate_fit(round, global_state, updates)`` -- the next global model;
* ``aggregate_evaluate(round, results)`` -- sample-weighted mean of the
  plan's metric over the hospitals' validation results;
* ``contribution_scores(updates)`` -- each participant's share of samples.

Rounds are numbered from 0 to ``plan.rounds - 1``.

Determinism: updates are validated, then sorted by the canonical key
``(participant address lowercased, dataset id)``; the weighted mean is
accumulated in float64 in that order and the result cast to float32 at the
end. The same set of updates therefore gives the same bytes whatever order
they arrived in. Updates whose tensor names, shapes or dtypes differ from the
global state, or which contain NaN/inf, are rejected with an
:class:`AggregationError` naming the participant.

Server-optimizer state (FedAdam, FedYogi) lives in the strategy object,
is float64, and is exposed by :meth:`Strategy.state` /
:meth:`Strategy.load_state` as a flat ``dict[str, Tensor]`` (``step``,
``next_round`` plus ``m.<param>`` / ``v.<param>``), so it can be checkpointed
with safetensors. Rounds must be aggregated in increasing order; a round that
failed (no aggregate) simply never reaches ``aggregate_fit`` and leaves the
state untouched (``skip_to(round)`` may record that explicitly). An auditor
rebuilds the exact state after round ``k`` by creating a fresh strategy from
the plan and replaying ``aggregate_fit`` for the aggregated rounds up to
``k``, in order, with the recorded updates -- or by loading a checkpoint
taken with ``state()``. The update rule does not depend on the round number,
only on the sequence of aggregations.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import torch

from fedchain.errors import ConfigError, FedchainError
from fedchain.models import initial_state
from fedchain.plan import TrainingPlan

__all__ = [
    "AggregationError",
    "ClientUpdate",
    "EvaluateResult",
    "Strategy",
    "ServerOptimizerStrategy",
    "canonical_order",
    "check_update",
    "weighted_mean",
]

_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")


class AggregationError(FedchainError):
    """Updates cannot be aggregated; ``participant`` names the culprit when known."""

    def __init__(self, message: str, participant: str | None = None):
        self.participant = participant
        super().__init__(message)


@dataclass(frozen=True, eq=False)
class ClientUpdate:
    """One hospital dataset's trained weights for a round."""

    participant: str  # 0x-prefixed 20-byte address
    dataset_id: str
    n_samples: int
    state: Mapping[str, torch.Tensor]

    def __post_init__(self) -> None:
        _check_identity(self.participant, self.dataset_id, self.n_samples)

    @property
    def key(self) -> tuple[str, str]:
        return (self.participant.lower(), self.dataset_id)


@dataclass(frozen=True)
class EvaluateResult:
    """One hospital dataset's validation metrics for a round."""

    participant: str
    dataset_id: str
    n_samples: int
    metrics: Mapping[str, float]

    def __post_init__(self) -> None:
        _check_identity(self.participant, self.dataset_id, self.n_samples)

    @property
    def key(self) -> tuple[str, str]:
        return (self.participant.lower(), self.dataset_id)


def _check_identity(participant: Any, dataset_id: Any, n_samples: Any) -> None:
    if not isinstance(participant, str) or not _ADDRESS_RE.match(participant):
        raise AggregationError(f"participant {participant!r} is not a 0x-prefixed 20-byte hex address")
    if not isinstance(dataset_id, str) or not dataset_id:
        raise AggregationError(f"participant {participant}: dataset_id must be a non-empty string", participant)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples <= 0:
        raise AggregationError(
            f"participant {participant}: n_samples must be a positive integer, got {n_samples!r}", participant
        )


def canonical_order(items: Sequence[Any]) -> list[Any]:
    """Items (with a ``.key``) sorted canonically; duplicate keys rejected."""
    ordered = sorted(items, key=lambda u: u.key)
    for a, b in zip(ordered, ordered[1:]):
        if a.key == b.key:
            raise AggregationError(
                f"participant {b.participant} sent two results for dataset {b.dataset_id!r}", b.participant
            )
    return ordered


def check_update(global_state: Mapping[str, torch.Tensor], update: ClientUpdate) -> None:
    """Tensor names, shapes and dtypes must match the global state; values finite."""
    who = update.participant
    if not isinstance(update.state, Mapping):
        raise AggregationError(f"participant {who}: state must be a mapping of tensors", who)
    missing = sorted(set(global_state) - set(update.state))
    extra = sorted(set(update.state) - set(global_state))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing tensors {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected tensors {', '.join(extra)}")
        raise AggregationError(
            f"participant {who} (dataset {update.dataset_id}): update does not match the global model: "
            + "; ".join(parts),
            who,
        )
    for name, ref in global_state.items():
        t = update.state[name]
        if not isinstance(t, torch.Tensor):
            raise AggregationError(f"participant {who}: {name} is not a tensor", who)
        if tuple(t.shape) != tuple(ref.shape):
            raise AggregationError(
                f"participant {who} (dataset {update.dataset_id}): tensor {name} has shape "
                f"{tuple(t.shape)}, the global model has {tuple(ref.shape)}",
                who,
            )
        if t.dtype != ref.dtype:
            raise AggregationError(
                f"participant {who} (dataset {update.dataset_id}): tensor {name} is {t.dtype}, "
                f"expected {ref.dtype}",
                who,
            )
        if not torch.isfinite(t).all():
            raise AggregationError(f"participant {who} (dataset {update.dataset_id}): tensor {name} has NaN/inf", who)


def weighted_mean(
    global_state: Mapping[str, torch.Tensor], updates: Sequence[ClientUpdate]
) -> dict[str, torch.Tensor]:
    """Sample-weighted mean of the updates, float64, canonical order."""
    if not updates:
        raise AggregationError("no updates to aggregate")
    ordered = canonical_order(updates)
    for u in ordered:
        check_update(global_state, u)
    total = sum(u.n_samples for u in ordered)
    out: dict[str, torch.Tensor] = {}
    for name in sorted(global_state):
        acc = torch.zeros(global_state[name].shape, dtype=torch.float64)
        for u in ordered:
            acc += u.state[name].detach().to(torch.float64) * float(u.n_samples)
        out[name] = acc / float(total)
    return out


class Strategy(ABC):
    """Base class; subclasses set ``name`` and implement ``_server_update``."""

    name: ClassVar[str]

    def __init__(self, plan: TrainingPlan):
        if plan.strategy.name != self.name:
            raise ConfigError(f"plan asks for strategy {plan.strategy.name!r}, not {self.name!r}")
        self.plan = plan

    # -- Flower-style verbs ------------------------------------------------

    def initialize(self, plan: TrainingPlan | None = None) -> dict[str, torch.Tensor]:
        """Round-0 global weights from the plan's model spec and seed."""
        if plan is not None and plan.sha256 != self.plan.sha256:
            raise ConfigError("initialize() got a different plan from the one this strategy was built for")
        return initial_state(self.plan.model, self.plan.seed)

    def configure_fit(self, round_index: int, global_state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """Config sent to nodes for the round (plain JSON types)."""
        self._check_round(round_index)
        return {
            "round": round_index,
            "strategy": self.name,
            "local_epochs": self.plan.local_epochs,
            "batch_size": self.plan.batch_size,
        }

    def aggregate_fit(
        self,
        round_index: int,
        global_state: Mapping[str, torch.Tensor],
        updates: Sequence[ClientUpdate],
    ) -> dict[str, torch.Tensor]:
        """The next global model (float32) from this round's updates."""
        self._check_round(round_index)
        self._check_global(global_state)
        participants = {u.participant.lower() for u in updates}
        if len(participants) < self.plan.min_participants:
            raise AggregationError(
                f"round {round_index}: {len(participants)} participant(s) sent updates, "
                f"the plan needs at least {self.plan.min_participants}"
            )
        mean = weighted_mean(global_state, updates)
        new = self._server_update(round_index, global_state, mean)
        return {k: new[k].to(torch.float32).contiguous() for k in global_state}

    def aggregate_evaluate(self, round_index: int, results: Sequence[EvaluateResult]) -> float:
        """Sample-weighted mean of ``plan.metric`` over the results that
        report it (``auc`` may be missing for single-class validation sets)."""
        self._check_round(round_index)
        metric = self.plan.metric
        num = 0.0
        den = 0
        for r in canonical_order(results):
            if metric not in r.metrics:
                continue
            v = r.metrics[metric]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise AggregationError(f"participant {r.participant}: metric {metric} is {v!r}", r.participant)
            num += float(v) * r.n_samples
            den += r.n_samples
        if den == 0:
            raise AggregationError(f"round {round_index}: no result reports the plan metric {metric!r}")
        return num / den

    def contribution_scores(self, updates: Sequence[ClientUpdate | EvaluateResult]) -> dict[str, float]:
        """Each participant's (lowercased address) share of the samples; sums to 1."""
        ordered = canonical_order(updates)
        if not ordered:
            raise AggregationError("no updates to score")
        per: dict[str, int] = {}
        for u in ordered:
            per[u.participant.lower()] = per.get(u.participant.lower(), 0) + u.n_samples
        total = sum(per.values())
        return {p: n / total for p, n in sorted(per.items())}

    # -- server-optimizer state (empty for stateless strategies) -----------

    def skip_to(self, round_index: int) -> None:
        """Declare that the next round to aggregate is ``round_index`` (the
        rounds in between failed). Stateless strategies only check the range."""
        self._check_round(round_index)

    def state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        if state:
            raise AggregationError(f"strategy {self.name} keeps no server state, got {sorted(state)}")

    # -- helpers -----------------------------------------------------------

    @abstractmethod
    def _server_update(
        self,
        round_index: int,
        global_state: Mapping[str, torch.Tensor],
        mean: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """New global weights from the old ones and the float64 weighted mean."""

    def _check_round(self, round_index: int) -> None:
        if isinstance(round_index, bool) or not isinstance(round_index, int):
            raise AggregationError(f"round must be an integer, got {round_index!r}")
        if not 0 <= round_index < self.plan.rounds:
            raise AggregationError(f"round {round_index} is outside the plan's rounds 0..{self.plan.rounds - 1}")

    def _check_global(self, global_state: Mapping[str, torch.Tensor]) -> None:
        for name, t in global_state.items():
            if not isinstance(t, torch.Tensor) or t.dtype != torch.float32:
                raise AggregationError(f"global state tensor {name} must be a float32 tensor")


class ServerOptimizerStrategy(Strategy):
    """Adaptive server optimizers (Reddi et al., "Adaptive Federated
    Optimization", 2021): the weighted mean minus the global model is a
    pseudo-gradient ``d``; ``m = b1*m + (1-b1)*d``; ``v`` is updated by the
    subclass (Adam or Yogi rule); ``w += server_lr * m / (sqrt(v) + tau)``.
    ``m`` starts at 0 and ``v`` at ``tau**2`` (no bias correction, as in the
    paper)."""

    def __init__(self, plan: TrainingPlan):
        super().__init__(plan)
        s = plan.strategy
        assert s.server_lr is not None and s.beta1 is not None and s.beta2 is not None and s.tau is not None
        self.server_lr = float(s.server_lr)
        self.beta1 = float(s.beta1)
        self.beta2 = float(s.beta2)
        self.tau = float(s.tau)
        self._step = 0  # aggregations applied
        self._next_round = 0  # smallest round index aggregate_fit accepts
        self._m: dict[str, torch.Tensor] = {}
        self._v: dict[str, torch.Tensor] = {}

    @property
    def next_round(self) -> int:
        """The smallest round index ``aggregate_fit`` accepts next."""
        return self._next_round

    def skip_to(self, round_index: int) -> None:
        self._check_round(round_index)
        if round_index < self._next_round:
            raise AggregationError(
                f"{self.name}: cannot go back to round {round_index}; next round is {self._next_round}"
            )
        self._next_round = round_index

    @abstractmethod
    def _second_moment(self, v: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
        """New ``v`` from the old one and the squared pseudo-gradient."""

    def aggregate_fit(
        self,
        round_index: int,
        global_state: Mapping[str, torch.Tensor],
        updates: Sequence[ClientUpdate],
    ) -> dict[str, torch.Tensor]:
        if isinstance(round_index, int) and round_index < self._next_round:
            raise AggregationError(
                f"{self.name} must aggregate rounds in order: round {round_index} comes before "
                f"the next round {self._next_round}"
            )
        new = super().aggregate_fit(round_index, global_state, updates)
        self._next_round = round_index + 1
        return new

    def _server_update(
        self,
        round_index: int,
        global_state: Mapping[str, torch.Tensor],
        mean: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        if not self._m:
            self._m = {k: torch.zeros(t.shape, dtype=torch.float64) for k, t in global_state.items()}
            self._v = {k: torch.full(t.shape, self.tau**2, dtype=torch.float64) for k, t in global_state.items()}
        elif set(self._m) != set(global_state):
            raise AggregationError("global model tensors differ from the server optimizer state")
        new_m: dict[str, torch.Tensor] = {}
        new_v: dict[str, torch.Tensor] = {}
        out: dict[str, torch.Tensor] = {}
        for name in sorted(global_state):
            w = global_state[name].detach().to(torch.float64)
            d = mean[name] - w
            m = self.beta1 * self._m[name] + (1.0 - self.beta1) * d
            v = self._second_moment(self._v[name], d * d)
            new_m[name], new_v[name] = m, v
            out[name] = w + self.server_lr * m / (torch.sqrt(v) + self.tau)
        self._m, self._v = new_m, new_v
        self._step += 1
        return out

    def state(self) -> dict[str, torch.Tensor]:
        st: dict[str, torch.Tensor] = {
            "step": torch.tensor(self._step, dtype=torch.int64),
            "next_round": torch.tensor(self._next_round, dtype=torch.int64),
        }
        for name in sorted(self._m):
            st[f"m.{name}"] = self._m[name].clone()
            st[f"v.{name}"] = self._v[name].clone()
        return st

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        for key in ("step", "next_round"):
            if key not in state:
                raise AggregationError(f"{self.name} state is missing {key!r}")
        step = int(state["step"])
        next_round = int(state["next_round"])
        m: dict[str, torch.Tensor] = {}
        v: dict[str, torch.Tensor] = {}
        for key, t in state.items():
            if key in ("step", "next_round"):
                continue
            prefix, _, name = key.partition(".")
            if prefix not in ("m", "v") or not name:
                raise AggregationError(f"{self.name} state has unexpected entry {key!r}")
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise AggregationError(f"{self.name} state entry {key!r} must be a float tensor")
            (m if prefix == "m" else v)[name] = t.detach().to(torch.float64).clone()
        if set(m) != set(v):
            raise AggregationError(f"{self.name} state: m and v cover different tensors")
        if step < 0 or (step > 0) != bool(m) or next_round < step:
            raise AggregationError(f"{self.name} state: step {step} / next_round {next_round} do not fit")
        self._step, self._next_round, self._m, self._v = step, next_round, m, v
