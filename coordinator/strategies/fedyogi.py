"""FedYogi (Reddi et al., "Adaptive Federated Optimization", ICLR 2021):
like FedAdam but with Yogi's additive second-moment rule
``v = v - (1-beta2) * d**2 * sign(v - d**2)``, which grows ``v`` more
cautiously. Shared mechanics, state and replay rules are in
:mod:`coordinator.strategies.fedopt`."""

from __future__ import annotations

import torch

from fedchain.plan import FedYogiSpec

from fedchain.coordinator.strategies.fedopt import FedOpt

__all__ = ["FedYogi"]


class FedYogi(FedOpt):
    """Yogi on the server; parameters as :class:`FedOpt`
    (``server_lr``, ``beta1``, ``beta2``, ``tau``, ``min_participants``)."""

    name = "fedyogi"
    spec_class = FedYogiSpec

    def _second_moment(self, v: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
        return v - (1.0 - self.beta2) * d2 * torch.sign(v - d2)
