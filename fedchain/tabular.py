"""Tabular datasets: a CSV file described by a JSON schema (:mod:`fedchain.schema`), and
the deterministic evaluation of a model on one.

This is core code: hospital nodes load their private datasets with it
(``fedchain.node.dataset`` re-exports it), and the coordinator and the auditor
load the plan's *public* validation set with it and evaluate candidate
aggregates on it (contribution scores, :mod:`fedchain.coordinator.scoring`), so
both re-derive the same numbers.

* Feature types: ``float`` (finite decimal; NaN/inf rejected), ``int``
  (optional sign and digits only), ``bool`` (``true``/``false``/``1``/``0``,
  any case). All features become float32, in schema order.
* Label values are matched as text after trimming spaces (integers in the
  schema are stored as their decimal text); the class index of a row is the
  position of its label in ``values``.
* Every CSV column must be named in the schema (feature, label or id
  column); an unexpected column is an error so nothing is trained on, or
  leaked, by accident.

Row numbers in errors follow the spreadsheet convention: **the header is row
1 and the first data row is row 2**. A row is a CSV record (a quoted cell
spanning lines is still one row); blank lines count as rows and are skipped.

Standardization: the plan decides (``preprocessing.standardize``). With
``"plan"`` every hospital scales features with the plan's agreed per-feature
mean/std, which the consortium computes from :func:`feature_moments` --
aggregate row count, per-feature sums and sums of squares, never rows --
combined by :func:`fedchain.plan.standardization_from_moments`. That equals
pooled-data standardization, so a federated model sees the same feature
scale everywhere (local per-hospital scaling would give each hospital a
different coordinate system on non-IID data and hurt the averaged model).
The loader itself returns raw (unscaled) features; :func:`apply_preprocessing`
does the scaling and ``node.train`` calls it.
"""

from __future__ import annotations

import csv
import io
import math
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch.nn import functional as F

from fedchain.errors import ConfigError
from fedchain.models import empty_model
from fedchain.plan import TrainingPlan
from fedchain.schema import DatasetError, DatasetSchema, as_schema

__all__ = [
    "TabularData",
    "FeatureMoments",
    "load_dataset",
    "parse_dataset",
    "split_dataset",
    "split_for_plan",
    "feature_moments",
    "standardize",
    "apply_preprocessing",
    "deterministic_torch",
    "model_metrics",
    "evaluate_state",
]

_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_FLOAT32_MAX = 3.4028234663852886e38
_BOOLS = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0}


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TabularData:
    """Features (float32 ``[n, d]``, unscaled) and class indices (int64 ``[n]``)."""

    features: torch.Tensor
    labels: torch.Tensor
    feature_names: tuple[str, ...]
    label_values: tuple[str, ...]
    source: str = "<memory>"

    @property
    def n_rows(self) -> int:
        return int(self.labels.shape[0])

    @property
    def class_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.labels, minlength=len(self.label_values)).tolist()
        return {v: int(c) for v, c in zip(self.label_values, counts)}

    def subset(self, indices: torch.Tensor) -> "TabularData":
        return TabularData(
            self.features[indices].contiguous(),
            self.labels[indices].contiguous(),
            self.feature_names,
            self.label_values,
            self.source,
        )

    @staticmethod
    def concat(parts: Sequence["TabularData"], source: str = "<pooled>") -> "TabularData":
        if not parts:
            raise ConfigError("nothing to concatenate")
        first = parts[0]
        for p in parts[1:]:
            if p.feature_names != first.feature_names or p.label_values != first.label_values:
                raise ConfigError(f"{p.source} has a different schema from {first.source}")
        return TabularData(
            torch.cat([p.features for p in parts]),
            torch.cat([p.labels for p in parts]),
            first.feature_names,
            first.label_values,
            source,
        )


def _parse_cell(text: str, ftype: str) -> float | str:
    """The float value of a cell, or an error description (str)."""
    t = text.strip()
    if t == "":
        return "missing value"
    if ftype == "float":
        try:
            v = float(t)
        except ValueError:
            return f"{t!r} is not a number"
        if math.isnan(v):
            return "NaN is not allowed"
        if math.isinf(v):
            return f"infinite value {t!r} is not allowed"
        if abs(v) > _FLOAT32_MAX:
            return f"{t!r} is too large for float32"
        return v
    if ftype == "int":
        if not _INT_RE.match(t):
            return f"{t!r} is not an integer"
        if len(t) > 30 or abs(int(t)) > _FLOAT32_MAX:
            return f"{t!r} is too large"
        return float(int(t))
    v = _BOOLS.get(t.lower())
    if v is None:
        return f"{t!r} is not a boolean (true/false/1/0)"
    return v


