"""Homomorphic aggregation with CKKS (TenSEAL): the coordinator sums ciphertexts it cannot read.

A *decryptor* (a member or the auditor the plan names) generates a CKKS key
pair and publishes the **public context** (parameters + public key, no secret
key).  Each node encrypts its model vector under it; the coordinator computes
the weighted sum of the ciphertexts with weights known in the clear; the
decryptor checks that what it is asked to decrypt *is* that weighted sum of
the committed inputs (it recomputes it: the homomorphic operations and their
serialization are deterministic) and decrypts only the aggregate.

Parameters (:data:`DEFAULT_PARAMS`)
===================================

* poly modulus degree ``N = 8192``: ``N / 2 = 4096`` values per ciphertext;
* coefficient modulus bit sizes ``(60, 40, 60)``: 160 bits in total, within
  the 218 bits the Homomorphic Encryption Standard allows for 128-bit security
  at ``N = 8192`` (TenSEAL/SEAL enforce it); the last 60-bit prime is SEAL's
  special key-switching prime, the 40-bit one is consumed by the single
  rescale after multiplying by the plaintext weights;
* scale ``2^40``.

Precision (measured, 10-20 inputs, one weight multiplication, 4096 slots):
the absolute error of a weighted sum is about ``1.1e-7 * max |x|`` (it is
relative to the inputs' magnitude: ``x * 2^40`` must fit under the 60+40-bit
modulus).  :meth:`DecryptorKey.decrypt` rounds its output to a grid of
``2^-20`` (adding at most ``2^-21``), so the stated tolerance per coordinate is
``|error| <= 2^-19 * max(1, max_i |x_i|)`` for weights with ``sum w_i <= 1``.
Inputs must satisfy ``|x| <= MAX_ABS = 2^14`` and weights ``0 < w`` with
``sum w <= MAX_WEIGHT_SUM = 4``, so every intermediate stays below ``2^16``,
far under the ``2^19`` the last 60-bit prime leaves above the scale.

Sizes: a fresh ciphertext of 4096 values is about 235 KB (57 bytes per
parameter, 14x a float32); after the weighted sum about 131 KB.  The public
context is about 364 KB; the secret context somewhat more.

Why round the output: Li and Micciancio (EUROCRYPT 2021) showed that a CKKS
decryption *result*, published together with its ciphertext, can reveal the
secret key, because CKKS decryption returns the message plus the encryption
noise.  Rounding removes the low-order bits of that noise; it reduces but
does not provably remove the leak (noise flooding would, at a precision these
parameters cannot afford).  So: a fresh key pair per round, and the decryptor
decrypts exactly one ciphertext per key, the verified aggregate.

Formats (version 1, big-endian)
===============================

Public context::

    "FCHE" | 1 | type 1 | params (7 bytes) | length u32 | TenSEAL context bytes

Encrypted vector::

    "FCHE" | 1 | type 2 | SHA-256 of the public context encoding (32) |
    length u32 | level u8 | chunks u32 | chunks x (size u32 | TenSEAL CKKSVector bytes)

``params`` = ``log2(N)`` u8 | scale bits u8 | number of primes u8 | bit sizes (u8 each,
padded to 4 primes with zeros).  ``level`` is 0 for a fresh ciphertext, 1
after the weighted sum.  Every chunk holds ``min(N/2, remaining)`` values.
Decoding bounds every size before parsing: the context to
:func:`max_context_bytes`, chunk count to ``ceil(length / (N/2))``, each chunk
to :func:`max_ciphertext_bytes`, ``length`` to :data:`MAX_LENGTH`; after
TenSEAL parses a chunk, its value count, polynomial count, degree, number of
primes and scale are checked against what the header says.

Residual risk: SEAL inflates its zstd-compressed ciphertexts before checking
them, so the byte bounds limit the input, not the inflation; a member that
commits a crafted ciphertext could make a loader allocate much more than the
blob's size (the blob's hash on chain names who did it).  Load untrusted
ciphertexts in a process with a memory limit.

The secret context (:meth:`DecryptorKey.to_bytes`) contains the secret key:
store it encrypted (an envelope sealed to the decryptor itself, or its
keystore), never in the content store.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tenseal as ts
import tenseal.sealapi  # noqa: F401  (registers the SEAL types, e.g. Modulus, that parameter getters return)

from fedchain.errors import FedchainError

__all__ = [
    "MAGIC",
    "VERSION",
    "MAX_LENGTH",
    "MAX_ABS",
    "MAX_WEIGHT_SUM",
    "OUTPUT_FRAC_BITS",
    "HEParams",
    "DEFAULT_PARAMS",
    "HEError",
    "HEFormatError",
    "HEKeyError",
    "HEInputError",
    "HEProtocolError",
    "PublicContext",
    "DecryptorKey",
    "EncryptedVector",
    "max_context_bytes",
    "max_ciphertext_bytes",
]

MAGIC = b"FCHE"
VERSION = 1
TYPE_CONTEXT = 1
TYPE_VECTOR = 2
MAX_LENGTH = 1 << 24
MAX_ABS = float(1 << 14)
MAX_WEIGHT_SUM = 4.0
OUTPUT_FRAC_BITS = 20
# HE Standard (2018), 128-bit classical security, ternary secret: max total coeff modulus bits.
_MAX_COEFF_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}
_HDR = struct.Struct(">4sBB")


class HEError(FedchainError):
    """Base class of homomorphic-aggregation errors."""


class HEFormatError(HEError):
    """Bytes are not a well-formed public context or encrypted vector (or exceed a bound)."""


class HEKeyError(HEError):
    """A context holds the wrong keys: a secret key where none may be, none where one is needed,
    or a ciphertext made under another context."""


class HEInputError(HEError):
    """A vector or weight cannot be encrypted or summed (shape, NaN, range)."""


class HEProtocolError(HEError):
    """The decryptor was asked to decrypt something that is not the agreed aggregate."""


@dataclass(frozen=True)
class HEParams:
    """CKKS parameters. See the module docstring for the defaults' security and precision."""

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 60)
    scale_bits: int = 40

    def __post_init__(self) -> None:
        n, bits = self.poly_modulus_degree, tuple(self.coeff_mod_bit_sizes)
        object.__setattr__(self, "coeff_mod_bit_sizes", bits)
        if n not in _MAX_COEFF_BITS:
            raise HEInputError(f"poly_modulus_degree must be one of {sorted(_MAX_COEFF_BITS)}, got {n}")
        if len(bits) != 3 or not all(isinstance(b, int) and 20 <= b <= 60 for b in bits):
            raise HEInputError("coeff_mod_bit_sizes must be three primes of 20..60 bits (data, rescale, special)")
        if sum(bits) > _MAX_COEFF_BITS[n]:
            raise HEInputError(f"{sum(bits)} coefficient modulus bits exceed {_MAX_COEFF_BITS[n]} (128-bit security) at N={n}")
        if not (isinstance(self.scale_bits, int) and bits[1] == self.scale_bits and bits[0] >= self.scale_bits + 17):
            raise HEInputError("scale_bits must equal the rescale prime's bits, and the first prime must exceed it by 17+ bits")

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    def encode(self) -> bytes:
        bits = list(self.coeff_mod_bit_sizes) + [0] * (4 - len(self.coeff_mod_bit_sizes))
        return bytes([int(math.log2(self.poly_modulus_degree)), self.scale_bits, len(self.coeff_mod_bit_sizes), *bits])

    @classmethod
    def decode(cls, b: bytes) -> "HEParams":
        if len(b) != 7 or b[2] != 3 or b[6] != 0 or b[0] > 20:
            raise HEFormatError("malformed CKKS parameters")
        try:
            return cls(1 << b[0], tuple(b[3:6]), b[1])
        except HEInputError as e:
            raise HEFormatError(f"unsupported CKKS parameters: {e}") from e


