"""Fuzzing the readers of untrusted bytes: only fedchain's own named errors may come out.

Who: any member (updates, documents, the blocks it pins), or anyone between the store and
the reader. The readers below parse what such a party controls; for every input hypothesis
generates they must return or raise a FedchainError subclass -- never RecursionError,
MemoryError, KeyError, a library's own exception, or a crash. Examples are derandomized (the
same ones every run, so the suite is stable) and few enough to keep the suite fast.
"""

from __future__ import annotations

import json
import struct

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedchain import envelope as E
from fedchain import serialize, validation
from fedchain.errors import FedchainError
from fedchain.identity import DEV_PRIVATE_KEYS
from fedchain.ipfs import InvalidCid, LocalStore
from fedchain.ipfs import unixfs as U
from fedchain.models import initial_state

FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SPEC = {"kind": "logreg", "in_features": 4, "n_classes": 2}
LAYOUT = validation.model_layout(SPEC)
GOOD_MODEL = serialize.state_dict_to_bytes(initial_state(SPEC, 1))


def only_ours(fn, *args, **kw):
    """Call ``fn``; a FedchainError is fine, anything else fails the test (pytest reports it)."""
    try:
        return fn(*args, **kw)
    except FedchainError:
        return None


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, value) edits: flip a byte, cut, or insert."""
    b = bytearray(data)
    for kind, pos, value in edits:
        if not b:
            break
        pos %= len(b)
        if kind == 0:
            b[pos] ^= value or 1
        elif kind == 1:
            del b[pos:]
        else:
            b[pos:pos] = bytes([value])
    return bytes(b)


EDITS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=4)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


# --------------------------------------------------------------------------- safetensors


def _header(obj: object) -> bytes:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


@FUZZ
@given(st.binary(max_size=2048))
def test_safetensors_arbitrary_bytes(data):
    only_ours(serialize.bytes_to_state_dict, data)
    assert isinstance(validation.validate_update(data, LAYOUT), (validation.Accepted, validation.Rejection))


@FUZZ
@given(JSON, st.binary(max_size=256), st.sampled_from([0, 1, 3, 60, 5000, 50_000]), st.booleans())
def test_safetensors_hostile_headers(obj, tail, nest, objects):
    """Hostile JSON, sometimes nested far deeper than the JSON parser can recurse."""
    inner = json.dumps(obj, separators=(",", ":")).encode()
    opener, closer = (b'{"a":', b"}") if objects else (b"[", b"]")
    raw = opener * nest + inner + closer * nest
    raw += b" " * (-len(raw) % 8)
    data = struct.pack("<Q", len(raw)) + raw + tail
    only_ours(serialize.bytes_to_state_dict, data)
    v = validation.validate_update(data, LAYOUT)
    assert isinstance(v, validation.Rejection) and isinstance(v.code, validation.Reason)


@FUZZ
@given(st.dictionaries(st.sampled_from(["linear.weight", "linear.bias", "x", ""]),
                       st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "I64", "F16", 7, None]),
                                              "shape": st.lists(st.integers(-1, 5), max_size=3) | JSON,
                                              "data_offsets": st.lists(st.integers(-1, 64), max_size=3)}),
                       max_size=3),
       st.binary(max_size=200))
def test_safetensors_near_valid_headers(entries, data):
    header = {"__metadata__": serialize.METADATA, **entries}
    blob = _header(header) + data
    only_ours(serialize.bytes_to_state_dict, blob)
    assert isinstance(validation.validate_update(blob, LAYOUT), (validation.Accepted, validation.Rejection))


@FUZZ
@given(EDITS)
def test_mutated_model_bytes(edits):
    data = mutate(GOOD_MODEL, edits)
    only_ours(serialize.bytes_to_state_dict, data)
    v = validation.validate_update(data, LAYOUT)
    if isinstance(v, validation.Accepted):
        assert set(v.state) == {t.name for t in LAYOUT.tensors}
        assert all(torch.isfinite(t).all() for t in v.state.values())


# --------------------------------------------------------------------------- envelopes

SENDER = Account.from_key(DEV_PRIVATE_KEYS[1])
COORD, AUDITOR = X25519PrivateKey.generate(), X25519PrivateKey.generate()
CTX = E.EnvelopeContext(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3", 1, 1, SENDER.address)
SEALED = E.seal(b"update " * 1500, CTX, SENDER, [E.public_bytes(COORD), E.public_bytes(AUDITOR)],
                chunk_size=E.MIN_CHUNK_SIZE)


@FUZZ
@given(EDITS)
def test_mutated_envelopes(edits):
    blob = mutate(SEALED, edits)
    got = only_ours(E.open_, blob, CTX, COORD)
    if got is not None:  # only an edit that changed nothing may open
        assert blob == SEALED
    only_ours(E.read_header, blob)


@FUZZ
@given(st.binary(max_size=1024), st.integers(1, 70), st.integers(0, 1 << 27))
def test_forged_envelope_headers(rest, n, chunk):
    """Arbitrary bytes behind a valid magic and version, with a plausible header length."""
    blob = E.MAGIC + bytes([E.VERSION]) + E.header_size(n).to_bytes(4, "big") + rest
    blob = blob[:145] + chunk.to_bytes(4, "big") + blob[149:]
    only_ours(E.open_, blob, CTX, COORD)
    only_ours(E.read_header, blob)


# --------------------------------------------------------------------------- dag-pb blocks and CIDs


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_blocks_decode_or_are_invalid_dags(block):
    only_ours(U.decode_node, block, "fuzz")
    root = U.cid_of_block(block)
    only_ours(lambda: b"".join(U.iter_content(root, {root: block}.__getitem__, max_size=1 << 16)))


LEAVES = [U.encode_leaf(bytes([i]) * n) for i, n in enumerate((0, 1, 100, 3000))]


@st.composite
def dags(draw):
    """Up to 4 internal nodes over a few leaves, linking earlier blocks with honest or lying sizes."""
    blocks = list(LEAVES)
    sizes = [0, 1, 100, 3000]
    for _ in range(draw(st.integers(1, 4))):
        picks = draw(st.lists(st.integers(0, len(blocks) - 1), min_size=0, max_size=6))
        declared = [draw(st.sampled_from([sizes[p], sizes[p] + 1, 0, 1 << 40])) for p in picks]
        filesize = draw(st.sampled_from([sum(declared), sum(declared) + 7, None]))
        data = draw(st.binary(max_size=8))
        links = b"".join(
            b"\x12" + U._varint(len(link)) + link
            for link in (b"\x0a\x22" + U.multihash(blocks[p]) + b"\x12\x00\x18" + U._varint(len(blocks[p]))
                         for p in picks)
        )
        unixfs = b"\x08\x02" + (U._ld(2, data) if data else b"")
        if filesize is not None:
            unixfs += b"\x18" + U._varint(filesize)
        unixfs += b"".join(b"\x20" + U._varint(d) for d in declared)
        blocks.append(links + U._ld(1, unixfs))
        sizes.append(len(data) + sum(declared))
    return blocks


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory):
    return LocalStore(tmp_path_factory.mktemp("fuzz") / "store", fsync=False)


@FUZZ
@given(dags(), st.integers(0, 20_000))
def test_crafted_dags_never_produce_more_than_declared(fuzz_store, blocks, limit):
    table = {U.cid_of_block(b): b for b in blocks}
    root = U.cid_of_block(blocks[-1])
    for b in blocks:
        fuzz_store.put_block(b)
    walked = only_ours(lambda: b"".join(bytes(p) for p in U.iter_content(root, table.__getitem__, max_size=limit)))
    got = only_ours(fuzz_store.get, root, max_size=limit)
    assert walked == got  # both readers agree, and the in-place reader accepts nothing the walker refuses
    if got is not None:
        assert len(got) <= limit
        assert len(got) == U.node_size(U.decode_node(blocks[-1]), root)


@FUZZ
@given(st.text(max_size=60) | st.from_regex(r"Qm[1-9A-HJ-NP-Za-km-z]{44}", fullmatch=True))
def test_cids(fuzz_store, text):
    try:
        U.normalize_cid(text)
    except InvalidCid:
        pass
    only_ours(fuzz_store.get, text, max_size=1024)
    only_ours(fuzz_store.has, text)
