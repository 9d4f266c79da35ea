"""Per-update validation: a member's update is accepted as a state dict or rejected with a stable reason.

Who this defends against: any member of the consortium. A member commits the
CID and sha256 of its sealed update on chain; everything in it is under its
control. Before this module, an update whose safetensors header nested deeply
raised ``RecursionError`` and killed the coordinator and ``audit replay``, and a
validly sealed update with NaNs, a wrong shape, a wrong dtype or an extra tensor
raised out of aggregation instead of being rejected.

Two layers:

* :func:`validate_update` -- a **pure function of the decrypted bytes** and the
  plan's model layout (:func:`model_layout`). It returns :class:`Accepted` (the
  state dict) or :class:`Rejection` (a :class:`Reason` code plus a short public
  detail). It never raises for bad input, never puts library exception text,
  local paths or names the member chose into a detail (only the plan's own
  tensor names are quoted), and is deterministic: ``audit replay`` re-derives
  each rejection from the same bytes and compares the code.
* :func:`open_update` -- fetch (size-limited), check the on-chain hash, open the
  envelope (which must be sealed for exactly the expected recipients, so the
  auditors can open whatever the coordinator accepts), then
  :func:`validate_update`. Store, hash and envelope failures become
  ``NOT_FOUND``, ``HASH_MISMATCH``, ``TOO_LARGE`` and ``BAD_ENVELOPE``; only
  failures that are not the member's doing (our own store down or corrupt) raise.

Checks and their order (the first failing one decides the code):

=================  ========================================================
``TOO_LARGE``      more than :data:`SLACK` bytes over the plan model's size
                   (checked first, before parsing), or a fetched blob over
                   :func:`update_size_limit`
``MALFORMED_HEADER`` no 8-byte length, a header length past the end or more
                   than :data:`SLACK` over the canonical header's, not UTF-8
                   JSON, not an object, wrong metadata, a tensor entry that is
                   not an object, or a header that has the right tensors,
                   dtypes and shapes but is not byte-for-byte canonical
``HEADER_TOO_DEEP`` JSON nested deeper than a fedchain header can be (measured
                   without recursion, before the JSON parser runs)
``WRONG_TENSORS``  a tensor missing or one too many (names compared as sets,
                   the count before anything is built)
``WRONG_DTYPE``    a tensor's dtype is not the plan model's
``WRONG_SHAPE``    a tensor's shape is not the plan model's
``TOO_LARGE``      the canonical header, but more data bytes than it describes
``TRUNCATED``      the canonical header, but fewer data bytes than it describes
``NOT_FINITE``     a NaN or infinity in a floating tensor
``BAD_ENVELOPE``   the envelope does not open for this recipient (context,
                   signature, recipients, key commitment, chunks)
``HASH_MISMATCH``  the fetched bytes are not what the member committed on chain
``NOT_FOUND``      the CID cannot be fetched, or is not a valid file DAG
``NOT_ADMITTED``   (the coordinator's check, before any fetch) the dataset's
                   policy no longer admitted the proposal when the round
                   closed: revoked, expired or changed after the commitment
``WRONG_PRIVACY``  (the coordinator's check, before any fetch) the ε/δ the
                   commitment charged to its dataset's budget is not what the
                   plan's round spends (``fedchain.usecases.privacy``)
=================  ========================================================

Header size, depth and tensor count are all checked before any tensor is
allocated; the data is decoded only once the header is exactly the one the plan's
model gives (:func:`fedchain.serialize.canonical_header`).

Wiring (done once, in :mod:`fedchain.coordinator.collect`, for the coordinator and replay alike)::

    layout = model_layout(plan.model)
    expected = [coordinator_x25519_key, *auditor_keys]      # as on chain / in the plan
    verdict = open_update(store, cid, sha256, ctx, identity, layout, recipients=expected)
    if isinstance(verdict, Rejection):
        rejected[member] = verdict.code                      # publish code + detail
    else:
        updates.append(verdict.state)
"""

from __future__ import annotations

import enum
import json
import math
import re
import struct
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping, Sequence, Union

import torch

from fedchain import content, envelope, serialize
from fedchain.errors import ContentUnavailable, FedchainError, SizeLimitExceeded
from fedchain.plan import ModelSpec, parse_model_spec

__all__ = [
    "SLACK",
    "Reason",
    "TensorSpec",
    "ModelLayout",
    "Accepted",
    "Rejection",
    "Verdict",
    "UpdateRejected",
    "model_layout",
    "model_size",
    "update_size_limit",
    "validate_update",
    "open_update",
]


#: How far past the plan model's size (and its header's) an update may go and still be parsed
#: to name what is wrong with it (an extra tensor, a larger shape); past that it is TOO_LARGE
#: (MALFORMED_HEADER for the header) without being parsed at all.
SLACK = 64 << 10


