"""Canonical, pickle-free model serialization (safetensors format).

The same weights must give the same bytes -- and therefore the same sha256,
which is what goes on chain -- on every machine, whatever the insertion order
of the state dict.  fedchain therefore writes the safetensors layout itself,
with every free choice fixed:

* **dtypes**: every floating tensor (float16, bfloat16, float32, float64) is
  stored as ``F32`` (float64 is rounded to float32 -- documented precision
  loss; float16/bfloat16 convert exactly); every integer tensor (uint8, int8,
  int16, int32, int64, e.g. BatchNorm's ``num_batches_tracked``) as ``I64``.
  bool, complex, quantized, sparse and meta tensors are rejected with
  :class:`SerializationError`.  ``cast=False`` rejects anything that is not
  already float32 / int64 instead of converting.
* **order**: the order safetensors itself uses -- 8-byte dtypes first, then
  4-byte ones, each group sorted by tensor name (Unicode code points).  The
  JSON header lists ``__metadata__`` first and then the tensors in data order,
  each as ``{"dtype":..,"shape":[..],"data_offsets":[begin,end]}``, compact
  (no spaces), UTF-8, padded with spaces to a multiple of 8 bytes.
* **metadata**: exactly ``{"format": "fedchain/1"}``.
* **data**: little-endian, C-contiguous, tensors back to back from offset 0.

Loading never unpickles anything (no ``torch.load``).  It validates strictly:
header size, nesting depth (at most :data:`MAX_HEADER_DEPTH`, measured before the
JSON parser runs, so a header of a million ``[`` is refused rather than crashing
the reader with ``RecursionError``) and JSON, exact metadata, allowed dtypes,
shapes and offsets, and that the header is byte-for-byte the canonical one (so
one model has exactly one valid encoding and one sha256).  Any violation raises
:class:`SerializationError`.  For updates from other parties, also check the
tensors against the plan's model: :mod:`fedchain.validation`.

Tensors that share storage (tied weights) are written as independent copies.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import struct
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Mapping, Union

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load

from fedchain.errors import FedchainError

__all__ = [
    "FORMAT",
    "METADATA",
    "SerializationError",
    "state_dict_to_bytes",
    "bytes_to_state_dict",
    "state_dict_to_file",
    "file_to_state_dict",
    "state_dict_sha256",
    "sha256_hex",
    "sha256_file",
    "json_depth",
    "canonical_header",
    "MAX_HEADER_DEPTH",
]

FORMAT = "fedchain/1"
METADATA = {"format": FORMAT}
MAX_HEADER = 100 << 20  # the limit safetensors itself enforces
#: Object -> tensor entry -> shape list: nothing in a fedchain header nests deeper.
MAX_HEADER_DEPTH = 3
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)

PathLike = Union[str, os.PathLike]


class SerializationError(FedchainError):
    """A state dict cannot be serialized canonically, or bytes are not a valid fedchain model."""


# dtype name -> (numpy little-endian dtype, torch dtype, itemsize)
_DTYPES = {
    "F32": (np.dtype("<f4"), torch.float32, 4),
    "I64": (np.dtype("<i8"), torch.int64, 8),
}
_INT_TYPES = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """Lower-case hex SHA-256 of ``data`` (no ``0x`` prefix)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: PathLike, *, chunk: int = 1 << 20) -> str:
    """Lower-case hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- writing


def _canonical_tensor(name: object, t: object, cast: bool) -> tuple[str, torch.Tensor]:
    if not isinstance(name, str) or not name:
        raise SerializationError(f"tensor names must be non-empty strings, got {name!r}")
    if name == "__metadata__":
        raise SerializationError("'__metadata__' is reserved and cannot be a tensor name")
    if not isinstance(t, torch.Tensor):
        raise SerializationError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.is_quantized or t.layout != torch.strided or t.device.type == "meta":
        raise SerializationError(f"{name}: quantized, sparse and meta tensors are not supported")
    if t.dtype.is_floating_point:
        target = torch.float32
    elif t.dtype in _INT_TYPES:
        target = torch.int64
    else:
        raise SerializationError(
            f"{name}: dtype {t.dtype} is not supported (floating types are stored as float32, "
            "integer types as int64; bool and complex are rejected)"
        )
    if t.dtype != target and not cast:
        raise SerializationError(f"{name}: dtype {t.dtype} is not canonical ({target}) and cast=False")
    t = t.detach().to(device="cpu", dtype=target).contiguous()
    return name, t


def _dtype_code(t: torch.Tensor) -> str:
    return "F32" if t.dtype == torch.float32 else "I64"


def _order_key(item: tuple[str, str]) -> tuple[int, str]:
    name, code = item
    return (-_DTYPES[code][2], name)


def _build_header(entries: Iterable[tuple[str, str, list[int]]]) -> tuple[bytes, list[tuple[str, str, list[int], int, int]]]:
    """Return (header bytes incl. 8-byte length prefix, ordered layout).

    ``entries`` is (name, dtype code, shape); the layout adds (begin, end).
    """
    ordered = sorted(entries, key=lambda e: _order_key((e[0], e[1])))
    header: dict[str, object] = {"__metadata__": METADATA}
    layout = []
    offset = 0
    for name, code, shape in ordered:
        n = _DTYPES[code][2] * math.prod(shape)
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + n]}
        layout.append((name, code, list(shape), offset, offset + n))
        offset += n
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, layout


def canonical_header(entries: Iterable[tuple[str, str, list[int]]]) -> tuple[bytes, list[tuple[str, str, list[int], int, int]]]:
    """The canonical header (with its 8-byte length prefix) and data layout for ``(name, dtype code, shape)``
    entries, in any order; dtype codes are ``"F32"`` and ``"I64"``.

    Lets a reader know the exact bytes of a model's header, and its total size
    (``len(header) + layout[-1][4]``), from the tensor shapes alone.
    """
    return _build_header(entries)


def _prepare(sd: Mapping[str, torch.Tensor], cast: bool) -> tuple[bytes, list, dict[str, torch.Tensor]]:
    if not isinstance(sd, Mapping):
        raise SerializationError(f"expected a state dict (mapping of name -> tensor), got {type(sd).__name__}")
    tensors = dict(_canonical_tensor(k, v, cast) for k, v in sd.items())
    header, layout = _build_header((k, _dtype_code(t), list(t.shape)) for k, t in tensors.items())
    return header, layout, tensors


def _tensor_bytes(t: torch.Tensor, code: str) -> memoryview:
    arr = t.numpy()
    arr = arr.astype(_DTYPES[code][0], copy=False)  # no-op on little-endian hosts
    return memoryview(np.ascontiguousarray(arr)).cast("B")


def state_dict_to_bytes(sd: Mapping[str, torch.Tensor], *, cast: bool = True) -> bytes:
    """Canonical safetensors bytes for a state dict (see module docstring)."""
    header, layout, tensors = _prepare(sd, cast)
    total = len(header) + (layout[-1][4] if layout else 0)
    out = io.BytesIO()
    out.write(header)
    for name, code, _shape, begin, end in layout:
        if end > begin:
            out.write(_tensor_bytes(tensors[name], code))
    assert out.tell() == total
    return out.getvalue()


def state_dict_to_file(sd: Mapping[str, torch.Tensor], path: PathLike, *, cast: bool = True) -> str:
    """Write the canonical encoding to ``path`` atomically; return its sha256 hex.

    Tensors are streamed to disk one by one (no full in-memory copy).
    """
    header, layout, tensors = _prepare(sd, cast)
    path = Path(path)
    h = hashlib.sha256(header)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            for name, code, _shape, begin, end in layout:
                if end > begin:
                    data = _tensor_bytes(tensors[name], code)
                    h.update(data)
                    f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return h.hexdigest()


def state_dict_sha256(sd: Mapping[str, torch.Tensor], *, cast: bool = True) -> str:
    """sha256 hex of the canonical encoding of ``sd``."""
    return sha256_hex(state_dict_to_bytes(sd, cast=cast))


# --------------------------------------------------------------------------- reading


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise SerializationError(f"duplicate key {k!r} in safetensors header")
        out[k] = v
    return out


def _is_uint(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def json_depth(raw: bytes) -> int:
    """Deepest nesting of ``[``/``{`` in JSON text ``raw``, brackets inside strings not counted.

    Runs in C and numpy (no recursion, linear time), so it is safe on hostile input
    of any size; malformed text gives a depth that the JSON parser then refuses anyway.
    """
    text = _JSON_STRING.sub(b'""', raw)
    if not text:
        return 0
    arr = np.frombuffer(text, dtype=np.uint8)
    step = ((arr == ord("[")) | (arr == ord("{"))).astype(np.int64) - ((arr == ord("]")) | (arr == ord("}")))
    return int(np.cumsum(step).max(initial=0))


def _parse_header(prefix: bytes, read_header: Callable[[int], bytes], total_size: int) -> tuple[int, list]:
    """Validate the header; return (data start offset, layout).  ``prefix`` is the first 8 bytes."""
    if len(prefix) < 8:
        raise SerializationError(f"not a safetensors file: {len(prefix)} bytes, need at least 8")
    (n,) = struct.unpack("<Q", prefix)
    if n > MAX_HEADER or 8 + n > total_size:
        raise SerializationError(f"bad safetensors header length {n} (data is {total_size} bytes)")
    raw = read_header(n)
    if len(raw) != n:
        raise SerializationError("safetensors header is truncated")
    depth = json_depth(raw)
    if depth > MAX_HEADER_DEPTH:
        raise SerializationError(f"safetensors header JSON nests {depth} levels deep (a fedchain model needs {MAX_HEADER_DEPTH})")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:  # ValueError includes UnicodeDecodeError and JSONDecodeError
        raise SerializationError(f"safetensors header is not valid UTF-8 JSON: {_short(exc)}") from None
    if not isinstance(header, dict):
        raise SerializationError("safetensors header must be a JSON object")
    meta = header.pop("__metadata__", None)
    if meta != METADATA:
        raise SerializationError(f"unexpected metadata {meta!r}; expected {METADATA!r} (not a fedchain model?)")
    entries = []
    for name, info in header.items():
        if not name:
            raise SerializationError("empty tensor name")
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise SerializationError(f"{name}: malformed tensor entry {info!r}")
        code, shape = info["dtype"], info["shape"]
        if not isinstance(code, str) or code not in _DTYPES:
            raise SerializationError(f"{name}: dtype {code!r} not allowed (fedchain models use F32 and I64)")
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise SerializationError(f"{name}: malformed shape {shape!r}")
        offs = info["data_offsets"]
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_uint(o) for o in offs)):
            raise SerializationError(f"{name}: malformed data_offsets {offs!r}")
        entries.append((name, code, shape))
    canonical, layout = _build_header(entries)
    if canonical != prefix + raw:
        raise SerializationError(
            "safetensors header is not in fedchain canonical form (tensor order, offsets, "
            "spacing or padding differ); re-serialize with fedchain.serialize"
        )
    data_len = layout[-1][4] if layout else 0
    if 8 + n + data_len != total_size:
        raise SerializationError(
            f"model data is {total_size - 8 - n} bytes but the header describes {data_len} bytes"
        )
    return 8 + n, layout


def bytes_to_state_dict(data: bytes | bytearray | memoryview) -> dict[str, torch.Tensor]:
    """Validate canonical fedchain safetensors bytes and return the tensors (CPU).

    The dict is in canonical (storage) order.
    """
    mv = memoryview(data).cast("B")
    _start, layout = _parse_header(bytes(mv[:8]), lambda n: bytes(mv[8 : 8 + n]), len(mv))

    try:
        loaded = load(bytes(data) if not isinstance(data, bytes) else data)
    except SafetensorError as exc:
        raise SerializationError(f"safetensors rejected the data: {exc}") from None
    out = {}
    for name, code, shape, _b, _e in layout:
        t = loaded[name]
        if t.dtype != _DTYPES[code][1] or list(t.shape) != shape:  # pragma: no cover - defensive
            raise SerializationError(f"{name}: safetensors returned {t.dtype} {list(t.shape)}")
        out[name] = t
    return out


def file_to_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """Validate a canonical fedchain safetensors file and return its tensors.

    The file is opened once and read tensor by tensor straight into tensor
    storage, so peak memory is about the model size.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        start, layout = _parse_header(f.read(8), f.read, size)
        assert f.tell() == start
        out = {}
        for name, code, shape, begin, end in layout:
            t = torch.empty(shape, dtype=_DTYPES[code][1])
            if end > begin:
                buf = memoryview(t.numpy()).cast("B")
                got = 0
                while got < len(buf):
                    k = f.readinto(buf[got:])
                    if not k:
                        raise SerializationError(f"{path}: file ended inside tensor {name}")
                    got += k
                if sys.byteorder == "big":  # pragma: no cover - the data is little-endian
                    t = torch.from_numpy(t.numpy().byteswap())
            out[name] = t
        if f.read(1):  # the file grew while reading
            raise SerializationError(f"{path}: unexpected bytes after the last tensor")
    return out
