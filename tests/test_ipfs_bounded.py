"""Size-limited reads of content another party pinned: the DAG-expansion attack and lying sizes.

Who: any member (or anyone able to pin into a store a coordinator, node or auditor reads)
commits a CID whose DAG links the same child many times. A few hundred KB of blocks then
expand to hundreds of TiB; without a limit the reader writes until the disk is full.
What stops it: every reader takes ``max_size``; the root's declared size is checked before
a byte is produced, every node's size against its parent's slot (so nothing can expand past
what the root declares), the block count against a budget, and the Kubo ``cat`` stream is
counted and cut off whatever the daemon sends.
"""

from __future__ import annotations

import io
import time

import pytest

from fixtures_ipfs import expanding_dag, payload
from fedchain.errors import SizeLimitExceeded
from fedchain.ipfs import ContentTooLarge, DagSizeMismatch, DagTooComplex, InvalidDag, LocalStore
from fedchain.ipfs.unixfs import (
    _Entry,
    block_budget,
    cid_of_block,
    encode_leaf,
    encode_parent,
    iter_content,
    multihash,
)

LIMIT = 10 << 20


class CountingSink:
    """A file-like sink that counts what it is given and refuses to grow past ``cap``."""

    def __init__(self, cap: int = LIMIT):
        self.n = 0
        self.cap = cap

    def write(self, b) -> int:
        self.n += len(b)
        assert self.n <= self.cap, f"the reader wrote {self.n} bytes, past the limit of {self.cap}"
        return len(b)


def entry(block: bytes, filesize: int) -> _Entry:
    return _Entry(multihash(block), len(block), filesize)


def put_blocks(store: LocalStore, blocks) -> str:
    cids = [store.put_block(b) for b in blocks]
    return cids[-1]


@pytest.fixture
def attack(local_store):
    root, blocks = expanding_dag()
    assert put_blocks(local_store, blocks) == root
    assert sum(map(len, blocks)) < 400_000
    return local_store, root


def test_expanding_dag_is_refused_before_a_byte_is_produced(attack, tmp_path):
    store, root = attack
    t0 = time.monotonic()
    store.pin(root)  # pinning walks each distinct block once, not the 174**4 paths
    assert store.is_pinned(root) and store.has(root)
    sink = CountingSink()
    with pytest.raises(ContentTooLarge) as info:
        store.get_to(root, sink, max_size=LIMIT)
    assert sink.n == 0
    assert info.value.size == 262144 * 174**4 and info.value.limit == LIMIT
    assert isinstance(info.value, SizeLimitExceeded)
    with pytest.raises(ContentTooLarge):
        store.get(root, max_size=LIMIT)
    with pytest.raises(ContentTooLarge):
        next(iter(store.iter_chunks(root, max_size=LIMIT)))
    assert time.monotonic() - t0 < 5
    # nothing big was written anywhere in the store either
    assert sum(f.stat().st_size for f in store.root.rglob("*") if f.is_file()) < 1_000_000


def test_a_root_that_lies_about_its_subtree_stops_at_the_lie(local_store):
    """The root declares 1 MiB (under the limit) but links the 218 TiB subtree: the walk
    stops when it reads the child, before any of the child's bytes."""
    _, blocks = expanding_dag()
    big = blocks[-1]
    liar = encode_parent([entry(big, 1 << 20)])
    root = put_blocks(local_store, blocks + [liar])
    sink = CountingSink()
    with pytest.raises(DagSizeMismatch, match="its parent says 1048576"):
        local_store.get_to(root, sink, max_size=LIMIT)
    assert sink.n == 0
    with pytest.raises(DagSizeMismatch):
        local_store.get(root, max_size=LIMIT)
    # and with no limit at all the lie is still caught before the subtree's bytes
    with pytest.raises(DagSizeMismatch):
        local_store.get_to(root, CountingSink())


def test_children_that_do_not_add_up_are_named(local_store):
    a, b = encode_leaf(b"a" * 500), encode_leaf(b"b" * 500)
    # blocksizes 500 + 500 but filesize 900: refused at the root, nothing produced
    root_block = encode_parent([entry(a, 500), entry(b, 500)])
    assert b"\x18\xe8\x07" in root_block  # filesize 1000 as a varint
    bad = root_block.replace(b"\x18\xe8\x07", b"\x18\x84\x07")  # 900
    root = put_blocks(local_store, [a, b, bad])
    for read in (lambda: local_store.get(root, max_size=LIMIT),
                 lambda: local_store.get_to(root, CountingSink(), max_size=LIMIT),
                 lambda: b"".join(iter_content(root, {cid_of_block(x): x for x in (a, b, bad)}.__getitem__))):
        with pytest.raises(DagSizeMismatch, match="add up to 1000"):
            read()