class Reason(str, enum.Enum):
    """Stable rejection codes (their string values are what gets published and compared)."""

    TOO_LARGE = "TOO_LARGE"
    MALFORMED_HEADER = "MALFORMED_HEADER"
    HEADER_TOO_DEEP = "HEADER_TOO_DEEP"
    WRONG_TENSORS = "WRONG_TENSORS"
    WRONG_DTYPE = "WRONG_DTYPE"
    WRONG_SHAPE = "WRONG_SHAPE"
    TRUNCATED = "TRUNCATED"
    NOT_FINITE = "NOT_FINITE"
    BAD_ENVELOPE = "BAD_ENVELOPE"
    HASH_MISMATCH = "HASH_MISMATCH"
    NOT_FOUND = "NOT_FOUND"
    NOT_ADMITTED = "NOT_ADMITTED"
    WRONG_PRIVACY = "WRONG_PRIVACY"  # the commitment's ε/δ is not what the plan's round spends

    def __str__(self) -> str:
        return self.value


class UpdateRejected(FedchainError):
    """An update was rejected (:meth:`Rejection.unwrap`); ``code`` and ``detail`` as in the rejection."""

    def __init__(self, code: Reason, detail: str):
        super().__init__(f"{code.value}: {detail}")
        self.code, self.detail = code, detail


@dataclass(frozen=True)
class Accepted:
    """A valid update: its tensors, in canonical order, on the CPU."""

    state: dict[str, torch.Tensor]

    def unwrap(self) -> dict[str, torch.Tensor]:
        return self.state


@dataclass(frozen=True)
class Rejection:
    """A rejected update: a stable code and a short public detail (no library text, no paths)."""

    code: Reason
    detail: str

    def unwrap(self) -> dict[str, torch.Tensor]:
        raise UpdateRejected(self.code, self.detail)


Verdict = Union[Accepted, Rejection]


# --------------------------------------------------------------------------- the expected layout


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # safetensors dtype code: "F32" or "I64"
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelLayout:
    """The tensors of a plan's model, in canonical order; the exact canonical header and size follow."""

    tensors: tuple[TensorSpec, ...]

    @cached_property
    def _canonical(self) -> tuple[bytes, int]:
        header, layout = serialize.canonical_header((t.name, t.dtype, list(t.shape)) for t in self.tensors)
        return header, len(header) + (layout[-1][4] if layout else 0)

    @property
    def header(self) -> bytes:
        """The canonical header bytes (8-byte length prefix included) every valid update starts with."""
        return self._canonical[0]

    @property
    def size(self) -> int:
        """The exact size in bytes of the canonical safetensors encoding of this model."""
        return self._canonical[1]

    @cached_property
    def by_name(self) -> dict[str, TensorSpec]:
        return {t.name: t for t in self.tensors}


def model_layout(spec: ModelSpec | Mapping[str, Any]) -> ModelLayout:
    """The layout (names, dtypes, shapes) of the model a plan names, built on the ``meta`` device (no weights)."""
    from fedchain.models import MODEL_BUILDERS  # models imports torch.nn; only needed here

    if not isinstance(spec, ModelSpec):
        spec = parse_model_spec(spec)
    module = MODEL_BUILDERS[spec.kind](spec, "meta")
    entries = []
    for name, t in module.state_dict().items():
        code = "F32" if t.dtype.is_floating_point else "I64"
        entries.append(TensorSpec(name, code, tuple(int(d) for d in t.shape)))
    header, layout = serialize.canonical_header((t.name, t.dtype, list(t.shape)) for t in entries)
    order = {name: i for i, (name, *_rest) in enumerate(layout)}
    return ModelLayout(tuple(sorted(entries, key=lambda t: order[t.name])))


def _layout(spec_or_layout: ModelLayout | ModelSpec | Mapping[str, Any]) -> ModelLayout:
    return spec_or_layout if isinstance(spec_or_layout, ModelLayout) else model_layout(spec_or_layout)


def model_size(spec_or_layout: ModelLayout | ModelSpec | Mapping[str, Any]) -> int:
    """Exact bytes of the plan model's canonical safetensors (the bound for fetching an aggregate)."""
    return _layout(spec_or_layout).size


def update_size_limit(spec_or_layout: ModelLayout | ModelSpec | Mapping[str, Any], n_recipients: int) -> int:
    """The bound for fetching a sealed update for the plan's model.

    The model's exact size plus :data:`SLACK` (so an update a little off -- an
    extra tensor, a larger shape -- is still fetched and rejected with the code
    that names what is wrong, like :func:`validate_update` does), plus the
    envelope's overhead for ``n_recipients`` recipients at the smallest chunk size
    a sender may choose.
    """
    return envelope.max_sealed_size(model_size(spec_or_layout) + SLACK, n_recipients)


