"""Training plans: what the consortium trains, written down as pure data.

A plan is a TOML or JSON document; ``fedchain plan init`` writes a commented
template and ``fedchain/docs/plan.md`` lists every field (that page is
generated from the models below, so it cannot drift from them). The models
are pydantic v2 models with ``extra="forbid"`` (a typo is an error, never
silently ignored), discriminated unions for the model kinds, optimizers,
strategies and preprocessing modes, and strict types (``true`` is not a
number, ``"5"`` is not an integer). :data:`PLAN_JSON_SCHEMA` is the plan's
JSON Schema.

Validation reports *every* problem at once: a :class:`PlanError` carries a
list of :class:`PlanProblem`, each with the dotted field path
(``model.hidden[1]``) and, for a TOML/JSON file, the line it is written on.
Besides types and ranges it checks the rules that span fields: the datasets
are distinct and at least ``min_participants``; ``auc`` needs a binary
model; the standardization constants fit the model's input; and the model's
size (:attr:`ModelSpec.size`) is within the limit.

Model-size bound: a plan whose model has more than
:data:`DEFAULT_MAX_MODEL_PARAMETERS` parameters is refused unless it declares
a higher ``[limits] max_parameters`` (which the members see in
``fedchain plan show`` and vote on), itself at most
:data:`HARD_MAX_MODEL_PARAMETERS`. Without it, a plan asking for an MLP of
hidden ``[100000, 100000]`` would be voted through and then kill every node
allocating 40 GB. Nodes apply their own limit too (``node.runner``).

Canonical bytes: a plan is pinned to IPFS in its canonical form
(:meth:`TrainingPlan.to_canonical_bytes`: every default filled in, encoded
with the JSON Canonicalization Scheme, RFC 8785, via :func:`canonical_json`)
and the sha256 of those bytes goes on chain (:attr:`TrainingPlan.sha256`).
The same plan always has the same bytes, however its author ordered keys or
wrote numbers (``lr = 1`` and ``lr = 1.0`` are one plan), and anyone with an
RFC 8785 implementation can reproduce them. Scores and dataset-metadata
documents use the same :func:`canonical_json`.

A plan carries no code: every key is known in advance and every value is a
string, number or list of those.

What a node does in a round -- epochs, batch size, optimizer, FedProx's
proximal ``mu`` -- is derived from the plan by one pure function,
:func:`train_config`. The node trains with exactly that, and the
coordinator's strategy states the same config in ``configure_train``.

Feature standardization: federated members must put every feature on the
*same* scale, or the averaged weights mean different things at different
hospitals. ``standardize = "plan"`` makes the plan carry agreed per-feature
``mean``/``std`` (computed once from aggregate moments every hospital shares,
see :func:`standardization_from_moments`); each node then applies exactly the
pooled-data scaling, which keeps federated accuracy close to centralised
training. ``"federated"`` computes the same pooled values in a governed
statistics phase before round 1 (``Statistics`` contract, see
:mod:`fedchain.moments`): the plan pins the procedure, the chain records the
step, replay re-derives the result. ``"none"`` leaves features untouched.
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
from typing import Annotated, Any, ClassVar, Iterable, Literal, Mapping, Sequence, Union

import rfc8785
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    StringConstraints,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from fedchain.errors import ConfigError, FedchainError
from fedchain.textpos import json_key_lines, line_of, toml_key_lines, too_deep

__all__ = [
    "PLAN_VERSION",
    "MAX_VALIDATION_BYTES",
    "Contribution",
    "ValidationSet",
    "MAX_PLAN_BYTES",
    "MAX_SEED",
    "DEFAULT_MAX_MODEL_PARAMETERS",
    "HARD_MAX_MODEL_PARAMETERS",
    "MODEL_KINDS",
    "OPTIMIZERS",
    "STRATEGIES",
    "METRICS",
    "STANDARDIZE_MODES",
    "PlanError",
    "PlanProblem",
    "PlanHashMismatch",
    "ModelSize",
    "ModelSpec",
    "LogRegSpec",
    "MLPSpec",
    "CNNSpec",
    "OptimizerSpec",
    "SGDSpec",
    "AdamSpec",
    "StrategySpec",
    "FedAvgSpec",
    "FedProxSpec",
    "FedAdamSpec",
    "FedYogiSpec",
    "Preprocessing",
    "NoStandardization",
    "PlanStandardization",
    "Limits",
    "AGGREGATION_MODES",
    "SecAggSettings",
    "HESettings",
    "Privacy",
    "TrainingPlan",
    "TrainConfig",
    "EvaluateConfig",
    "train_config",
    "evaluate_config",
    "PLAN_JSON_SCHEMA",
    "CROSS_FIELD_RULES",
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

PLAN_VERSION = 5  # 2: canonical bytes by RFC 8785, [limits]; 3: [robust]; 4: [contribution]; 5: [privacy], mode, [secagg], [he]
MAX_PLAN_BYTES = 1 << 20  # plans are small; refuse anything absurd from IPFS
MAX_SEED = (1 << 53) - 1  # RFC 8785 numbers are IEEE doubles: larger integers are not exact
BYTES_PER_PARAMETER = 4  # models travel as float32

#: Consortium default for the number of model parameters (80 MB as float32).
DEFAULT_MAX_MODEL_PARAMETERS = 20_000_000
#: No plan may declare more than this (1 GB as float32).
HARD_MAX_MODEL_PARAMETERS = 250_000_000

MAX_FEATURES = 10_000_000
MAX_LAYERS = 32
MAX_CONV_STAGES = 8
MAX_DATASETS = 128  # the Proposals contract's MAX_TARGETS
MAX_ROUNDS = 10_000  # the Proposals contract's MAX_ROUNDS
MAX_AUDITORS = 32
MAX_NESTING = 16  # a plan is three levels deep; the decoders recurse per level

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
_KEY_PATTERN = r"^0x[0-9a-fA-F]{64}$"
_ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
_SHA256_PATTERN = r"^0x[0-9a-f]{64}$"
_CID_PATTERN = r"^[A-Za-z0-9]{46,100}$"
PATTERN_WORDS = {
    _NAME_PATTERN: "letters, digits, '.', '_', '-' (1 to 64, the first a letter or digit)",
    _DATASET_PATTERN: "letters, digits, '.', '_', ':', '/', '-' (1 to 128, the first a letter or digit)",
    _KEY_PATTERN: "0x and 64 hex digits (a 32-byte x25519 public key)",
    _ADDRESS_PATTERN: "0x and 40 hex digits (an Ethereum address)",
    _SHA256_PATTERN: "0x and 64 lower-case hex digits (a sha256)",
    _CID_PATTERN: "an IPFS CID (46 to 100 letters and digits)",
}


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<plan>"


@dataclass(frozen=True)
class PlanProblem:
    """One thing wrong with a plan: where (key path, line) and what."""

    path: tuple[str | int, ...]
    message: str
    line: int | None = None

    @property
    def field(self) -> str:
        """Dotted path, e.g. ``model.hidden[1]`` (``<plan>`` for the whole document)."""
        return _dotted(self.path)

    def describe(self, source: str | None = None) -> str:
        where = ":".join(str(x) for x in (source, self.line) if x is not None)
        if not source and self.line is not None:
            where = f"line {self.line}"
        return f"{where + ': ' if where else ''}plan field '{self.field}': {self.message}"


class PlanError(ConfigError):
    """A plan is malformed. ``problems`` lists every problem found (field
    path, line, words); ``field`` and ``problem`` are the first one's."""

    def __init__(self, problems: Sequence[PlanProblem], source: str | None = None):
        if not problems:
            raise ValueError("PlanError needs at least one problem")
        self.problems = list(problems)
        self.source = source
        self.field = self.problems[0].field
        self.problem = self.problems[0].message
        if len(self.problems) == 1:
            text = self.problems[0].describe(source)
        else:
            head = f"{source}: " if source else ""
            text = f"{head}{len(self.problems)} problems in the plan:\n" + "\n".join(
                "  " + p.describe(source) for p in self.problems
            )
        super().__init__(text)

    @classmethod
    def at(cls, path: Sequence[str | int], message: str, source: str | None = None,
           line: int | None = None) -> "PlanError":
        return cls([PlanProblem(tuple(path), message, line)], source)


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
    """RFC 8785 (JSON Canonicalization Scheme) bytes of ``obj``: sorted keys,
    no whitespace, UTF-8, numbers in their shortest ECMAScript form. The one
    entry point for every document whose hash goes on chain."""
    try:
        return rfc8785.dumps(obj)
    except rfc8785.CanonicalizationError as exc:
        raise ConfigError(f"cannot encode canonically: {exc}") from None


