"""Encrypted envelope: round trips, context binding, sender authentication, tampering, streaming."""

from __future__ import annotations

import hashlib
import io
import os
import time
import tracemalloc

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedchain import envelope as E
from fedchain.envelope import (
    EnvelopeAuthenticationError,
    EnvelopeContext,
    EnvelopeContextMismatch,
    EnvelopeCorrupt,
    EnvelopeError,
    EnvelopeFormatError,
    EnvelopeNotForRecipient,
    EnvelopeSenderMismatch,
    EnvelopeTruncated,
    EnvelopeVersionError,
)
from fedchain.errors import FedchainError

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ADDR_A = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
ADDR_B = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
CS = 4096  # small chunks: many chunks with little data

# header field offsets (see the module docstring)
OFF_ROUND = 9 + 84
OFF_SENDER = 9 + 116
OFF_LENGTH = 149
OFF_SENDER_PUB = 201


def ctx_for(round_=3, sender=ADDR_A, **kw) -> EnvelopeContext:
    base = dict(chain_id=31337, contract=CONTRACT, proposal_id=7, round=round_, sender=sender)
    base.update(kw)
    return EnvelopeContext(**base)


@pytest.fixture(scope="module")
def keys():
    return {n: X25519PrivateKey.generate() for n in ("a", "b", "coord", "auditor", "stranger")}


def pub(k) -> bytes:
    return E.public_bytes(k)


def seal_a(keys, payload, ctx=None, recipients=("coord",), **kw):
    return E.seal(payload, ctx or ctx_for(), keys["a"], [pub(keys[r]) for r in recipients], **kw)


def open_coord(keys, blob, ctx=None, sender="a"):
    return E.open_(blob, ctx or ctx_for(), keys["coord"], pub(keys[sender]))


def patched(blob: bytes, offset: int, new: bytes) -> bytes:
    return blob[:offset] + new + blob[offset + len(new) :]


def flip(blob: bytes, i: int) -> bytes:
    return blob[:i] + bytes([blob[i] ^ 0x01]) + blob[i + 1 :]


class NonSeekable(io.RawIOBase):
    """A pipe-like reader (no seek, no length)."""

    def __init__(self, data: bytes):
        self._b = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, m):
        return self._b.readinto(m)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("n", [0, 1, CS - 1, CS, CS + 1, 3 * CS, 5 * CS + 17])
def test_round_trip_bytes_and_stream(keys, n):
    payload = os.urandom(n)
    blob = seal_a(keys, payload, chunk_size=CS)
    assert len(blob) == E.sealed_size(n, 1, CS)
    assert open_coord(keys, blob) == payload
    out = io.BytesIO()
    assert E.open_stream(io.BytesIO(blob), out, ctx_for(), keys["coord"], pub(keys["a"])) == n
    assert out.getvalue() == payload
    # stream sealing, known length (seekable) and unknown length (pipe)
    for src in (io.BytesIO(payload), NonSeekable(payload)):
        dst = io.BytesIO()
        written = E.seal_stream(src, dst, ctx_for(), keys["a"], [pub(keys["coord"])], chunk_size=CS)
        assert written == len(dst.getvalue())
        assert open_coord(keys, dst.getvalue()) == payload
        assert E.open_(io.BytesIO(dst.getvalue()), ctx_for(), keys["coord"], pub(keys["a"])) == payload
    assert E.read_header(dst.getvalue()).length is None


def test_unseal_alias_and_fresh_randomness(keys):
    b1, b2 = seal_a(keys, b"same"), seal_a(keys, b"same")
    assert b1 != b2
    assert E.unseal(b1, ctx_for(), keys["coord"], pub(keys["a"])) == b"same"