# --------------------------------------------------------------------------- pure validation


#: What a safetensors dtype code looks like ("F32", "BF16", "I64", "BOOL"): quoted in a detail only then.
_DTYPE_CODE = re.compile(r"[A-Z][A-Z0-9]{1,7}")


def _name(name: object) -> str:
    """A tensor name for a public detail: repr'd (control characters escaped) and cut short."""
    text = repr(name) if isinstance(name, str) else type(name).__name__
    return text if len(text) <= 48 else text[:45] + "...'"


def _names(names) -> str:
    names = sorted(names, key=str)
    shown = ", ".join(_name(n) for n in names[:4])
    return shown + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _reject_pairs(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError("duplicate key")
        out[k] = v
    return out


def validate_update(data: bytes | bytearray | memoryview, layout: ModelLayout) -> Verdict:
    """Accept ``data`` (decrypted update bytes) as a state dict of the plan's model, or reject it.

    Pure and deterministic; see the module docstring for the checks, their order
    and codes. Never raises for any ``data``.
    """
    if not isinstance(layout, ModelLayout):
        raise TypeError("layout must be a ModelLayout (fedchain.validation.model_layout)")
    mv = memoryview(data).cast("B")
    if len(mv) > layout.size + SLACK:
        return Rejection(Reason.TOO_LARGE, f"{len(mv)} bytes; the plan's model is {layout.size} bytes")
    header = layout.header
    if len(mv) == layout.size and mv[: len(header)] == header:
        return _decode(mv, layout)
    return _diagnose(mv, layout)


def _decode(mv: memoryview, layout: ModelLayout) -> Verdict:
    try:
        state = serialize.bytes_to_state_dict(mv)
    except serialize.SerializationError:  # pragma: no cover - the header is the canonical one
        return Rejection(Reason.MALFORMED_HEADER, "the tensor data does not decode")
    for spec in layout.tensors:
        t = state[spec.name]
        if t.dtype.is_floating_point and t.numel():
            lo, hi = torch.aminmax(t)  # one pass; NaN propagates, an infinity shows (isfinite is ~10x slower)
            bad = 0 if math.isfinite(float(lo)) and math.isfinite(float(hi)) else int((~torch.isfinite(t)).sum())
            if bad:
                return Rejection(Reason.NOT_FINITE, f"tensor {_name(spec.name)} holds {bad} NaN or infinite value(s)")
    return Accepted(state)


def _diagnose(mv: memoryview, layout: ModelLayout) -> Rejection:
    """Why bytes that are not ``layout.header + data`` of the right size are wrong (first reason wins)."""
    if len(mv) < 8:
        return Rejection(Reason.MALFORMED_HEADER, f"{len(mv)} bytes: no 8-byte header length")
    (n,) = struct.unpack("<Q", mv[:8])
    if n > len(layout.header) - 8 + SLACK:
        return Rejection(Reason.MALFORMED_HEADER,
                         f"the header is {n} bytes; the plan's model needs {len(layout.header) - 8}")
    if n > len(mv) - 8:
        return Rejection(Reason.MALFORMED_HEADER, f"the header length {n} runs past the end of the update")
    raw = bytes(mv[8 : 8 + n])
    depth = serialize.json_depth(raw)
    if depth > serialize.MAX_HEADER_DEPTH:
        return Rejection(Reason.HEADER_TOO_DEEP,
                         f"the header nests {depth} levels deep (at most {serialize.MAX_HEADER_DEPTH})")
    try:
        parsed = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_pairs)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return Rejection(Reason.MALFORMED_HEADER, "the header is not UTF-8 JSON without duplicate keys")
    if not isinstance(parsed, dict):
        return Rejection(Reason.MALFORMED_HEADER, "the header is not a JSON object")
    if parsed.pop("__metadata__", None) != serialize.METADATA:
        return Rejection(Reason.MALFORMED_HEADER, f"the header's metadata is not {serialize.METADATA}")
    expected = layout.by_name
    if len(parsed) != len(expected) or set(parsed) != set(expected):
        # Only the plan's own names are quoted: the member's are its text, and a detail is published.
        missing, extra = set(expected) - set(parsed), set(parsed) - set(expected)
        parts = [f"{len(parsed)} tensor(s), the plan's model has {len(expected)}"]
        if missing:
            parts.append(f"missing {_names(missing)}")
        if extra:
            parts.append(f"{len(extra)} not in the plan's model")
        return Rejection(Reason.WRONG_TENSORS, "; ".join(parts))
    for spec in layout.tensors:
        if not isinstance(parsed[spec.name], dict):
            return Rejection(Reason.MALFORMED_HEADER, f"the entry of tensor {_name(spec.name)} is not an object")
    for spec in layout.tensors:
        dtype = parsed[spec.name].get("dtype")
        if dtype != spec.dtype:
            shown = dtype if isinstance(dtype, str) and _DTYPE_CODE.fullmatch(dtype) else "another dtype"
            return Rejection(Reason.WRONG_DTYPE, f"tensor {_name(spec.name)} is {shown}, the plan's model has {spec.dtype}")
    for spec in layout.tensors:
        shape = parsed[spec.name].get("shape")
        if not (isinstance(shape, list) and len(shape) == len(spec.shape)
                and all(type(d) is int and d == e for d, e in zip(shape, spec.shape))):
            return Rejection(Reason.WRONG_SHAPE, f"tensor {_name(spec.name)} does not have the shape "
                                                 f"{list(spec.shape)} of the plan's model")
    header = layout.header
    if bytes(mv[: len(header)]) != header:
        return Rejection(Reason.MALFORMED_HEADER, "the header is not in canonical form (offsets, order or padding)")
    code = Reason.TOO_LARGE if len(mv) > layout.size else Reason.TRUNCATED
    return Rejection(code, f"{len(mv)} bytes; the plan's model is {layout.size} bytes")