def sha256_hex(data: bytes) -> str:
    """``0x``-prefixed lowercase sha256 hex (the chain's bytes32 form)."""
    return "0x" + hashlib.sha256(data).hexdigest()


def derive_seed(seed: int, *parts: str | int) -> int:
    """A 63-bit seed derived from ``seed`` and a context (purpose, round, key).

    Deterministic on every machine (sha256 of the canonical JSON array
    ``[seed, *parts]``), so the same plan seed gives every party the same
    per-purpose random streams.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"a seed is an integer from 0 to {MAX_SEED}, got {seed!r}")
    digest = hashlib.sha256(canonical_json([seed, *parts])).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


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


def _human_bytes(n: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# --------------------------------------------------------------------------
# field types
# --------------------------------------------------------------------------

Int = Annotated[int, Strict()]
Num = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Name = Annotated[str, Strict(), StringConstraints(pattern=_NAME_PATTERN)]
DatasetName = Annotated[str, Strict(), StringConstraints(pattern=_DATASET_PATTERN)]
AuditorKey = Annotated[str, Strict(), StringConstraints(pattern=_KEY_PATTERN), AfterValidator(str.lower)]
Address = Annotated[str, Strict(), StringConstraints(pattern=_ADDRESS_PATTERN), AfterValidator(str.lower)]
Sha256Hex = Annotated[str, Strict(), StringConstraints(pattern=_SHA256_PATTERN)]
CidText = Annotated[str, Strict(), StringConstraints(pattern=_CID_PATTERN)]
Width = Annotated[int, Strict(), Field(ge=1, le=1_000_000)]
Channels = Annotated[int, Strict(), Field(ge=1, le=4096)]
Dim = Annotated[int, Strict(), Field(ge=1, le=100_000)]
PositiveNum = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: how error messages name this table's variant, e.g. "model kind"
    _what: ClassVar[str] = ""


# --------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSize:
    """How big a model is: trainable parameters and their bytes as float32."""

    parameters: int

    @property
    def bytes(self) -> int:
        return self.parameters * BYTES_PER_PARAMETER

    def __str__(self) -> str:
        return f"{self.parameters:,} parameters ({_human_bytes(self.bytes)} as float32)"


def _dense(width: int, layers: Sequence[int], n_classes: int) -> int:
    total = 0
    for h in (*layers, n_classes):
        total += width * h + h
        width = h
    return total


class ModelSpec(_Table):
    """The network every party builds (``fedchain.models``); one table per kind."""

    _what: ClassVar[str] = "model kind"
    kind: str
    n_classes: Int = Field(ge=2, le=100_000, description="Number of classes the model predicts.")

    @property
    def n_features(self) -> int:  # pragma: no cover - every kind overrides it
        raise NotImplementedError

    @property
    def size(self) -> ModelSize:
        """Trainable parameters, computed from the spec alone (nothing is allocated)."""
        return ModelSize(self._parameters())

    def _parameters(self) -> int:  # pragma: no cover - every kind overrides it
        raise NotImplementedError


class LogRegSpec(ModelSpec):
    """Multinomial logistic regression."""

    kind: Literal["logreg"] = Field(description="Logistic regression.")
    in_features: Int = Field(ge=1, le=MAX_FEATURES, description="Number of input features (columns).")

    @property
    def n_features(self) -> int:
        return self.in_features

    def _parameters(self) -> int:
        return _dense(self.in_features, (), self.n_classes)


class MLPSpec(ModelSpec):
    """Fully connected ReLU network."""

    kind: Literal["mlp"] = Field(description="Fully connected ReLU network.")
    in_features: Int = Field(ge=1, le=MAX_FEATURES, description="Number of input features (columns).")
    hidden: tuple[Width, ...] = Field(
        min_length=1, max_length=MAX_LAYERS, description="Width of each hidden layer, input side first."
    )

    @property
    def n_features(self) -> int:
        return self.in_features

    def _parameters(self) -> int:
        return _dense(self.in_features, self.hidden, self.n_classes)


class CNNSpec(ModelSpec):
    """Conv(3x3)+ReLU+MaxPool(2) stages, then a ReLU MLP head."""

    kind: Literal["cnn"] = Field(description="Small convolutional network.")
    input_shape: tuple[Dim, ...] = Field(
        min_length=3, max_length=3,
        description="[channels, height, width] of one input; a row holds channels*height*width features.",
    )
    conv_channels: tuple[Channels, ...] = Field(
        min_length=1, max_length=MAX_CONV_STAGES,
        description="Output channels of each 3x3 conv stage; each stage halves height and width.",
    )
    hidden: tuple[Width, ...] = Field(
        default=(), max_length=MAX_LAYERS, description="Widths of the dense layers after the convolutions."
    )

    @property
    def n_features(self) -> int:
        c, h, w = self.input_shape
        return c * h * w

    def _parameters(self) -> int:
        c, h, w = self.input_shape
        total = 0
        for ch in self.conv_channels:
            total += c * ch * 9 + ch
            c, h, w = ch, h // 2, w // 2
        return total + _dense(c * h * w, self.hidden, self.n_classes)


AnyModelSpec = Annotated[Union[LogRegSpec, MLPSpec, CNNSpec], Field(discriminator="kind")]


# --------------------------------------------------------------------------
# optimizer, strategy, preprocessing, limits
# --------------------------------------------------------------------------


class OptimizerSpec(_Table):
    """The local optimizer every node uses (fresh each round)."""

    _what: ClassVar[str] = "optimizer"
    name: str
    lr: Num = Field(gt=0, le=10, description="Learning rate.")
    weight_decay: Num = Field(default=0.0, ge=0, le=1, description="L2 weight decay.")


class SGDSpec(OptimizerSpec):
    name: Literal["sgd"] = Field(description="Stochastic gradient descent (torch.optim.SGD).")
    momentum: Num = Field(default=0.0, ge=0, lt=1, description="Momentum factor.")


class AdamSpec(OptimizerSpec):
    name: Literal["adam"] = Field(description="Adam (torch.optim.Adam, default betas).")


AnyOptimizerSpec = Annotated[Union[SGDSpec, AdamSpec], Field(discriminator="name")]


class StrategySpec(_Table):
    """How the coordinator aggregates (``coordinator/strategies/``). The keys
    besides ``name`` are exactly the strategy's constructor arguments."""

    _what: ClassVar[str] = "strategy"
    name: str

    def params(self) -> dict[str, Any]:
        """The strategy's hyperparameters (constructor keyword arguments)."""
        return {k: getattr(self, k) for k in type(self).model_fields if k != "name"}

    @property
    def proximal_mu(self) -> float:
        """The proximal weight nodes add to their loss (FedProx only, else 0)."""
        return 0.0


