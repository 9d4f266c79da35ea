"""Encrypted envelope v2: round trips, context binding, sender signatures, key commitment, tampering, streaming."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import tracemalloc

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eth_account import Account

from gcm_collision import collide

from fedchain import envelope as E
from fedchain.envelope import (
    EnvelopeAuthenticationError,
    EnvelopeContext,
    EnvelopeContextMismatch,
    EnvelopeCorrupt,
    EnvelopeError,
    EnvelopeFormatError,
    EnvelopeInconsistent,
    EnvelopeNotForRecipient,
    EnvelopeRecipientsMismatch,
    EnvelopeSenderMismatch,
    EnvelopeTruncated,
    EnvelopeVersionError,
)
from fedchain.errors import FedchainError
from fedchain.identity import DEV_PRIVATE_KEYS

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ADDR_A = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
ADDR_B = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
CS = 4096  # small chunks: many chunks with little data

# header field offsets (see the module docstring)
OFF_ROUND = 9 + 84
OFF_SENDER = 9 + 116
OFF_LENGTH = 149
OFF_RECIPIENTS = 171


def ctx_for(round_=3, sender=ADDR_A, **kw) -> EnvelopeContext:
    base = dict(chain_id=31337, contract=CONTRACT, proposal_id=7, round=round_, sender=sender)
    base.update(kw)
    return EnvelopeContext(**base)


@pytest.fixture(scope="module")
def keys():
    """Senders are Ethereum accounts (they sign); recipients X25519 keys."""
    k = {n: X25519PrivateKey.generate() for n in ("coord", "auditor", "stranger")}
    k["a"], k["b"] = Account.from_key(DEV_PRIVATE_KEYS[1]), Account.from_key(DEV_PRIVATE_KEYS[2])
    assert (k["a"].address, k["b"].address) == (ADDR_A, ADDR_B)
    return k


def pub(k) -> bytes:
    return E.public_bytes(k)


def seal_a(keys, payload, ctx=None, recipients=("coord",), **kw):
    return E.seal(payload, ctx or ctx_for(), keys["a"], [pub(keys[r]) for r in recipients], **kw)


def open_coord(keys, blob, ctx=None, **kw):
    return E.open_(blob, ctx or ctx_for(), keys["coord"], **kw)


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
    assert E.open_stream(io.BytesIO(blob), out, ctx_for(), keys["coord"]) == n
    assert out.getvalue() == payload
    # stream sealing, known length (seekable) and unknown length (pipe)
    for src in (io.BytesIO(payload), NonSeekable(payload)):
        dst = io.BytesIO()
        written = E.seal_stream(src, dst, ctx_for(), keys["a"], [pub(keys["coord"])], chunk_size=CS)
        assert written == len(dst.getvalue())
        assert open_coord(keys, dst.getvalue()) == payload
        assert E.open_(io.BytesIO(dst.getvalue()), ctx_for(), keys["coord"]) == payload
    assert E.read_header(dst.getvalue()).length is None


def test_unseal_alias_and_fresh_randomness(keys):
    b1, b2 = seal_a(keys, b"same"), seal_a(keys, b"same")
    assert b1 != b2
    assert E.unseal(b1, ctx_for(), keys["coord"]) == b"same"


def test_header_is_readable_without_keys(keys):
    blob = seal_a(keys, b"x" * 10, recipients=("coord", "auditor"), chunk_size=CS)
    h = E.read_header(blob)
    assert blob[:4] == b"FCEV" and blob[4] == 2
    assert h.context == ctx_for()
    assert h.chunk_size == CS and h.length == 10
    assert h.recipients == (pub(keys["coord"]), pub(keys["auditor"]))
    assert h.fingerprints == (E.fingerprint(keys["coord"]), E.fingerprint(keys["auditor"]))
    assert h.size == 268 + 2 * 112 == E.header_size(2)
    assert len(h.key_commitment) == 32 and len(h.signature) == 65
    assert [len(e) for e in h.encs] == [32, 32] and [len(w) for w in h.wraps] == [48, 48]
    # anyone can check who signed it, with no key at all
    assert E._signer(h.signed, h.signature) == ADDR_A


def test_multi_recipient_coordinator_and_auditor(keys):
    payload = os.urandom(3 * CS + 5)
    blob = seal_a(keys, payload, recipients=("coord", "auditor"), chunk_size=CS)
    ctx = ctx_for()
    assert E.open_(blob, ctx, keys["coord"]) == payload
    assert E.open_(blob, ctx, keys["auditor"]) == payload
    with pytest.raises(EnvelopeNotForRecipient):
        E.open_(blob, ctx, keys["stranger"])


def test_wrong_recipient(keys):
    blob = seal_a(keys, b"secret update")
    with pytest.raises(EnvelopeNotForRecipient) as ei:
        E.open_(blob, ctx_for(), keys["stranger"])
    assert E.fingerprint(keys["stranger"]).hex() in str(ei.value)
    with pytest.raises(EnvelopeNotForRecipient):
        E.open_stream(io.BytesIO(blob), io.BytesIO(), ctx_for(), keys["stranger"])


def test_errors_are_fedchain_errors():
    for cls in (EnvelopeTruncated, EnvelopeCorrupt, EnvelopeVersionError, EnvelopeContextMismatch,
                EnvelopeSenderMismatch, EnvelopeNotForRecipient, EnvelopeAuthenticationError,
                EnvelopeInconsistent, EnvelopeRecipientsMismatch):
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
    with pytest.raises(EnvelopeSenderMismatch, match="not by the sender"):  # the signature covers the context
        open_coord(keys, forged, ctx=ctx_for(round_=4))
    with pytest.raises(EnvelopeSenderMismatch):
        E.open_stream(io.BytesIO(forged), io.BytesIO(), ctx_for(round_=4), keys["coord"])


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
    """B re-submits A's CID as its own: the coordinator expects sender B."""
    blob = seal_a(keys, b"A's update")
    ctx_b = ctx_for(sender=ADDR_B)
    with pytest.raises(EnvelopeContextMismatch) as ei:
        E.open_(blob, ctx_b, keys["coord"])
    assert "sender" in str(ei.value)
    # rewrite the header's sender address to B: A's signature no longer recovers to B
    forged = patched(blob, OFF_SENDER, bytes.fromhex(ADDR_B[2:]))
    with pytest.raises(EnvelopeSenderMismatch):
        E.open_(forged, ctx_b, keys["coord"])


