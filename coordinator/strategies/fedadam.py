"""FedAdam (Reddi et al., 2021): Adam on the server, with the weighted-mean
model change as pseudo-gradient. Second moment:
``v = beta2*v + (1-beta2)*d**2``. Shared mechanics and state handling are in
:class:`coordinator.strategies.base.ServerOptimizerStrategy`."""

from __future__ import annotations

import torch

from fedchain.coordinator.strategies.base import ServerOptimizerStrategy

__all__ = ["FedAdam"]


class FedAdam(ServerOptimizerStrategy):
    name = "fedadam"

    def _second_moment(self, v: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
        return self.beta2 * v + (1.0 - self.beta2) * d2