class FedAvgSpec(StrategySpec):
    name: Literal["fedavg"] = Field(description="FedAvg: the sample-weighted mean (McMahan et al., 2017).")


class FedProxSpec(StrategySpec):
    name: Literal["fedprox"] = Field(
        description="FedProx: FedAvg plus a proximal term in every node's loss (Li et al., 2020)."
    )
    mu: Num = Field(ge=0, le=1000, description="Weight of the proximal term mu/2 * ||w - w_global||^2.")

    @property
    def proximal_mu(self) -> float:
        return self.mu


class _FedOptSpec(StrategySpec):
    server_lr: Num = Field(gt=0, le=10, description="Server learning rate.")
    beta1: Num = Field(default=0.9, ge=0, lt=1, description="First-moment decay.")
    beta2: Num = Field(default=0.99, ge=0, lt=1, description="Second-moment decay.")
    tau: Num = Field(default=1e-3, gt=0, le=1, description="Adaptivity: added to sqrt(v); v starts at tau**2.")


class FedAdamSpec(_FedOptSpec):
    name: Literal["fedadam"] = Field(description="FedAdam: Adam on the server (Reddi et al., 2021).")


class FedYogiSpec(_FedOptSpec):
    name: Literal["fedyogi"] = Field(description="FedYogi: Yogi on the server (Reddi et al., 2021).")


class MedianSpec(StrategySpec):
    name: Literal["median"] = Field(
        description="Coordinate-wise median of the updates (Yin et al., 2018); ignores sample counts."
    )


class TrimmedMeanSpec(StrategySpec):
    name: Literal["trimmed_mean"] = Field(
        description="Coordinate-wise trimmed mean (Yin et al., 2018); ignores sample counts."
    )
    beta: Num = Field(gt=0, lt=0.5, description="Share of the updates dropped at each end, per coordinate.")


class KrumSpec(StrategySpec):
    name: Literal["krum"] = Field(
        description="Krum (Blanchard et al., 2017): the one update closest to its neighbours."
    )
    byzantine: Int = Field(ge=0, le=MAX_DATASETS, description="Malicious updates tolerated (f); needs n >= 2f + 3.")


class MultiKrumSpec(StrategySpec):
    name: Literal["multikrum"] = Field(
        description="Multi-Krum (Blanchard et al., 2017): the mean of the `keep` updates Krum scores best."
    )
    byzantine: Int = Field(ge=0, le=MAX_DATASETS, description="Malicious updates tolerated (f); needs n >= 2f + 3.")
    keep: Int = Field(ge=1, le=MAX_DATASETS, description="Updates averaged (m), at most n - f.")


#: Strategies that aggregate without per-update weights (sample counts, FoolsGold, a weight cap do not apply).
UNWEIGHTED_STRATEGIES = ("median", "trimmed_mean", "krum", "multikrum")

AnyStrategySpec = Annotated[
    Union[FedAvgSpec, FedProxSpec, FedAdamSpec, FedYogiSpec, MedianSpec, TrimmedMeanSpec, KrumSpec, MultiKrumSpec],
    Field(discriminator="name"),
]


class Robust(_Table):
    """Defences wrapped around the strategy, applied in this order to every round's updates."""

    norm_bound: PositiveNum | None = Field(
        default=None,
        description="Clip each update's distance to the global model (L2 over all tensors) to this bound "
                    "(Sun et al., 2019). Unset: no clipping.",
    )
    foolsgold: bool = Field(
        default=False,
        description="FoolsGold (Fung et al., 2020): lower the weight of members whose update history is "
                    "suspiciously similar (sybils). Weighted strategies only.",
    )
    max_weight_share: Num | None = Field(
        default=None, gt=0, le=1,
        description="Cap any one member's share of the aggregation weight (sample counts are self-reported). "
                    "Weighted strategies only. Unset: no cap.",
    )


#: Largest public validation set a plan may name (the coordinator and every auditor fetch it).
MAX_VALIDATION_BYTES = 8 << 20
#: Most Monte Carlo orders a Shapley estimate may draw per round (each costs up to one evaluation per member).
MAX_PERMUTATIONS = 1000
_CID_PATTERN = r"^(Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{20,100})$"
Sha256 = Annotated[str, Strict(), AfterValidator(str.lower), StringConstraints(pattern=r"^0x[0-9a-fA-F]{64}$")]
Cid = Annotated[str, Strict(), StringConstraints(pattern=_CID_PATTERN)]


class ValidationSet(_Table):
    """A public validation set the consortium approves with the plan (no patient data: e.g. a
    published reference set). Pinned in the consortium's store; fetched by hash, size-bounded."""

    csv_cid: Cid = Field(description="CID of the validation CSV in the consortium's store.")
    csv_sha256: Sha256 = Field(description="sha256 of the CSV bytes (0x + 64 hex).")
    size: Int = Field(ge=1, le=MAX_VALIDATION_BYTES,
                      description=f"Exact size of the CSV in bytes (at most {MAX_VALIDATION_BYTES:,}).")
    schema_cid: Cid = Field(description="CID of the CSV's dataset schema (JSON, as registered datasets have).")
    schema_sha256: Sha256 = Field(description="sha256 of the schema's bytes (0x + 64 hex).")