# --------------------------------------------------------------------------- fetch, open, validate

_ENVELOPE_DETAILS: tuple[tuple[type, str], ...] = (
    (envelope.EnvelopeVersionError, "not a version-2 fedchain envelope"),
    (envelope.EnvelopeFormatError, "not a well-formed fedchain envelope"),
    (envelope.EnvelopeSenderMismatch, "the envelope is not signed by the member that committed it"),
    (envelope.EnvelopeContextMismatch, "the envelope is sealed for another chain, contract, proposal, round or sender"),
    (envelope.EnvelopeRecipientsMismatch, "the envelope is not sealed for exactly the plan's recipients"),
    (envelope.EnvelopeNotForRecipient, "the envelope is not sealed for this recipient"),
    (envelope.EnvelopeInconsistent, "the envelope would not open to the same content for every recipient"),
    (envelope.EnvelopeAuthenticationError, "this recipient's key wrap does not open"),
    (envelope.EnvelopeTruncated, "the envelope is truncated"),
    (envelope.EnvelopeCorrupt, "a chunk of the envelope fails authentication"),
    (envelope.EnvelopeError, "the envelope does not open"),
)


def _envelope_detail(exc: envelope.EnvelopeError) -> str:
    for cls, text in _ENVELOPE_DETAILS:
        if isinstance(exc, cls):
            return text
    return "the envelope does not open"  # pragma: no cover - EnvelopeError is last above


def open_update(
    store,
    cid: str,
    sha256: str | bytes,
    ctx: envelope.EnvelopeContext,
    recipient,
    layout: ModelLayout,
    *,
    recipients: Sequence[bytes],
    tmp_dir=None,
) -> Verdict:
    """Fetch, verify, open and validate one committed update; a :data:`Verdict`, never a member-caused error.

    ``ctx`` is the context the update must be sealed for (its ``sender`` the
    committing member, who must have signed it); ``recipient`` the opening
    :class:`~fedchain.identity.Identity`; ``recipients`` the exact X25519 keys the
    plan requires it sealed for (the coordinator's and the auditors'): an update
    the auditors could not open is rejected here, not accepted. The blob is
    fetched with :func:`update_size_limit` as its bound.

    Raises only for failures that are not the member's doing: the store being
    unreachable or its own blocks corrupt (a ``StoreError`` that is not a
    :class:`~fedchain.errors.ContentUnavailable`).
    """
    limit = update_size_limit(layout, len(set(recipients)))
    try:
        data = content.fetch_verified(store, cid, sha256, ctx, recipient, max_size=limit,
                                      recipients=recipients, tmp_dir=tmp_dir)
    except SizeLimitExceeded:
        return Rejection(Reason.TOO_LARGE, f"the sealed update is larger than {limit} bytes")
    except content.HashMismatch:
        return Rejection(Reason.HASH_MISMATCH, "the fetched bytes do not have the sha256 committed on chain")
    except envelope.EnvelopeError as exc:
        return Rejection(Reason.BAD_ENVELOPE, _envelope_detail(exc))
    except ContentUnavailable:
        return Rejection(Reason.NOT_FOUND, "the committed CID cannot be fetched as a valid file")
    except content.ContentError:  # a malformed CID string or hash from the chain
        return Rejection(Reason.NOT_FOUND, "the committed CID or hash is malformed")
    return validate_update(data, layout)