def test_header_is_readable_without_keys(keys):
    blob = seal_a(keys, b"x" * 10, recipients=("coord", "auditor"), chunk_size=CS)
    h = E.read_header(blob)
    assert blob[:4] == b"FCEV" and blob[4] == 1
    assert h.context == ctx_for()
    assert h.chunk_size == CS and h.length == 10
    assert h.sender_public == pub(keys["a"])
    assert h.recipients == (E.fingerprint(keys["coord"]), E.fingerprint(keys["auditor"]))
    assert h.size == 235 + 2 * 56


def test_multi_recipient_coordinator_and_auditor(keys):
    payload = os.urandom(3 * CS + 5)
    blob = seal_a(keys, payload, recipients=("coord", "auditor"), chunk_size=CS)
    ctx = ctx_for()
    assert E.open_(blob, ctx, keys["coord"], pub(keys["a"])) == payload
    assert E.open_(blob, ctx, keys["auditor"], pub(keys["a"])) == payload
    with pytest.raises(EnvelopeNotForRecipient):
        E.open_(blob, ctx, keys["stranger"], pub(keys["a"]))


def test_wrong_recipient(keys):
    blob = seal_a(keys, b"secret update")
    with pytest.raises(EnvelopeNotForRecipient) as ei:
        E.open_(blob, ctx_for(), keys["stranger"], pub(keys["a"]))
    assert E.fingerprint(keys["stranger"]).hex() in str(ei.value)
    with pytest.raises(EnvelopeNotForRecipient):
        E.open_stream(io.BytesIO(blob), io.BytesIO(), ctx_for(), keys["stranger"], pub(keys["a"]))


def test_errors_are_fedchain_errors():
    for cls in (EnvelopeTruncated, EnvelopeCorrupt, EnvelopeVersionError, EnvelopeContextMismatch,
                EnvelopeSenderMismatch, EnvelopeNotForRecipient, EnvelopeAuthenticationError):
        assert issubclass(cls, EnvelopeError) and issubclass(cls, FedchainError)
    assert issubclass(EnvelopeTruncated, EnvelopeCorrupt)


# --------------------------------------------------------------------------- context binding


def test_round3_blob_offered_in_round4(keys):
    blob = seal_a(keys, b"round 3 update", ctx=ctx_for(round_=3))
    with pytest.raises(EnvelopeContextMismatch) as ei:
        open_coord(keys, blob, ctx=ctx_for(round_=4))
    assert "round" in str(ei.value) and "3" in str(ei.value) and "4" in str(ei.value)
    assert len(ei.value.differences) == 1


def test_context_is_cryptographically_bound_not_just_labelled(keys):
    """Rewriting the header's round to 4 does not make a round-3 blob valid for round 4."""
    blob = seal_a(keys, b"round 3 update", ctx=ctx_for(round_=3))
    forged = patched(blob, OFF_ROUND, (4).to_bytes(32, "big"))
    assert E.read_header(forged).context == ctx_for(round_=4)
    with pytest.raises(EnvelopeAuthenticationError):
        open_coord(keys, forged, ctx=ctx_for(round_=4))
    with pytest.raises(EnvelopeAuthenticationError):
        E.open_stream(io.BytesIO(forged), io.BytesIO(), ctx_for(round_=4), keys["coord"], pub(keys["a"]))


@pytest.mark.parametrize(
    "field,value",
    [("chain_id", 1), ("contract", ADDR_B), ("proposal_id", 8), ("round", 2), ("sender", ADDR_B)],
)
def test_every_context_field_matters(keys, field, value):
    blob = seal_a(keys, b"payload")
    with pytest.raises(EnvelopeContextMismatch) as ei:
        open_coord(keys, blob, ctx=ctx_for(**{field: value}) if field != "round" else ctx_for(round_=value))
    assert field in str(ei.value)


