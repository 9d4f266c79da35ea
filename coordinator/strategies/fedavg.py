"""FedAvg (McMahan et al., 2017): the new global model is the
sample-weighted mean of the participants' models."""

from __future__ import annotations

from typing import Mapping

import torch

from fedchain.coordinator.strategies.base import Strategy

__all__ = ["FedAvg"]


class FedAvg(Strategy):
    name = "fedavg"

    def _server_update(
        self,
        round_index: int,
        global_state: Mapping[str, torch.Tensor],
        mean: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        return mean
