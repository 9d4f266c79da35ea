"""Evaluate a model file on a hospital's own CSV, as the nodes evaluate during training.

``fedchain model evaluate`` loads a model file (canonical safetensors, e.g. from
``fedchain model pull``), checks it against the plan's model layout before a
tensor is built (:func:`fedchain.validation.validate_update`: names, dtypes,
shapes, finite values; a file larger than the model is refused unread), loads
the CSV against its schema and applies the plan's preprocessing
(:func:`fedchain.node.dataset.apply_preprocessing`) -- exactly what
:func:`fedchain.node.train.evaluate` does with a round's aggregate, so the
numbers agree with what the nodes report on chain.

Beyond the nodes' accuracy and loss it reports the confusion matrix (rows:
true class, columns: predicted class, in the schema's label order) and, for a
binary model, the ROC AUC of the second class's probability (undefined, and
left out with a reason, when the CSV holds one class only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from fedchain.errors import ConfigError
from fedchain.node.dataset import TabularData, apply_preprocessing
from fedchain.node.train import deterministic_torch, load_global_model
from fedchain.plan import TrainingPlan
from fedchain.validation import Rejection, model_layout, validate_update

__all__ = ["ModelFileError", "ModelEvaluation", "read_model_file", "evaluate_model"]


class ModelFileError(ConfigError):
    """A model file is unreadable or does not fit the plan's model."""


@dataclass(frozen=True)
class ModelEvaluation:
    """A model's metrics on one labelled table."""

    n_rows: int
    accuracy: float
    loss: float
    labels: tuple[str, ...]
    confusion: tuple[tuple[int, ...], ...]  # [true class][predicted class]
    auc: float | None
    auc_note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_rows": self.n_rows,
            "accuracy": self.accuracy,
            "loss": self.loss,
            "auc": self.auc,
            "auc_note": self.auc_note,
            "labels": list(self.labels),
            "confusion_matrix": [list(r) for r in self.confusion],
        }


def read_model_file(path: str | Path, plan: TrainingPlan) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` if it is exactly a model of the plan's layout.

    Reads at most the model's size plus a little (to name what is wrong with a
    file slightly off); a larger file is refused as too large.
    """
    layout = model_layout(plan.model)
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(layout.size + (64 << 10) + 1)
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {p}: {exc.strerror or exc}") from None
    verdict = validate_update(data, layout)
    if isinstance(verdict, Rejection):
        raise ModelFileError(
            f"{p} is not a model of this plan ({plan.model.kind}, {plan.model.size.parameters:,} parameters): "
            f"{verdict.code.value}: {verdict.detail}")
    return verdict.state


def evaluate_model(state: dict[str, torch.Tensor], plan: TrainingPlan, data: TabularData) -> ModelEvaluation:
    """Accuracy, loss, confusion matrix and (binary models) ROC AUC of ``state`` on ``data``."""
    if data.n_rows == 0:
        raise ConfigError(f"{data.source} has no rows to evaluate on")
    if len(data.label_values) != plan.model.n_classes:
        raise ConfigError(f"{data.source}: the schema has {len(data.label_values)} label values but the plan's model "
                          f"predicts {plan.model.n_classes} classes")
    with deterministic_torch():
        model = load_global_model(plan, state)
        model.eval()
        with torch.no_grad():
            logits = model(apply_preprocessing(plan, data.features)).to(torch.float64)
    y = data.labels
    k = plan.model.n_classes
    predicted = logits.argmax(dim=1)
    loss = float(F.cross_entropy(logits, y))
    accuracy = float((predicted == y).to(torch.float64).mean())
    confusion = torch.bincount(y * k + predicted, minlength=k * k).reshape(k, k)
    auc, note = None, ""
    if k == 2:
        positives = int(y.sum())
        if 0 < positives < data.n_rows:
            probs = torch.softmax(logits, dim=1)[:, 1]
            # scikit-learn costs ~2 s to import; only evaluation needs it, not every CLI start.
            from sklearn.metrics import roc_auc_score
            auc = float(roc_auc_score(y.numpy(), probs.numpy()))
        else:
            note = f"ROC AUC is undefined: every row is {data.label_values[int(y[0])]!r}"
    else:
        note = f"ROC AUC is reported for binary models only (this one has {k} classes)"
    return ModelEvaluation(
        n_rows=data.n_rows, accuracy=accuracy, loss=loss, labels=tuple(data.label_values),
        confusion=tuple(tuple(int(v) for v in row) for row in confusion.tolist()), auc=auc, auc_note=note,
    )
