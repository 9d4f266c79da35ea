"""Round parameters, the neighbour graph and the fixed-point ring encoding.

One :class:`SecAggConfig` describes one secure-aggregation round completely:
every party derives the same neighbour graph, Shamir share indices, ring and
precision from it, and every key derivation and message is bound to its
SHA-256 (:attr:`SecAggConfig.digest`).  It has a canonical byte encoding so the
lead can pin it and put its hash on chain.

Fixed-point encoding and overflow
=================================

Inputs live in the ring ``Z_{2^k}`` with ``k = ring_bits`` (32 or 64).  A
float32 vector ``x`` is encoded coordinate-wise as::

    q = rint(clip(x, -C, C) * 2^f)        (round half to even, in float64)
    e = q mod 2^k                         (two's complement)

with ``C = clip`` and ``f = frac_bits``.  Multiplying a float32 by a power of
two in float64 is exact, so the encoding is bit-for-bit the same on every
machine.  Per client and coordinate the rounding error is at most ``2^-(f+1)``
(plus the clipping, which only changes values outside ``[-C, C]``).

Overflow: each encoded value satisfies ``|q| <= Q = round(C * 2^f)``.  The sum
of ``m`` survivors satisfies ``|sum q| <= m * Q``; it decodes correctly
(signed interpretation of the ring element) iff ``m * Q <= 2^(k-1) - 1``.
Since ``m <= n_clients``, the config requires::

    n_clients * round(clip * 2^frac_bits) <= 2^(ring_bits - 1) - 1

and raises :class:`SecAggConfigError` otherwise.  The decoded sum then differs
from the exact sum of the clipped float inputs by at most ``m * 2^-(f+1)``
per coordinate, and the mean by at most ``2^-(f+1)``.

Defaults (``ring_bits=32, frac_bits=16, clip=8``): ``Q = 2^19``, so up to
``2^31 / 2^19 - 1 = 4095`` clients; precision ``2^-17 ~ 7.6e-6`` per
coordinate of the mean; 4 bytes per parameter on the wire (as float32).
With ``ring_bits=64, frac_bits=32, clip=2^15``: ``Q = 2^47``, up to
``2^16 - 1`` clients (capped at :data:`MAX_CLIENTS`), precision ``1.2e-10``,
8 bytes per parameter.

For FedAvg-style weighting, a client scales its update by its weight before
encoding (and the plan chooses ``clip`` for the *weighted* values), or appends
its weight as one more coordinate so the sum carries ``sum w_i``; the ring
does not care.

Neighbour graph (SecAgg+)
=========================

With ``degree == n_clients - 1`` every client is every other's neighbour:
this is SecAgg (Bonawitz et al., CCS 2017).  With an even ``degree`` below
that, clients are the nodes of a Harary graph ``H(degree, n)`` whose node order
is a permutation drawn from ``round_seed``: each client is joined to the
``degree / 2`` clients on either side of it on that ring; masks and shares only
flow along edges (SecAgg+, Bell et al., CCS 2020).  The permutation is a
Fisher-Yates shuffle driven by AES-256-CTR keyed with
``HKDF-SHA256(round_seed, info="fedchain/secagg/v1/graph" || n)``, with
rejection sampling (no modulo bias), so everyone derives the same graph.
``round_seed`` should be unpredictable until the participant list is fixed (a
block hash after the registration deadline, say): a server that could choose
the graph could try to isolate a victim among colluders.

Each client ``i``'s secrets are Shamir-shared among its *holders*: its
neighbours and itself, ``sorted(N(i) + {i})``; the holder at position ``p``
(0-based) gets the share with x-coordinate ``p + 1``.  ``threshold`` shares
reconstruct.  With the full graph this means ``threshold`` survivors suffice.

:func:`choose_parameters` picks ``degree`` and ``threshold`` from ``n``, an
assumed fraction of colluding clients and a dropout rate, following the
analysis of Bell et al. (statistical security 2^-40, failure 2^-20): the
smallest even degree such that the honest survivors stay connected and a
threshold exists between "more than the colluders among any client's
neighbours" and "at most the survivors among them", each with the target
probability (hypergeometric tails, union bound over clients); it falls back to
the full graph when no sparse degree qualifies (always for a few dozen clients).
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedchain.secagg.errors import SecAggConfigError, SecAggFormatError, SecAggInputError, SecAggVersionError

__all__ = [
    "MAGIC",
    "VERSION",
    "MAX_CLIENTS",
    "MAX_VECTOR_LENGTH",
    "RING_BITS",
    "SecAggConfig",
    "choose_parameters",
    "encode_vector",
    "decode_vector",
    "ring_dtype",
]

MAGIC = b"FCSA"
VERSION = 1
MAX_CLIENTS = 4096
MAX_VECTOR_LENGTH = 1 << 28
RING_BITS = (32, 64)
TYPE_CONFIG = 0
_CONFIG_STRUCT = struct.Struct(">4sBB32s32sHHHIBBd")
CONFIG_SIZE = _CONFIG_STRUCT.size


def ring_dtype(ring_bits: int) -> np.dtype:
    """The little-endian unsigned numpy dtype holding ring elements."""
    return np.dtype("<u4") if ring_bits == 32 else np.dtype("<u8")


@dataclass(frozen=True)
class SecAggConfig:
    """Everything that fixes one secure-aggregation round.

    Args:
        round_id: 32 bytes naming the round (the lead derives it from chain id,
            contract, proposal and round); binds every key and message.
        round_seed: 32 public bytes, unpredictable until the participants are
            fixed; drives the neighbour graph.
        n_clients: participants, with ids ``1..n_clients`` (the lead maps them,
            e.g. sorted member addresses); 2 .. :data:`MAX_CLIENTS`.
        threshold: Shamir threshold ``t``: shares needed to reconstruct a
            client's secrets, and survivors needed (full graph) to finish.
            ``2 <= t <= degree + 1``.
        degree: neighbours per client; ``n_clients - 1`` for the full graph
            (SecAgg), an even number below it for SecAgg+.
        vector_length: coordinates per input, 1 .. :data:`MAX_VECTOR_LENGTH`.
        ring_bits: 32 or 64 (``Z_{2^32}`` or ``Z_{2^64}``).
        frac_bits: fixed-point fractional bits ``f`` (precision ``2^-f``).
        clip: inputs are clipped to ``[-clip, clip]`` before encoding.
    """

    round_id: bytes
    round_seed: bytes
    n_clients: int
    threshold: int
    degree: int
    vector_length: int
    ring_bits: int = 32
    frac_bits: int = 16
    clip: float = 8.0

    def __post_init__(self) -> None:
        for name in ("round_id", "round_seed"):
            v = getattr(self, name)
            if not isinstance(v, (bytes, bytearray)) or len(v) != 32:
                raise SecAggConfigError(f"{name} must be 32 bytes")
            object.__setattr__(self, name, bytes(v))
        for name in ("n_clients", "threshold", "degree", "vector_length", "ring_bits", "frac_bits"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise SecAggConfigError(f"{name} must be an integer, got {v!r}")
        n, t, k = self.n_clients, self.threshold, self.degree
        if not 2 <= n <= MAX_CLIENTS:
            raise SecAggConfigError(f"n_clients must be in 2..{MAX_CLIENTS}, got {n}")
        if not (k == n - 1 or (2 <= k < n - 1 and k % 2 == 0)):
            raise SecAggConfigError(
                f"degree must be n_clients - 1 = {n - 1} (full graph) or an even number in 2..{n - 2}, got {k}"
            )
        if not 2 <= t <= k + 1:
            raise SecAggConfigError(f"threshold must be in 2..degree + 1 = {k + 1}, got {t}")
        if not 1 <= self.vector_length <= MAX_VECTOR_LENGTH:
            raise SecAggConfigError(f"vector_length must be in 1..{MAX_VECTOR_LENGTH}, got {self.vector_length}")
        if self.ring_bits not in RING_BITS:
            raise SecAggConfigError(f"ring_bits must be one of {RING_BITS}, got {self.ring_bits}")
        if not 0 <= self.frac_bits <= self.ring_bits - 2:
            raise SecAggConfigError(f"frac_bits must be in 0..{self.ring_bits - 2}, got {self.frac_bits}")
        c = self.clip
        if not isinstance(c, (int, float)) or isinstance(c, bool) or not math.isfinite(c) or c <= 0:
            raise SecAggConfigError(f"clip must be a positive finite number, got {c!r}")
        object.__setattr__(self, "clip", float(c))
        q = self.max_encoded
        if q > 1 << 52:
            raise SecAggConfigError(f"clip * 2^frac_bits = {q} exceeds 2^52 (not exact in float64)")
        if n * q > (1 << (self.ring_bits - 1)) - 1:
            raise SecAggConfigError(
                f"overflow: n_clients * round(clip * 2^frac_bits) = {n} * {q} = {n * q} exceeds "
                f"2^{self.ring_bits - 1} - 1; lower clip or frac_bits, or use ring_bits=64"
            )

    # ----------------------------------------------------------------- encoding

    def encode(self) -> bytes:
        """Canonical bytes (90 bytes, version 1, big-endian)."""
        return _CONFIG_STRUCT.pack(
            MAGIC, VERSION, TYPE_CONFIG, self.round_id, self.round_seed, self.n_clients, self.threshold,
            self.degree, self.vector_length, self.ring_bits, self.frac_bits, self.clip,
        )

    @classmethod
    def decode(cls, data: bytes) -> "SecAggConfig":
        """Parse :meth:`encode` output; :class:`SecAggFormatError` on anything else."""
        data = bytes(data)
        if len(data) != CONFIG_SIZE:
            raise SecAggFormatError(f"a config is {CONFIG_SIZE} bytes, got {len(data)}")
        magic, version, typ, rid, seed, n, t, k, length, rb, fb, clip = _CONFIG_STRUCT.unpack(data)
        if magic != MAGIC:
            raise SecAggFormatError("not a secure-aggregation config (bad magic)")
        if version != VERSION:
            raise SecAggVersionError(f"config format version {version} is not supported (expected {VERSION})")
        if typ != TYPE_CONFIG:
            raise SecAggFormatError(f"message type {typ} is not a config")
        try:
            cfg = cls(rid, seed, n, t, k, length, rb, fb, clip)
        except SecAggConfigError as e:
            raise SecAggFormatError(f"invalid config: {e}") from e
        if cfg.encode() != data:  # e.g. -0.0 or a NaN payload: one config, one encoding
            raise SecAggFormatError("config bytes are not canonical")
        return cfg

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 of :meth:`encode`; binds every key derivation and message to this round."""
        return hashlib.sha256(self.encode()).digest()

    # ----------------------------------------------------------------- numbers

    @property
    def max_encoded(self) -> int:
        """``round(clip * 2^frac_bits)``: the largest magnitude of one encoded coordinate."""
        return int(np.rint(np.float64(self.clip) * np.float64(2.0**self.frac_bits)))

    @property
    def ring_bytes(self) -> int:
        return self.ring_bits // 8

    @property
    def dtype(self) -> np.dtype:
        return ring_dtype(self.ring_bits)

    @property
    def full_graph(self) -> bool:
        return self.degree == self.n_clients - 1

    @property
    def ids(self) -> range:
        return range(1, self.n_clients + 1)

    # ----------------------------------------------------------------- graph

    @cached_property
    def _positions(self) -> tuple[int, ...]:
        """Client id at each position of the Harary ring (a seeded permutation)."""
        perm = list(self.ids)
        if self.full_graph:
            return tuple(perm)
        key = HKDF(hashes.SHA256(), 32, salt=None,
                   info=b"fedchain/secagg/v1/graph" + self.n_clients.to_bytes(2, "big")).derive(self.round_seed)
        words = _Words(key)
        for i in range(len(perm) - 1, 0, -1):  # Fisher-Yates
            j = words.below(i + 1)
            perm[i], perm[j] = perm[j], perm[i]
        return tuple(perm)

    @cached_property
    def _neighbors(self) -> dict[int, tuple[int, ...]]:
        n = self.n_clients
        if self.full_graph:
            return {i: tuple(j for j in self.ids if j != i) for i in self.ids}
        pos = self._positions
        out = {}
        for p, i in enumerate(pos):
            nb = {pos[(p + d) % n] for d in range(1, self.degree // 2 + 1)}
            nb |= {pos[(p - d) % n] for d in range(1, self.degree // 2 + 1)}
            out[i] = tuple(sorted(nb))
        return out

    def check_id(self, i: object, what: str = "client id") -> int:
        if not isinstance(i, int) or isinstance(i, bool) or not 1 <= i <= self.n_clients:
            raise SecAggConfigError(f"{what} must be in 1..{self.n_clients}, got {i!r}")
        return i

    def neighbors(self, i: int) -> tuple[int, ...]:
        """Sorted neighbours of client ``i`` (everyone else on the full graph)."""
        return self._neighbors[self.check_id(i)]

    def holders(self, i: int) -> tuple[int, ...]:
        """Sorted holders of client ``i``'s shares: its neighbours and itself."""
        return tuple(sorted(self.neighbors(i) + (i,)))

    def share_index(self, dealer: int, holder: int) -> int:
        """Shamir x-coordinate (1-based) of ``holder``'s share of ``dealer``'s secrets."""
        h = self.holders(dealer)
        try:
            return h.index(holder) + 1
        except ValueError:
            raise SecAggConfigError(f"client {holder} holds no share of client {dealer}") from None


class _Words:
    """Uniform integers from an AES-256-CTR keystream (rejection sampling)."""

    def __init__(self, key: bytes):
        self._enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        self._buf = b""

    def _u32(self) -> int:
        if not self._buf:
            self._buf = self._enc.update(bytes(4096))
        w, self._buf = self._buf[:4], self._buf[4:]
        return int.from_bytes(w, "big")

    def below(self, m: int) -> int:
        limit = (1 << 32) - ((1 << 32) % m)
        while True:
            w = self._u32()
            if w < limit:
                return w % m


# --------------------------------------------------------------------------- fixed point


def encode_vector(x: object, cfg: SecAggConfig) -> tuple[np.ndarray, int]:
    """Encode a float vector into the ring; returns ``(elements, n_clipped)``.

    ``x`` must be one-dimensional (or anything numpy flattens to exactly
    ``cfg.vector_length`` values after ``np.asarray(x).reshape(-1)``), of a
    floating or integer dtype, with no NaN or infinity
    (:class:`SecAggInputError`): clipping would hide such a bug.
    """
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise SecAggInputError(f"input must be a float vector, got dtype {a.dtype}")
    a = a.reshape(-1)
    if a.size != cfg.vector_length:
        raise SecAggInputError(f"input has {a.size} values, the round expects {cfg.vector_length}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise SecAggInputError("input contains NaN or infinity")
    clipped = int(np.count_nonzero(np.abs(a) > cfg.clip))
    q = np.rint(np.clip(a, -cfg.clip, cfg.clip) * 2.0**cfg.frac_bits).astype(np.int64)
    if cfg.ring_bits == 64:
        return q.view(np.uint64).astype("<u8"), clipped
    return (q & 0xFFFFFFFF).astype("<u4"), clipped


def decode_vector(elements: np.ndarray, cfg: SecAggConfig) -> np.ndarray:
    """Signed fixed-point decode of ring elements (e.g. a sum) to float64."""
    e = np.asarray(elements, dtype=cfg.dtype)
    signed = e.view("<i4" if cfg.ring_bits == 32 else "<i8")
    return signed.astype(np.float64) / 2.0**cfg.frac_bits


# --------------------------------------------------------------------------- parameter choice


def _log_hypergeom_pmf(population: int, successes: int, draws: int, k: int) -> float:
    if k < max(0, draws - (population - successes)) or k > min(draws, successes):
        return -math.inf
    lc = lambda a, b: math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)  # noqa: E731
    return lc(successes, k) + lc(population - successes, draws - k) - lc(population, draws)


def _hypergeom_tails(population: int, successes: int, draws: int) -> tuple[list[float], list[float]]:
    """``(cdf, sf)`` with ``cdf[x] = P[X <= x]`` and ``sf[x] = P[X > x]``, x = 0..draws,
    each summed from its own end so that tiny tails keep their precision."""
    pmf = [math.exp(_log_hypergeom_pmf(population, successes, draws, x)) for x in range(draws + 1)]
    cdf, acc = [], 0.0
    for p in pmf:
        acc += p
        cdf.append(acc)
    sf, acc = [0.0] * (draws + 1), 0.0
    for x in range(draws, 0, -1):
        acc += pmf[x]
        sf[x - 1] = acc
    return cdf, sf


def choose_parameters(
    n_clients: int,
    *,
    adversarial_rate: float = 1 / 3,
    dropout_rate: float = 0.1,
    malicious_server: bool = True,
    security_bits: int = 40,
    correctness_bits: int = 20,
) -> tuple[int, int]:
    """``(degree, threshold)`` for ``n_clients`` under the stated threat model.

    ``adversarial_rate``: fraction of clients that may collude with the server
    (``floor(rate * n)`` clients); ``dropout_rate``: fraction that may vanish;
    ``malicious_server``: also resist a server that lies about who dropped (the
    chain already gives everyone one view, so this is defence in depth).

    Full graph: ``t`` is the smallest value above ``a`` colluders (semi-honest)
    or above ``(n + a) / 2`` (malicious server; Bonawitz et al.'s ``t > 2n/3``
    for ``a = n/3``), and must leave room for the dropouts:
    ``t <= n - ceil(dropout_rate * n)``.  Sparse: see the module docstring.
    Raises :class:`SecAggConfigError` when no parameters fit.
    """
    n = n_clients
    if not isinstance(n, int) or not 2 <= n <= MAX_CLIENTS:
        raise SecAggConfigError(f"n_clients must be in 2..{MAX_CLIENTS}, got {n!r}")
    if not 0 <= adversarial_rate < 1 or not 0 <= dropout_rate < 1:
        raise SecAggConfigError("adversarial_rate and dropout_rate must be in [0, 1)")
    eps = 1e-12
    bad = math.floor((adversarial_rate + eps) * n)
    drop = math.floor((dropout_rate + eps) * n)
    log_sec = -(security_bits + 1) * math.log(2)
    for k in range(2, n - 1, 2):
        # P[honest survivors disconnected]: two runs of k/2 consecutive bad-or-dropped
        # clients on the ring; union bound over the pairs of places.
        removed = bad + drop
        if k <= removed:
            log_p = (math.log(n) + math.log(max(n - k - 1, 1)) - math.log(2) + math.lgamma(removed + 1)
                     + math.lgamma(n - k + 1) - math.lgamma(n + 1) - math.lgamma(removed - k + 1))
            if log_p >= log_sec:
                continue
        _, adv_sf = _hypergeom_tails(n, bad, k)
        # t1: colluders among k neighbours exceed t1 with probability <= 2^-(sec+1) / n
        t1 = next(x for x in range(k + 1) if adv_sf[x] <= 2.0 ** -(security_bits + 1) / n)
        surv_cdf, _ = _hypergeom_tails(n, n - drop, k)
        # t2: survivors among k neighbours fall below t2 with probability <= 2^-corr / n
        ok = [x for x in range(1, k + 1) if surv_cdf[x - 1] <= 2.0**-correctness_bits / n]
        if not ok:
            continue
        t2 = max(ok)
        if malicious_server:
            t1 = max(t1, math.ceil((t1 + k) / 2))
        if t1 + 1 <= t2:
            return k, max(t1 + 1, 2)
    t_min = (bad + 1) if not malicious_server else (n + bad) // 2 + 1
    t_min = max(t_min, 2)
    t_max = n - math.ceil(dropout_rate * n - eps)
    if t_min > t_max:
        raise SecAggConfigError(
            f"no threshold for {n} clients: at least {t_min} to resist {bad} colluders, "
            f"at most {t_max} to survive {dropout_rate:.0%} dropouts"
        )
    return n - 1, t_min
