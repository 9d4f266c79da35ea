"""Shareable feature moments, and the plan's standardization computed from them without pooling rows.

Federated members must scale every feature the same way (see
:mod:`fedchain.plan`, ``preprocessing.standardize = "plan"``). The pooled mean
and standard deviation need no pooled data: each hospital publishes a
**moments document** -- its row count and, per feature, the sum and the sum of
squares -- and anyone combines the documents
(:func:`fedchain.plan.standardization_from_moments`) into exactly the pooled
values. ``fedchain dataset moments`` writes a document, ``fedchain plan
standardize`` combines several into the plan's ``[preprocessing]`` table.

A moments document (JSON; ``format`` ``fedchain-moments/1``)::

    {"format": "fedchain-moments/1",
     "features": ["age", "tumour_size_mm", "smoker"],   # schema order
     "n": 170, "sums": [...], "sums_sq": [...]}

What it reveals: the row count (already public in the dataset's metadata
document) and two aggregates per feature. For very few rows those aggregates
come close to the rows themselves (one row: the sums *are* the row), so
:func:`moments_document` refuses datasets under :data:`MIN_ROWS` rows unless
the caller lowers the bound knowingly.

Documents come from other hospitals, so :func:`read_moments` treats them as
untrusted: the file is read up to :data:`MAX_MOMENTS_BYTES`, every field is
checked by a strict pydantic model (no extra keys, finite numbers, as many sums
as features), and numbers that no real data can produce (a sum of squares
below ``sum**2 / n``) are refused. :func:`combine_moments` refuses documents
whose features differ (name or order) and the same document given twice.

:func:`set_preprocessing` writes the result into a TOML plan: it replaces the
``[preprocessing]`` table's lines and nothing else, and checks by parsing both
texts that every other value of the plan is unchanged.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from fedchain.errors import ConfigError
from fedchain.plan import MAX_FEATURES, canonical_json, parse_plan, standardization_from_moments

__all__ = [
    "MOMENTS_FORMAT",
    "MIN_ROWS",
    "MAX_MOMENTS_BYTES",
    "MomentsError",
    "Moments",
    "Standardization",
    "moments_document",
    "parse_moments",
    "read_moments",
    "combine_moments",
    "STATISTICS_FORMAT",
    "MAX_STATISTICS_BYTES",
    "Statistics",
    "statistics_document",
    "parse_statistics",
    "with_statistics",
    "preprocessing_toml",
    "set_preprocessing",
]

MOMENTS_FORMAT = "fedchain-moments/1"
#: Fewest rows whose moments ``fedchain dataset moments`` shares by default.
MIN_ROWS = 10
#: Largest moments document read (about 500,000 features written out in full).
MAX_MOMENTS_BYTES = 32 << 20
_REL_TOL = 1e-9  # float64 rounding allowed when checking sum_sq * n >= sum**2


class MomentsError(ConfigError):
    """A moments document is malformed, implausible, or does not combine with the others."""


_Finite = Annotated[float, Strict(), Field(allow_inf_nan=False)]


class Moments(BaseModel):
    """One hospital's shareable aggregates (no rows)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["fedchain-moments/1"]
    features: tuple[Annotated[str, Strict(), Field(min_length=1, max_length=128)], ...] = Field(
        min_length=1, max_length=MAX_FEATURES)
    n: Annotated[int, Strict(), Field(ge=1)]
    sums: tuple[_Finite, ...]
    sums_sq: tuple[Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)], ...]

    def to_json(self) -> str:
        """The document as written by ``fedchain dataset moments`` (indented JSON, one key order)."""
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"