def test_sender_cannot_impersonate_another_member(keys, monkeypatch):
    """B runs the sealing code end to end claiming to be A (A's address in the header), signing with
    its own key since it does not have A's: every recipient refuses it."""
    with pytest.raises(E.InvalidContext):  # the honest API refuses outright
        E.seal(b"forged", ctx_for(sender=ADDR_A), keys["b"], [pub(keys["coord"])])
    real_sign = E._sign
    monkeypatch.setattr(E, "_sign", lambda _account, signed: real_sign(keys["b"], signed))
    forged = E.seal(b"forged", ctx_for(sender=ADDR_A), keys["a"], [pub(keys["coord"])])
    monkeypatch.setattr(E, "_sign", real_sign)
    with pytest.raises(EnvelopeSenderMismatch, match=f"signed by {ADDR_B}"):
        open_coord(keys, forged)
    garbage = forged[: E.read_header(forged).size - 65] + b"\x00" * 65 + forged[E.read_header(forged).size:]
    with pytest.raises(EnvelopeSenderMismatch, match="no valid signature"):
        open_coord(keys, garbage)


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
    with pytest.raises(EnvelopeVersionError) as ei:  # v1 envelopes are no longer read
        open_coord(keys, patched(blob, 4, b"\x01"))
    assert "version 1" in str(ei.value)
    with pytest.raises(EnvelopeVersionError):
        E.open_stream(io.BytesIO(patched(blob, 4, b"\x09")), io.BytesIO(), ctx_for(), keys["coord"])
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
        E.open_stream(io.BytesIO(bad), out, ctx_for(), keys["coord"])


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
        E.open_stream(io.BytesIO(bad), io.BytesIO(), ctx_for(), keys["coord"])
    # cut inside a chunk: detected (as corrupt or truncated)
    with pytest.raises(EnvelopeCorrupt):
        open_coord(keys, blob[:-100])