class Contribution(_Table):
    """How each round's contribution scores are computed (recorded in the scores document, re-derived by replay)."""

    method: Literal["similarity", "loo", "shapley"] = Field(
        default="similarity",
        description="similarity: cosine of each member's update with the round's step (data-free); loo: "
                    "leave-one-out on the validation set; shapley: truncated Monte Carlo Shapley on it.",
    )
    permutations: Int = Field(default=20, ge=1, le=MAX_PERMUTATIONS,
                              description="Orders drawn for a Shapley estimate (shapley only).")
    truncation: Num = Field(default=0.0, ge=0, le=1,
                            description="A marginal counts 0 once a coalition is this close to the full value "
                                        "(shapley only).")
    metric: Literal["accuracy", "loss"] = Field(
        default="loss",
        description="What a coalition's model is worth on the validation set: accuracy, or minus the mean "
                    "cross-entropy (loss; finer-grained on small sets).",
    )
    validation: ValidationSet | None = Field(
        default=None, description="The public validation set (required by loo and shapley).")


class Privacy(_Table):
    """Differential privacy of the training (see ``fedchain.privacy``); each commitment states the ε it spends."""

    mode: Literal["none", "client", "dpsgd", "server"] = Field(
        default="none",
        description="none: no DP. client: each node clips its update's distance to the global model to "
                    "clipping_norm and adds Gaussian noise (client-level DP, the unit is the whole dataset). "
                    "dpsgd: DP-SGD at each node (Opacus; per-example clipping, sample-level DP). server: the "
                    "coordinator clips each update and noises the aggregate (trusts the coordinator).",
    )
    epsilon: PositiveNum | None = Field(
        default=None, le=1000,
        description="Target ε per dataset over the whole run (all rounds); the noise multiplier is calibrated "
                    "to it with the accountant. Give this or noise_multiplier.",
    )
    delta: Num = Field(default=1e-5, gt=0, lt=1, description="δ of the guarantee (below 1/rows of every dataset).")
    noise_multiplier: PositiveNum | None = Field(
        default=None, le=1000,
        description="Noise standard deviation as a multiple of clipping_norm (instead of epsilon).",
    )
    clipping_norm: PositiveNum = Field(
        default=1.0, le=1e6,
        description="L2 bound: of each update's distance to the global model (client, server) or of each "
                    "example's gradient (dpsgd).",
    )
    accountant: Literal["rdp", "prv"] = Field(
        default="rdp", description="Privacy accountant (Opacus): Rényi DP or the PRV accountant.",
    )


class Preprocessing(_Table):
    """How every node transforms its features before training and evaluation."""

    _what: ClassVar[str] = "standardize"
    standardize: str


class NoStandardization(Preprocessing):
    standardize: Literal["none"] = Field(default="none", description="Features are used as they are.")


class PlanStandardization(Preprocessing):
    standardize: Literal["plan"] = Field(
        description="Every node scales features with the plan's mean/std: (x - mean) / std."
    )
    mean: tuple[Num, ...] = Field(max_length=MAX_FEATURES, description="Per-feature mean, one per model input.")
    std: tuple[PositiveNum, ...] = Field(
        max_length=MAX_FEATURES, description="Per-feature standard deviation (> 0), one per model input."
    )


class FederatedStandardization(Preprocessing):
    standardize: Literal["federated"] = Field(
        description="A statistics phase before round 1: each node commits its feature moments (count, sums, sums "
                    "of squares) sealed for the coordinator and the auditors; the coordinator publishes the pooled "
                    "mean/std on chain, and every node scales features with it: (x - mean) / std. Replay "
                    "re-derives it. No row leaves a hospital."
    )


def _standardize_tag(v: Any) -> Any:
    if isinstance(v, Mapping):
        return v.get("standardize", "none")
    return getattr(v, "standardize", None)


AnyPreprocessing = Annotated[
    Union[Annotated[NoStandardization, Tag("none")], Annotated[PlanStandardization, Tag("plan")],
          Annotated[FederatedStandardization, Tag("federated")]],
    Discriminator(_standardize_tag),
]


class Limits(_Table):
    """Bounds the members vote on with the plan."""

    max_parameters: Int = Field(
        default=DEFAULT_MAX_MODEL_PARAMETERS, ge=1, le=HARD_MAX_MODEL_PARAMETERS,
        description=(
            f"Largest model (trainable parameters) the plan may use. The consortium default is "
            f"{DEFAULT_MAX_MODEL_PARAMETERS:,}; a plan that needs more says so here, at most "
            f"{HARD_MAX_MODEL_PARAMETERS:,}. Nodes also refuse models above their own configured limit."
        ),
    )


#: How updates reach the aggregate: ``plain`` (each update sealed to the coordinator and the auditors),
#: ``secagg`` (pairwise-masked, the coordinator learns only the sum), ``he`` (CKKS ciphertexts summed
#: by the coordinator, only the aggregate decrypted by the plan's decryptor).
AGGREGATION_MODES = ("plain", "secagg", "he")
_MODE_KEYS = ("mode", "secagg", "he")
#: Strategies that need only the weighted mean of the updates (what secagg and he can deliver).
MEAN_STRATEGIES = ("fedavg", "fedprox")


class SecAggSettings(_Table):
    """Secure aggregation (``mode = "secagg"``): Bonawitz et al. (CCS 2017) with on-chain phases."""

    max_dropouts: Int = Field(
        default=0, ge=0, le=MAX_DATASETS,
        description="Hospitals that may vanish after their masked input and the round still completes: the "
                    "Shamir threshold is the number of datasets minus this (and must exceed half of them).",
    )
    phase_blocks: Int = Field(
        default=0, ge=0, le=10_000_000,
        description="Blocks each of the four phases (advertise keys, share keys, masked input, unmasking) stays "
                    "open. 0: a quarter of round_deadline_blocks. The first three phases must end before the round's deadline.",
    )


class HESettings(_Table):
    """Homomorphic aggregation (``mode = "he"``): CKKS through TenSEAL (fedchain/he.py)."""

    decryptor: Address | None = Field(
        default=None,
        description="Ethereum address of the member or auditor that holds the CKKS secret key and alone "
                    "decrypts each round's aggregate (it signs what it decrypted).",
    )
    context_cid: CidText | None = Field(
        default=None, description="CID of the decryptor's public CKKS context (no secret key) in the store.",
    )
    context_sha256: Sha256Hex | None = Field(
        default=None, description="sha256 of that public context: nodes encrypt only under a context with this hash.",
    )


# --------------------------------------------------------------------------
# the plan
# --------------------------------------------------------------------------


