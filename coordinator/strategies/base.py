"""The aggregation-strategy interface, shaped like Flower's message API.

A strategy answers four verbs, for one round at a time; rounds are the
chain's round numbers, from 1 (there is no other numbering anywhere):

* ``configure_train(server_round, arrays, config)`` -- what every node does
  in the round. ``config`` is :func:`fedchain.plan.train_config` of the plan;
  since the plan is the only channel from proposer to nodes and nodes train
  with exactly that function's result, a strategy returns it (after checking
  it agrees with its own hyperparameters) and never invents node settings;
* ``aggregate_train(server_round, arrays, updates)`` -- the next global
  model from the current one and the round's updates;
* ``configure_evaluate(server_round, arrays, config)`` -- likewise for
  :func:`fedchain.plan.evaluate_config`;
* ``aggregate_evaluate(server_round, results)`` -- sample-weighted means of
  the metrics the nodes report.

Each strategy lives in its own module, is built from its own plan section
with explicit keyword arguments (``FedAdam(server_lr=..., beta1=..., ...)``,
or ``registry.from_spec(plan.strategy)``) and never sees the whole plan. The
initial global model comes from the caller (``fedchain.models.initial_state``
of the plan's model and seed), as Flower passes initial arrays.

:class:`StrategyWrapper` holds an inner strategy and delegates every verb, so
robust aggregation rules or server-side differential privacy can wrap any
strategy, one file each, overriding only the verb they change.

Determinism: updates are sorted by the canonical key ``(participant address
lowercased, dataset id)``; the weighted mean is accumulated in float64 in
that order and the result cast to float32 at the end. The same set of updates
therefore gives the same bytes whatever order they arrived in. Updates whose
tensor names, shapes or dtypes differ from the global state, or which contain
NaN/inf, are rejected with an :class:`AggregationError` naming the
participant.

Speed and memory: :class:`WeightedMean` accumulates one update at a time,
in place (``acc += n * w`` in one pass over each tensor; ``n * w`` of a
float32 weight and an integer sample count below 2**29 is exact in float64,
so this is bit-for-bit the sum of products in canonical order; a larger
claimed count rounds its product separately, as before), and keeps
nothing of an update once it is added. A caller that knows the round's keys
before it has the tensors (the coordinator reads the commitments from the
chain first) feeds updates in canonical order and holds one at a time.

Server state (FedAdam, FedYogi) is exposed by :meth:`Strategy.state` /
:meth:`Strategy.load_state` as a flat ``dict[str, Tensor]`` so it can be
checkpointed with safetensors; stateless strategies return ``{}``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import torch

from fedchain.errors import ConfigError, FedchainError
from fedchain.models import all_finite
from fedchain.plan import EvaluateConfig, StrategySpec, TrainConfig

__all__ = [
    "AggregationError",
    "ClientUpdate",
    "Decision",
    "EvaluateResult",
    "Strategy",
    "StrategyWrapper",
    "WeightedMean",
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
    """One hospital dataset's trained weights for a round.

    ``weight`` is its weight in a weighted mean: the sample count unless a
    wrapper (FoolsGold, a weight cap) set another one.
    """

    participant: str  # 0x-prefixed 20-byte address
    dataset_id: str
    n_samples: int
    state: Mapping[str, torch.Tensor]
    weight: float | None = None

    def __post_init__(self) -> None:
        _check_identity(self.participant, self.dataset_id, self.n_samples)
        if self.weight is not None and (isinstance(self.weight, bool) or not isinstance(self.weight, (int, float))
                                        or not math.isfinite(self.weight) or self.weight < 0):
            raise AggregationError(f"participant {self.participant}: weight must be a finite number >= 0, "
                                   f"got {self.weight!r}", self.participant)

    @property
    def key(self) -> tuple[str, str]:
        return (self.participant.lower(), self.dataset_id)

    @property
    def mean_weight(self) -> float:
        """The weight this update gets in a weighted mean."""
        return float(self.n_samples if self.weight is None else self.weight)

    def replace(self, **changes: Any) -> "ClientUpdate":
        """The same update with some fields changed (a clipped state, a new weight)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Decision:
    """What a defence did to one update in a round, for the scores document and replay.

    ``action`` is ``"excluded"``, ``"clipped"``, ``"reweighted"`` or ``"trimmed"``;
    ``reason`` a stable code (``KRUM_NOT_SELECTED``, ``NORM_BOUND``, ``FOOLSGOLD``,
    ``WEIGHT_CAP``, ``TRIMMED``); ``value`` the number behind it (a Krum score, the
    update's norm, its new weight, the share of its coordinates trimmed).
    """

    participant: str
    dataset_id: str
    action: str
    reason: str
    value: float

    def to_dict(self) -> dict[str, Any]:
        return {"participant": self.participant.lower(), "dataset": self.dataset_id, "action": self.action,
                "reason": self.reason, "value": round(float(self.value), 12)}


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
        if not all_finite(t):
            raise AggregationError(f"participant {who} (dataset {update.dataset_id}): tensor {name} has NaN/inf", who)


