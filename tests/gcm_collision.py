"""Test helper: one AES-GCM ciphertext that authenticates under two different keys.

AES-GCM is not key-committing: GHASH is linear in the ciphertext, so with one
16-byte block left free, the tags under two keys can be made equal by solving one
linear equation in GF(2^128) (NIST SP 800-38D's field, bit-reflected). This is the
primitive of the "one envelope, two contents" attack the envelope's key
commitment defends against; the tests use it to craft that attack for real.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_R = 0xE1 << 120


def _mul(x: int, y: int) -> int:
    z, v = 0, y
    for i in range(127, -1, -1):
        if (x >> i) & 1:
            z ^= v
        v = (v >> 1) ^ _R if v & 1 else v >> 1
    return z


def _pow(x: int, e: int) -> int:
    result = 1 << 127  # the field's 1 (bit-reflected)
    while e:
        if e & 1:
            result = _mul(result, x)
        x = _mul(x, x)
        e >>= 1
    return result


def _inv(x: int) -> int:
    return _pow(x, (1 << 128) - 2)


def _aes_block(key: bytes, block: bytes) -> int:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return int.from_bytes(enc.update(block) + enc.finalize(), "big")


def _blocks(data: bytes) -> list[int]:
    data = data + b"\0" * (-len(data) % 16)
    return [int.from_bytes(data[i : i + 16], "big") for i in range(0, len(data), 16)]


def _ghash(h: int, aad: bytes, ct: bytes) -> int:
    x = 0
    lengths = (len(aad) * 8).to_bytes(8, "big") + (len(ct) * 8).to_bytes(8, "big")
    for b in _blocks(aad) + _blocks(ct) + [int.from_bytes(lengths, "big")]:
        x = _mul(x ^ b, h)
    return x


def _tag_parts(key: bytes, nonce: bytes, aad: bytes, ct: bytes) -> tuple[int, int]:
    """(GHASH xor E_K(J0), H) of ``ct`` under ``key``."""
    h = _aes_block(key, b"\0" * 16)
    s = _aes_block(key, nonce + b"\0\0\0\1")
    return _ghash(h, aad, ct) ^ s, h


def collide(key1: bytes, key2: bytes, nonce: bytes, aad: bytes, plaintext1: bytes) -> bytes:
    """``ciphertext || tag`` that AES-GCM decrypts under both keys (plaintext1 under key1,
    except its last 16-byte block, which is spent on the collision)."""
    assert len(plaintext1) % 16 == 0 and plaintext1 and len(nonce) == 12
    ct = bytearray(AESGCM(key1).encrypt(nonce, plaintext1, aad)[:-16])
    j = len(ct) // 16 - 1  # the free block: the last one
    ct[16 * j :] = b"\0" * 16
    g1, h1 = _tag_parts(key1, nonce, aad, bytes(ct))
    g2, h2 = _tag_parts(key2, nonce, aad, bytes(ct))
    e = len(_blocks(aad)) + len(ct) // 16 + 1 - (len(_blocks(aad)) + j + 1) + 1  # power of H on block j
    free = _mul(g1 ^ g2, _inv(_pow(h1, e) ^ _pow(h2, e)))
    ct[16 * j :] = free.to_bytes(16, "big")
    g1, _ = _tag_parts(key1, nonce, aad, bytes(ct))
    return bytes(ct) + g1.to_bytes(16, "big")
