"""FedAvg (McMahan et al., "Communication-Efficient Learning of Deep Networks
from Decentralized Data", AISTATS 2017): the new global model is the
sample-weighted mean of the participants' models.

It also carries what every strategy here shares: the round and config
checks of the configure verbs, the participant quorum, and the
sample-weighted evaluation mean. Server-side variants override
``_server_update`` (the step from the float64 mean to the new weights);
robust rules override ``_aggregate`` (the whole step from the updates to the
new weights)."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from fedchain.errors import ConfigError
from fedchain.plan import EvaluateConfig, FedAvgSpec, TrainConfig

from fedchain.coordinator.strategies.base import (
    AggregationError,
    ClientUpdate,
    EvaluateResult,
    Strategy,
    canonical_order,
    check_round,
    weighted_mean,
)

__all__ = ["FedAvg"]


class FedAvg(Strategy):
    """Sample-weighted mean of the updates.

    Parameters
    ----------
    min_participants : int (default 1)
        Rounds with fewer distinct participants are refused.
    """

    name = "fedavg"
    spec_class = FedAvgSpec

    def configure_train(
        self, server_round: int, arrays: Mapping[str, torch.Tensor], config: TrainConfig
    ) -> TrainConfig:
        check_round(server_round)
        if not isinstance(config, TrainConfig) or config.round != server_round:
            raise ConfigError(f"configure_train of round {server_round} needs the plan's train config "
                              f"for that round (fedchain.plan.train_config), got {config!r}")
        return config

    def configure_evaluate(
        self, server_round: int, arrays: Mapping[str, torch.Tensor], config: EvaluateConfig
    ) -> EvaluateConfig:
        check_round(server_round)
        if not isinstance(config, EvaluateConfig) or config.round != server_round:
            raise ConfigError(f"configure_evaluate of round {server_round} needs the plan's evaluate config "
                              f"for that round (fedchain.plan.evaluate_config), got {config!r}")
        return config

    def aggregate_train(
        self, server_round: int, arrays: Mapping[str, torch.Tensor], updates: Sequence[ClientUpdate]
    ) -> dict[str, torch.Tensor]:
        check_round(server_round)
        for name, t in arrays.items():
            if not isinstance(t, torch.Tensor) or t.dtype != torch.float32:
                raise AggregationError(f"global state tensor {name} must be a float32 tensor")
        participants = {u.participant.lower() for u in updates}
        if len(participants) < self.min_participants:
            raise AggregationError(
                f"round {server_round}: {len(participants)} participant(s) sent updates, "
                f"at least {self.min_participants} are needed"
            )
        self.last_decisions = []
        new = self._aggregate(server_round, arrays, updates)
        return {k: new[k].to(torch.float32).contiguous() for k in arrays}

    def _aggregate(
        self, server_round: int, arrays: Mapping[str, torch.Tensor], updates: Sequence[ClientUpdate]
    ) -> dict[str, torch.Tensor]:
        """The new global weights (float64): the weighted mean, then the server step.

        Robust rules override this (and may fill ``last_decisions``); the checks and
        the final cast to float32 stay in :meth:`aggregate_train`."""
        return self._server_update(server_round, arrays, weighted_mean(arrays, updates))

    def _server_update(
        self, server_round: int, arrays: Mapping[str, torch.Tensor], mean: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """New global weights (float64) from the old ones and the float64 weighted mean."""
        return mean

    def aggregate_evaluate(self, server_round: int, results: Sequence[EvaluateResult]) -> dict[str, float]:
        """For every metric reported, its sample-weighted mean over the results
        that report it (``auc`` may be missing for single-class validation sets)."""
        check_round(server_round)
        num: dict[str, float] = {}
        den: dict[str, int] = {}
        for r in canonical_order(results):
            for metric in sorted(r.metrics):
                v = r.metrics[metric]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise AggregationError(f"participant {r.participant}: metric {metric} is {v!r}", r.participant)
                num[metric] = num.get(metric, 0.0) + float(v) * r.n_samples
                den[metric] = den.get(metric, 0) + r.n_samples
        if not den:
            raise AggregationError(f"round {server_round}: no evaluation results")
        return {m: num[m] / den[m] for m in sorted(den)}
