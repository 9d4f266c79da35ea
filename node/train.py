"""Local training and evaluation on a hospital's data.

``train_local`` is a pure function of its inputs: the global weights, the
plan, the local data, the round index and the hospital's dataset key. Two
runs -- in the same process or on different machines with the same torch
build -- produce bit-identical state dicts because

* the model's architecture is built from the registry with uninitialized
  storage (:func:`fedchain.models.empty_model`; no seeded initialization, no
  global RNG) and loaded with the global state;
* minibatch order comes from a local ``torch.Generator`` seeded with
  ``plan.derive_seed("train", round, dataset_seed_key)``, so different
  hospitals and rounds shuffle differently but reproducibly;
* training runs with one intra-op thread and
  ``torch.use_deterministic_algorithms(True)``; both settings are restored
  afterwards (:func:`deterministic_torch`), also when several threads train
  at once (a simulation trains one hospital while another commits).

Features are preprocessed as the plan says
(:func:`fedchain.tabular.apply_preprocessing`) before training and evaluation.
What a round's training does -- epochs, batch size, optimizer, and the
FedProx proximal term ``mu/2 * ||w - w_global||^2`` -- comes only from the
:class:`~fedchain.plan.TrainConfig` that :func:`fedchain.plan.train_config`
derives from the plan (the same config the coordinator's strategy states in
``configure_train``). The loss is cross-entropy; the optimizer starts fresh
every round. Rounds are the chain's, from 1.

Differential privacy (``plan.privacy``, parameters from :func:`fedchain.privacy.dp_params`):
``client`` clips the round's update (distance to the global model) and adds Gaussian
noise after the local epochs; ``dpsgd`` trains with Opacus (per-example clipping,
noise on every step, Poisson-sampled batches). Both draw their randomness from
:func:`fedchain.privacy.secure_generator`, so a DP round is *not* reproducible bit
for bit (the noise must not be predictable); a non-private plan still is.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from fedchain.errors import ConfigError, FedchainError
from fedchain.models import all_finite, empty_model
from fedchain.plan import OptimizerSpec, SGDSpec, TrainConfig, TrainingPlan
from fedchain.tabular import TabularData, apply_preprocessing, deterministic_torch, model_metrics
from fedchain.privacy import DPParams, clip_and_noise, dp_params, secure_generator

__all__ = [
    "TrainingError",
    "LocalResult",
    "deterministic_torch",
    "client_seed",
    "load_global_model",
    "train_local",
    "evaluate",
]


class TrainingError(FedchainError):
    """Local training could not run or produced unusable weights."""


@dataclass(frozen=True, eq=False)
class LocalResult:
    state_dict: dict[str, torch.Tensor]
    n_samples: int
    train_loss: float  # mean cross-entropy over the last local epoch (without the proximal term)
    metrics: dict[str, float] = field(default_factory=dict)  # evaluate() of the new weights on the training data


def client_seed(plan: TrainingPlan, server_round: int, dataset_seed_key: str) -> int:
    """The shuffling seed for one hospital dataset in one round."""
    return plan.derive_seed("train", server_round, dataset_seed_key)


def load_global_model(plan: TrainingPlan, global_state: Mapping[str, torch.Tensor]) -> nn.Module:
    """The plan's model holding a copy of ``global_state`` (names and shapes checked)."""
    model = empty_model(plan.model)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(global_state))
    unexpected = sorted(set(global_state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected)}")
        raise TrainingError(f"global state does not fit the plan's model: {'; '.join(parts)}")
    converted = {}
    for name, ref in expected.items():
        t = global_state[name]
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TrainingError(f"global state tensor {name} must be a floating-point tensor")
        if tuple(t.shape) != tuple(ref.shape):
            raise TrainingError(
                f"global state tensor {name} has shape {tuple(t.shape)}, the model expects {tuple(ref.shape)}"
            )
        converted[name] = t.detach().to(torch.float32)
    model.load_state_dict(converted, strict=True)
    return model