def load_dataset(csv_path: str | Path, schema: DatasetSchema | Mapping[str, Any] | str | Path) -> TabularData:
    """Load and validate a hospital CSV against ``schema`` (object, dict or path).

    Raises :class:`DatasetError` naming the file, row (header = row 1) and
    column of the first problem found.
    """
    s = as_schema(schema)
    path = Path(csv_path)
    src = str(path)
    try:
        fh = path.open("r", encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise DatasetError(src, f"cannot read dataset: {exc.strerror or exc}") from None
    with fh:
        return _read(fh, s, src)


def parse_dataset(data: bytes, schema: DatasetSchema | Mapping[str, Any] | str | Path, source: str) -> TabularData:
    """:func:`load_dataset` of CSV bytes already in memory (e.g. fetched from the store by hash)."""
    s = as_schema(schema)
    try:
        text = bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(source, f"file is not UTF-8 text: {exc}") from None
    return _read(io.StringIO(text, newline=""), s, source)


def _read(fh, s: DatasetSchema, src: str) -> TabularData:
    rows: list[list[float]] = []
    labels: list[int] = []
    reader = csv.reader(fh)
    try:
        header = next(reader, None)
        if header is None:
            raise DatasetError(src, "file is empty (expected a header row)", row=1)
        header = [h.strip() for h in header]
        positions: dict[str, int] = {}
        for i, name in enumerate(header):
            if name in positions:
                raise DatasetError(src, "column appears twice in the header", row=1, column=name)
            positions[name] = i
        declared = set(s.feature_names) | {s.label} | set(s.id_columns)
        for name in list(s.feature_names) + [s.label] + list(s.id_columns):
            if name not in positions:
                raise DatasetError(src, "column named in the schema is missing from the header", row=1, column=name)
        for name in header:
            if name not in declared:
                raise DatasetError(
                    src,
                    "column is not in the schema (declare it, or list it under id_columns to drop it)",
                    row=1,
                    column=name,
                )
        feature_pos = [(f.name, positions[f.name], f.type) for f in s.features]
        label_pos = positions[s.label]
        label_index = {v: i for i, v in enumerate(s.label_values)}
        width = len(header)
        row_no = 1
        for record in reader:
            row_no += 1
            if not record or all(not c.strip() for c in record) and len(record) <= 1:
                continue  # blank line: counted, skipped
            if len(record) != width:
                raise DatasetError(
                    src, f"has {len(record)} cells but the header has {width}", row=row_no
                )
            values = []
            for name, pos, ftype in feature_pos:
                v = _parse_cell(record[pos], ftype)
                if isinstance(v, str):
                    raise DatasetError(src, v, row=row_no, column=name)
                values.append(v)
            lab = record[label_pos].strip()
            if lab not in label_index:
                problem = "missing label" if lab == "" else (
                    f"unknown label {lab!r} (allowed: {', '.join(s.label_values)})"
                )
                raise DatasetError(src, problem, row=row_no, column=s.label)
            rows.append(values)
            labels.append(label_index[lab])
    except csv.Error as exc:
        raise DatasetError(src, f"malformed CSV: {exc}", row=reader.line_num or None) from None
    except UnicodeDecodeError as exc:
        raise DatasetError(src, f"file is not UTF-8 text: {exc}") from None
    if not rows:
        raise DatasetError(src, "has no data rows")
    features = torch.tensor(rows, dtype=torch.float64).to(torch.float32)
    return TabularData(
        features.contiguous(),
        torch.tensor(labels, dtype=torch.int64),
        s.feature_names,
        s.label_values,
        src,
    )


def split_dataset(data: TabularData, validation_fraction: float, seed: int) -> tuple[TabularData, TabularData]:
    """Deterministic shuffle-and-split into ``(train, validation)``.

    ``round(n * fraction)`` rows go to validation (at least one when the
    fraction is positive, and at least one row always stays in train).
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ConfigError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    n = data.n_rows
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    n_val = int(round(n * validation_fraction))
    if validation_fraction > 0:
        n_val = max(n_val, 1)
    n_val = min(n_val, n - 1)
    val_idx = torch.sort(perm[:n_val]).values
    train_idx = torch.sort(perm[n_val:]).values
    return data.subset(train_idx), data.subset(val_idx)


def split_for_plan(data: TabularData, plan: TrainingPlan, dataset_key: str) -> tuple[TabularData, TabularData]:
    """The plan's train/validation split for one dataset (seed derived from
    the plan seed and ``dataset_key``, the dataset's name in the plan)."""
    return split_dataset(data, plan.validation_fraction, plan.derive_seed("split", dataset_key))


@dataclass(frozen=True)
class FeatureMoments:
    """Aggregates a hospital may share to agree on standardization."""

    n: int
    sums: tuple[float, ...]
    sums_sq: tuple[float, ...]

    def as_tuple(self) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
        return (self.n, self.sums, self.sums_sq)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "sums": list(self.sums), "sums_sq": list(self.sums_sq)}


