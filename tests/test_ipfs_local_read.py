"""LocalStore.get reads leaves in parallel straight into their place: DAG shapes and lies.

The fast reader trusts nothing it has not checked: each leaf must hash to its
CID and hold exactly the byte range its parent's blocksizes give it, and every
internal node's sizes must agree with its parent's. Anything `ipfs add` would not
build but is still a valid file DAG is read by the in-order walker instead;
both must give the same bytes as :func:`ipfs.unixfs.iter_content`.
"""

from __future__ import annotations

import io

import pytest

from fixtures_ipfs import payload
from fedchain.ipfs import BlockCorrupt, ContentNotFound, InvalidDag, LocalStore
from fedchain.ipfs.unixfs import (
    DagBuilder,
    _Entry,
    _ld,
    _varint,
    cid_of_block,
    decode_node,
    encode_leaf,
    encode_parent,
    iter_content,
    multihash,
)


def store_blocks(store: LocalStore, blocks: dict[str, bytes]) -> None:
    for cid, block in blocks.items():
        path = store.block_path(cid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(block)


def reference(root: str, blocks: dict[str, bytes]) -> bytes:
    return b"".join(bytes(p) for p in iter_content(root, blocks.__getitem__))


def entry(block: bytes, filesize: int) -> _Entry:
    return _Entry(multihash(block), len(block), filesize)


def node_with(links: list[tuple[bytes, int]], *, data: bytes = b"", filesize: int | None = None,
              blocksizes: list[int] | None = None) -> bytes:
    """A dag-pb File node with free choice of inline data, filesize and blocksizes."""
    parts = []
    for block, _ in links:
        link = b"\x0a\x22" + multihash(block) + b"\x12\x00" + b"\x18" + _varint(len(block))
        parts.append(b"\x12" + _varint(len(link)) + link)
    sizes = [n for _, n in links] if blocksizes is None else blocksizes
    total = len(data) + sum(sizes) if filesize is None else filesize
    unixfs = b"\x08\x02" + (_ld(2, data) if data else b"") + b"\x18" + _varint(total)
    unixfs += b"".join(b"\x20" + _varint(n) for n in sizes)
    return b"".join(parts) + _ld(1, unixfs)


@pytest.mark.parametrize("size,chunk,fanout", [(20_000, 1000, 3), (9_999, 100, 4), (5_000, 5_000, 2)])
def test_deep_and_uneven_dags(local_store, size, chunk, fanout):
    data = payload(size)
    builder = DagBuilder(chunk, fanout)
    blocks = dict(builder.update(data) + builder.finish())
    store_blocks(local_store, blocks)
    assert local_store.get(builder.root) == data == reference(builder.root, blocks)
    out = io.BytesIO()
    assert local_store.get_to(builder.root, out) == size and out.getvalue() == data


def test_internal_node_with_inline_data_is_read_in_order(local_store):
    a, b = encode_leaf(b"A" * 300), encode_leaf(b"B" * 200)
    root = node_with([(a, 300), (b, 200)], data=b"head:")
    blocks = {cid_of_block(x): x for x in (a, b, root)}
    store_blocks(local_store, blocks)
    got = local_store.get(cid_of_block(root))
    assert got == b"head:" + b"A" * 300 + b"B" * 200 == reference(cid_of_block(root), blocks)


def test_leaves_framed_otherwise_are_still_read(local_store):
    """Leaves of exactly the expected size whose chunk sits elsewhere in the block (fields
    reordered) or that are typed Raw go through the full decoder, not the in-place path."""
    reordered = _ld(1, b"\x08\x02" + b"\x18" + _varint(400) + _ld(2, b"o" * 400))
    raw_leaf = _ld(1, b"\x08\x00" + _ld(2, b"r" * 400) + b"\x18" + _varint(400))
    plain = encode_leaf(b"p" * 400)
    assert len(reordered) == len(raw_leaf) == len(plain)
    root = node_with([(plain, 400), (reordered, 400), (raw_leaf, 400)])
    blocks = {cid_of_block(x): x for x in (plain, reordered, raw_leaf, root)}
    store_blocks(local_store, blocks)
    got = local_store.get(cid_of_block(root))
    assert got == b"p" * 400 + b"o" * 400 + b"r" * 400 == reference(cid_of_block(root), blocks)


def test_blocksizes_that_lie_about_a_leaf(local_store):
    """Sizes that add up but put the boundary in the wrong place are caught, not papered over."""
    a, b = encode_leaf(b"a" * 500), encode_leaf(b"b" * 500)
    root = encode_parent([entry(a, 501), entry(b, 499)])
    store_blocks(local_store, {cid_of_block(x): x for x in (a, b, root)})
    with pytest.raises(InvalidDag, match="parent says 501"):
        local_store.get(cid_of_block(root))


def test_blocksizes_that_lie_about_a_subtree(local_store):
    a, b, c = (encode_leaf(bytes([i]) * 100) for i in range(3))
    inner = encode_parent([entry(a, 100), entry(b, 100)])
    root = encode_parent([entry(inner, 150), entry(c, 150)])
    store_blocks(local_store, {cid_of_block(x): x for x in (a, b, c, inner, root)})
    with pytest.raises(InvalidDag, match="holds 200 bytes; its parent says 150"):
        local_store.get(cid_of_block(root))


def test_filesize_that_disagrees_with_blocksizes(local_store):
    a, b = encode_leaf(b"x" * 10), encode_leaf(b"y" * 10)
    root = node_with([(a, 10), (b, 10)], filesize=25)
    store_blocks(local_store, {cid_of_block(x): x for x in (a, b, root)})
    with pytest.raises(InvalidDag, match="declares 25 bytes"):
        local_store.get(cid_of_block(root))


def test_swapped_leaf_of_the_same_size_is_corrupt(local_store):
    data = payload(3 * 262144, 9)
    cid = local_store.put(data)
    links = decode_node(local_store.block_path(cid).read_bytes()).links
    first, second = (local_store.block_path(link.cid) for link in links[:2])
    first.write_bytes(second.read_bytes())  # authentic block, wrong name
    with pytest.raises(BlockCorrupt, match=links[0].cid):
        local_store.get(cid)


def test_missing_block_deep_in_the_tree_is_named(local_store):
    data = payload(4_000)
    builder = DagBuilder(100, 3)
    blocks = dict(builder.update(data) + builder.finish())
    store_blocks(local_store, blocks)
    inner = decode_node(blocks[builder.root]).links[0].cid
    leaf = next(c for c, blk in blocks.items() if not decode_node(blk).links)
    local_store.block_path(leaf).unlink()
    assert inner != leaf
    with pytest.raises(ContentNotFound, match=leaf):
        local_store.get(builder.root)


def test_results_are_independent_bytes(local_store):
    data = payload(600_000, 4)
    cid = local_store.put(data)
    a, b = local_store.get(cid), local_store.get(cid)
    assert type(a) is bytes and a == b == data and a is not b