@dataclass(frozen=True)
class Standardization:
    """Pooled per-feature mean and (population) std, and what they were computed from."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    n_rows: int
    n_documents: int


def _checked(doc: Moments, source: str) -> Moments:
    d = len(doc.features)
    if len(doc.sums) != d or len(doc.sums_sq) != d:
        raise MomentsError(f"{source}: {d} features but {len(doc.sums)} sums and {len(doc.sums_sq)} sums of squares")
    if len(set(doc.features)) != d:
        raise MomentsError(f"{source}: a feature is named twice")
    for name, s, q in zip(doc.features, doc.sums, doc.sums_sq):
        # Cauchy-Schwarz: for real values sum(x^2) * n >= (sum x)^2.
        if q * doc.n < s * s * (1 - _REL_TOL) - 1e-300:
            raise MomentsError(f"{source}: feature {name!r}: a sum of squares of {q!r} is impossible for {doc.n} "
                               f"row(s) summing to {s!r}; these are not the moments of real data")
    return doc


def moments_document(features: Sequence[str], n: int, sums: Sequence[float], sums_sq: Sequence[float],
                     *, min_rows: int = MIN_ROWS) -> Moments:
    """The moments document of one dataset (``node.dataset.feature_moments`` gives the numbers).

    Refuses (:class:`MomentsError`) fewer than ``min_rows`` rows: the aggregates
    of a handful of rows come close to disclosing them.
    """
    if n < min_rows:
        raise MomentsError(
            f"the dataset has {n} row(s), fewer than {min_rows}: the sums of so few rows come close to the rows "
            f"themselves, so they are not shared (lower --min-rows only if that is acceptable)")
    try:
        doc = Moments(format=MOMENTS_FORMAT, features=tuple(features), n=n, sums=tuple(sums), sums_sq=tuple(sums_sq))
    except ValidationError as exc:
        raise MomentsError(f"cannot describe this dataset's moments: {_first_problem(exc)}") from None
    return _checked(doc, "the dataset")


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "document"
    return f"{where}: {err['msg']}" + (f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else "")


def parse_moments(data: bytes, source: str = "<moments>") -> Moments:
    """Parse and check a moments document (untrusted bytes)."""
    if len(data) > MAX_MOMENTS_BYTES:
        raise MomentsError(f"{source}: larger than {MAX_MOMENTS_BYTES} bytes; not a moments document")
    try:
        raw = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MomentsError(f"{source}: not a JSON moments document ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != MOMENTS_FORMAT:
        raise MomentsError(f"{source}: not a {MOMENTS_FORMAT} document (write one with 'fedchain dataset moments')")
    try:
        doc = Moments.model_validate(raw)
    except ValidationError as exc:
        raise MomentsError(f"{source}: {_first_problem(exc)}") from None
    return _checked(doc, source)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def read_moments(path: str | Path) -> Moments:
    """Read a moments document from a file, never more than :data:`MAX_MOMENTS_BYTES` (+1) bytes."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_MOMENTS_BYTES + 1)
    except OSError as exc:
        raise MomentsError(f"cannot read {p}: {exc.strerror or exc}") from None
    return parse_moments(data, str(p))


def combine_moments(docs: Sequence[Moments], sources: Sequence[str] | None = None) -> Standardization:
    """The pooled mean/std of every document's rows (exactly what pooling the rows would give)."""
    if not docs:
        raise MomentsError("no moments documents to combine")
    sources = list(sources) if sources is not None else [f"document {i + 1}" for i in range(len(docs))]
    first = docs[0]
    seen: dict[tuple, str] = {}
    for doc, src in zip(docs, sources):
        if doc.features != first.features:
            raise MomentsError(_feature_mismatch(first.features, sources[0], doc.features, src))
        key = (doc.n, doc.sums, doc.sums_sq)
        if key in seen:
            raise MomentsError(f"{src} holds the same moments as {seen[key]}: the same dataset given twice "
                               "would count its rows twice")
        seen[key] = src
    mean, std = standardization_from_moments((d.n, d.sums, d.sums_sq) for d in docs)
    return Standardization(first.features, mean, std, sum(d.n for d in docs), len(docs))


def _feature_mismatch(a: tuple[str, ...], src_a: str, b: tuple[str, ...], src_b: str) -> str:
    if len(a) != len(b):
        return f"{src_b} has {len(b)} features but {src_a} has {len(a)}: the datasets' schemas differ"
    i = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    return (f"feature {i + 1} is {b[i]!r} in {src_b} but {a[i]!r} in {src_a}: every hospital's schema must list "
            "the same features in the same order")


def _toml_float(v: float) -> str:
    text = repr(float(v))
    return text if any(c in text for c in ".en") else text + ".0"


def _comment(text: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text)


def preprocessing_toml(s: Standardization) -> str:
    """The plan's ``[preprocessing]`` table for ``s``, one value per line with its feature's name."""
    lines = [
        "[preprocessing]",
        f"# Pooled mean and std of {len(s.features)} feature(s) over {s.n_rows} rows from {s.n_documents} "
        "moments document(s),",
        "# computed by 'fedchain plan standardize' (no row left any hospital).",
        'standardize = "plan"',
    ]
    for key, values in (("mean", s.mean), ("std", s.std)):
        lines.append(f"{key} = [")
        lines.extend(f"  {_toml_float(v)},  # {_comment(name)}" for v, name in zip(values, s.features))
        lines.append("]")
    return "\n".join(lines) + "\n"


_HEADER = re.compile(r"^\s*\[(?!\[)\s*([^\]#]+?)\s*\]\s*(#.*)?$")


def _is_header(line: str) -> bool:
    return bool(_HEADER.match(line))


def _header_name(line: str) -> str | None:
    m = _HEADER.match(line)
    if not m:
        return None
    return ".".join(part.strip().strip('"').strip("'") for part in m.group(1).split("."))