#: Sample counts up to this keep ``n * w`` exact in float64 (24-bit float32 mantissa + 29 bits);
#: larger (claimed) counts take a slower path that rounds the product on its own.
MAX_EXACT_SAMPLES = 2**29


class WeightedMean:
    """The sample-weighted mean of updates, accumulated one update at a time.

    Updates must come in canonical order (:func:`canonical_order`: ascending
    ``key``, no duplicates); each is checked against the global state
    (:func:`check_update`) and added in place into float64 accumulators, so
    the result is the same bits as summing the products in that order, and
    only the accumulators and one scratch tensor (float64) are held.
    """

    def __init__(self, global_state: Mapping[str, torch.Tensor]) -> None:
        self.global_state = global_state
        self._acc = {name: torch.zeros(global_state[name].shape, dtype=torch.float64) for name in sorted(global_state)}
        self._scratch = torch.empty(max((a.numel() for a in self._acc.values()), default=0), dtype=torch.float64)
        self._weights: list[float] = []
        self.count = 0
        self._last: tuple[str, str] | None = None

    def add(self, update: ClientUpdate) -> None:
        """Check ``update`` and add ``mean_weight * weights`` (after every update of a smaller key)."""
        if self._acc is None:
            raise AggregationError("the mean was already taken; start a new WeightedMean")
        if self._last is not None and update.key <= self._last:
            if update.key == self._last:
                raise AggregationError(
                    f"participant {update.participant} sent two results for dataset {update.dataset_id!r}",
                    update.participant,
                )
            raise AggregationError(
                f"updates must be added in canonical order: {update.key} after {self._last}", update.participant
            )
        check_update(self.global_state, update)
        weight = update.mean_weight
        exact = update.weight is None and update.n_samples <= MAX_EXACT_SAMPLES
        for name, acc in self._acc.items():
            # widen into a reused buffer first: torch's mixed float32 + float64 add is not vectorized
            wide = self._scratch[: acc.numel()].view(acc.shape)
            wide.copy_(update.state[name].detach())
            if exact:
                acc.add_(wide, alpha=update.n_samples)  # n * w is exact, so fused or not, the same bits
            else:  # an inexact product (a large count, a wrapper's weight): round it on its own, as a
                acc.add_(wide.mul_(weight))  # separate multiply, so every CPU gets the same bits
        self._weights.append(weight)
        self.count += 1
        self._last = update.key

    @property
    def total(self) -> float:
        """The sum of the weights added so far (correctly rounded; exact for sample counts)."""
        return math.fsum(self._weights)

    def result(self) -> dict[str, torch.Tensor]:
        """The float64 mean (the accumulators, divided in place; the object is spent)."""
        if self._acc is None:
            raise AggregationError("the mean was already taken")
        if not self.count:
            raise AggregationError("no updates to aggregate")
        total = self.total
        if not total > 0:
            raise AggregationError("the updates' weights sum to zero")
        out = {name: acc.div_(total) for name, acc in self._acc.items()}
        self._acc = self._scratch = None
        return out


def weighted_mean(
    global_state: Mapping[str, torch.Tensor], updates: Sequence[ClientUpdate]
) -> dict[str, torch.Tensor]:
    """Sample-weighted mean of the updates, float64, canonical order (see :class:`WeightedMean`)."""
    if not updates:
        raise AggregationError("no updates to aggregate")
    mean = WeightedMean(global_state)
    for u in canonical_order(updates):
        mean.add(u)
    return mean.result()


def check_round(server_round: Any) -> int:
    """A round number is an integer from 1 (the chain's numbering)."""
    if isinstance(server_round, bool) or not isinstance(server_round, int) or server_round < 1:
        raise AggregationError(f"round must be an integer from 1, got {server_round!r}")
    return server_round


