"""FedAdam (Reddi et al., "Adaptive Federated Optimization", ICLR 2021):
Adam on the server, with the weighted-mean model change as pseudo-gradient.
Second moment: ``v = beta2*v + (1-beta2)*d**2``. Shared mechanics, state
and replay rules are in :mod:`coordinator.strategies.fedopt`."""

from __future__ import annotations

import torch

from fedchain.plan import FedAdamSpec

from fedchain.coordinator.strategies.fedopt import FedOpt

__all__ = ["FedAdam"]


class FedAdam(FedOpt):
    """Adam on the server; parameters as :class:`FedOpt`
    (``server_lr``, ``beta1``, ``beta2``, ``tau``, ``min_participants``)."""

    name = "fedadam"
    spec_class = FedAdamSpec

    def _second_moment(self, v: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
        return self.beta2 * v + (1.0 - self.beta2) * d2