def _optimizer(spec: OptimizerSpec, params: Any) -> torch.optim.Optimizer:
    if isinstance(spec, SGDSpec):
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if spec.name == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    raise ConfigError(f"unknown optimizer {spec.name!r}")  # plan validation prevents this


def _check_data(plan: TrainingPlan, data: TabularData, what: str) -> None:
    if data.n_rows == 0:
        raise TrainingError(f"{what} ({data.source}) has no rows")
    if len(data.label_values) != plan.model.n_classes:
        raise TrainingError(
            f"{what} ({data.source}) has {len(data.label_values)} label values "
            f"but the plan's model has {plan.model.n_classes} classes"
        )


def train_local(
    global_state: Mapping[str, torch.Tensor],
    plan: TrainingPlan,
    train_data: TabularData,
    *,
    config: TrainConfig,
    dataset_seed_key: str,
) -> LocalResult:
    """Train from the global weights on ``train_data`` as ``config`` says
    (``fedchain.plan.train_config(plan, round)``: ``local_epochs`` epochs of
    minibatches of ``batch_size``, the optimizer, the proximal term); return
    the new weights and statistics. ``plan`` gives the model, seed and
    preprocessing."""
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be the plan's TrainConfig (fedchain.plan.train_config), got {config!r}")
    if not isinstance(dataset_seed_key, str) or not dataset_seed_key:
        raise ConfigError("dataset_seed_key must be a non-empty string")
    _check_data(plan, train_data, "training data")
    mu = config.proximal_mu
    dp = dp_params(plan, train_data.n_rows)
    if dp is not None and dp.mode == "dpsgd":
        return _train_dpsgd(global_state, plan, train_data, config, dp)

    with deterministic_torch():
        model = load_global_model(plan, global_state)
        model.train()
        x = apply_preprocessing(plan, train_data.features)
        y = train_data.labels
        n = train_data.n_rows
        anchors = [p.detach().clone() for p in model.parameters()] if mu > 0 else []
        params = list(model.parameters())
        opt = _optimizer(config.optimizer, params)
        gen = torch.Generator(device="cpu")
        gen.manual_seed(client_seed(plan, config.round, dataset_seed_key))
        bs = config.batch_size
        last_epoch_loss = float("nan")
        for _epoch in range(config.local_epochs):
            perm = torch.randperm(n, generator=gen)
            loss_sum = 0.0
            for start in range(0, n, bs):
                idx = perm[start : start + bs]
                logits = model(x[idx])
                loss = F.cross_entropy(logits, y[idx])
                total = loss
                if mu > 0:
                    prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchors))
                    total = loss + (mu / 2.0) * prox
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                loss_sum += float(loss.detach()) * int(idx.shape[0])
            last_epoch_loss = loss_sum / n
            if not math.isfinite(last_epoch_loss):
                raise TrainingError(
                    f"training diverged on {train_data.source} (loss is {last_epoch_loss}); "
                    "try a smaller optimizer.lr"
                )
        # The model is ours alone and dropped here: its parameters become the result, uncopied.
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        if dp is not None and dp.mode == "client":
            state = _client_noise(global_state, state, dp)
            model.load_state_dict(state, strict=True)
        for name, t in state.items():
            if not all_finite(t):
                raise TrainingError(f"training produced non-finite weights in {name}; try a smaller optimizer.lr")
        metrics = _evaluate_model(model, plan, train_data)
    return LocalResult(state, n, last_epoch_loss, metrics)


def _client_noise(global_state: Mapping[str, torch.Tensor], state: dict[str, torch.Tensor],
                  dp: DPParams) -> dict[str, torch.Tensor]:
    """Client-level DP: clip ``state - global`` to the clipping norm, add N(0, (z·C)²), add back to global."""
    update = {k: state[k].to(torch.float32) - global_state[k].to(torch.float32) for k in state}
    noisy, _norm = clip_and_noise(update, dp.clipping_norm, dp.noise_std, secure_generator())
    return {k: (global_state[k].to(torch.float32) + noisy[k]).contiguous() for k in state}


