"""Training plans: what the consortium trains, written down as pure data.

A plan is a TOML or JSON document. It is pinned to IPFS in its *canonical*
form (:meth:`TrainingPlan.to_canonical_bytes`: JSON, sorted keys, no
whitespace, ASCII only, every default filled in) and the sha256 of those
bytes is what goes on chain (:attr:`TrainingPlan.sha256`, ``0x``-prefixed).
The same plan therefore always has the same bytes and the same hash, no
matter how the author ordered keys or which of TOML/JSON they wrote.

A plan carries no code: every key is known in advance, every value is a
string, number or list of those, and it is checked for type and range here.
Unknown keys are rejected so a typo can never be silently ignored.

Example (TOML)::

    name = "bc-demo"
    purpose = "diagnosis"
    local_epochs = 2
    batch_size = 16
    rounds = 5
    min_participants = 3
    round_deadline_blocks = 40
    seed = 7
    datasets = ["hospital-a", "hospital-b", "hospital-c", "hospital-d"]
    metric = "accuracy"           # accuracy | auc | loss (default accuracy)
    validation_fraction = 0.2     # default 0.2
    auditors = []                 # x25519 public keys ("0x" + 64 hex) that may
                                  # open the sealed updates; default none

    [model]
    kind = "mlp"                  # logreg | mlp | cnn
    in_features = 30
    n_classes = 2
    hidden = [32]

    [optimizer]
    name = "sgd"                  # sgd | adam
    lr = 0.05
    momentum = 0.9                # sgd only, default 0
    weight_decay = 0.0            # default 0

    [strategy]
    name = "fedavg"               # fedavg | fedprox (mu) | fedadam / fedyogi
                                  # (server_lr, beta1=0.9, beta2=0.99, tau=1e-3)

    [preprocessing]
    standardize = "plan"          # none | plan (default none)
    mean = [...]                  # per-feature constants, len == n features
    std = [...]

Model kinds: ``logreg`` needs ``in_features``, ``n_classes``; ``mlp`` also
needs a non-empty ``hidden``; ``cnn`` needs ``input_shape = [C, H, W]``,
``n_classes``, ``conv_channels`` (non-empty) and optionally ``hidden``.

Feature standardization: federated members must put every feature on the
*same* scale, or the averaged weights mean different things at different
hospitals. ``standardize = "plan"`` makes the plan carry agreed per-feature
``mean``/``std`` (computed once from aggregate moments every hospital shares,
see :func:`standardization_from_moments`); each node then applies exactly the
pooled-data scaling, which keeps federated accuracy close to centralised
training. ``"none"`` leaves features untouched.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from fedchain.errors import ConfigError, FedchainError

__all__ = [
    "PLAN_VERSION",
    "MODEL_KINDS",
    "OPTIMIZERS",
    "STRATEGIES",
    "METRICS",
    "STANDARDIZE_MODES",
    "PlanError",
    "PlanHashMismatch",
    "ModelSpec",
    "OptimizerSpec",
    "StrategySpec",
    "Preprocessing",
    "TrainingPlan",
    "load_plan",
    "parse_plan",
    "plan_from_dict",
    "parse_model_spec",
    "verify_plan_bytes",
    "canonical_json",
    "sha256_hex",
    "derive_seed",
    "standardization_from_moments",
]

PLAN_VERSION = 1
MAX_PLAN_BYTES = 1 << 20  # plans are small; refuse anything absurd from IPFS
MAX_SEED = (1 << 63) - 1

MODEL_KINDS = ("logreg", "mlp", "cnn")
OPTIMIZERS = ("sgd", "adam")
STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi")
METRICS = ("accuracy", "auc", "loss")
STANDARDIZE_MODES = ("none", "plan")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DATASET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_KEY_RE = re.compile(r"^0x[0-9a-fA-F]{64}$")
_REQUIRED = object()


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


class PlanError(ConfigError):
    """A plan is malformed; ``field`` is the dotted path of the bad key."""

    def __init__(self, field: str, problem: str, source: str | None = None):
        self.field = field
        self.problem = problem
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}plan field '{field}': {problem}")


class PlanHashMismatch(FedchainError):
    """Plan bytes do not hash to the value recorded on chain."""

    def __init__(self, expected: str, actual: str):
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"plan hash mismatch: on-chain hash is {expected}, "
            f"the fetched plan bytes hash to {actual}"
        )


# --------------------------------------------------------------------------
# small shared helpers (also used by models, node and coordinator)
# --------------------------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, ASCII, no NaN."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def sha256_hex(data: bytes) -> str:
    """``0x``-prefixed lowercase sha256 hex (the chain's bytes32 form)."""
    return "0x" + hashlib.sha256(data).hexdigest()


def derive_seed(seed: int, *parts: str | int) -> int:
    """A 63-bit seed derived from ``seed`` and a context (purpose, round, key).

    Deterministic on every machine (sha256 of canonical JSON), so the same
    plan seed gives every party the same per-purpose random streams.
    """
    digest = hashlib.sha256(canonical_json([int(seed), *parts])).digest()
    return int.from_bytes(digest[:8], "big") & MAX_SEED


def standardization_from_moments(
    moments: Iterable[tuple[int, Sequence[float], Sequence[float]]],
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Combine per-hospital ``(n, sums, sums_of_squares)`` into ``(mean, std)``.

    Each hospital shares only its row count and per-feature sums (see
    ``node.dataset.feature_moments``); the result is exactly the pooled
    mean and (population) standard deviation. A feature with zero spread gets
    std 1.0 so standardizing it is a no-op shift.
    """
    total = 0
    sums: list[float] | None = None
    sq: list[float] | None = None
    for n, s, q in moments:
        if sums is None:
            sums = [0.0] * len(s)
            sq = [0.0] * len(s)
        if len(s) != len(sums) or len(q) != len(sums):
            raise ConfigError("feature moments have different numbers of features")
        total += int(n)
        sums = [a + float(b) for a, b in zip(sums, s)]
        sq = [a + float(b) for a, b in zip(sq, q)]  # type: ignore[arg-type]
    if not total or sums is None or sq is None:
        raise ConfigError("no rows to compute standardization constants from")
    mean = [s / total for s in sums]
    std = []
    for m, q in zip(mean, sq):
        var = max(q / total - m * m, 0.0)
        sd = math.sqrt(var)
        std.append(sd if sd > 1e-12 else 1.0)
    return tuple(mean), tuple(std)


# --------------------------------------------------------------------------
# spec dataclasses
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    n_classes: int
    in_features: int | None = None  # logreg, mlp
    hidden: tuple[int, ...] = ()  # mlp (required), cnn (optional)
    input_shape: tuple[int, int, int] | None = None  # cnn: (C, H, W)
    conv_channels: tuple[int, ...] = ()  # cnn

    @property
    def n_features(self) -> int:
        """Length of one flat input row (C*H*W for a CNN)."""
        if self.input_shape is not None:
            c, h, w = self.input_shape
            return c * h * w
        assert self.in_features is not None
        return self.in_features

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "n_classes": self.n_classes}
        if self.kind in ("logreg", "mlp"):
            d["in_features"] = self.in_features
        if self.kind == "mlp" or self.kind == "cnn":
            d["hidden"] = list(self.hidden)
        if self.kind == "cnn":
            d["input_shape"] = list(self.input_shape or ())
            d["conv_channels"] = list(self.conv_channels)
        return d


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    lr: float
    momentum: float = 0.0  # sgd only
    weight_decay: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "lr": self.lr, "weight_decay": self.weight_decay}
        if self.name == "sgd":
            d["momentum"] = self.momentum
        return d


@dataclass(frozen=True)
class StrategySpec:
    name: str
    mu: float | None = None  # fedprox
    server_lr: float | None = None  # fedadam / fedyogi
    beta1: float | None = None
    beta2: float | None = None
    tau: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.name == "fedprox":
            d["mu"] = self.mu
        if self.name in ("fedadam", "fedyogi"):
            d.update(server_lr=self.server_lr, beta1=self.beta1, beta2=self.beta2, tau=self.tau)
        return d


@dataclass(frozen=True)
class Preprocessing:
    standardize: str = "none"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"standardize": self.standardize}
        if self.standardize == "plan":
            d["mean"] = list(self.mean)
            d["std"] = list(self.std)
        return d


@dataclass(frozen=True)
class TrainingPlan:
    name: str
    purpose: str
    model: ModelSpec
    optimizer: OptimizerSpec
    local_epochs: int
    batch_size: int
    rounds: int
    strategy: StrategySpec
    min_participants: int
    round_deadline_blocks: int
    seed: int
    datasets: tuple[str, ...]
    metric: str = "accuracy"
    validation_fraction: float = 0.2
    preprocessing: Preprocessing = Preprocessing()
    auditors: tuple[str, ...] = ()  # lowercase 0x-hex x25519 public keys
    version: int = PLAN_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The normalized plan as plain JSON types, every default explicit."""
        return {
            "version": self.version,
            "name": self.name,
            "purpose": self.purpose,
            "model": self.model.to_dict(),
            "optimizer": self.optimizer.to_dict(),
            "local_epochs": self.local_epochs,
            "batch_size": self.batch_size,
            "rounds": self.rounds,
            "strategy": self.strategy.to_dict(),
            "min_participants": self.min_participants,
            "round_deadline_blocks": self.round_deadline_blocks,
            "seed": self.seed,
            "datasets": list(self.datasets),
            "metric": self.metric,
            "validation_fraction": self.validation_fraction,
            "preprocessing": self.preprocessing.to_dict(),
            "auditors": list(self.auditors),
        }

    def to_canonical_bytes(self) -> bytes:
        """The bytes to pin on IPFS; equal plans give equal bytes."""
        return canonical_json(self.to_dict())

    @cached_property
    def sha256(self) -> str:
        """``0x`` + sha256 hex of :meth:`to_canonical_bytes` (on-chain bytes32)."""
        return sha256_hex(self.to_canonical_bytes())

    def derive_seed(self, *parts: str | int) -> int:
        """Seed for one purpose (e.g. ``"train", round, dataset``) from the plan seed."""
        return derive_seed(self.seed, *parts)

    def with_changes(self, **top_level: Any) -> "TrainingPlan":
        """A re-validated copy with some top-level keys replaced (dict values
        for the tables ``model``, ``optimizer``, ``strategy``, ``preprocessing``)."""
        d = self.to_dict()
        d.update(top_level)
        return plan_from_dict(d)


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------


def _type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "list"
    if isinstance(v, Mapping):
        return "table"
    return type(v).__name__


class _Section:
    """One table of the plan: typed getters that remember which keys were read."""

    def __init__(self, data: Any, path: str, source: str | None):
        self.path = path
        self.source = source
        if not isinstance(data, Mapping):
            raise self.error_at(path or "<plan>", f"must be a table/object, got {_type_name(data)}")
        self.data = data
        self.used: set[str] = set()

    def field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error_at(self, field: str, problem: str) -> PlanError:
        return PlanError(field, problem, self.source)

    def error(self, key: str, problem: str) -> PlanError:
        return self.error_at(self.field(key), problem)

    def raw(self, key: str, default: Any = _REQUIRED) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise self.error(key, "is required")
            return default
        return self.data[key]

    def integer(self, key: str, lo: int | None = None, hi: int | None = None, default: Any = _REQUIRED) -> int:
        v = self.raw(key, default)
        return self._check_int(key, v, lo, hi)

    def _check_int(self, key: str, v: Any, lo: int | None, hi: int | None) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(key, f"must be an integer, got {_type_name(v)} {v!r}")
        if lo is not None and v < lo:
            raise self.error(key, f"must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            raise self.error(key, f"must be <= {hi}, got {v}")
        return v

    def number(
        self,
        key: str,
        lo: float | None = None,
        hi: float | None = None,
        *,
        lo_open: bool = False,
        hi_open: bool = False,
        default: Any = _REQUIRED,
    ) -> float:
        v = self.raw(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.error(key, f"must be a number, got {_type_name(v)} {v!r}")
        v = float(v)
        if not math.isfinite(v):
            raise self.error(key, f"must be a finite number, got {v}")
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise self.error(key, f"must be {'>' if lo_open else '>='} {lo}, got {v}")
        if hi is not None and (v >= hi if hi_open else v > hi):
            raise self.error(key, f"must be {'<' if hi_open else '<='} {hi}, got {v}")
        return v

    def string(self, key: str, pattern: re.Pattern[str] | None = None, default: Any = _REQUIRED) -> str:
        v = self.raw(key, default)
        if not isinstance(v, str):
            raise self.error(key, f"must be a string, got {_type_name(v)} {v!r}")
        if pattern is not None and not pattern.match(v):
            raise self.error(
                key,
                f"{v!r} is not a valid identifier (letters, digits, '.', '_', '-'; "
                "starting with a letter or digit)",
            )
        return v

    def choice(self, key: str, choices: Sequence[str], default: Any = _REQUIRED) -> str:
        v = self.string(key, default=default)
        if v not in choices:
            raise self.error(key, f"unknown value {v!r} (expected one of: {', '.join(choices)})")
        return v

    def int_list(self, key: str, lo: int, *, allow_empty: bool, default: Any = _REQUIRED) -> tuple[int, ...]:
        v = self.raw(key, default)
        if not isinstance(v, (list, tuple)):
            raise self.error(key, f"must be a list of integers, got {_type_name(v)}")
        if not v and not allow_empty:
            raise self.error(key, "must not be empty")
        out = []
        for i, item in enumerate(v):
            if isinstance(item, bool) or not isinstance(item, int):
                raise self.error(f"{key}[{i}]", f"must be an integer, got {_type_name(item)} {item!r}")
            if item < lo:
                raise self.error(f"{key}[{i}]", f"must be >= {lo}, got {item}")
            out.append(item)
        return tuple(out)

    def float_list(self, key: str, *, positive: bool = False) -> tuple[float, ...]:
        v = self.raw(key)
        if not isinstance(v, (list, tuple)):
            raise self.error(key, f"must be a list of numbers, got {_type_name(v)}")
        out = []
        for i, item in enumerate(v):
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                raise self.error(f"{key}[{i}]", f"must be a number, got {_type_name(item)} {item!r}")
            item = float(item)
            if not math.isfinite(item):
                raise self.error(f"{key}[{i}]", f"must be finite, got {item}")
            if positive and item <= 0:
                raise self.error(f"{key}[{i}]", f"must be > 0, got {item}")
            out.append(item)
        return tuple(out)

    def section(self, key: str, default: Any = _REQUIRED) -> "_Section":
        return _Section(self.raw(key, default), self.field(key), self.source)

    def finish(self, context: str = "") -> None:
        unknown = sorted(set(self.data) - self.used, key=str)
        if unknown:
            allowed = ", ".join(sorted(self.used))
            ctx = f" {context}" if context else ""
            raise self.error(str(unknown[0]), f"unknown key{ctx} (allowed here: {allowed})")


def _parse_model(sec: _Section) -> ModelSpec:
    kind = sec.choice("kind", MODEL_KINDS)
    n_classes = sec.integer("n_classes", 2, 100_000)
    if kind == "logreg":
        spec = ModelSpec(kind, n_classes, in_features=sec.integer("in_features", 1, 10_000_000))
    elif kind == "mlp":
        spec = ModelSpec(
            kind,
            n_classes,
            in_features=sec.integer("in_features", 1, 10_000_000),
            hidden=sec.int_list("hidden", 1, allow_empty=False),
        )
    else:
        shape = sec.int_list("input_shape", 1, allow_empty=False)
        if len(shape) != 3:
            raise sec.error("input_shape", f"must be [channels, height, width], got {list(shape)}")
        conv = sec.int_list("conv_channels", 1, allow_empty=False)
        c, h, w = shape
        if h >> len(conv) < 1 or w >> len(conv) < 1:
            raise sec.error(
                "input_shape",
                f"{h}x{w} is too small for {len(conv)} conv+pool stages (each halves height and width)",
            )
        spec = ModelSpec(
            kind,
            n_classes,
            hidden=sec.int_list("hidden", 1, allow_empty=True, default=[]),
            input_shape=(c, h, w),
            conv_channels=conv,
        )
    sec.finish(f"for model kind '{kind}'")
    return spec


def parse_model_spec(data: Mapping[str, Any] | ModelSpec, source: str | None = None) -> ModelSpec:
    """Validate a model table on its own (e.g. for ``build_model``)."""
    if isinstance(data, ModelSpec):
        return data
    return _parse_model(_Section(data, "model", source))


def _parse_optimizer(sec: _Section) -> OptimizerSpec:
    name = sec.choice("name", OPTIMIZERS)
    lr = sec.number("lr", 0.0, 10.0, lo_open=True)
    momentum = 0.0
    if name == "sgd":
        momentum = sec.number("momentum", 0.0, 1.0, hi_open=True, default=0.0)
    weight_decay = sec.number("weight_decay", 0.0, 1.0, default=0.0)
    sec.finish(f"for optimizer '{name}'")
    return OptimizerSpec(name, lr, momentum, weight_decay)


def _parse_strategy(sec: _Section) -> StrategySpec:
    name = sec.choice("name", STRATEGIES)
    if name == "fedprox":
        spec = StrategySpec(name, mu=sec.number("mu", 0.0, 1000.0))
    elif name in ("fedadam", "fedyogi"):
        spec = StrategySpec(
            name,
            server_lr=sec.number("server_lr", 0.0, 10.0, lo_open=True),
            beta1=sec.number("beta1", 0.0, 1.0, hi_open=True, default=0.9),
            beta2=sec.number("beta2", 0.0, 1.0, hi_open=True, default=0.99),
            tau=sec.number("tau", 0.0, 1.0, lo_open=True, default=1e-3),
        )
    else:
        spec = StrategySpec(name)
    sec.finish(f"for strategy '{name}'")
    return spec


def _parse_preprocessing(sec: _Section, n_features: int) -> Preprocessing:
    mode = sec.choice("standardize", STANDARDIZE_MODES, default="none")
    if mode == "plan":
        mean = sec.float_list("mean")
        std = sec.float_list("std", positive=True)
        for key, values in (("mean", mean), ("std", std)):
            if len(values) != n_features:
                raise sec.error(
                    key, f"has {len(values)} values but the model takes {n_features} features"
                )
        pre = Preprocessing(mode, mean, std)
    else:
        pre = Preprocessing(mode)
    sec.finish(f"for standardize = '{mode}'")
    return pre


def plan_from_dict(data: Mapping[str, Any], source: str | None = None) -> TrainingPlan:
    """Validate an already-decoded plan document (dict from TOML/JSON)."""
    root = _Section(data, "", source)
    version = root.integer("version", default=PLAN_VERSION)
    if version != PLAN_VERSION:
        raise root.error("version", f"unsupported plan version {version} (this fedchain reads {PLAN_VERSION})")
    name = root.string("name", _NAME_RE)
    purpose = root.string("purpose", _NAME_RE)
    model = _parse_model(root.section("model"))
    optimizer = _parse_optimizer(root.section("optimizer"))
    strategy = _parse_strategy(root.section("strategy"))
    local_epochs = root.integer("local_epochs", 1, 10_000)
    batch_size = root.integer("batch_size", 1, 1_000_000)
    rounds = root.integer("rounds", 1, 1_000_000)
    min_participants = root.integer("min_participants", 1, 10_000)
    round_deadline_blocks = root.integer("round_deadline_blocks", 1, 10_000_000)
    seed = root.integer("seed", 0, MAX_SEED)

    datasets_raw = root.raw("datasets")
    if not isinstance(datasets_raw, (list, tuple)):
        raise root.error("datasets", f"must be a list of dataset names, got {_type_name(datasets_raw)}")
    if not datasets_raw:
        raise root.error("datasets", "must name at least one dataset")
    datasets: list[str] = []
    for i, ds in enumerate(datasets_raw):
        if not isinstance(ds, str) or not _DATASET_RE.match(ds):
            raise root.error(f"datasets[{i}]", f"{ds!r} is not a valid dataset name")
        if ds in datasets:
            raise root.error(f"datasets[{i}]", f"dataset {ds!r} is listed twice")
        datasets.append(ds)
    if min_participants > len(datasets):
        raise root.error(
            "min_participants",
            f"is {min_participants} but only {len(datasets)} target dataset(s) are listed",
        )

    metric = root.choice("metric", METRICS, default="accuracy")
    if metric == "auc" and model.n_classes != 2:
        raise root.error("metric", "'auc' is only defined for binary models (model.n_classes = 2)")
    validation_fraction = root.number("validation_fraction", 0.0, 0.9, default=0.2)
    auditors_raw = root.raw("auditors", [])
    if not isinstance(auditors_raw, (list, tuple)):
        raise root.error("auditors", f"must be a list of public keys, got {_type_name(auditors_raw)}")
    auditors: list[str] = []
    for i, key in enumerate(auditors_raw):
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise root.error(f"auditors[{i}]", f"{key!r} is not a 32-byte public key as 0x-prefixed hex")
        if key.lower() in auditors:
            raise root.error(f"auditors[{i}]", "key is listed twice")
        auditors.append(key.lower())
    pre_raw = root.raw("preprocessing", {})
    preprocessing = _parse_preprocessing(_Section(pre_raw, "preprocessing", source), model.n_features)
    root.finish()
    return TrainingPlan(
        name=name,
        purpose=purpose,
        model=model,
        optimizer=optimizer,
        local_epochs=local_epochs,
        batch_size=batch_size,
        rounds=rounds,
        strategy=strategy,
        min_participants=min_participants,
        round_deadline_blocks=round_deadline_blocks,
        seed=seed,
        datasets=tuple(datasets),
        metric=metric,
        validation_fraction=validation_fraction,
        preprocessing=preprocessing,
        auditors=tuple(auditors),
        version=version,
    )


# --------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------


def _json_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a plan")


def parse_plan(data: bytes, *, source: str | None = None, fmt: str | None = None) -> TrainingPlan:
    """Decode and validate plan bytes. ``fmt`` is ``"json"``, ``"toml"`` or
    ``None`` to detect (a document starting with ``{`` is JSON)."""
    where = source or "<plan>"
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ConfigError(f"{where}: plan must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_PLAN_BYTES:
        raise ConfigError(f"{where}: plan is {len(data)} bytes, more than the {MAX_PLAN_BYTES} allowed")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: plan is not UTF-8 text ({exc})") from None
    if fmt is None:
        fmt = "json" if text.lstrip().startswith("{") else "toml"
    if fmt == "json":
        try:
            doc = json.loads(text, object_pairs_hook=_json_no_duplicates, parse_constant=_reject_constant)
        except ValueError as exc:
            raise ConfigError(f"{where}: invalid JSON plan: {exc}") from None
    elif fmt == "toml":
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: invalid TOML plan: {exc}") from None
    else:
        raise ConfigError(f"unknown plan format {fmt!r} (expected 'json' or 'toml')")
    return plan_from_dict(doc, source=source)


def load_plan(path: str | Path) -> TrainingPlan:
    """Read a ``.toml`` or ``.json`` plan file (other extensions: sniffed)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read plan {p}: {exc.strerror or exc}") from None
    suffix = p.suffix.lower()
    fmt = {".toml": "toml", ".json": "json"}.get(suffix)
    return parse_plan(data, source=str(p), fmt=fmt)


def _normalize_hash(h: str | bytes) -> str:
    if isinstance(h, (bytes, bytearray)):
        if len(h) != 32:
            raise ConfigError(f"expected a 32-byte sha256, got {len(h)} bytes")
        return "0x" + bytes(h).hex()
    s = h.lower()
    if s.startswith("0x"):
        s = s[2:]
    if not re.fullmatch(r"[0-9a-f]{64}", s):
        raise ConfigError(f"expected a sha256 as 64 hex digits, got {h!r}")
    return "0x" + s


def verify_plan_bytes(data: bytes, expected_sha256: str | bytes) -> TrainingPlan:
    """Check fetched plan bytes against the on-chain hash, then parse them.

    Raises :class:`PlanHashMismatch` when ``sha256(data)`` differs, and
    :class:`ConfigError` when the bytes hash correctly but are not the plan's
    canonical form (one plan must have exactly one hash).
    """
    expected = _normalize_hash(expected_sha256)
    actual = sha256_hex(bytes(data))
    if actual != expected:
        raise PlanHashMismatch(expected, actual)
    plan = parse_plan(bytes(data), source=f"plan {expected}", fmt="json")
    if plan.to_canonical_bytes() != bytes(data):
        raise ConfigError(
            f"plan {expected}: bytes are not in canonical form; "
            "publish TrainingPlan.to_canonical_bytes()"
        )
    return plan