class TrainingPlan(_Table):
    """A validated training plan; immutable, every default explicit."""

    version: Int = Field(default=PLAN_VERSION, description="Plan format version.")
    name: Name = Field(description="Short name of the plan.")
    purpose: Name = Field(description="Purpose of use; each dataset's policy must allow it (e.g. diagnosis).")
    datasets: tuple[DatasetName, ...] = Field(
        min_length=1, max_length=MAX_DATASETS, description="Registered dataset names to train on (distinct)."
    )
    rounds: Int = Field(ge=1, le=MAX_ROUNDS, description="Number of federated rounds.")
    min_participants: Int = Field(
        ge=1, le=MAX_DATASETS, description="A round closes only with valid updates from at least this many members."
    )
    round_deadline_blocks: Int = Field(ge=1, le=10_000_000, description="Blocks each round stays open.")
    local_epochs: Int = Field(ge=1, le=10_000, description="Epochs each node trains per round.")
    batch_size: Int = Field(ge=1, le=1_000_000, description="Minibatch size of local training.")
    seed: Int = Field(ge=0, le=MAX_SEED, description="Seed for the initial model, data splits and shuffling.")
    metric: Literal["accuracy", "auc", "loss"] = Field(
        default="accuracy", description="Validation metric recorded each round (auc: binary models only)."
    )
    validation_fraction: Num = Field(
        default=0.2, ge=0, le=0.9, description="Share of each node's rows held out for validation."
    )
    auditors: tuple[AuditorKey, ...] = Field(
        default=(), max_length=MAX_AUDITORS,
        description="Public keys that may also open the sealed updates (0x + 64 hex), e.g. an audit office.",
    )
    model: AnyModelSpec = Field(description="The network.")
    optimizer: AnyOptimizerSpec = Field(description="The local optimizer.")
    strategy: AnyStrategySpec = Field(description="The aggregation strategy.")
    preprocessing: AnyPreprocessing = Field(
        default_factory=NoStandardization, description="Feature preprocessing."
    )
    limits: Limits = Field(default_factory=Limits, description="Bounds voted on with the plan.")
    robust: Robust = Field(default_factory=Robust, description="Defences against poisoned updates.")
    contribution: Contribution = Field(default_factory=Contribution,
                                       description="How contribution scores are computed.")
    mode: Literal["plain", "secagg", "he"] = Field(
        default="plain",
        description="How updates reach the aggregate: \"plain\" (each sealed to the coordinator and the auditors), "
                    "\"secagg\" (masked: the coordinator learns only the sum), \"he\" (CKKS ciphertexts summed "
                    "by the coordinator; only the aggregate is decrypted, by the [he] decryptor).",
    )
    secagg: SecAggSettings = Field(default_factory=SecAggSettings, description="Secure-aggregation settings.")
    he: HESettings = Field(default_factory=HESettings, description="Homomorphic-aggregation settings.")
    privacy: Privacy = Field(default_factory=Privacy, description="Differential privacy and its budget spend.")

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "TrainingPlan":
        problems = _plan_rules({name: getattr(self, name) for name in type(self).model_fields})
        if problems:
            raise PlanError(problems)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The normalized plan as plain JSON types, every default explicit -- except the aggregation
        mode's keys, which a ``plain`` plan with default ``[secagg]``/``[he]`` leaves out (so plans
        written before modes existed keep their canonical bytes and on-chain hash)."""
        d = self.model_dump(mode="json")
        if self.mode == "plain" and self.secagg == SecAggSettings() and self.he == HESettings():
            for key in _MODE_KEYS:
                d.pop(key)
        return d

    def to_canonical_bytes(self) -> bytes:
        """The bytes to pin on IPFS (RFC 8785); equal plans give equal bytes."""
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


#: The plan's JSON Schema (draft 2020-12), as pydantic generates it.
PLAN_JSON_SCHEMA: dict[str, Any] = TrainingPlan.model_json_schema()

_UNIONS: dict[str, tuple[str, dict[str, type[_Table]]]] = {
    "model": ("kind", {"logreg": LogRegSpec, "mlp": MLPSpec, "cnn": CNNSpec}),
    "optimizer": ("name", {"sgd": SGDSpec, "adam": AdamSpec}),
    "strategy": ("name", {"fedavg": FedAvgSpec, "fedprox": FedProxSpec, "fedadam": FedAdamSpec,
                          "fedyogi": FedYogiSpec, "median": MedianSpec, "trimmed_mean": TrimmedMeanSpec,
                          "krum": KrumSpec, "multikrum": MultiKrumSpec}),
    "preprocessing": ("standardize", {"none": NoStandardization, "plan": PlanStandardization,
                                      "federated": FederatedStandardization}),
}
MODEL_KINDS = tuple(_UNIONS["model"][1])
OPTIMIZERS = tuple(_UNIONS["optimizer"][1])
STRATEGIES = tuple(_UNIONS["strategy"][1])
STANDARDIZE_MODES = tuple(_UNIONS["preprocessing"][1])
METRICS = ("accuracy", "auc", "loss")

_FIELD_ADAPTERS = {name: TypeAdapter(Annotated[f.annotation, f]) for name, f in TrainingPlan.model_fields.items()}
_MODEL_ADAPTER: TypeAdapter[ModelSpec] = TypeAdapter(AnyModelSpec)


# --------------------------------------------------------------------------
# rules that span fields
# --------------------------------------------------------------------------


def _model_rules(spec: ModelSpec, path: tuple[str | int, ...]) -> list[PlanProblem]:
    out = []
    if isinstance(spec, CNNSpec):
        _c, h, w = spec.input_shape
        n = len(spec.conv_channels)
        if h >> n < 1 or w >> n < 1:
            out.append(PlanProblem(path + ("input_shape",),
                                   f"{h}x{w} is too small for {n} conv+pool stages (each halves height and width)"))
        if spec.n_features > MAX_FEATURES:
            out.append(PlanProblem(path + ("input_shape",),
                                   f"{spec.n_features:,} input features, more than the {MAX_FEATURES:,} allowed"))
    return out


def _size_rule(spec: ModelSpec, limit: int, path: tuple[str | int, ...]) -> list[PlanProblem]:
    size = spec.size
    if size.parameters <= limit:
        return []
    allowed = ModelSize(limit)
    if limit == HARD_MAX_MODEL_PARAMETERS:
        whose, fix = "the hard cap no plan can raise", ""
    elif limit == DEFAULT_MAX_MODEL_PARAMETERS:
        whose = "the consortium default limit"
        fix = (f"; a plan that needs more declares [limits] max_parameters (at most "
               f"{HARD_MAX_MODEL_PARAMETERS:,}) for the members to vote on"
               if size.parameters <= HARD_MAX_MODEL_PARAMETERS else
               f", and even above the hard cap of {HARD_MAX_MODEL_PARAMETERS:,} parameters that no plan can raise")
    else:
        whose, fix = "the limit this plan declares (limits.max_parameters)", ""
    return [PlanProblem(path, f"the model has {size}, more than {whose} of {allowed}{fix}")]


#: What :func:`_plan_rules` checks, in words (the reference page lists them).
CROSS_FIELD_RULES = (
    f"`version` is {PLAN_VERSION}.",
    "`datasets` are distinct, and there are at least `min_participants` of them.",
    "`auditors` are distinct (upper and lower case are the same key).",
    "`metric = \"auc\"` needs a binary model (`model.n_classes = 2`).",
    "With `standardize = \"plan\"`, `preprocessing.mean` and `preprocessing.std` hold one value per model "
    "input (`in_features`, or channels x height x width for a CNN).",
    f"A CNN's input is large enough for its conv stages (each halves height and width) and has at most "
    f"{MAX_FEATURES:,} values.",
    "The model's parameter count, computed from the `[model]` table alone (nothing is allocated), is at most "
    f"`limits.max_parameters` (default {DEFAULT_MAX_MODEL_PARAMETERS:,}, at most {HARD_MAX_MODEL_PARAMETERS:,}).",
    "Krum and Multi-Krum need `min_participants` >= 2 x `byzantine` + 3, and Multi-Krum's `keep` at most "
    "`min_participants` - `byzantine`.",
    "`robust.foolsgold` and `robust.max_weight_share` need a weighted strategy (not median, trimmed_mean, krum, "
    "multikrum); `robust.max_weight_share` x the number of datasets is at least 1.",
    "`contribution.method = \"loo\"` or `\"shapley\"` needs `contribution.validation` (a public validation set).",
    "Under `mode = \"secagg\"` or `\"he\"` the coordinator never sees one update, so the strategy is one that "
    "needs only the weighted mean (fedavg, fedprox) and `robust.foolsgold` and `robust.max_weight_share` are off; "
    "`robust.norm_bound` is applied by each node to its own update before it is masked or encrypted; "
    "`contribution.method` stays \"similarity\" and the scores are each member's share of the samples; "
    "`privacy.mode = \"server\"` is refused (client and dpsgd run at the nodes).",
    "`mode = \"he\"` needs `he.decryptor`, `he.context_cid` and `he.context_sha256`.",
    "`mode = \"secagg\"` needs 2 x (datasets - `secagg.max_dropouts`) > datasets, datasets - "
    "`secagg.max_dropouts` >= `min_participants`, and 3 x `secagg.phase_blocks` < `round_deadline_blocks`.",
    "A `privacy.mode` other than \"none\" takes exactly one of `privacy.epsilon` and `privacy.noise_multiplier`; "
    "mode \"none\" takes neither; mode \"dpsgd\" cannot be combined with FedProx; mode \"server\" needs fedavg or fedprox.",
)


def _plan_rules(p: Mapping[str, Any]) -> list[PlanProblem]:
    """Rules over several fields; each runs when the fields it reads are valid."""
    out: list[PlanProblem] = []
    if "version" in p and p["version"] != PLAN_VERSION:
        out.append(PlanProblem(("version",), f"unsupported plan version {p['version']} "
                                             f"(this fedchain reads version {PLAN_VERSION})"))
    for field, what in (("datasets", "dataset"), ("auditors", "key")):
        seen: dict[str, int] = {}
        for i, item in enumerate(p.get(field, ())):
            if item in seen:
                out.append(PlanProblem((field, i), f"{what} {item!r} is listed twice (also item {seen[item]})"))
            seen.setdefault(item, i)
    if "min_participants" in p and "datasets" in p:
        n = len(set(p["datasets"]))
        if p["min_participants"] > n:
            out.append(PlanProblem(("min_participants",),
                                   f"is {p['min_participants']} but only {n} target dataset(s) are listed"))
    model = p.get("model")
    if model is not None:
        out.extend(_model_rules(model, ("model",)))
        if p.get("metric") == "auc" and model.n_classes != 2:
            out.append(PlanProblem(("metric",), "'auc' is only defined for binary models (model.n_classes = 2)"))
        pre = p.get("preprocessing")
        if isinstance(pre, PlanStandardization):
            for key in ("mean", "std"):
                values = getattr(pre, key)
                if len(values) != model.n_features:
                    out.append(PlanProblem(("preprocessing", key), f"has {len(values)} values but the model "
                                                                   f"takes {model.n_features} features"))
        if "limits" in p:
            out.extend(_size_rule(model, p["limits"].max_parameters, ("model",)))
    out.extend(_robust_rules(p))
    contribution = p.get("contribution")
    if contribution is not None and contribution.method != "similarity" and contribution.validation is None:
        out.append(PlanProblem(("contribution", "validation"), f"is required by method {contribution.method!r} "
                                                               "(a public validation set to evaluate coalitions on)"))
    out.extend(_privacy_rules(p))
    out.extend(_mode_rules(p))
    return out


def _mode_rules(p: Mapping[str, Any]) -> list[PlanProblem]:
    """secagg and he deliver only the weighted sum: no rule that reads individual updates."""
    out: list[PlanProblem] = []
    mode = p.get("mode")
    if mode not in ("secagg", "he"):
        return out
    strategy, robust = p.get("strategy"), p.get("robust")
    if strategy is not None and strategy.name in UNWEIGHTED_STRATEGIES:
        out.append(PlanProblem(("strategy", "name"), f"{strategy.name!r} needs the individual updates, which "
                                                     f"mode {mode!r} hides from the coordinator (use "
                                                     f"{' or '.join(MEAN_STRATEGIES)})"))
    elif strategy is not None and strategy.name not in MEAN_STRATEGIES:
        out.append(PlanProblem(("strategy", "name"), f"{strategy.name!r} is not available under mode {mode!r} "
                                                     f"yet (its server step is not wired to the hidden sum; use "
                                                     f"{' or '.join(MEAN_STRATEGIES)})"))
    if robust is not None:
        for key in ("foolsgold", "max_weight_share"):
            if getattr(robust, key) not in (None, False):
                out.append(PlanProblem(("robust", key), f"needs the individual updates, which mode {mode!r} hides "
                                                        "from the coordinator (norm_bound runs at the nodes)"))
    contribution = p.get("contribution")
    if contribution is not None and contribution.method != "similarity":
        out.append(PlanProblem(("contribution", "method"), f"{contribution.method!r} needs the individual updates, "
                                                           f"which mode {mode!r} hides from the coordinator (scores "
                                                           "are then each member's share of the samples)"))
    privacy = p.get("privacy")
    if privacy is not None and privacy.mode == "server":
        out.append(PlanProblem(("privacy", "mode"), f"\"server\" clips each update at the coordinator, which mode "
                                                    f"{mode!r} hides from it (use \"client\" or \"dpsgd\": they run "
                                                    "at the nodes)"))
    if mode == "he":
        he = p.get("he")
        if he is not None:
            for key in ("decryptor", "context_cid", "context_sha256"):
                if getattr(he, key) is None:
                    out.append(PlanProblem(("he", key), "is required with mode = \"he\""))
    if mode == "secagg" and "datasets" in p and p.get("secagg") is not None:
        n, d = len(set(p["datasets"])), p["secagg"].max_dropouts
        t = n - d
        if 2 * t <= n:
            out.append(PlanProblem(("secagg", "max_dropouts"), f"is {d} but the Shamir threshold {n} - {d} = {t} "
                                                               f"must exceed half of the {n} datasets"))
        elif "min_participants" in p and t < p["min_participants"]:
            out.append(PlanProblem(("secagg", "max_dropouts"), f"is {d}: {n} - {d} = {t} survivors are fewer "
                                                               f"than min_participants = {p['min_participants']}"))
    if mode == "secagg" and p.get("secagg") is not None and "round_deadline_blocks" in p:
        pb, deadline = p["secagg"].phase_blocks, p["round_deadline_blocks"]
        if 3 * pb >= deadline:
            out.append(PlanProblem(("secagg", "phase_blocks"), f"is {pb}: three phases ({3 * pb} blocks) must end "
                                                               f"before the round's deadline ({deadline} blocks)"))
    return out


def _privacy_rules(p: Mapping[str, Any]) -> list[PlanProblem]:
    """A DP mode needs exactly one of epsilon / noise_multiplier; mode none takes neither."""
    privacy = p.get("privacy")
    if privacy is None:
        return []
    given = [k for k in ("epsilon", "noise_multiplier") if getattr(privacy, k) is not None]
    if privacy.mode == "none" and given:
        return [PlanProblem(("privacy", given[0]), 'is set but privacy.mode is "none"')]
    if privacy.mode != "none" and len(given) != 1:
        return [PlanProblem(("privacy", "mode"), f"is {privacy.mode!r}: give exactly one of privacy.epsilon "
                                                 "and privacy.noise_multiplier")]
    strategy = p.get("strategy")
    if privacy.mode == "server" and strategy is not None and strategy.name not in ("fedavg", "fedprox"):
        return [PlanProblem(("privacy", "mode"), f"is \"server\", which noises a weighted mean: strategy "
                                                 f"{strategy.name!r} is not one (use fedavg or fedprox)")]
    if privacy.mode == "dpsgd" and strategy is not None and strategy.proximal_mu > 0:
        return [PlanProblem(("privacy", "mode"), "is \"dpsgd\", which clips per-example gradients of the loss "
                                                 "only: it cannot train with FedProx's proximal term")]
    return []


def _robust_rules(p: Mapping[str, Any]) -> list[PlanProblem]:
    """Byzantine-robust rules need enough participants; reweighting needs a weighted strategy."""
    out: list[PlanProblem] = []
    strategy, robust, n_min = p.get("strategy"), p.get("robust"), p.get("min_participants")
    if isinstance(strategy, (KrumSpec, MultiKrumSpec)) and n_min is not None:
        f = strategy.byzantine
        if n_min < 2 * f + 3:
            out.append(PlanProblem(("min_participants",), f"is {n_min} but {strategy.name} with byzantine = {f} "
                                                          f"needs at least 2 x {f} + 3 = {2 * f + 3}"))
        if isinstance(strategy, MultiKrumSpec) and strategy.keep > n_min - f:
            out.append(PlanProblem(("strategy", "keep"), f"is {strategy.keep} but at most min_participants - "
                                                         f"byzantine = {n_min - f} updates can be kept"))
    if robust is not None and strategy is not None and strategy.name in UNWEIGHTED_STRATEGIES:
        for key in ("foolsgold", "max_weight_share"):
            if getattr(robust, key) not in (None, False):
                out.append(PlanProblem(("robust", key), f"reweights updates, but strategy {strategy.name!r} "
                                                        "aggregates without weights"))
    if robust is not None and robust.max_weight_share is not None and "datasets" in p:
        n = len(set(p["datasets"]))
        if robust.max_weight_share * n < 1:
            out.append(PlanProblem(("robust", "max_weight_share"),
                                   f"is {robust.max_weight_share:g} but {n} dataset(s) cannot share all the weight "
                                   f"under it (needs at least 1/{n})"))
    return out


# --------------------------------------------------------------------------
# pydantic errors in fedchain's words
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


def _got(v: Any) -> str:
    text = repr(v)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{_type_name(v)} {text}" if not isinstance(v, (list, tuple, Mapping)) else _type_name(v)


def _owner(path: tuple[str | int, ...], tag: str | None) -> tuple[type[_Table], str]:
    """The table class holding the last key of ``path`` and how to name its variant."""
    if len(path) == 1:
        return TrainingPlan, ""
    if len(path) == 2 and path[0] in _UNIONS and tag is not None:
        cls = _UNIONS[str(path[0])][1][tag]
        return cls, f" for {cls._what} '{tag}'"
    if len(path) == 2 and path[0] == "limits":
        return Limits, ""
    return _Table, ""


def _translate(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> list[PlanProblem]:
    out = []
    for err in exc.errors(include_url=False):
        loc = prefix + tuple(err["loc"])
        tag = None
        if loc and loc[0] in _UNIONS and len(loc) > 1 and loc[1] in _UNIONS[str(loc[0])][1]:
            tag = str(loc[1])
            loc = (loc[0],) + loc[2:]
        typ, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
        msg = err["msg"]
        if typ == "missing":
            msg = "is required"
        elif typ == "extra_forbidden":
            owner, context = _owner(loc, tag)
            allowed = ", ".join(owner.model_fields)
            msg = f"unknown key{context} (allowed here: {allowed})"
        elif typ in ("union_tag_invalid", "union_tag_not_found"):
            key, tags = _UNIONS[str(loc[0])]
            loc = loc + (key,)
            choices = ", ".join(tags)
            msg = ("is required" if typ == "union_tag_not_found" else f"unknown value {ctx.get('tag')!r}") + \
                  f" (expected one of: {choices})"
        elif typ in ("model_attributes_type", "model_type", "dict_type"):
            msg = f"must be a table, got {_got(value)}"
        elif typ in ("list_type", "tuple_type"):
            msg = f"must be a list, got {_got(value)}"
        elif typ == "int_type" or typ == "int_from_float":
            msg = f"must be an integer, got {_got(value)}"
        elif typ == "float_type":
            msg = f"must be a number, got {_got(value)}"
        elif typ == "string_type":
            msg = f"must be a string, got {_got(value)}"
        elif typ == "finite_number":
            msg = f"must be a finite number, got {value!r}"
        elif typ in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            op, bound = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"),
                         "less_than": ("<", "lt"), "less_than_equal": ("<=", "le")}[typ]
            msg = f"must be {op} {ctx.get(bound)}, got {value!r}"
        elif typ == "literal_error":
            msg = f"unknown value {value!r} (expected {ctx.get('expected')})"
        elif typ in ("too_short", "too_long"):
            lo, hi, n = ctx.get("min_length"), ctx.get("max_length"), ctx.get("actual_length")
            if typ == "too_short" and lo == 1 and n == 0:
                msg = "must not be empty"
            elif typ == "too_short":
                msg = f"must have at least {lo} items, got {n}"
            else:
                msg = f"must have at most {hi} items, got {n}"
        elif typ == "string_pattern_mismatch":
            words = PATTERN_WORDS.get(str(ctx.get("pattern")), f"must match {ctx.get('pattern')}")
            msg = f"{value!r} is not allowed here ({words})"
        elif typ == "value_error":
            msg = str(ctx.get("error", msg))
        out.append(PlanProblem(loc, msg))
    return out


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------


def _with_lines(problems: Iterable[PlanProblem], lines: Mapping[tuple, int] | None) -> list[PlanProblem]:
    problems = list(problems)
    if lines is None:
        return problems
    located = [PlanProblem(p.path, p.message, line_of(lines, p.path)) for p in problems]
    return sorted(located, key=lambda p: p.line or 0)  # stable: same line keeps the order found


def _problems_of(data: Mapping[str, Any]) -> list[PlanProblem]:
    """Every problem of a decoded plan document, or [] when it is valid."""
    try:
        TrainingPlan.model_validate(data)
        return []
    except PlanError as exc:  # raised by the cross-field rules
        return exc.problems
    except ValidationError as exc:
        problems = _translate(exc)
    # Run the cross-field rules on the top-level fields that are valid on their own.
    failed = {p.path[0] for p in problems if p.path}
    parts: dict[str, Any] = {}
    for name, adapter in _FIELD_ADAPTERS.items():
        if name in failed:
            continue
        try:
            if name in data:
                parts[name] = adapter.validate_python(data[name])
            elif not TrainingPlan.model_fields[name].is_required():
                parts[name] = TrainingPlan.model_fields[name].get_default(call_default_factory=True)
        except ValidationError:  # pragma: no cover - failed above already
            continue
    return problems + _plan_rules(parts)


def plan_from_dict(data: Any, source: str | None = None, *, lines: Mapping[tuple, int] | None = None) -> TrainingPlan:
    """Validate an already-decoded plan document (dict from TOML/JSON).

    Raises :class:`PlanError` listing every problem; ``lines`` (key path ->
    line) adds line numbers to them.
    """
    if not isinstance(data, Mapping):
        raise PlanError(_with_lines([PlanProblem((), f"must be a table/object, got {_type_name(data)}")], lines),
                        source)
    problems = _problems_of(data)
    if problems:
        raise PlanError(_with_lines(problems, lines), source)
    return TrainingPlan.model_validate(data)


def parse_model_spec(data: Mapping[str, Any] | ModelSpec, source: str | None = None) -> ModelSpec:
    """Validate a model table on its own (e.g. for ``build_model``); the hard
    size cap applies (a plan's own limit is checked with the plan)."""
    if isinstance(data, ModelSpec):
        return data
    try:
        spec = _MODEL_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise PlanError(_translate(exc, ("model",)), source) from None
    problems = _model_rules(spec, ("model",)) + _size_rule(spec, HARD_MAX_MODEL_PARAMETERS, ("model",))
    if problems:
        raise PlanError(problems, source)
    return spec


# --------------------------------------------------------------------------
# what a node does in a round: the one place the plan says it
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """What every node does in one round of a plan.

    Built only by :func:`train_config`; the node trains with it
    (``node.train.train_local``) and the strategy's ``configure_train``
    returns it, so the two cannot disagree.
    """

    round: int  # the chain's round number, from 1
    local_epochs: int
    batch_size: int
    optimizer: OptimizerSpec
    proximal_mu: float  # weight of mu/2 * ||w - w_global||^2 in the loss (FedProx), else 0

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "local_epochs": self.local_epochs, "batch_size": self.batch_size,
                "optimizer": self.optimizer.model_dump(mode="json"), "proximal_mu": self.proximal_mu}


