"""FedYogi (Reddi et al., 2021): like FedAdam but with Yogi's additive
second-moment rule ``v = v - (1-beta2) * d**2 * sign(v - d**2)``, which
grows ``v`` more cautiously. Shared mechanics and state handling are in
:class:`coordinator.strategies.base.ServerOptimizerStrategy`."""

from __future__ import annotations

import torch

from fedchain.coordinator.strategies.base import ServerOptimizerStrategy

__all__ = ["FedYogi"]


class FedYogi(ServerOptimizerStrategy):
    name = "fedyogi"

    def _second_moment(self, v: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
        return v - (1.0 - self.beta2) * d2 * torch.sign(v - d2)