def test_blob_from_member_a_claimed_by_member_b(keys):
    """B re-submits A's CID as its own: the coordinator expects sender B with B's registered key."""
    blob = seal_a(keys, b"A's update")
    ctx_b = ctx_for(sender=ADDR_B)
    with pytest.raises(EnvelopeContextMismatch) as ei:
        E.open_(blob, ctx_b, keys["coord"], pub(keys["b"]))
    assert "sender" in str(ei.value)
    # rewrite the header's sender address to B: now the sender *key* differs
    forged = patched(blob, OFF_SENDER, bytes.fromhex(ADDR_B[2:]))
    with pytest.raises(EnvelopeSenderMismatch):
        E.open_(forged, ctx_b, keys["coord"], pub(keys["b"]))
    # rewrite the sender key too: the key wrap no longer authenticates
    forged2 = patched(forged, OFF_SENDER_PUB, pub(keys["b"]))
    with pytest.raises(EnvelopeAuthenticationError):
        E.open_(forged2, ctx_b, keys["coord"], pub(keys["b"]))


def test_sender_cannot_impersonate_another_member(keys):
    """B seals with its own key but claims to be A (A's address and A's public key in the header)."""
    blob = E.seal(b"forged", ctx_for(sender=ADDR_A), keys["b"], [pub(keys["coord"])])
    with pytest.raises(EnvelopeSenderMismatch):  # honest header names B's key
        open_coord(keys, blob, sender="a")
    forged = patched(blob, OFF_SENDER_PUB, pub(keys["a"]))
    with pytest.raises(EnvelopeAuthenticationError):
        open_coord(keys, forged, sender="a")


def test_forger_who_computes_wraps_for_a_claimed_key_is_rejected(keys, monkeypatch):
    """B runs the sealing code end to end claiming A's public key (header, KDF info), without A's secret."""
    real = E.public_bytes

    def lying_public_bytes(k):
        return real(keys["a"]) if k is keys["b"] else real(k)

    monkeypatch.setattr(E, "public_bytes", lying_public_bytes)
    forged = E.seal(b"forged", ctx_for(sender=ADDR_A), keys["b"], [real(keys["coord"])])
    monkeypatch.setattr(E, "public_bytes", real)
    assert E.read_header(forged).sender_public == pub(keys["a"])
    with pytest.raises(EnvelopeAuthenticationError):
        open_coord(keys, forged, sender="a")


def test_context_normalises_addresses_and_validates():
    assert ctx_for(sender=ADDR_A.lower()) == ctx_for(sender=ADDR_A)
    assert ctx_for(sender=ADDR_A.lower()).sender == ADDR_A
    bad_checksum = ADDR_A[:2] + ADDR_A[2:].swapcase()
    for bad in (dict(sender="0x1234"), dict(contract=bad_checksum), dict(chain_id=-1), dict(proposal_id=True),
                dict(chain_id=2**256)):
        with pytest.raises(E.InvalidContext):
            ctx_for(**bad)
    c = ctx_for()
    assert EnvelopeContext.from_bytes(c.to_bytes()) == c


# --------------------------------------------------------------------------- tampering


def test_unknown_version_and_bad_magic(keys):
    blob = seal_a(keys, b"payload")
    with pytest.raises(EnvelopeVersionError) as ei:
        open_coord(keys, patched(blob, 4, b"\x02"))
    assert "version 2" in str(ei.value)
    with pytest.raises(EnvelopeVersionError):
        E.open_stream(io.BytesIO(patched(blob, 4, b"\x09")), io.BytesIO(), ctx_for(), keys["coord"], pub(keys["a"]))
    with pytest.raises(EnvelopeFormatError):
        open_coord(keys, b"PK\x03\x04" + blob[4:])
    with pytest.raises(EnvelopeFormatError):
        open_coord(keys, b"")


@pytest.mark.parametrize("cut", ["boundary", "mid_chunk", "tag", "header", "body_gone"])
def test_truncated_envelope(keys, cut):
    payload = os.urandom(4 * CS)
    blob = seal_a(keys, payload, chunk_size=CS)
    hdr = E.read_header(blob).size
    end = {
        "boundary": len(blob) - (CS + 16),  # whole last chunk removed
        "mid_chunk": len(blob) - 1000,
        "tag": len(blob) - 5,
        "header": hdr - 10,
        "body_gone": hdr,
    }[cut]
    bad = blob[:end]
    with pytest.raises(EnvelopeTruncated):
        open_coord(keys, bad)
    out = io.BytesIO()
    with pytest.raises(EnvelopeTruncated):
        E.open_stream(io.BytesIO(bad), out, ctx_for(), keys["coord"], pub(keys["a"]))


