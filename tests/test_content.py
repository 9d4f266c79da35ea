"""Sealing + pinning and fetching + verifying against on-chain (cid, sha256), on the real LocalStore."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
import torch

from fedchain import content as C
from fedchain import envelope
from fedchain.content import ContentError, ContentTooLarge, HashMismatch, Pinned, Sealed
from fedchain.envelope import (
    EnvelopeContext,
    EnvelopeContextMismatch,
    EnvelopeCorrupt,
    EnvelopeNotForRecipient,
    EnvelopeRecipientsMismatch,
    EnvelopeSenderMismatch,
)
from fedchain.errors import FedchainError, SizeLimitExceeded
from fedchain.identity import dev_identity
from fedchain.serialize import SerializationError, state_dict_to_bytes
from fedchain.ipfs.local import LocalStore
from fedchain.ipfs.store import StoreError

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
LIMIT = 64 << 20  # every fetch of someone else's content says how much it accepts

COORD, AUDITOR, A, B, STRANGER = (dev_identity(i, name=n) for i, n in
                                  enumerate(["coordinator", "auditor", "hospital-a", "hospital-b", "stranger"]))


def ctx_for(member=A, round_=3) -> EnvelopeContext:
    return EnvelopeContext(chain_id=31337, contract=CONTRACT, proposal_id=1, round=round_, sender=member.address)


@pytest.fixture(autouse=True, params=["in memory", "through a file"])
def fetch_path(request, monkeypatch):
    """Every fetch below runs both ways: into memory (a limit up to C.IN_MEMORY_BYTES) and through a
    temporary file (a larger limit)."""
    if request.param == "through a file":
        monkeypatch.setattr(C, "IN_MEMORY_BYTES", 0)
    else:
        assert LIMIT <= C.IN_MEMORY_BYTES
    return request.param


@pytest.fixture
def content_store(tmp_path):
    return LocalStore(tmp_path / "ipfs", fsync=False)


@pytest.fixture
def scratch(tmp_path):
    d = tmp_path / "scratch"
    d.mkdir()
    return d


def small_model() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 5))
    return net.state_dict()


class TamperingStore:
    """Wraps a store and flips one byte of what it serves (a gateway that does not verify CIDs)."""

    def __init__(self, inner, offset: int):
        self.inner, self.offset = inner, offset

    def get_to(self, cid, out, *, max_size=None):
        data = bytearray(self.inner.get(cid, max_size=max_size))
        data[self.offset] ^= 1
        out.write(bytes(data))
        return len(data)

    def get(self, cid):
        data = bytearray(self.inner.get(cid))
        data[self.offset] ^= 1
        return bytes(data)


# --------------------------------------------------------------------------- sealed updates


def test_seal_pin_fetch_round_trip(content_store):
    payload = os.urandom(300_000)
    sealed = C.seal_and_pin(content_store, payload, ctx_for(), A, [COORD.x25519_public])
    assert isinstance(sealed, Sealed)
    blob = content_store.get(sealed.cid)
    # the on-chain hash is the hash of the stored (encrypted) blob
    assert sealed.sha256 == hashlib.sha256(blob).hexdigest() and sealed.size == len(blob)
    assert sealed.sha256_bytes == bytes.fromhex(sealed.sha256)
    assert payload not in blob and blob[:4] == b"FCEV"
    assert content_store.is_pinned(sealed.cid)
    got = C.fetch_verified(content_store, sealed.cid, sealed.sha256, ctx_for(), COORD, max_size=LIMIT)
    assert got == payload


def test_a_fetch_within_the_in_memory_limit_writes_no_temporary_file(content_store, monkeypatch, fetch_path):
    payload = os.urandom(3 * envelope.DEFAULT_CHUNK_SIZE)
    sealed = C.seal_and_pin(content_store, payload, ctx_for(), A, [COORD.x25519_public])
    files = []
    real = C.tempfile.TemporaryFile
    monkeypatch.setattr(C.tempfile, "TemporaryFile", lambda *a, **k: files.append(1) or real(*a, **k))
    assert C.fetch_verified(content_store, sealed.cid, sealed.sha256, ctx_for(), COORD, max_size=LIMIT) == payload
    assert len(files) == (0 if fetch_path == "in memory" else 1)


def test_expected_hash_forms(content_store):
    sealed = C.seal_and_pin(content_store, b"x" * 100, ctx_for(), A, [COORD.x25519_public])
    for form in (sealed.sha256, "0x" + sealed.sha256, sealed.sha256.upper(), sealed.sha256_bytes):
        assert C.fetch_verified(content_store, sealed.cid, form, ctx_for(), COORD, max_size=LIMIT) == b"x" * 100
    for bad in ("abc", b"\x00" * 31, "zz" * 32, 123):
        with pytest.raises(ContentError):
            C.normalize_sha256(bad)


def test_multi_recipient_coordinator_and_auditor(content_store):
    sealed = C.seal_and_pin(content_store, b"update", ctx_for(), A, [COORD.x25519_public, AUDITOR])
    for who in (COORD, AUDITOR):
        assert C.fetch_verified(content_store, sealed.cid, sealed.sha256, ctx_for(), who, max_size=LIMIT) == b"update"
    with pytest.raises(EnvelopeNotForRecipient):
        C.fetch_verified(content_store, sealed.cid, sealed.sha256, ctx_for(), STRANGER, max_size=LIMIT)


def test_hash_mismatch_names_cid_expected_actual_and_skips_decryption(content_store, monkeypatch):
    sealed = C.seal_and_pin(content_store, b"update", ctx_for(), A, [COORD.x25519_public])
    wrong = hashlib.sha256(b"something else").hexdigest()

    def must_not_decrypt(*a, **k):
        raise AssertionError("decryption attempted before the hash was verified")

    monkeypatch.setattr(envelope, "open_", must_not_decrypt)
    monkeypatch.setattr(envelope, "open_stream", must_not_decrypt)
    with pytest.raises(HashMismatch) as ei:
        C.fetch_verified(content_store, sealed.cid, wrong, ctx_for(), COORD, max_size=LIMIT)
    e = ei.value
    assert (e.cid, e.expected, e.actual) == (sealed.cid, wrong, sealed.sha256)
    for s in (sealed.cid, wrong, sealed.sha256):
        assert s in str(e)


def test_tampered_bytes_from_the_store_are_caught_by_the_hash(content_store):
    sealed = C.seal_and_pin(content_store, os.urandom(5000), ctx_for(), A, [COORD.x25519_public])
    evil = TamperingStore(content_store, offset=sealed.size - 10)
    with pytest.raises(HashMismatch):
        C.fetch_verified(evil, sealed.cid, sealed.sha256, ctx_for(), COORD, max_size=LIMIT)


def test_corrupt_block_on_disk_is_a_store_error(content_store):
    payload = os.urandom(10_000)
    sealed = C.seal_and_pin(content_store, payload, ctx_for(), A, [COORD.x25519_public])
    path = content_store.block_path(sealed.cid)
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError):
        C.fetch_verified(content_store, sealed.cid, sealed.sha256, ctx_for(), COORD, max_size=LIMIT)


def test_round3_blob_offered_in_round4(content_store):
    sealed = C.seal_and_pin(content_store, b"round 3", ctx_for(round_=3), A, [COORD.x25519_public])
    with pytest.raises(EnvelopeContextMismatch, match="round"):
        C.fetch_verified(content_store, sealed.cid, sealed.sha256, ctx_for(round_=4), COORD, max_size=LIMIT)


def test_blob_from_member_a_claimed_by_member_b(content_store):
    """B commits A's (cid, sha256) as its own update: the hash matches, the envelope does not."""
    sealed = C.seal_and_pin(content_store, b"A's work", ctx_for(A), A, [COORD.x25519_public])
    with pytest.raises(EnvelopeContextMismatch, match="sender"):
        C.fetch_verified(content_store, sealed.cid, sealed.sha256, ctx_for(B), COORD, max_size=LIMIT)
    # B rewrites the header's sender to itself and pins that: A's signature does not cover it
    blob = bytearray(content_store.get(sealed.cid))
    blob[9 + 116:9 + 136] = bytes.fromhex(B.address[2:])
    forged = C.pin_document(content_store, bytes(blob))
    with pytest.raises(EnvelopeSenderMismatch):
        C.fetch_verified(content_store, forged.cid, forged.sha256, ctx_for(B), COORD, max_size=LIMIT)