@pytest.mark.parametrize("where", ["first_chunk", "last_chunk", "last_tag", "wrapped_key"])
def test_flipped_ciphertext_byte(keys, where):
    payload = os.urandom(3 * CS + 100)
    blob = seal_a(keys, payload, chunk_size=CS)
    hdr = E.read_header(blob).size
    i = {"first_chunk": hdr + 10, "last_chunk": len(blob) - 50, "last_tag": len(blob) - 1,
         "wrapped_key": hdr - 65 - 20}[where]
    bad = flip(blob, i)
    expected = EnvelopeSenderMismatch if where == "wrapped_key" else EnvelopeCorrupt  # the header is signed
    with pytest.raises(expected):
        open_coord(keys, bad)
    with pytest.raises(expected):
        E.open_stream(io.BytesIO(bad), io.BytesIO(), ctx_for(), keys["coord"])


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
    with pytest.raises(EnvelopeSenderMismatch):
        open_coord(keys, removed)


def test_appended_data(keys):
    blob = seal_a(keys, os.urandom(2 * CS), chunk_size=CS)
    with pytest.raises(EnvelopeCorrupt):
        open_coord(keys, blob + b"\x00")
    with pytest.raises(EnvelopeCorrupt):
        E.open_stream(io.BytesIO(blob + b"junk"), io.BytesIO(), ctx_for(), keys["coord"])


def test_open_stream_writes_only_authenticated_chunks(keys):
    payload = os.urandom(4 * CS)
    blob = seal_a(keys, payload, chunk_size=CS)
    out = io.BytesIO()
    with pytest.raises(EnvelopeCorrupt):
        E.open_stream(io.BytesIO(flip(blob, len(blob) - 30)), out, ctx_for(), keys["coord"])
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
            assert E.open_stream(f, sink, ctx_for(), keys["auditor"]) == size
        _, open_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.h.digest() == src.h.digest()
    assert path.stat().st_size == E.sealed_size(size, 2)
    # a few chunk buffers, nowhere near the 80 MiB payload
    assert seal_peak < 8 << 20, seal_peak
    assert open_peak < 8 << 20, open_peak


def test_lying_length_is_rejected_before_allocating(keys):
    """A header claiming a huge payload must not make open_ allocate it (file and bytes inputs)."""
    blob = seal_a(keys, os.urandom(2 * CS), chunk_size=CS)
    liar = patched(blob, OFF_LENGTH, (1 << 60).to_bytes(8, "big"))
    with pytest.raises(EnvelopeSenderMismatch):  # the length is signed
        open_coord(keys, liar)
    with pytest.raises(EnvelopeTruncated):  # file input: size checked before anything else
        E.open_(io.BytesIO(liar), ctx_for(), keys["coord"])
    with pytest.raises(EnvelopeSenderMismatch):  # pipe: no size known, the signature still fails first
        E.open_(NonSeekable(liar), ctx_for(), keys["coord"])


# --------------------------------------------------------------------------- one envelope, two contents


def craft(keys, wrap_keys, commit_key, plaintext=b"honest-looking update ".ljust(CS, b"."), sender="a"):
    """What a malicious sender can build: a validly signed v2 envelope for [coord, auditor] whose
    wraps carry ``wrap_keys`` (one content key per recipient, or None for garbage), whose header
    commits to ``commit_key``, and whose single chunk authenticates under *both* payload keys
    (AES-GCM does not commit to its key; see tests/gcm_collision.py)."""
    ctx, pubs = ctx_for(), [pub(keys["coord"]), pub(keys["auditor"])]
    nonce = secrets.token_bytes(12)
    core = b"".join((E.MAGIC, bytes([E.VERSION]), E.header_size(2).to_bytes(4, "big"), ctx.to_bytes(),
                     CS.to_bytes(4, "big"), len(plaintext).to_bytes(8, "big"), nonce, (2).to_bytes(2, "big"), *pubs))
    preamble = core + E._commitment(commit_key, core)
    wrapped = [E._wrap(ck, preamble, i, p) if ck else (secrets.token_bytes(32), secrets.token_bytes(48))
               for i, (ck, p) in enumerate(zip(wrap_keys, pubs))]
    signed = preamble + b"".join(e for e, _ in wrapped) + b"".join(w for _, w in wrapped)
    header = signed + E._sign(keys[sender], signed)
    k1, k2 = (E._payload_key(ck or secrets.token_bytes(32), signed) for ck in wrap_keys)
    body = collide(k1, k2, nonce, b"\x01", plaintext)
    return header + body, (k1, k2, nonce, body)


