"""UnixFS / dag-pb builder and decoder, without a daemon.

Golden CIDs below were produced by ``ipfs add`` (js-ipfs 0.66.1, and for the
first two also Kubo's well-known values) for the same bytes.
"""

from __future__ import annotations

import io

import pytest

from fixtures_ipfs import payload
from fedchain.ipfs import BlockCorrupt, InvalidCid, InvalidDag
from fedchain.ipfs.unixfs import (
    CHUNK_SIZE,
    MAX_LINKS,
    DagBuilder,
    b58decode,
    b58encode,
    cid_of_block,
    compute_cid,
    decode_node,
    iter_blocks,
    iter_content,
    normalize_cid,
)

EMPTY = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
HELLO = "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"  # b"hello world"


def blocks_of(data: bytes, chunk_size: int = CHUNK_SIZE) -> dict[str, bytes]:
    return dict(iter_blocks(data, chunk_size))


def root_of(data: bytes, chunk_size: int = CHUNK_SIZE) -> str:
    root = None
    for root, _ in iter_blocks(data, chunk_size):
        pass
    return root


def depth(root: str, blocks: dict[str, bytes]) -> int:
    node = decode_node(blocks[root])
    return 1 + (depth(node.links[0].cid, blocks) if node.links else 0)


def test_known_cids():
    assert compute_cid(b"") == EMPTY
    assert compute_cid(b"hello world") == HELLO


def test_block_encodings_exact():
    # empty file: PBNode{Data: UnixFS{Type: File, filesize: 0}}
    assert dict(iter_blocks(b""))[EMPTY] == bytes.fromhex("0a0408021800")
    # one chunk: Data field (1) only, UnixFS {Type 2, Data, filesize}
    assert dict(iter_blocks(b"hello world"))[HELLO] == bytes.fromhex("0a110802120b") + b"hello world" + b"\x18\x0b"


def test_parent_encoding_links_first_empty_name_tsize():
    data = payload(CHUNK_SIZE + 10)
    blocks = blocks_of(data)
    root = root_of(data)
    raw = blocks[root]
    assert raw[0] == 0x12  # Links (field 2) serialized before Data (field 1)
    node = decode_node(raw)
    assert [link.name for link in node.links] == ["", ""]
    assert raw.count(b"\x12\x00\x18") == 2  # Name present as an empty string, then Tsize
    assert node.filesize == len(data)
    assert node.blocksizes == [CHUNK_SIZE, 10]
    for link in node.links:  # Tsize of a leaf = its block size
        assert link.tsize == len(blocks[link.cid])


def test_single_chunk_is_one_node_without_links():
    data = payload(CHUNK_SIZE)
    blocks = blocks_of(data)
    assert len(blocks) == 1
    assert decode_node(blocks[root_of(data)]).links == []


def test_layout_fanout_and_levels():
    cs = 64  # small chunks to exercise the same shapes fast
    blocks = blocks_of(payload(cs * MAX_LINKS), cs)
    root = root_of(payload(cs * MAX_LINKS), cs)
    assert len(decode_node(blocks[root]).links) == MAX_LINKS
    assert depth(root, blocks) == 2

    data = payload(cs * MAX_LINKS + 1)
    blocks, root = blocks_of(data, cs), root_of(data, cs)
    top = decode_node(blocks[root])
    assert len(top.links) == 2 and depth(root, blocks) == 3
    # the second subtree wraps its single leaf in a parent node (balanced layout)
    second = decode_node(blocks[top.links[1].cid])
    assert len(second.links) == 1
    # Tsize is cumulative over the whole subtree
    assert top.links[0].tsize == len(blocks[top.links[0].cid]) + sum(
        l.tsize for l in decode_node(blocks[top.links[0].cid]).links
    )


@pytest.mark.parametrize(
    "seed,chunk,size,cid",
    [  # three-level trees (> 174*174 leaves), checked against js-ipfs `add --chunker=size-16`
        (7, 16, 16 * 174 * 174 + 1, "QmPox2eS51b9vgXrWWBPCFVkXDDnGUpQHwzVPYHpRKPbNA"),
        (8, 16, 16 * (174 * 174 + 174) + 5, "QmTXhBS3xFJ124HvmY47zR1e6V6ELr1B8m9DaCujMimVfj"),
    ],
)
def test_three_level_golden(seed, chunk, size, cid):
    data = payload(size, seed)
    blocks, root = blocks_of(data, chunk), root_of(data, chunk)
    assert root == cid
    assert depth(root, blocks) == 4  # root, two internal levels, leaves
    assert b"".join(iter_content(root, blocks.__getitem__)) == data


class _Dribble(io.RawIOBase):
    """A stream returning odd-sized short reads, and counting what it served."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.max_read = data, 0, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = min(n if n >= 0 else len(self.data), 100_003)
        self.max_read = max(self.max_read, n)
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out


def test_streaming_matches_bytes_and_keeps_memory_small():
    data = payload(3 * CHUNK_SIZE + 12345)
    stream = _Dribble(data)
    assert compute_cid(stream) == compute_cid(data)
    assert stream.max_read <= CHUNK_SIZE

    builder = DagBuilder()
    done = []
    for pos in range(0, len(data), 7777):
        done += builder.update(data[pos:pos + 7777])
        assert len(builder._buf) < CHUNK_SIZE  # never more than one chunk buffered
        assert all(len(level) < MAX_LINKS for level in builder._levels)
    done += builder.finish()
    assert builder.root == compute_cid(data) == done[-1][0]
    assert builder.size == len(data)


def test_decoder_round_trip_and_verification():
    data = payload(2 * CHUNK_SIZE + 1)
    blocks = blocks_of(data)
    root = root_of(data)
    assert b"".join(iter_content(root, blocks.__getitem__)) == data

    leaf = decode_node(blocks[root]).links[1].cid
    tampered = dict(blocks)
    raw = bytearray(tampered[leaf])
    raw[-20] ^= 0x01
    tampered[leaf] = bytes(raw)
    with pytest.raises(BlockCorrupt, match=leaf):
        b"".join(iter_content(root, tampered.__getitem__))


def test_decoder_rejects_directories():
    # a UnixFS Directory node (Type 1), no links
    block = bytes.fromhex("0a020801")
    cid = cid_of_block(block)
    with pytest.raises(InvalidDag, match="directory"):
        list(iter_content(cid, {cid: block}.__getitem__))


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "hello",
        "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQ",  # too short
        "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1Aw0H",  # '0' is not base58
        "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",  # CIDv1
        "zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA",
    ],
)
def test_invalid_cids(bad):
    with pytest.raises(InvalidCid):
        normalize_cid(bad)


def test_base58_round_trip():
    for raw in (b"", b"\0", b"\0\0\x01", bytes(range(40))):
        assert b58decode(b58encode(raw)) == raw
    assert normalize_cid("/ipfs/" + HELLO) == HELLO