DEFAULT_PARAMS = HEParams()


def max_context_bytes(params: HEParams) -> int:
    """Upper bound on a serialized public context: a public key (2 polynomials over all primes) plus slack."""
    return 2 * params.poly_modulus_degree * len(params.coeff_mod_bit_sizes) * 8 + (64 << 10)


def max_ciphertext_bytes(params: HEParams) -> int:
    """Upper bound on one serialized chunk: 2 polynomials over the data primes plus slack."""
    return 2 * params.poly_modulus_degree * (len(params.coeff_mod_bit_sizes) - 1) * 8 + (4 << 10)


def _check_params(ctx: ts.Context, params: HEParams) -> None:
    data = ctx.seal_context().data
    key_parms = data.key_context_data().parms()
    first = data.first_context_data().parms()
    bits = tuple(m.bit_count() for m in key_parms.coeff_modulus())
    if key_parms.scheme() != ts.SCHEME_TYPE.CKKS.value:
        raise HEKeyError("the context is not a CKKS context")
    if first.poly_modulus_degree() != params.poly_modulus_degree or bits != params.coeff_mod_bit_sizes:
        raise HEKeyError(f"the context has degree {first.poly_modulus_degree()} and primes {bits}, expected "
                         f"{params.poly_modulus_degree} and {params.coeff_mod_bit_sizes}")
    if ctx.global_scale != 2.0**params.scale_bits:
        raise HEKeyError(f"the context's scale is {ctx.global_scale}, expected 2^{params.scale_bits}")
    if not (ctx.auto_rescale and ctx.auto_relin and ctx.auto_mod_switch):
        raise HEKeyError("the context must have auto rescale, relinearization and mod switch on")