def test_two_contents_in_one_envelope_are_refused_by_every_recipient(keys):
    """Who: a member (the sender). What: the coordinator's wrap carries content key CK1, the
    auditor's CK2, and the one chunk decrypts under both payload keys: one blob, one sha256 on
    chain, two contents (v1 opened it for both, differently -- shown in the report). v2: the
    header commits to one key and every recipient re-derives every wrap, so both refuse."""
    ck1, ck2 = secrets.token_bytes(32), secrets.token_bytes(32)
    blob, (k1, k2, nonce, body) = craft(keys, [ck1, ck2], commit_key=ck1)
    # the attack primitive is real: the same ciphertext authenticates under both payload keys
    p1, p2 = AESGCM(k1).decrypt(nonce, body, b"\x01"), AESGCM(k2).decrypt(nonce, body, b"\x01")
    assert p1.startswith(b"honest-looking update") and p1 != p2
    with pytest.raises(EnvelopeInconsistent, match="recipient 1"):  # coordinator: its key commits, the auditor's wrap differs
        E.open_(blob, ctx_for(), keys["coord"])
    with pytest.raises(EnvelopeInconsistent, match="commits to"):  # auditor: its key is not the committed one
        E.open_(blob, ctx_for(), keys["auditor"])
    for k in ("coord", "auditor"):
        with pytest.raises(EnvelopeInconsistent):
            E.open_stream(io.BytesIO(blob), io.BytesIO(), ctx_for(), keys[k])
    # committing to the auditor's key instead just swaps which check fires
    blob2, _ = craft(keys, [ck1, ck2], commit_key=ck2)
    for k in ("coord", "auditor"):
        with pytest.raises(EnvelopeInconsistent):
            E.open_(blob2, ctx_for(), keys[k])


def test_an_update_hidden_from_the_auditor_is_refused_by_the_coordinator_too(keys):
    """The auditor's wrap is garbage: the coordinator, which could open it, refuses as well, so it
    cannot be framed for accepting what the auditor cannot check."""
    ck = secrets.token_bytes(32)
    blob, _ = craft(keys, [ck, None], commit_key=ck)
    with pytest.raises(EnvelopeInconsistent, match="recipient 1"):
        E.open_(blob, ctx_for(), keys["coord"])
    with pytest.raises(EnvelopeAuthenticationError):
        E.open_(blob, ctx_for(), keys["auditor"])
    # the honest construction opens for both, with the same bytes
    honest, _ = craft(keys, [ck, ck], commit_key=ck)
    assert E.open_(honest, ctx_for(), keys["coord"]) == E.open_(honest, ctx_for(), keys["auditor"])


def test_leaving_a_recipient_out_is_caught_when_the_opener_names_the_expected_set(keys):
    """An update sealed for the coordinator only: the auditor is not a recipient at all. Only the
    opener knows who should be (the plan's auditors), so it says so."""
    blob = seal_a(keys, b"for the coordinator only")
    everyone = [pub(keys["coord"]), pub(keys["auditor"])]
    assert open_coord(keys, blob) == b"for the coordinator only"
    with pytest.raises(EnvelopeRecipientsMismatch, match=E.fingerprint(keys["auditor"]).hex()):
        open_coord(keys, blob, recipients=everyone)
    with pytest.raises(EnvelopeRecipientsMismatch):
        E.open_stream(io.BytesIO(blob), io.BytesIO(), ctx_for(), keys["coord"], recipients=everyone)
    full = seal_a(keys, b"for both", recipients=("coord", "auditor"))
    assert open_coord(keys, full, recipients=list(reversed(everyone))) == b"for both"


def test_duplicate_recipient_in_a_header_is_a_format_error(keys):
    blob = seal_a(keys, b"x", recipients=("coord", "auditor"))
    dup = patched(blob, OFF_RECIPIENTS + 32, pub(keys["coord"]))
    with pytest.raises(EnvelopeFormatError, match="twice"):
        open_coord(keys, dup)


def test_max_sealed_size_bounds_every_chunk_size(keys):
    payload = os.urandom(3 * CS + 1)
    for cs in (E.MIN_CHUNK_SIZE, 2 * CS, E.DEFAULT_CHUNK_SIZE):
        assert len(seal_a(keys, payload, chunk_size=cs, recipients=("coord", "auditor"))) <= E.max_sealed_size(len(payload), 2)
    assert len(seal_a(keys, payload, chunk_size=E.MIN_CHUNK_SIZE)) == E.max_sealed_size(len(payload), 1)