def feature_moments(data: TabularData) -> FeatureMoments:
    """Row count and per-feature sum and sum of squares (float64)."""
    x = data.features.to(torch.float64)
    return FeatureMoments(
        data.n_rows,
        tuple(float(v) for v in x.sum(0).tolist()),
        tuple(float(v) for v in (x * x).sum(0).tolist()),
    )


def standardize(features: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per column, computed in float64, returned float32."""
    m = torch.tensor(list(mean), dtype=torch.float64)
    sd = torch.tensor(list(std), dtype=torch.float64)
    if m.shape[0] != features.shape[1] or sd.shape[0] != features.shape[1]:
        raise ConfigError(
            f"standardization constants cover {m.shape[0]} features but the data has {features.shape[1]}"
        )
    return ((features.to(torch.float64) - m) / sd).to(torch.float32).contiguous()


def apply_preprocessing(plan: TrainingPlan, features: torch.Tensor) -> torch.Tensor:
    """The feature matrix the model sees under ``plan.preprocessing``."""
    if features.ndim != 2 or features.shape[1] != plan.model.n_features:
        raise ConfigError(
            f"data has {features.shape[1] if features.ndim == 2 else '?'} features "
            f"but the plan's model takes {plan.model.n_features}"
        )
    if plan.preprocessing.standardize == "plan":
        return standardize(features, plan.preprocessing.mean, plan.preprocessing.std)
    if plan.preprocessing.standardize == "federated":
        raise ConfigError("the plan's standardization comes from its statistics phase, published on chain: "
                          "give the proposal (model evaluate --proposal N) rather than the plan file")
    return features.to(torch.float32).contiguous()


# --------------------------------------------------------------------------
# deterministic evaluation
# --------------------------------------------------------------------------

_det_lock = threading.Lock()
_det_users = 0
_det_saved: tuple[int, bool, bool] = (1, False, False)


@contextmanager
def deterministic_torch() -> Iterator[None]:
    """One intra-op thread and deterministic algorithms; restored when the last user leaves.

    Both settings are process-wide, so users are counted: several threads may
    train at once (each stays deterministic) and the settings from before the
    first one entered come back after the last one left.
    """
    global _det_users, _det_saved
    with _det_lock:
        if _det_users == 0:
            _det_saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                          torch.is_deterministic_algorithms_warn_only_enabled())
            torch.set_num_threads(1)
            torch.use_deterministic_algorithms(True)
        _det_users += 1
    try:
        yield
    finally:
        with _det_lock:
            _det_users -= 1
            if _det_users == 0:
                threads, det, warn_only = _det_saved
                torch.use_deterministic_algorithms(det, warn_only=warn_only)
                torch.set_num_threads(threads)


def model_metrics(model: torch.nn.Module, plan: TrainingPlan, data: TabularData) -> dict[str, float]:
    """``accuracy``, ``loss`` (mean cross-entropy) and, for binary models when both classes
    occur in ``data``, ``auc`` of a built model on ``data`` (call inside :func:`deterministic_torch`)."""
    model.eval()
    with torch.no_grad():
        logits = model(apply_preprocessing(plan, data.features)).to(torch.float64)
        y = data.labels
        loss = float(F.cross_entropy(logits, y))
        accuracy = float((logits.argmax(dim=1) == y).to(torch.float64).mean())
        probs = torch.softmax(logits, dim=1)
    metrics = {"accuracy": accuracy, "loss": loss}
    if plan.model.n_classes == 2 and 0 < int(y.sum()) < data.n_rows:
        # scikit-learn costs ~2 s to import; only evaluation needs it, not every CLI start.
        from sklearn.metrics import roc_auc_score
        metrics["auc"] = float(roc_auc_score(y.numpy(), probs[:, 1].numpy()))
    return metrics


def evaluate_state(state: Mapping[str, torch.Tensor], plan: TrainingPlan, data: TabularData) -> dict[str, float]:
    """:func:`model_metrics` of the plan's model holding ``state`` (float32; names and shapes must fit)."""
    model = empty_model(plan.model)
    model.load_state_dict({k: v.detach().to(torch.float32) for k, v in state.items()}, strict=True)
    with deterministic_torch():
        return model_metrics(model, plan, data)
