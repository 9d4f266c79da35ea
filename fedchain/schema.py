"""Dataset schemas and the public metadata document registered on chain.

A hospital describes its CSV with a JSON schema; the schema's canonical hash and a
metadata document (schema, row count, description — never a row) are what the
consortium sees when a dataset is registered. Both are needed by whoever registers
a dataset (the CLI, the console, a node), so they live in the core; reading the CSV
itself stays with the hospital node (:mod:`fedchain.node.dataset`).

Schema file (JSON)::

    {
      "version": 1,                                  # optional, default 1
      "features": [{"name": "mean_radius", "type": "float"},
                   {"name": "age", "type": "int"},
                   {"name": "smoker", "type": "bool"}],
      "label": {"name": "diagnosis", "values": ["benign", "malignant"]},
      "id_columns": ["patient_id"]                   # optional, dropped on load
    }
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from fedchain.errors import ConfigError
from fedchain.plan import canonical_json, sha256_hex

__all__ = [
    "FEATURE_TYPES",
    "SCHEMA_VERSION",
    "DatasetError",
    "FeatureColumn",
    "DatasetSchema",
    "parse_schema",
    "load_schema",
    "as_schema",
    "schema_hash",
    "metadata_document",
]

FEATURE_TYPES = ("float", "int", "bool")
SCHEMA_VERSION = 1
_COLUMN_RE = re.compile(r"^[^\x00-\x1f]{1,128}$")


class DatasetError(ConfigError):
    """A dataset or schema problem; ``file``, ``row`` (header = 1) and
    ``column`` locate it when known."""

    def __init__(self, file: str | Path, problem: str, *, row: int | None = None, column: str | None = None):
        self.file = str(file)
        self.row = row
        self.column = column
        self.problem = problem
        where = self.file
        if row is not None:
            where += f": row {row}"
        if column is not None:
            where += f", column '{column}'" if row is not None else f": column '{column}'"
        super().__init__(f"{where}: {problem}")


# --------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureColumn:
    name: str
    type: str


@dataclass(frozen=True)
class DatasetSchema:
    features: tuple[FeatureColumn, ...]
    label: str
    label_values: tuple[str, ...]
    id_columns: tuple[str, ...] = ()
    version: int = SCHEMA_VERSION

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "features": [{"name": f.name, "type": f.type} for f in self.features],
            "label": {"name": self.label, "values": list(self.label_values)},
            "id_columns": list(self.id_columns),
        }

    def to_canonical_bytes(self) -> bytes:
        return canonical_json(self.to_dict())


def _schema_err(source: str, field: str, problem: str) -> DatasetError:
    return DatasetError(source, f"schema field '{field}': {problem}")


def _check_keys(source: str, field: str, obj: Any, required: set[str], optional: set[str]) -> None:
    if not isinstance(obj, Mapping):
        raise _schema_err(source, field or "<schema>", f"must be an object, got {type(obj).__name__}")
    for key in obj:
        if key not in required | optional:
            raise _schema_err(
                source,
                f"{field}.{key}" if field else str(key),
                f"unknown key (allowed: {', '.join(sorted(required | optional))})",
            )
    for key in sorted(required):
        if key not in obj:
            raise _schema_err(source, f"{field}.{key}" if field else key, "is required")


def _column_name(source: str, field: str, v: Any) -> str:
    if not isinstance(v, str) or not _COLUMN_RE.match(v) or v != v.strip():
        raise _schema_err(source, field, f"{v!r} is not a valid column name")
    return v


def parse_schema(data: Mapping[str, Any] | DatasetSchema, source: str = "<schema>") -> DatasetSchema:
    """Validate a schema document (already decoded from JSON)."""
    if isinstance(data, DatasetSchema):
        return data
    _check_keys(source, "", data, {"features", "label"}, {"id_columns", "version"})
    version = data.get("version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise _schema_err(source, "version", f"unsupported schema version {version!r} (expected {SCHEMA_VERSION})")

    raw_features = data["features"]
    if not isinstance(raw_features, list) or not raw_features:
        raise _schema_err(source, "features", "must be a non-empty list")
    features = []
    for i, f in enumerate(raw_features):
        fld = f"features[{i}]"
        _check_keys(source, fld, f, {"name", "type"}, set())
        name = _column_name(source, f"{fld}.name", f["name"])
        if f["type"] not in FEATURE_TYPES:
            raise _schema_err(
                source, f"{fld}.type", f"unknown type {f['type']!r} (expected one of: {', '.join(FEATURE_TYPES)})"
            )
        features.append(FeatureColumn(name, f["type"]))

    label = data["label"]
    _check_keys(source, "label", label, {"name", "values"}, set())
    label_name = _column_name(source, "label.name", label["name"])
    values = label["values"]
    if not isinstance(values, list) or len(values) < 2:
        raise _schema_err(source, "label.values", "must list at least two allowed label values")
    label_values = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise _schema_err(source, f"label.values[{i}]", f"must be a string or integer, got {v!r}")
        text = str(v)
        if not text or text != text.strip():
            raise _schema_err(source, f"label.values[{i}]", f"{v!r} is not a usable label value")
        if text in label_values:
            raise _schema_err(source, f"label.values[{i}]", f"{text!r} is listed twice")
        label_values.append(text)

    raw_ids = data.get("id_columns", [])
    if not isinstance(raw_ids, list):
        raise _schema_err(source, "id_columns", "must be a list of column names")
    ids = tuple(_column_name(source, f"id_columns[{i}]", c) for i, c in enumerate(raw_ids))

    seen: set[str] = set()
    for name in [f.name for f in features] + [label_name] + list(ids):
        if name in seen:
            raise _schema_err(source, "features", f"column '{name}' is declared more than once")
        seen.add(name)
    return DatasetSchema(tuple(features), label_name, tuple(label_values), ids, SCHEMA_VERSION)


def load_schema(path: str | Path) -> DatasetSchema:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetError(p, f"cannot read schema: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise DatasetError(p, f"schema is not valid JSON: {exc}") from None
    return parse_schema(doc, str(p))


def as_schema(schema: DatasetSchema | Mapping[str, Any] | str | Path) -> DatasetSchema:
    if isinstance(schema, DatasetSchema):
        return schema
    if isinstance(schema, (str, Path)):
        return load_schema(schema)
    return parse_schema(schema)


def schema_hash(schema: DatasetSchema | Mapping[str, Any] | str | Path) -> str:
    """``0x`` + sha256 of the canonical JSON of the normalized schema (bytes32
    hex, as stored by the on-chain dataset registry)."""
    return sha256_hex(as_schema(schema).to_canonical_bytes())


def metadata_document(
    schema: DatasetSchema | Mapping[str, Any] | str | Path, n_rows: int, description: str
) -> bytes:
    """Canonical JSON describing a dataset for publication: schema, its hash,
    row count and a free-text description. Contains no patient data."""
    s = as_schema(schema)
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 0:
        raise ConfigError(f"n_rows must be a non-negative integer, got {n_rows!r}")
    if not isinstance(description, str):
        raise ConfigError("description must be a string")
    return canonical_json(
        {
            "format": "fedchain-dataset-metadata/1",
            "schema": s.to_dict(),
            "schema_hash": schema_hash(s),
            "n_rows": n_rows,
            "description": description,
        }
    )
