"""FedProx (Li et al., 2020): clients add the proximal term
``mu/2 * ||w - w_global||^2`` to their loss (see ``node.train``); the server
side is FedAvg's weighted mean. ``configure_fit`` tells nodes ``mu``."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from fedchain.coordinator.strategies.fedavg import FedAvg

__all__ = ["FedProx"]


class FedProx(FedAvg):
    """FedAvg on the server; the proximal term lives in the nodes' training."""

    name = "fedprox"

    def configure_fit(self, round_index: int, global_state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        config = super().configure_fit(round_index, global_state)
        config["mu"] = float(self.plan.strategy.mu or 0.0)
        return config