def test_sender_must_match_context(content_store):
    with pytest.raises(ContentError, match="sender"):
        C.seal_and_pin(content_store, b"x", ctx_for(B), A, [COORD.x25519_public])


def test_max_size(content_store):
    sealed = C.seal_and_pin(content_store, os.urandom(10_000), ctx_for(), A, [COORD.x25519_public])
    with pytest.raises(SizeLimitExceeded):  # the store refuses before streaming: its root declares more
        C.fetch_verified(content_store, sealed.cid, sealed.sha256, ctx_for(), COORD, max_size=1000)
    assert C.fetch_verified(content_store, sealed.cid, sealed.sha256, ctx_for(), COORD, max_size=sealed.size)
    with pytest.raises(SizeLimitExceeded):
        C.fetch_verified(content_store, sealed.cid, sealed.sha256, ctx_for(), COORD, max_size=sealed.size - 1)


def test_every_fetch_must_say_how_much_it_accepts(content_store):
    sealed = C.seal_and_pin(content_store, b"x", ctx_for(), A, [COORD.x25519_public])
    cid, sha = C.pin_document(content_store, b"doc")
    with pytest.raises(TypeError):
        C.fetch_verified(content_store, sealed.cid, sealed.sha256, ctx_for(), COORD)
    with pytest.raises(TypeError):
        C.fetch_document(content_store, cid, sha)
    with pytest.raises(TypeError, match="max_size"):
        C.fetch_document(content_store, cid, sha, max_size=None)