@dataclass(frozen=True)
class EvaluateConfig:
    """What every node reports after a round: the plan's metric on its validation split."""

    round: int
    metric: str


def _check_round(plan: TrainingPlan, server_round: int) -> None:
    if isinstance(server_round, bool) or not isinstance(server_round, int) or not 1 <= server_round <= plan.rounds:
        raise ConfigError(f"round {server_round!r} is outside the plan's rounds 1..{plan.rounds}")


def train_config(plan: TrainingPlan, server_round: int) -> TrainConfig:
    """The training config of round ``server_round`` (1..plan.rounds)."""
    _check_round(plan, server_round)
    return TrainConfig(
        round=server_round,
        local_epochs=plan.local_epochs,
        batch_size=plan.batch_size,
        optimizer=plan.optimizer,
        proximal_mu=float(plan.strategy.proximal_mu),
    )


def evaluate_config(plan: TrainingPlan, server_round: int) -> EvaluateConfig:
    """The evaluation config of round ``server_round`` (1..plan.rounds)."""
    _check_round(plan, server_round)
    return EvaluateConfig(round=server_round, metric=plan.metric)


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


_TOML_POS = re.compile(r"\(at line (\d+), column \d+\)")


def parse_plan(data: bytes, *, source: str | None = None, fmt: str | None = None) -> TrainingPlan:
    """Decode and validate plan bytes. ``fmt`` is ``"json"``, ``"toml"`` or
    ``None`` to detect (a document starting with ``{`` is JSON). Problems
    carry line numbers."""
    where = source or "<plan>"
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ConfigError(f"{where}: plan must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_PLAN_BYTES:
        raise ConfigError(f"{where}: plan is larger than the {MAX_PLAN_BYTES} bytes allowed")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: plan is not UTF-8 text ({exc})") from None
    if fmt is None:
        fmt = "json" if text.lstrip().startswith(("{", "[")) else "toml"
    deep = too_deep(text, MAX_NESTING, comments=fmt == "toml")
    if deep is not None:
        raise PlanError.at((), f"nested more than {MAX_NESTING} levels deep", source, deep)
    if fmt == "json":
        try:
            doc = json.loads(text, object_pairs_hook=_json_no_duplicates, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise PlanError.at((), f"invalid JSON plan: {exc.msg}", source, exc.lineno) from None
        except ValueError as exc:
            raise PlanError.at((), f"invalid JSON plan: {exc}", source, 1) from None
        lines = json_key_lines(text)
    elif fmt == "toml":
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            m = _TOML_POS.search(str(exc))
            raise PlanError.at((), f"invalid TOML plan: {exc}", source, int(m.group(1)) if m else 1) from None
        lines = toml_key_lines(text)
    else:
        raise ConfigError(f"unknown plan format {fmt!r} (expected 'json' or 'toml')")
    return plan_from_dict(doc, source=source, lines=lines)


def load_plan(path: str | Path) -> TrainingPlan:
    """Read a ``.toml`` or ``.json`` plan file (other extensions: sniffed)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_PLAN_BYTES + 1)  # never more: parse_plan refuses anything longer
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