def test_many_empty_leaves_exhaust_the_block_budget(local_store):
    """Zero-byte children produce nothing, so no size limit trips: the block budget does."""
    empty = encode_leaf(b"")
    node = encode_parent([entry(empty, 0)] * 174)
    top = encode_parent([entry(node, 0)] * 174)
    root = put_blocks(local_store, [empty, node, top])
    assert block_budget(4096) < 174 * 175
    with pytest.raises(DagTooComplex):
        local_store.get_to(root, CountingSink(), max_size=4096)
    with pytest.raises(DagTooComplex):
        local_store.get(root, max_size=4096)
    assert issubclass(DagTooComplex, InvalidDag)


def test_honest_content_at_exactly_the_limit_reads(local_store):
    data = payload(700_000, 5)
    cid = local_store.put(data)
    assert local_store.get(cid, max_size=len(data)) == data
    out = io.BytesIO()
    assert local_store.get_to(cid, out, max_size=len(data)) == len(data) and out.getvalue() == data
    with pytest.raises(ContentTooLarge):
        local_store.get(cid, max_size=len(data) - 1)
    with pytest.raises(ContentTooLarge):
        local_store.get_to(cid, CountingSink(), max_size=len(data) - 1)
    small = local_store.put(b"tiny")  # a one-block file
    assert local_store.get(small, max_size=4) == b"tiny"
    with pytest.raises(ContentTooLarge):
        local_store.get(small, max_size=3)
    with pytest.raises(ValueError):
        local_store.get(cid, max_size=-1)


def test_put_block_refuses_oversized_blocks(local_store):
    from fedchain.ipfs import StoreError
    from fedchain.ipfs.local import MAX_BLOCK_SIZE

    with pytest.raises(StoreError, match="over the"):
        local_store.put_block(b"\0" * (MAX_BLOCK_SIZE + 1))


# --------------------------------------------------------------------------- the Kubo path


@pytest.fixture
def kubo_attack(kubo_store):
    root, blocks = expanding_dag()
    for b in blocks:
        kubo_store._client.block.put(io.BytesIO(b), opts={"format": "dag-pb", "mhtype": "sha2-256", "version": "0"})
    return kubo_store, root, blocks


@pytest.mark.ipfsd
def test_kubo_expanding_dag_is_refused_before_cat(kubo_attack, monkeypatch):
    store, root, _ = kubo_attack
    monkeypatch.setattr(store._client, "cat", lambda *a, **k: pytest.fail("cat must not start"))
    sink = CountingSink()
    with pytest.raises(ContentTooLarge) as info:
        store.get_to(root, sink, max_size=LIMIT)
    assert sink.n == 0 and info.value.size == 262144 * 174**4
    with pytest.raises(ContentTooLarge):
        store.get(root, max_size=LIMIT)


@pytest.mark.ipfsd
def test_kubo_lying_root_stops_at_its_declared_size(kubo_attack):
    """js-ipfs streams what the root's blocksizes allow; the block-by-block check then finds the lie."""
    store, _, blocks = kubo_attack
    liar = encode_parent([entry(blocks[-1], 1 << 20)])
    store._client.block.put(io.BytesIO(liar), opts={"format": "dag-pb", "mhtype": "sha2-256", "version": "0"})
    sink = CountingSink(cap=1 << 20)
    with pytest.raises(DagSizeMismatch):
        store.get_to(cid_of_block(liar), sink, max_size=LIMIT)
    assert sink.n <= 1 << 20


@pytest.mark.ipfsd
def test_kubo_stream_is_cut_off_at_the_limit(kubo_store, monkeypatch):
    """A daemon that keeps sending past what the root declares is cut off before the excess is written."""
    data = payload(300_000, 8)
    cid = kubo_store.put(data)
    assert kubo_store.get(cid, max_size=len(data)) == data

    def endless(*_a, **_k):
        while True:
            yield b"\xab" * 65536

    monkeypatch.setattr(kubo_store._client, "cat", endless)
    sink = CountingSink(cap=len(data))
    with pytest.raises(ContentTooLarge):
        kubo_store.get_to(cid, sink, max_size=len(data))
    assert sink.n <= len(data)