def test_truncated_unknown_length_envelope(keys):
    """Without a declared length, the final-chunk flag still catches a cut at a chunk boundary."""
    payload = os.urandom(4 * CS)
    dst = io.BytesIO()
    E.seal_stream(NonSeekable(payload), dst, ctx_for(), keys["a"], [pub(keys["coord"])], chunk_size=CS)
    blob = dst.getvalue()
    assert E.read_header(blob).length is None
    bad = blob[: len(blob) - (CS + 16)]
    with pytest.raises(EnvelopeTruncated):
        open_coord(keys, bad)
    with pytest.raises(EnvelopeTruncated):
        E.open_stream(io.BytesIO(bad), io.BytesIO(), ctx_for(), keys["coord"], pub(keys["a"]))
    # cut inside a chunk: detected (as corrupt or truncated)
    with pytest.raises(EnvelopeCorrupt):
        open_coord(keys, blob[:-100])


@pytest.mark.parametrize("where", ["first_chunk", "last_chunk", "last_tag", "wrapped_key"])
def test_flipped_ciphertext_byte(keys, where):
    payload = os.urandom(3 * CS + 100)
    blob = seal_a(keys, payload, chunk_size=CS)
    hdr = E.read_header(blob).size
    i = {"first_chunk": hdr + 10, "last_chunk": len(blob) - 50, "last_tag": len(blob) - 1,
         "wrapped_key": hdr - 20}[where]
    bad = flip(blob, i)
    with pytest.raises(EnvelopeCorrupt):
        open_coord(keys, bad)
    with pytest.raises(EnvelopeCorrupt):
        E.open_stream(io.BytesIO(bad), io.BytesIO(), ctx_for(), keys["coord"], pub(keys["a"]))


def test_any_flipped_byte_is_rejected(keys):
    """Flip every header byte and a sample of body bytes: never a successful open."""
    payload = os.urandom(2 * CS + 10)
    blob = seal_a(keys, payload, recipients=("coord", "auditor"), chunk_size=CS)
    hdr = E.read_header(blob).size
    positions = list(range(hdr)) + list(range(hdr, len(blob), 97)) + [len(blob) - 1]
    for i in positions:
        with pytest.raises(EnvelopeError):
            open_coord(keys, flip(blob, i))


def test_reordered_duplicated_and_removed_chunks(keys):
    payload = os.urandom(4 * CS)
    blob = seal_a(keys, payload, chunk_size=CS)
    hdr = E.read_header(blob).size
    c = CS + 16
    chunks = [blob[hdr + i * c : hdr + (i + 1) * c] for i in range(4)]
    head = blob[:hdr]
    swapped = head + chunks[1] + chunks[0] + chunks[2] + chunks[3]
    duplicated = head + chunks[0] + chunks[0] + chunks[2] + chunks[3]
    with pytest.raises(EnvelopeCorrupt):
        open_coord(keys, swapped)
    with pytest.raises(EnvelopeCorrupt):
        open_coord(keys, duplicated)
    # a middle chunk removed, and the declared length patched to match
    removed = head + chunks[0] + chunks[2] + chunks[3]
    removed = patched(removed, OFF_LENGTH, (3 * CS).to_bytes(8, "big"))
    with pytest.raises(EnvelopeCorrupt):
        open_coord(keys, removed)


def test_appended_data(keys):
    blob = seal_a(keys, os.urandom(2 * CS), chunk_size=CS)
    with pytest.raises(EnvelopeCorrupt):
        open_coord(keys, blob + b"\x00")
    with pytest.raises(EnvelopeCorrupt):
        E.open_stream(io.BytesIO(blob + b"junk"), io.BytesIO(), ctx_for(), keys["coord"], pub(keys["a"]))


