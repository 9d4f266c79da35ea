"""FedProx (Li et al., "Federated Optimization in Heterogeneous Networks",
MLSys 2020): every node adds the proximal term ``mu/2 * ||w - w_global||^2``
to its loss; the server side is FedAvg's weighted mean.

In Flower the strategy puts ``mu`` into the config it sends. Here the plan
is the only channel to the nodes, so ``mu`` reaches them through
:func:`fedchain.plan.train_config` (``proximal_mu``), which the nodes train
with; ``configure_train`` checks that the plan's config carries this
strategy's ``mu``."""

from __future__ import annotations

from typing import Mapping

import torch

from fedchain.errors import ConfigError
from fedchain.plan import FedProxSpec, TrainConfig

from fedchain.coordinator.strategies.fedavg import FedAvg

__all__ = ["FedProx"]


class FedProx(FedAvg):
    """FedAvg on the server; the proximal term lives in the nodes' training.

    Parameters
    ----------
    mu : float
        Weight of the proximal term (0 makes it FedAvg).
    min_participants : int (default 1)
        Rounds with fewer distinct participants are refused.
    """

    name = "fedprox"
    spec_class = FedProxSpec

    def __init__(self, *, mu: float, min_participants: int = 1) -> None:
        super().__init__(min_participants=min_participants)
        if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not mu >= 0:
            raise ConfigError(f"FedProx mu must be a non-negative number, got {mu!r}")
        self.mu = float(mu)

    def configure_train(
        self, server_round: int, arrays: Mapping[str, torch.Tensor], config: TrainConfig
    ) -> TrainConfig:
        config = super().configure_train(server_round, arrays, config)
        if config.proximal_mu != self.mu:
            raise ConfigError(f"the plan's train config has proximal mu {config.proximal_mu}, "
                              f"but this FedProx was built with mu {self.mu}")
        return config