class Strategy(ABC):
    """One aggregation algorithm; subclasses set ``name`` and ``spec_class``
    (the plan section they are built from) and implement the four verbs."""

    name: ClassVar[str]
    spec_class: ClassVar[type[StrategySpec]]

    def __init__(self, *, min_participants: int = 1) -> None:
        """``min_participants``: aggregate_train refuses rounds with fewer
        distinct participants (the plan's ``min_participants``)."""
        if isinstance(min_participants, bool) or not isinstance(min_participants, int) or min_participants < 1:
            raise ConfigError(f"min_participants must be a positive integer, got {min_participants!r}")
        self.min_participants = min_participants
        #: What the defences did to each update in the last ``aggregate_train`` (canonical order).
        self.last_decisions: list[Decision] = []

    @classmethod
    def from_spec(cls, spec: StrategySpec, *, min_participants: int = 1) -> "Strategy":
        """Build from the plan's ``[strategy]`` section (its keys are the keyword arguments)."""
        if not isinstance(spec, cls.spec_class):
            raise ConfigError(f"{cls.__name__} is built from a {cls.spec_class.__name__}, "
                              f"not from the plan's strategy {getattr(spec, 'name', spec)!r}")
        return cls(**spec.params(), min_participants=min_participants)

    # -- the four verbs -----------------------------------------------------------

    @abstractmethod
    def configure_train(
        self, server_round: int, arrays: Mapping[str, torch.Tensor], config: TrainConfig
    ) -> TrainConfig:
        """What every node does in ``server_round`` (the plan's train config)."""

    @abstractmethod
    def aggregate_train(
        self, server_round: int, arrays: Mapping[str, torch.Tensor], updates: Sequence[ClientUpdate]
    ) -> dict[str, torch.Tensor]:
        """The next global model (float32) from the current one and the round's updates."""

    @abstractmethod
    def configure_evaluate(
        self, server_round: int, arrays: Mapping[str, torch.Tensor], config: EvaluateConfig
    ) -> EvaluateConfig:
        """What every node reports after ``server_round`` (the plan's evaluate config)."""

    @abstractmethod
    def aggregate_evaluate(self, server_round: int, results: Sequence[EvaluateResult]) -> dict[str, float]:
        """Aggregated validation metrics of the round."""

    # -- fedchain additions -------------------------------------------------------

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

    def skip_to(self, server_round: int) -> None:
        """Declare that the next round to aggregate is ``server_round`` (the
        rounds in between failed). Stateless strategies only check the number."""
        check_round(server_round)

    def state(self) -> dict[str, torch.Tensor]:
        """Server state to checkpoint (``{}`` when the strategy keeps none)."""
        return {}

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        if state:
            raise AggregationError(f"strategy {self.name} keeps no server state, got {sorted(state)}")


class StrategyWrapper(Strategy):
    """A strategy around an inner one: every verb delegates to ``inner``.

    A wrapper (a robust rule, server-side DP, ...) overrides only the verbs
    it changes and calls the inner strategy for the rest, e.g. transform the
    updates, then ``self.inner.aggregate_train(...)``.
    """

    spec_class = StrategySpec

    def __init__(self, inner: Strategy) -> None:
        if not isinstance(inner, Strategy):
            raise ConfigError(f"a strategy wrapper needs an inner Strategy, got {type(inner).__name__}")
        super().__init__(min_participants=inner.min_participants)
        self.inner = inner

    @classmethod
    def from_spec(cls, spec: StrategySpec, *, min_participants: int = 1) -> "Strategy":
        raise ConfigError(f"{cls.__name__} wraps a strategy: build the inner one with from_spec, then wrap it")

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    def configure_train(self, server_round, arrays, config):
        return self.inner.configure_train(server_round, arrays, config)

    def aggregate_train(self, server_round, arrays, updates):
        return self.inner.aggregate_train(server_round, arrays, updates)

    def configure_evaluate(self, server_round, arrays, config):
        return self.inner.configure_evaluate(server_round, arrays, config)

    def aggregate_evaluate(self, server_round, results):
        return self.inner.aggregate_evaluate(server_round, results)

    def contribution_scores(self, updates):
        return self.inner.contribution_scores(updates)

    @property
    def last_decisions(self) -> list[Decision]:  # type: ignore[override]
        """The wrapper's own decisions of the last round, then the inner strategy's."""
        return [*self._own_decisions, *self.inner.last_decisions]

    @last_decisions.setter
    def last_decisions(self, value: list[Decision]) -> None:
        self._own_decisions = list(value)

    def skip_to(self, server_round):
        self.inner.skip_to(server_round)

    def state(self):
        return self.inner.state()

    def load_state(self, state):
        self.inner.load_state(state)