def _check_vector(x: object, length: int | None = None) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise HEInputError(f"expected a float vector, got dtype {a.dtype}")
    a = a.reshape(-1).astype(np.float64)
    if not 1 <= a.size <= MAX_LENGTH:
        raise HEInputError(f"vector length must be in 1..{MAX_LENGTH}, got {a.size}")
    if length is not None and a.size != length:
        raise HEInputError(f"vector has {a.size} values, expected {length}")
    if not np.all(np.isfinite(a)):
        raise HEInputError("vector contains NaN or infinity")
    if a.size and np.max(np.abs(a)) > MAX_ABS:
        raise HEInputError(f"vector values must lie in [-{MAX_ABS:g}, {MAX_ABS:g}] (CKKS precision and headroom)")
    return a


@dataclass(frozen=True)
class EncryptedVector:
    """A model vector as CKKS ciphertext chunks, bound to one public context."""

    context_digest: bytes
    length: int
    level: int
    chunks: tuple[bytes, ...]

    def encode(self) -> bytes:
        parts = [_HDR.pack(MAGIC, VERSION, TYPE_VECTOR), self.context_digest, self.length.to_bytes(4, "big"),
                 bytes([self.level]), len(self.chunks).to_bytes(4, "big")]
        for c in self.chunks:
            parts += [len(c).to_bytes(4, "big"), c]
        return b"".join(parts)

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def decode(cls, data: bytes, params: HEParams = DEFAULT_PARAMS) -> "EncryptedVector":
        """Parse with every size bounded (see the module docstring); :class:`HEFormatError` otherwise."""
        data = bytes(data)
        fixed = _HDR.size + 32 + 4 + 1 + 4
        if len(data) < fixed:
            raise HEFormatError("truncated encrypted vector")
        magic, version, typ = _HDR.unpack_from(data)
        if magic != MAGIC or typ != TYPE_VECTOR:
            raise HEFormatError("not an encrypted vector")
        if version != VERSION:
            raise HEFormatError(f"encrypted vector version {version} is not supported")
        pos = _HDR.size
        digest = data[pos:pos + 32]
        length = int.from_bytes(data[pos + 32:pos + 36], "big")
        level = data[pos + 36]
        n_chunks = int.from_bytes(data[pos + 37:pos + 41], "big")
        pos = fixed
        if not 1 <= length <= MAX_LENGTH:
            raise HEFormatError(f"vector length {length} outside 1..{MAX_LENGTH}")
        if level not in (0, 1):
            raise HEFormatError(f"level must be 0 or 1, got {level}")
        if n_chunks != -(-length // params.slots):
            raise HEFormatError(f"{n_chunks} chunks for {length} values; expected {-(-length // params.slots)}")
        bound = max_ciphertext_bytes(params)
        chunks = []
        for k in range(n_chunks):
            if len(data) - pos < 4:
                raise HEFormatError("truncated encrypted vector")
            size = int.from_bytes(data[pos:pos + 4], "big")
            pos += 4
            if not 1 <= size <= bound:
                raise HEFormatError(f"chunk {k} declares {size} bytes; the bound is {bound}")
            if len(data) - pos < size:
                raise HEFormatError(f"chunk {k} is truncated")
            chunks.append(data[pos:pos + size])
            pos += size
        if pos != len(data):
            raise HEFormatError(f"{len(data) - pos} trailing bytes after an encrypted vector")
        return cls(digest, length, level, tuple(chunks))


def _chunk_lengths(length: int, slots: int) -> list[int]:
    return [min(slots, length - s) for s in range(0, length, slots)]


def _load_chunk(ctx: ts.Context, params: HEParams, blob: bytes, values: int, level: int, k: int) -> ts.CKKSVector:
    try:
        v = ts.ckks_vector_from(ctx, blob)
    except (ValueError, RuntimeError, TypeError) as e:
        raise HEFormatError(f"chunk {k} is not a valid CKKS ciphertext: {e}") from e
    cts = v.ciphertext()
    want_primes = len(params.coeff_mod_bit_sizes) - 1 - level
    if v.size() != values or len(cts) != 1:
        raise HEFormatError(f"chunk {k} holds {v.size()} values in {len(cts)} ciphertexts, expected {values} in 1")
    ct = cts[0]
    if ct.size() != 2 or ct.poly_modulus_degree() != params.poly_modulus_degree or ct.coeff_modulus_size() != want_primes:
        raise HEFormatError(f"chunk {k} has {ct.size()} polynomials of degree {ct.poly_modulus_degree()} over "
                            f"{ct.coeff_modulus_size()} primes, expected 2 of {params.poly_modulus_degree} over {want_primes}")
    if not math.isclose(ct.scale, 2.0**params.scale_bits, rel_tol=1e-6):
        raise HEFormatError(f"chunk {k} has scale {ct.scale}, expected 2^{params.scale_bits}")
    return v


class PublicContext:
    """What nodes and the coordinator hold: parameters and public key, no secret key."""

    def __init__(self, ctx: ts.Context, params: HEParams, raw: bytes):
        self._ctx, self.params, self._raw = ctx, params, raw

    def encode(self) -> bytes:
        return _HDR.pack(MAGIC, VERSION, TYPE_CONTEXT) + self.params.encode() + len(self._raw).to_bytes(4, "big") + self._raw

    @property
    def digest(self) -> bytes:
        """SHA-256 of :meth:`encode`; every encrypted vector names it."""
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def decode(cls, data: bytes, params: HEParams | None = None) -> "PublicContext":
        """Load a public context; refuses a context with a secret key (:class:`HEKeyError`),
        one whose parameters differ from ``params`` (when given), and oversized input."""
        data = bytes(data)
        head = _HDR.size + 7 + 4
        if len(data) < head:
            raise HEFormatError("truncated public context")
        magic, version, typ = _HDR.unpack_from(data)
        if magic != MAGIC or typ != TYPE_CONTEXT:
            raise HEFormatError("not a public context")
        if version != VERSION:
            raise HEFormatError(f"public context version {version} is not supported")
        declared = HEParams.decode(data[_HDR.size:_HDR.size + 7])
        if params is not None and declared != params:
            raise HEKeyError(f"the public context is for {declared}, expected {params}")
        size = int.from_bytes(data[_HDR.size + 7:head], "big")
        if size > max_context_bytes(declared) or size != len(data) - head:
            raise HEFormatError(f"public context declares {size} bytes (bound {max_context_bytes(declared)}, "
                                f"present {len(data) - head})")
        raw = data[head:]
        try:
            ctx = ts.context_from(raw)
        except (ValueError, RuntimeError, TypeError) as e:
            raise HEFormatError(f"not a TenSEAL context: {e}") from e
        if ctx.has_secret_key() or not ctx.is_public():
            raise HEKeyError("this context holds a secret key: it must never be published or loaded as the public context")
        if not ctx.has_public_key():
            raise HEKeyError("the public context has no public key")
        _check_params(ctx, declared)
        return cls(ctx, declared, raw)

    # ------------------------------------------------------------ node side

    def encrypt(self, x: object) -> EncryptedVector:
        """Encrypt a model vector (|values| <= MAX_ABS), chunked into ciphertexts of N/2 slots."""
        a = _check_vector(x)
        chunks = []
        for s in range(0, a.size, self.params.slots):
            chunks.append(ts.ckks_vector(self._ctx, a[s:s + self.params.slots].tolist()).serialize())
        return EncryptedVector(self.digest, int(a.size), 0, tuple(chunks))

    # ------------------------------------------------------------ coordinator side

    def _load(self, ev: EncryptedVector, level: int) -> list[ts.CKKSVector]:
        if not isinstance(ev, EncryptedVector):
            raise HEInputError("expected an EncryptedVector")
        if ev.context_digest != self.digest:
            raise HEKeyError("the ciphertext was made under another public context")
        if ev.level != level:
            raise HEProtocolError(f"expected a ciphertext at level {level}, got level {ev.level}")
        lengths = _chunk_lengths(ev.length, self.params.slots)
        if len(lengths) != len(ev.chunks):
            raise HEFormatError(f"{len(ev.chunks)} chunks for {ev.length} values")
        return [_load_chunk(self._ctx, self.params, blob, m, level, k) for k, (blob, m) in enumerate(zip(ev.chunks, lengths))]

    def check(self, ev: EncryptedVector, length: int | None = None, level: int = 0) -> None:
        """Parse every chunk of ``ev`` as :meth:`weighted_sum` would (raises :class:`HEError`), so one
        bad input is found and left out before it can spoil a sum; ``length``: the values expected."""
        if length is not None and isinstance(ev, EncryptedVector) and ev.length != length:
            raise HEInputError(f"the ciphertext holds {ev.length} values, expected {length}")
        self._load(ev, level)

    def weighted_sum(self, vectors: Sequence[EncryptedVector], weights: Sequence[float]) -> EncryptedVector:
        """``sum_i w_i * x_i`` on ciphertexts; weights in the clear, each > 0, summing to at most
        :data:`MAX_WEIGHT_SUM`.  Deterministic: the same inputs give the same bytes."""
        if len(vectors) != len(weights) or not vectors:
            raise HEInputError(f"{len(vectors)} vectors and {len(weights)} weights; need the same positive number")
        w = [float(x) for x in weights]
        if not all(math.isfinite(x) and x > 0 for x in w) or math.fsum(w) > MAX_WEIGHT_SUM:
            raise HEInputError(f"weights must be finite, positive and sum to at most {MAX_WEIGHT_SUM}")
        length = vectors[0].length
        if any(v.length != length for v in vectors):
            raise HEInputError("all vectors must have the same length")
        acc: list[ts.CKKSVector] | None = None
        for v, wi in zip(vectors, w):
            scaled = [c * wi for c in self._load(v, 0)]
            acc = scaled if acc is None else [a + b for a, b in zip(acc, scaled)]
        assert acc is not None
        return EncryptedVector(self.digest, length, 1, tuple(c.serialize() for c in acc))

    def weighted_mean(self, vectors: Sequence[EncryptedVector], counts: Sequence[float]) -> EncryptedVector:
        """FedAvg: weights ``counts[i] / sum(counts)`` (computed in float64, the same everywhere)."""
        total = math.fsum(float(c) for c in counts)
        if not total > 0:
            raise HEInputError("counts must sum to a positive number")
        return self.weighted_sum(vectors, [float(c) / total for c in counts])


class DecryptorKey:
    """The decryptor's key pair; only it can decrypt, and it decrypts only the verified aggregate."""

    def __init__(self, ctx: ts.Context, params: HEParams):
        if not ctx.has_secret_key():
            raise HEKeyError("a decryptor key needs a secret key")
        self._ctx, self.params = ctx, params
        pub = ctx.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False)
        self._public = PublicContext.decode(
            _HDR.pack(MAGIC, VERSION, TYPE_CONTEXT) + params.encode() + len(pub).to_bytes(4, "big") + pub, params)

    @classmethod
    def generate(cls, params: HEParams = DEFAULT_PARAMS) -> "DecryptorKey":
        """A fresh key pair (no Galois or relinearization keys: a weighted sum needs neither)."""
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=params.poly_modulus_degree,
                         coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes))
        ctx.global_scale = 2.0**params.scale_bits
        return cls(ctx, params)

    def public_context(self) -> PublicContext:
        return self._public

    def to_bytes(self) -> bytes:
        """The secret context (SECRET: store encrypted, never pin it)."""
        return self.params.encode() + self._ctx.serialize(save_public_key=True, save_secret_key=True,
                                                         save_galois_keys=False, save_relin_keys=False)

    @classmethod
    def from_bytes(cls, data: bytes) -> "DecryptorKey":
        data = bytes(data)
        params = HEParams.decode(data[:7])
        if len(data) - 7 > 2 * max_context_bytes(params):
            raise HEFormatError("secret context exceeds its size bound")
        try:
            ctx = ts.context_from(data[7:])
        except (ValueError, RuntimeError, TypeError) as e:
            raise HEFormatError(f"not a TenSEAL context: {e}") from e
        _check_params(ctx, params)
        return cls(ctx, params)

    def decrypt(self, ev: EncryptedVector) -> np.ndarray:
        """Decrypt one ciphertext vector (float64, rounded to a 2^-20 grid).  Prefer
        :meth:`decrypt_aggregate`, which first checks that ``ev`` is the aggregate."""
        pub = self._public
        if not isinstance(ev, EncryptedVector) or ev.context_digest != pub.digest:
            raise HEKeyError("the ciphertext was not made under this decryptor's public context")
        lengths = _chunk_lengths(ev.length, self.params.slots)
        if len(lengths) != len(ev.chunks):
            raise HEFormatError(f"{len(ev.chunks)} chunks for {ev.length} values")
        out = np.empty(ev.length, dtype=np.float64)
        pos = 0
        for k, (blob, m) in enumerate(zip(ev.chunks, lengths)):
            v = _load_chunk(self._ctx, self.params, blob, m, ev.level, k)
            out[pos:pos + m] = v.decrypt()
            pos += m
        return np.round(out * 2.0**OUTPUT_FRAC_BITS) / 2.0**OUTPUT_FRAC_BITS

    def decrypt_aggregate(self, inputs: Sequence[EncryptedVector], weights: Sequence[float],
                          aggregate: EncryptedVector, *, min_inputs: int = 2) -> np.ndarray:
        """Recompute ``weighted_sum(inputs, weights)``, require it to equal ``aggregate``
        byte for byte and to combine at least ``min_inputs`` distinct inputs, then decrypt.

        This stops a coordinator from having one node's ciphertext decrypted (alone, or
        with a negligible weight on the others' inputs is still possible: the plan's weight
        rule, e.g. sample counts committed on chain, is what the caller checks ``weights``
        against)."""
        digests = {v.digest for v in inputs}
        if len(digests) < max(min_inputs, 1) or len(digests) != len(inputs):
            raise HEProtocolError(f"the aggregate must combine at least {min_inputs} distinct inputs, got "
                                  f"{len(digests)} distinct of {len(inputs)}")
        expected = self._public.weighted_sum(inputs, weights)
        if expected.encode() != aggregate.encode():
            raise HEProtocolError("the ciphertext to decrypt is not the weighted sum of the committed inputs")
        return self.decrypt(aggregate)