def _train_dpsgd(global_state: Mapping[str, torch.Tensor], plan: TrainingPlan, train_data: TabularData,
                 config: TrainConfig, dp: DPParams) -> LocalResult:
    """DP-SGD with Opacus: Poisson batches at ``dp.sample_rate``, per-example gradients clipped to
    ``dp.clipping_norm``, noise ``dp.noise_std`` on each step's sum (accounted by fedchain.privacy)."""
    if config.proximal_mu > 0:  # the plan rules refuse this: Opacus clips per-example grads of the loss only
        raise ConfigError("dpsgd cannot train with a proximal term (FedProx)")
    # Opacus costs ~3 s to import (it pulls torch.distributed); only DP-SGD training pays it.
    from opacus import GradSampleModule
    from opacus.data_loader import DPDataLoader  # lazy, as above
    from opacus.optimizers import DPOptimizer  # lazy, as above

    with deterministic_torch():
        model = load_global_model(plan, global_state)
        model.train()
        x = apply_preprocessing(plan, train_data.features)
        y = train_data.labels
        n = train_data.n_rows
        gen = secure_generator()
        loader = DPDataLoader.from_data_loader(DataLoader(TensorDataset(x, y), batch_size=config.batch_size),
                                               generator=gen)
        gsm = GradSampleModule(model)
        opt = DPOptimizer(_optimizer(config.optimizer, list(gsm.parameters())), noise_multiplier=dp.noise_multiplier,
                          max_grad_norm=dp.clipping_norm, expected_batch_size=max(1, int(n * dp.sample_rate)),
                          generator=gen)
        last_epoch_loss = float("nan")
        for _epoch in range(config.local_epochs):
            loss_sum, seen = 0.0, 0
            for xb, yb in loader:
                opt.zero_grad(set_to_none=True)
                if len(yb) == 0:  # an empty Poisson batch: the step still adds noise
                    opt.step()
                    continue
                loss = F.cross_entropy(gsm(xb), yb)
                with warnings.catch_warnings():  # torch's note on Opacus's per-sample hooks: expected, not for users
                    warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
                    loss.backward()
                opt.step()
                loss_sum += float(loss.detach()) * int(len(yb))
                seen += int(len(yb))
            last_epoch_loss = loss_sum / max(seen, 1)
            if not math.isfinite(last_epoch_loss):
                raise TrainingError(f"training diverged on {train_data.source} (loss is {last_epoch_loss}); "
                                    "try a smaller optimizer.lr")
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        for name, t in state.items():
            if not all_finite(t):
                raise TrainingError(f"training produced non-finite weights in {name}; try a smaller optimizer.lr")
        metrics = _evaluate_model(load_global_model(plan, state), plan, train_data)
    return LocalResult(state, n, last_epoch_loss, metrics)


def evaluate(state: Mapping[str, torch.Tensor], plan: TrainingPlan, data: TabularData) -> dict[str, float]:
    """Metrics of ``state`` on ``data``: ``accuracy``, ``loss`` (mean
    cross-entropy) and, for binary models when both classes occur in
    ``data``, ``auc`` (sklearn ``roc_auc_score`` of the class-1 probability).
    ``auc`` is left out when it is undefined (a single-class sample)."""
    _check_data(plan, data, "evaluation data")
    with deterministic_torch():
        return _evaluate_model(load_global_model(plan, state), plan, data)


def _evaluate_model(model: nn.Module, plan: TrainingPlan, data: TabularData) -> dict[str, float]:
    """:func:`evaluate` of a model already built (inside :func:`deterministic_torch`)."""
    return model_metrics(model, plan, data)
