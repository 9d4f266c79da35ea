"""Adaptive server optimizers (Reddi et al., "Adaptive Federated
Optimization", ICLR 2021), shared by FedAdam and FedYogi.

The weighted mean minus the global model is a pseudo-gradient ``d``;
``m = beta1*m + (1-beta1)*d``; ``v`` is updated by the subclass (Adam or Yogi
rule); ``w += server_lr * m / (sqrt(v) + tau)``. ``m`` starts at 0 and ``v``
at ``tau**2`` (no bias correction, as in the paper). All state is float64.

State and replay: :meth:`FedOpt.state` is ``step``, ``next_round`` and
``m.<param>`` / ``v.<param>``. Rounds must be aggregated in increasing order
(chain rounds, from 1); a round that failed (no aggregate) never reaches
``aggregate_train`` and leaves the state untouched (``skip_to(round)`` may
record that explicitly). An auditor rebuilds the exact state after round
``k`` by building a fresh strategy from the plan's section and replaying
``aggregate_train`` for the aggregated rounds up to ``k``, in order, with the
recorded updates -- or by loading a checkpoint taken with ``state()``. The
update rule depends only on the sequence of aggregations, not on the round
numbers.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Mapping, Sequence

import torch

from fedchain.errors import ConfigError

from fedchain.coordinator.strategies.base import AggregationError, ClientUpdate, check_round
from fedchain.coordinator.strategies.fedavg import FedAvg

__all__ = ["FedOpt"]


def _number(name: str, v: object, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> float:
    ok = not isinstance(v, bool) and isinstance(v, (int, float))
    if ok:
        f = float(v)  # type: ignore[arg-type]
        ok = (f > lo if lo_open else f >= lo) and (f < hi if hi_open else f <= hi)
    if not ok:
        raise ConfigError(f"{name} must be a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, "
                          f"got {v!r}")
    return float(v)  # type: ignore[arg-type]


class FedOpt(FedAvg):
    """Base of the adaptive server optimizers.

    Parameters
    ----------
    server_lr : float
        Server learning rate, in (0, 10].
    beta1 : float (default 0.9)
        First-moment decay, in [0, 1).
    beta2 : float (default 0.99)
        Second-moment decay, in [0, 1).
    tau : float (default 1e-3)
        Adaptivity: added to ``sqrt(v)``; ``v`` starts at ``tau**2``. In (0, 1].
    min_participants : int (default 1)
        Rounds with fewer distinct participants are refused.
    """

    def __init__(
        self, *, server_lr: float, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3,
        min_participants: int = 1,
    ) -> None:
        super().__init__(min_participants=min_participants)
        self.server_lr = _number("server_lr", server_lr, 0.0, 10.0, lo_open=True)
        self.beta1 = _number("beta1", beta1, 0.0, 1.0, hi_open=True)
        self.beta2 = _number("beta2", beta2, 0.0, 1.0, hi_open=True)
        self.tau = _number("tau", tau, 0.0, 1.0, lo_open=True)
        self._step = 0  # aggregations applied
        self._next_round = 1  # smallest round aggregate_train accepts
        self._m: dict[str, torch.Tensor] = {}
        self._v: dict[str, torch.Tensor] = {}

    @property
    def next_round(self) -> int:
        """The smallest round ``aggregate_train`` accepts next."""
        return self._next_round

    def skip_to(self, server_round: int) -> None:
        check_round(server_round)
        if server_round < self._next_round:
            raise AggregationError(
                f"{self.name}: cannot go back to round {server_round}; next round is {self._next_round}"
            )
        self._next_round = server_round

    @abstractmethod
    def _second_moment(self, v: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
        """New ``v`` from the old one and the squared pseudo-gradient."""

    def aggregate_train(
        self, server_round: int, arrays: Mapping[str, torch.Tensor], updates: Sequence[ClientUpdate]
    ) -> dict[str, torch.Tensor]:
        if check_round(server_round) < self._next_round:
            raise AggregationError(
                f"{self.name} must aggregate rounds in order: round {server_round} comes before "
                f"the next round {self._next_round}"
            )
        new = super().aggregate_train(server_round, arrays, updates)
        self._next_round = server_round + 1
        return new

    def _server_update(
        self, server_round: int, arrays: Mapping[str, torch.Tensor], mean: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        if not self._m:
            self._m = {k: torch.zeros(t.shape, dtype=torch.float64) for k, t in arrays.items()}
            self._v = {k: torch.full(t.shape, self.tau**2, dtype=torch.float64) for k, t in arrays.items()}
        elif set(self._m) != set(arrays):
            raise AggregationError("global model tensors differ from the server optimizer state")
        new_m: dict[str, torch.Tensor] = {}
        new_v: dict[str, torch.Tensor] = {}
        out: dict[str, torch.Tensor] = {}
        for name in sorted(arrays):
            w = arrays[name].detach().to(torch.float64)
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
        if step < 0 or (step > 0) != bool(m) or next_round < step + 1:
            raise AggregationError(f"{self.name} state: step {step} / next_round {next_round} do not fit")
        self._step, self._next_round, self._m, self._v = step, next_round, m, v