def set_preprocessing(toml_text: str, table: str, source: str = "<plan>") -> str:
    """``toml_text`` with its ``[preprocessing]`` table replaced by ``table`` (added when absent).

    Comments and layout elsewhere are kept. Raises :class:`MomentsError` when
    the plan is not TOML, writes ``preprocessing`` in another form (dotted keys,
    an inline table), or when the edit would change anything but that table;
    :class:`fedchain.plan.PlanError` (with every problem) when the result is
    not a valid plan.
    """
    try:
        before = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as exc:
        raise MomentsError(f"{source}: not valid TOML ({exc})") from None
    lines = toml_text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _header_name(line) == "preprocessing"]
    if len(starts) > 1:
        raise MomentsError(f"{source}: [preprocessing] appears twice")
    new_table = table if table.endswith("\n") else table + "\n"
    if starts:
        start = starts[0]
        end = next((i for i in range(start + 1, len(lines)) if _is_header(lines[i])), len(lines))
        # Keep the blank lines and comments that lead into the next table.
        while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
            end -= 1
        tail = lines[end:]
        if tail and not new_table.endswith("\n\n") and lines[end].strip():
            new_table += "\n"
        text = "".join(lines[:start]) + new_table + "".join(tail)
    else:
        if "preprocessing" in before:
            raise MomentsError(f"{source}: 'preprocessing' is not written as a [preprocessing] table; "
                               "rewrite it as one, then run this again")
        sep = "" if not toml_text or toml_text.endswith("\n\n") else ("\n" if toml_text.endswith("\n") else "\n\n")
        text = toml_text + sep + new_table
    try:
        after = tomllib.loads(text)
        wanted = tomllib.loads(new_table)["preprocessing"]
    except tomllib.TOMLDecodeError as exc:  # pragma: no cover - guarded by the check below
        raise MomentsError(f"{source}: the [preprocessing] table cannot be replaced safely here ({exc})") from None
    if after != {**before, "preprocessing": wanted}:
        raise MomentsError(f"{source}: the [preprocessing] table cannot be replaced without changing other values; "
                           "edit the file by hand (paste the table printed without --into)")
    parse_plan(text.encode("utf-8"), source=source, fmt="toml")  # PlanError with every problem, if any
    return text



# --------------------------------------------------------------------------- the statistics phase

#: Format of the coordinator's published statistics document.
STATISTICS_FORMAT = "fedchain-statistics/1"
#: Largest statistics document read back (128 contributors and 4096 features stay well below).
MAX_STATISTICS_BYTES = 8 << 20


class Statistics(BaseModel):
    """The pooled statistics of a proposal's statistics phase, as the coordinator publishes them.

    ``contributors``: the moments that went in, as committed on chain (member, dataset id, CID,
    rows); ``rejected``: the committed moments left out and why (a code). Replay rebuilds the
    document byte for byte from the committed moments.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["fedchain-statistics/1"]
    proposal: Annotated[int, Strict(), Field(ge=1)]
    features: tuple[Annotated[str, Strict(), Field(min_length=1, max_length=128)], ...] = Field(
        min_length=1, max_length=MAX_FEATURES)
    n: Annotated[int, Strict(), Field(ge=1)]
    mean: tuple[_Finite, ...]
    std: tuple[Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)], ...]
    contributors: tuple[dict[str, Any], ...]
    rejected: tuple[dict[str, Any], ...] = ()


def statistics_document(proposal_id: int, std: Standardization, contributors: Sequence[dict],
                        rejected: Sequence[dict] = ()) -> bytes:
    """The canonical bytes (RFC 8785) of the statistics document: what is pinned and hashed."""

    doc = Statistics(format=STATISTICS_FORMAT, proposal=int(proposal_id), features=std.features, n=std.n_rows,
                     mean=tuple(float(v) for v in std.mean), std=tuple(float(v) for v in std.std),
                     contributors=tuple(contributors), rejected=tuple(rejected))
    return canonical_json(doc.model_dump(mode="json"))


def parse_statistics(data: bytes, source: str = "<statistics>") -> Statistics:
    """A statistics document from untrusted bytes (bounded, strict)."""
    if len(data) > MAX_STATISTICS_BYTES:
        raise MomentsError(f"{source}: larger than a statistics document may be ({MAX_STATISTICS_BYTES:,} bytes)")
    try:
        doc = Statistics.model_validate_json(data)
    except ValidationError as exc:
        raise MomentsError(f"{source}: not a {STATISTICS_FORMAT} document ({_first_problem(exc)})") from None
    if len(doc.mean) != len(doc.features) or len(doc.std) != len(doc.features):
        raise MomentsError(f"{source}: mean and std must hold one value per feature")
    return doc


def with_statistics(plan: Any, stats: Statistics) -> Any:
    """The plan as the nodes apply it: ``standardize = "federated"`` resolved to the published mean/std."""
    if plan.preprocessing.standardize != "federated":
        return plan
    if len(stats.mean) != plan.model.n_features:
        raise MomentsError(f"the published statistics have {len(stats.mean)} features but the plan's model takes "
                           f"{plan.model.n_features}")
    return plan.with_changes(preprocessing={"standardize": "plan", "mean": list(stats.mean), "std": list(stats.std)})