def test_open_stream_writes_only_authenticated_chunks(keys):
    payload = os.urandom(4 * CS)
    blob = seal_a(keys, payload, chunk_size=CS)
    out = io.BytesIO()
    with pytest.raises(EnvelopeCorrupt):
        E.open_stream(io.BytesIO(flip(blob, len(blob) - 30)), out, ctx_for(), keys["coord"], pub(keys["a"]))
    # only the three authenticated chunks before the damaged one were written
    assert out.getvalue() == payload[: 3 * CS]


# --------------------------------------------------------------------------- streaming / size


class PatternSource(io.RawIOBase):
    """Generates ``size`` pseudo-random bytes on the fly (never held in memory)."""

    def __init__(self, size: int, block: int = 1 << 16):
        self.size, self.pos = size, 0
        self.h = hashlib.sha256()
        self._block = os.urandom(block)

    def readable(self):
        return True

    def readinto(self, m):
        n = min(len(m), self.size - self.pos)
        if n <= 0:
            return 0
        k = 0
        while k < n:
            off = (self.pos + k) % len(self._block)
            step = min(n - k, len(self._block) - off)
            m[k : k + step] = self._block[off : off + step]
            k += step
        self.h.update(m[:n])
        self.pos += n
        return n


class HashSink:
    def __init__(self):
        self.h = hashlib.sha256()
        self.n = 0

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return len(b)


def test_streaming_64mib_round_trip_in_bounded_memory(keys, tmp_path):
    size = 80 << 20
    src = PatternSource(size)
    path = tmp_path / "update.fcenv"
    tracemalloc.start()
    try:
        with open(path, "wb") as dst:
            E.seal_stream(src, dst, ctx_for(), keys["a"], [pub(keys["coord"]), pub(keys["auditor"])],
                          length=size)
        _, seal_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        sink = HashSink()
        with open(path, "rb") as f:
            assert E.open_stream(f, sink, ctx_for(), keys["auditor"], pub(keys["a"])) == size
        _, open_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.h.digest() == src.h.digest()
    assert path.stat().st_size == E.sealed_size(size, 2)
    # a few chunk buffers, nowhere near the 80 MiB payload
    assert seal_peak < 8 << 20, seal_peak
    assert open_peak < 8 << 20, open_peak


def test_throughput_is_close_to_raw_aesgcm(keys):
    """Lenient guard against per-chunk Python overhead (the target is >= 0.5x; CI machines vary)."""
    data = os.urandom(32 << 20)
    aead, nonce = AESGCM(AESGCM.generate_key(256)), os.urandom(12)

    def best(f):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return min(times)

    raw = best(lambda: aead.encrypt(nonce, data, None))
    ours = best(lambda: E.seal(data, ctx_for(), keys["a"], [pub(keys["coord"])]))
    assert raw / ours > 0.3, f"seal at {raw / ours:.2f}x raw AES-GCM"


def test_lying_length_is_rejected_before_allocating(keys):
    """A header claiming a huge payload must not make open_ allocate it (file and bytes inputs)."""
    blob = seal_a(keys, os.urandom(2 * CS), chunk_size=CS)
    liar = patched(blob, OFF_LENGTH, (1 << 60).to_bytes(8, "big"))
    with pytest.raises(EnvelopeCorrupt):  # the length is bound into the key wrap
        open_coord(keys, liar)
    with pytest.raises(EnvelopeTruncated):  # file input: size checked before anything else
        E.open_(io.BytesIO(liar), ctx_for(), keys["coord"], pub(keys["a"]))
    with pytest.raises(EnvelopeCorrupt):  # pipe: no size known, decrypts chunk by chunk and fails
        E.open_(NonSeekable(liar), ctx_for(), keys["coord"], pub(keys["a"]))
