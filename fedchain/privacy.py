"""Differential privacy of a plan: the parameters a node applies and the ε it spends.

One module computes, for a plan's ``[privacy]`` table and a hospital's training-row
count, what the node does (clipping norm, noise multiplier, sampling) and what it
spends; the node, the coordinator's ε check and the audit replay all call it, so
they cannot disagree. Accounting is Opacus's (``opacus.accountants``: the RDP or the
PRV accountant, as the plan says; the noise calibration for a target ε is
``opacus.accountants.utils.get_noise_multiplier``) - no formula is written here.

Modes (``plan.privacy.mode``):

* ``client`` - client-level DP at the node: the round's update ``w_local - w_global``
  is clipped to L2 norm ``C`` (over all tensors together) and Gaussian noise of
  standard deviation ``z·C`` is added to it. The unit protected is the hospital's
  whole dataset in that round: two datasets' clipped updates differ by at most
  ``2C``, so the accountant runs with noise multiplier ``z/2``, sample rate 1 and one
  step per round (a hospital's data is in every round it commits to).
* ``server`` - the same guarantee as ``client``, but the coordinator clips each update
  and adds the noise to the aggregate's sum
  (:class:`fedchain.coordinator.strategies.dpserver.ServerSideDP`): the node trains
  as without DP and trusts the coordinator with its update (the released model is
  private, the update the coordinator opens is not).
* ``dpsgd`` - sample-level DP-SGD (Opacus): per-example gradients clipped to ``C``,
  noise ``z·C`` added to each step's sum, Poisson sampling at rate
  ``q = 1/ceil(n/batch_size)`` (Opacus's own ``1/len(data_loader)``),
  ``local_epochs·ceil(n/batch_size)`` steps per round.

With ``epsilon`` set, ``z`` is calibrated so that the whole run (all ``plan.rounds``
rounds) spends at most ``epsilon`` at ``delta`` per dataset; with ``noise_multiplier``
set, ``z`` is that and ε follows. **What a commitment states**: the ε of its round is
the increase of the accountant's total through this participation over the total
through the previous one, rounded up to millionths (so the chain's sum over a
proposal is the accountant's total, never below it); δ is the plan's, in units of
1e-12 (rounded up).

**Noise source.** The node draws noise (and the Poisson batches) from a
``torch.Generator`` seeded with 64 bits from the operating system's CSPRNG
(``secrets.randbits``), fresh for every round; the seed is never stored or sent.
torch's generator is a Mersenne Twister, not a CSPRNG: an observer who could
recover its state from outputs could predict later noise, but the outputs are
never seen - only noised sums - and each round reseeds. Opacus's ``secure_mode``
(torchcsprng) is not available for this torch build. Known limitation, as in every
floating-point Gaussian sampler: the low-order bits of floating-point noise are not
exactly Gaussian (Mironov, 2012); we do not add the discrete-Gaussian fix.

**What replay can re-derive**: the parameters (``C``, ``z``, ``q``, steps) and every
round's ε, from the plan and the committed sample count - but not the noisy update
itself: the noise is fresh randomness, so the training is no longer reproducible
bit for bit, and the replay checks a DP update's ε and shape, not its values.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

import torch

from fedchain.errors import ConfigError

__all__ = [
    "EPSILON_UNIT", "DELTA_UNIT", "DPParams", "dp_params", "cumulative_epsilon", "round_spend", "run_epsilon",
    "clip_and_noise", "secure_generator", "delta_pico", "epsilon_micro",
]

#: Fixed-point units on chain: ε in millionths, δ in units of 1e-12.
EPSILON_UNIT = 1_000_000
DELTA_UNIT = 10**12
#: The calibration's tolerance on the target ε (Opacus's ``epsilon_tolerance``).
EPSILON_TOLERANCE = 0.01


@dataclass(frozen=True)
class DPParams:
    """What a node applies in every round of a DP plan, and how it is accounted."""

    mode: str  # "client" | "dpsgd" | "server"
    clipping_norm: float
    noise_multiplier: float  # z: noise std = z * clipping_norm
    sample_rate: float  # per accounting step
    steps_per_round: int  # accounting steps per round the dataset takes part in
    accountant_noise: float  # the noise multiplier the accountant sees (z/2 for client mode)
    delta: float
    accountant: str  # "rdp" | "prv"

    @property
    def noise_std(self) -> float:
        """Std of the Gaussian noise (client: on the update; server: on the sum of updates; dpsgd: on each step's
        gradient sum)."""
        return self.noise_multiplier * self.clipping_norm


def _steps_and_rate(mode: str, n_train: int, batch_size: int, local_epochs: int) -> tuple[float, int]:
    if mode in ("client", "server"):
        return 1.0, 1
    batches = math.ceil(n_train / batch_size)
    return 1.0 / batches, local_epochs * batches


@lru_cache(maxsize=256)
def _calibrate(target: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    # Opacus costs ~3 s to import (it pulls torch.distributed); only private plans pay it.
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=target, target_delta=delta, sample_rate=sample_rate,
                                      steps=steps, accountant=accountant, epsilon_tolerance=EPSILON_TOLERANCE))


def dp_params(plan, n_train: int) -> DPParams | None:
    """The DP parameters of ``plan`` for a hospital with ``n_train`` training rows (None: not private)."""
    p = plan.privacy
    if p.mode == "none":
        return None
    if n_train < 1:
        raise ConfigError(f"differential privacy needs at least one training row, not {n_train}")
    rate, steps = _steps_and_rate(p.mode, int(n_train), plan.batch_size, plan.local_epochs)
    # client/server: replacing a dataset moves its clipped update by up to 2C (the sensitivity)
    factor = 2.0 if p.mode in ("client", "server") else 1.0
    if p.noise_multiplier is not None:
        z = float(p.noise_multiplier)
    else:
        z = factor * _calibrate(float(p.epsilon), float(p.delta), rate, steps * plan.rounds, p.accountant)
    return DPParams(mode=p.mode, clipping_norm=float(p.clipping_norm), noise_multiplier=z, sample_rate=rate,
                    steps_per_round=steps, accountant_noise=z / factor, delta=float(p.delta), accountant=p.accountant)


@lru_cache(maxsize=4096)
def _epsilon(noise: float, rate: float, steps: int, delta: float, accountant: str) -> float:
    if steps == 0:
        return 0.0
    # Opacus costs ~3 s to import (it pulls torch.distributed); only private plans pay it.
    from opacus.accountants import PRVAccountant, RDPAccountant

    acc = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    acc.history = [(noise, rate, steps)]
    return float(acc.get_epsilon(delta))


def cumulative_epsilon(params: DPParams, participations: int) -> float:
    """ε spent by ``participations`` rounds of training with ``params`` (the library accountant's)."""
    if participations < 0:
        raise ConfigError(f"participations must be >= 0, not {participations}")
    return _epsilon(params.accountant_noise, params.sample_rate, params.steps_per_round * participations,
                    params.delta, params.accountant)


def epsilon_micro(epsilon: float) -> int:
    """ε in the chain's unit (millionths), rounded up (a spend is never under-stated)."""
    return math.ceil(epsilon * EPSILON_UNIT - 1e-9)


def delta_pico(delta: float) -> int:
    """δ in the chain's unit (1e-12), rounded up."""
    return max(1, math.ceil(delta * DELTA_UNIT - 1e-9))


def round_spend(plan, n_train: int, participation: int) -> tuple[int, int]:
    """``(epsilon_micro, delta_pico)`` a commitment states for its ``participation``-th round (1-based)
    of ``plan`` on a dataset of ``n_train`` training rows; ``(0, 0)`` for a non-private plan."""
    params = dp_params(plan, n_train)
    if params is None:
        return 0, 0
    if participation < 1:
        raise ConfigError(f"participation must be >= 1, not {participation}")
    now = epsilon_micro(cumulative_epsilon(params, participation))
    before = epsilon_micro(cumulative_epsilon(params, participation - 1))
    return max(1, now - before), delta_pico(params.delta)


def run_epsilon(plan, n_train: int) -> float:
    """ε the whole plan (every round) spends on a dataset of ``n_train`` training rows (0: not private)."""
    params = dp_params(plan, n_train)
    return 0.0 if params is None else cumulative_epsilon(params, plan.rounds)


def secure_generator() -> torch.Generator:
    """A CPU generator seeded with 64 bits from the OS CSPRNG (see the module docstring)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(secrets.randbits(64))
    return gen


def clip_and_noise(
    update: Mapping[str, torch.Tensor], clipping_norm: float, noise_std: float, generator: torch.Generator
) -> tuple[dict[str, torch.Tensor], float]:
    """Clip ``update`` (all tensors as one vector) to L2 norm ``clipping_norm`` and add N(0, noise_std²)
    to every coordinate. Returns the noised update and the norm before clipping."""
    norm = float(torch.sqrt(sum((t.detach().to(torch.float64) ** 2).sum() for t in update.values())))
    scale = min(1.0, clipping_norm / norm) if norm > 0 else 1.0
    out = {}
    for name, t in update.items():
        noise = torch.normal(0.0, float(noise_std), size=tuple(t.shape), generator=generator, dtype=torch.float32)
        out[name] = (t.detach().to(torch.float32) * scale + noise).contiguous()
    return out, norm