def test_a_writer_that_outgrows_the_limit_is_cut_off(content_store):
    """Belt and braces: a store that ignores max_size is still cut off by the hashing writer."""

    class Careless:
        def get_to(self, cid, out, *, max_size=None):
            for _ in range(1000):
                out.write(b"\0" * 65536)

    with pytest.raises(ContentTooLarge):
        C.fetch_document(Careless(), "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "00" * 32, max_size=100_000)


def test_expanding_dag_committed_as_a_document_fails_fast(content_store):
    """A member pins the DAG-expansion blocks and commits the root as, say, its dataset metadata."""
    from fixtures_ipfs import expanding_dag

    root, blocks = expanding_dag()
    for b in blocks:
        content_store.put_block(b)
    with pytest.raises(SizeLimitExceeded):
        C.fetch_document(content_store, root, "00" * 32, max_size=C.MAX_DOCUMENT_SIZE)
    with pytest.raises(SizeLimitExceeded):
        C.fetch_verified(content_store, root, "00" * 32, ctx_for(), COORD, max_size=1 << 20)


def test_expected_recipients_pass_through(content_store):
    sealed = C.seal_and_pin(content_store, b"update", ctx_for(), A, [COORD.x25519_public])
    everyone = [COORD.x25519_public, AUDITOR.x25519_public]
    with pytest.raises(EnvelopeRecipientsMismatch):
        C.fetch_verified(content_store, sealed.cid, sealed.sha256, ctx_for(), COORD, max_size=LIMIT, recipients=everyone)
    with pytest.raises(EnvelopeRecipientsMismatch):
        C.fetch_model(content_store, sealed.cid, sealed.sha256, ctx_for(), COORD, max_size=LIMIT, recipients=everyone)


def test_errors_are_fedchain_errors():
    assert issubclass(HashMismatch, ContentError) and issubclass(ContentError, FedchainError)


# --------------------------------------------------------------------------- models and files


def test_fetch_model_round_trip(content_store):
    sd = small_model()
    sealed = C.seal_and_pin(content_store, state_dict_to_bytes(sd), ctx_for(), A, [COORD.x25519_public])
    got = C.fetch_model(content_store, sealed.cid, sealed.sha256, ctx_for(), COORD, max_size=LIMIT)
    assert set(got) == set(sd)
    for k, v in sd.items():
        assert torch.equal(got[k], v.float() if v.is_floating_point() else v.long()), k


def test_fetch_model_rejects_non_model_payload(content_store):
    sealed = C.seal_and_pin(content_store, b"not a model", ctx_for(), A, [COORD.x25519_public])
    with pytest.raises(SerializationError):
        C.fetch_model(content_store, sealed.cid, sealed.sha256, ctx_for(), COORD, max_size=LIMIT)


def test_seal_from_path_and_file_object_streams(content_store, tmp_path, scratch):
    payload = os.urandom(3 * envelope.DEFAULT_CHUNK_SIZE + 1234)
    src = tmp_path / "update.safetensors"
    src.write_bytes(payload)
    s1 = C.seal_and_pin(content_store, src, ctx_for(), A, [COORD.x25519_public], tmp_dir=scratch)
    with open(src, "rb") as f:
        s2 = C.seal_and_pin(content_store, f, ctx_for(), A, [COORD.x25519_public], tmp_dir=scratch)
    assert s1.cid != s2.cid  # fresh keys and nonces each time
    assert not list(scratch.iterdir())
    for s in (s1, s2):
        assert C.fetch_verified(content_store, s.cid, s.sha256, ctx_for(), COORD, max_size=LIMIT) == payload
        dest = tmp_path / f"out-{s.cid}"
        assert C.fetch_verified_to_file(content_store, s.cid, s.sha256, ctx_for(), COORD, dest, max_size=LIMIT) == dest
        assert dest.read_bytes() == payload


def test_nothing_half_verified_is_left_behind(content_store, tmp_path, scratch):
    payload = os.urandom(3 * envelope.DEFAULT_CHUNK_SIZE)
    sealed = C.seal_and_pin(content_store, payload, ctx_for(), A, [COORD.x25519_public])
    # a blob whose last chunk is damaged but whose hash *is* the committed one
    blob = bytearray(content_store.get(sealed.cid))
    blob[-20] ^= 1
    bad = C.pin_document(content_store, bytes(blob))
    dest_dir = tmp_path / "models"
    dest_dir.mkdir()
    dest = dest_dir / "update.bin"
    with pytest.raises(EnvelopeCorrupt):
        C.fetch_verified_to_file(content_store, bad.cid, bad.sha256, ctx_for(), COORD, dest, max_size=LIMIT)
    assert list(dest_dir.iterdir()) == []  # neither dest nor a partial file
    with pytest.raises(EnvelopeCorrupt):
        C.fetch_verified(content_store, bad.cid, bad.sha256, ctx_for(), COORD, tmp_dir=scratch, max_size=LIMIT)
    with pytest.raises(EnvelopeCorrupt):
        C.fetch_model(content_store, bad.cid, bad.sha256, ctx_for(), COORD, tmp_dir=scratch, max_size=LIMIT)
    assert list(scratch.iterdir()) == []


def test_large_update_through_the_store(content_store, tmp_path):
    size = 24 << 20
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(size >> 20):
            f.write(bytes([i]) + block[1:])
    sealed = C.seal_and_pin(content_store, src, ctx_for(), A, [COORD.x25519_public, AUDITOR.x25519_public])
    assert sealed.size == envelope.sealed_size(size, 2)
    dest = tmp_path / "big.out"
    C.fetch_verified_to_file(content_store, sealed.cid, sealed.sha256, ctx_for(), AUDITOR, dest, max_size=LIMIT)
    assert dest.stat().st_size == size
    with open(src, "rb") as f1, open(dest, "rb") as f2:
        assert hashlib.sha256(f1.read()).digest() == hashlib.sha256(f2.read()).digest()


# --------------------------------------------------------------------------- public documents


def test_document_round_trip(content_store, tmp_path):
    doc = b'{"plan": "fedavg", "rounds": 5}'
    pinned = C.pin_document(content_store, doc)
    assert isinstance(pinned, Pinned)
    cid, sha = pinned  # unpacks as (cid, sha256)
    assert sha == hashlib.sha256(doc).hexdigest()
    assert content_store.is_pinned(cid)
    assert C.fetch_document(content_store, cid, sha, max_size=LIMIT) == doc
    assert C.fetch_document(content_store, cid, "0x" + sha.upper(), max_size=LIMIT) == doc
    p = tmp_path / "plan.json"
    p.write_bytes(doc)
    assert C.pin_document(content_store, p) == pinned  # same bytes, same CID, same hash


def test_document_hash_mismatch(content_store):
    cid, sha = C.pin_document(content_store, b"plan v1")
    other = hashlib.sha256(b"plan v2").hexdigest()
    with pytest.raises(HashMismatch) as ei:
        C.fetch_document(content_store, cid, other, max_size=LIMIT)
    assert ei.value.cid == cid and ei.value.actual == sha and ei.value.expected == other
    with pytest.raises(HashMismatch):
        C.fetch_document(TamperingStore(content_store, 0), cid, sha, max_size=LIMIT)
    with pytest.raises(SizeLimitExceeded):
        C.fetch_document(content_store, cid, sha, max_size=3)


def test_missing_content_is_a_store_error(content_store):
    cid, sha = C.pin_document(content_store, b"gone")
    other = LocalStore(content_store.root.parent / "empty", fsync=False)
    with pytest.raises(StoreError):
        C.fetch_document(other, cid, sha, max_size=LIMIT)
