"""Primitives of secure aggregation: key derivation, the mask PRG, share encryption, Shamir.

Everything comes from maintained libraries; nothing here is a new primitive.

* **Key agreement**: X25519 (``cryptography``).  Each client makes two fresh
  key pairs per round: a *channel* pair (encrypting shares to their holders)
  and a *mask* pair (pairwise masks).  They must be fresh: when a client drops,
  the others reconstruct its mask private key, so a long-term key (the member's
  registered X25519 key) must never play that role.  Separate pairs keep a
  revealed mask key from opening the shares the dropped client sent or got.
* **KDF**: HKDF-SHA256, every ``info`` starting ``fedchain/secagg/v1/<use>``
  followed by the round config digest and the parties, so no derived key
  serves two rounds, two uses or two pairs.
* **PRG**: AES-256-CTR keystream with an all-zero initial counter block, read
  as little-endian ``uint32``/``uint64`` ring elements.  Each key is derived
  for exactly one stream, so the fixed IV is safe.  The ring is ``Z_{2^k}``, so
  the keystream words are exactly uniform (no modular reduction bias).
* **Share encryption**: AES-256-GCM under ``HKDF(X25519(c_i, C_j), info=
  "share" || digest || dealer || recipient || C_dealer || C_recipient)``: one
  key per direction per round, used once, hence a fixed zero nonce.  The
  associated data is the share's header (version, round digest, dealer,
  recipient), so a share moved to another round, dealer or recipient slot fails.
* **Self-mask commitment**: ``SHA-256("fedchain/secagg/v1/commit-b" || digest
  || i || b_i)``, published with the shares.  ``b_i`` is 32 uniform bytes, so the
  commitment hides it; it lets the server (and any replayer) check a
  reconstructed ``b_i``.  The mask key has its own check: the reconstructed
  private key must give the advertised public key.
* **Shamir secret sharing**: PyCryptodome's ``Crypto.Protocol.SecretSharing.
  Shamir`` (GF(2^128), shares of 16-byte secrets, coefficients from the OS
  RNG).  It is maintained, used widely, and spares us finite-field code.  A
  32-byte secret is split as two independent 16-byte halves (each its own
  random polynomial; a holder's share is the two 16-byte values side by side).
  Sharing each half with an independent polynomial gives each half the same
  ``t``-of-``m`` secrecy, and the halves of one holder travel together, so the
  reconstruction threshold of the whole is still ``t``.  Its ``combine`` takes
  whatever points it is given, so callers pass exactly ``t`` shares and verify
  the result against the commitment / public key.
"""

from __future__ import annotations

import hashlib

import numpy as np
from Crypto.Protocol.SecretSharing import Shamir
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from fedchain.secagg.errors import SecAggAuthenticationError, SecAggProtocolError

__all__ = [
    "SECRET_SIZE",
    "SHARE_SIZE",
    "prg",
    "check_public_key",
    "pairwise_seed",
    "self_mask_seed",
    "commit_self_mask",
    "channel_key",
    "seal_share",
    "open_share",
    "split_secret",
    "combine_secret",
    "x25519_public",
    "x25519_private_bytes",
    "public_from_private",
]

SECRET_SIZE = 32
SHARE_SIZE = 32  # two 16-byte Shamir values
_INFO = b"fedchain/secagg/v1/"
_ZERO_NONCE = bytes(12)
_CHUNK = 1 << 22  # keystream bytes generated per call (bounds peak memory)


def _u16(i: int) -> bytes:
    return i.to_bytes(2, "big")


def _hkdf(ikm: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(ikm)


def prg(seed: bytes, length: int, dtype: np.dtype) -> np.ndarray:
    """``length`` ring elements of ``dtype`` from AES-256-CTR keyed by ``seed``."""
    dtype = np.dtype(dtype)
    out = np.empty(length, dtype=dtype)
    enc = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    raw = out.view(np.uint8)
    zeros = bytes(min(_CHUNK, raw.size))
    for start in range(0, raw.size, _CHUNK):
        end = min(start + _CHUNK, raw.size)
        raw[start:end] = np.frombuffer(enc.update(zeros[: end - start]), dtype=np.uint8)
    return out


def x25519_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def x25519_private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def public_from_private(secret: bytes) -> bytes:
    return x25519_public(X25519PrivateKey.from_private_bytes(secret))


def _exchange(private: X25519PrivateKey | bytes, public: bytes) -> bytes:
    if isinstance(private, bytes):
        private = X25519PrivateKey.from_private_bytes(private)
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as e:  # a low-order point gives the all-zero secret
        raise SecAggProtocolError(f"X25519 key agreement failed: {e}") from e


_PROBE = X25519PrivateKey.from_private_bytes(hashlib.sha256(b"fedchain/secagg/v1/probe").digest())


def check_public_key(public: bytes, what: str) -> None:
    """Refuse a public key whose agreement gives the all-zero secret (a low-order point)."""
    try:
        _PROBE.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as e:
        raise SecAggProtocolError(f"{what} is not a usable X25519 public key: {e}") from e


def pairwise_seed(digest: bytes, own_id: int, own_private: X25519PrivateKey | bytes, own_public: bytes,
                  peer_id: int, peer_public: bytes) -> bytes:
    """The PRG seed both members of a pair derive for their pairwise mask."""
    shared = _exchange(own_private, peer_public)
    (a, pa), (b, pb) = sorted([(own_id, own_public), (peer_id, peer_public)])
    return _hkdf(shared, _INFO + b"pairwise" + digest + _u16(a) + _u16(b) + pa + pb)


def self_mask_seed(digest: bytes, client: int, b: bytes) -> bytes:
    return _hkdf(b, _INFO + b"self" + digest + _u16(client))


def commit_self_mask(digest: bytes, client: int, b: bytes) -> bytes:
    return hashlib.sha256(_INFO + b"commit-b" + digest + _u16(client) + b).digest()


def channel_key(digest: bytes, dealer: int, dealer_public: bytes, recipient: int, recipient_public: bytes,
                own_private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """AEAD key for shares going from ``dealer`` to ``recipient`` (either side computes it)."""
    shared = _exchange(own_private, peer_public)
    return _hkdf(shared, _INFO + b"share" + digest + _u16(dealer) + _u16(recipient) + dealer_public + recipient_public)


def seal_share(key: bytes, plaintext: bytes, ad: bytes) -> bytes:
    return AESGCM(key).encrypt(_ZERO_NONCE, plaintext, ad)


def open_share(key: bytes, ciphertext: bytes, ad: bytes, what: str) -> bytes:
    try:
        return AESGCM(key).decrypt(_ZERO_NONCE, ciphertext, ad)
    except InvalidTag:
        raise SecAggAuthenticationError(f"{what} did not authenticate (tampered, re-addressed or for another round)") from None


def split_secret(secret: bytes, threshold: int, holders: int) -> list[bytes]:
    """Shares of a 32-byte secret for x-coordinates ``1..holders`` (list index + 1)."""
    if len(secret) != SECRET_SIZE:
        raise ValueError("secrets are 32 bytes")
    lo = Shamir.split(threshold, holders, secret[:16])
    hi = Shamir.split(threshold, holders, secret[16:])
    return [a[1] + b[1] for a, b in zip(lo, hi)]


def combine_secret(shares: list[tuple[int, bytes]]) -> bytes:
    """Interpolate a 32-byte secret from ``(x, share)`` points (exactly the threshold's worth)."""
    lo = Shamir.combine([(x, s[:16]) for x, s in shares])
    hi = Shamir.combine([(x, s[16:]) for x, s in shares])
    return lo + hi
