"""UnixFS file DAGs in dag-pb, byte-for-byte what ``ipfs add`` builds by default.

Default ``ipfs add`` settings (Kubo and js-ipfs agree on them):

* fixed-size chunker, 262144-byte chunks;
* "balanced" layout with at most 174 links per node;
* raw leaves off: every leaf is a dag-pb node whose Data is a UnixFS ``File``
  message carrying the chunk;
* CIDv0: base58btc of the sha2-256 multihash of the serialized block.

Protobuf messages written here (field numbers from the dag-pb and UnixFS specs)::

    PBNode  { Links (2) repeated PBLink; Data (1) bytes }   links serialized first
    PBLink  { Hash (1) bytes; Name (2) string; Tsize (3) uint64 }
    UnixFS  { Type (1) enum, File = 2; Data (2) bytes; filesize (3) uint64;
              blocksizes (4) repeated uint64, unpacked }

Leaf block:     PBNode{Data: UnixFS{Type: File, Data: chunk, filesize: len(chunk)}}
Internal block: PBNode{Links: [{Hash, Name: "", Tsize}...],
                       Data: UnixFS{Type: File, filesize: total, blocksizes: [...]}}
Empty file:     PBNode{Data: UnixFS{Type: File, filesize: 0}} (no Data field).

``Name`` is always written, as an empty string (``12 00``), and ``Tsize`` is the
size of the child's block plus the Tsizes of all its links (the whole subtree).

The builder is streaming: it keeps one chunk and at most 174 pending links per
tree level, so memory stays around chunk size x fan-out whatever the input size.
The decoder walks a DAG from its root through a block getter, verifying every
block's hash before using it, and every node's sizes before yielding a byte under
it: a node must hold exactly what its parent's ``blocksizes`` entry says and its
own parts must add up (:class:`~ipfs.store.DagSizeMismatch`), so a walk never
produces more than the root declares; with ``max_size`` a root declaring more is
refused before the first byte and the blocks visited are bounded
(:func:`block_budget`). Blocks are untrusted input: a DAG whose nodes link one
child 174 times over four levels is ~300 KB of blocks declaring ~218 TiB.
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO, Callable, Iterator, NamedTuple

from .store import BlockCorrupt, ContentTooLarge, DagSizeMismatch, DagTooComplex, InvalidCid, InvalidDag

CHUNK_SIZE = 262144
MAX_LINKS = 174

_SHA2_256 = 0x12
_MH_PREFIX = bytes([_SHA2_256, 32])

# UnixFS Data.Type values
_RAW, _DIRECTORY, _FILE, _METADATA, _SYMLINK, _HAMT = range(6)


# --------------------------------------------------------------------------- base58 / CIDs

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


def b58encode(data: bytes) -> str:
    zeros = len(data) - len(data.lstrip(b"\0"))
    num = int.from_bytes(data, "big")
    out = []
    while num:
        num, rem = divmod(num, 58)
        out.append(_B58[rem])
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    num = 0
    for ch in text:
        try:
            num = num * 58 + _B58_INDEX[ch]
        except KeyError:
            raise ValueError(f"{ch!r} is not a base58btc character") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\0" * zeros + body


def multihash(block: bytes) -> bytes:
    """The sha2-256 multihash of ``block`` (the binary form of a CIDv0)."""
    return _MH_PREFIX + hashlib.sha256(block).digest()


def cid_of_block(block: bytes) -> str:
    """CIDv0 string of a serialized dag-pb block."""
    return b58encode(multihash(block))


def cid_of_digest(digest: bytes) -> str:
    """CIDv0 string of a block whose sha2-256 digest is ``digest``."""
    return b58encode(_MH_PREFIX + digest)


def cid_to_multihash(cid: str) -> bytes:
    """Parse a CIDv0 string into its 34-byte multihash; raise :class:`InvalidCid`."""
    if not isinstance(cid, str):
        raise InvalidCid(f"a CID must be a string, not {type(cid).__name__}")
    text = cid.strip()
    if text.startswith("/ipfs/"):
        text = text[len("/ipfs/"):]
    if len(text) != 46 or not text.startswith("Qm"):
        if text.startswith(("b", "z", "f")) and len(text) > 46:
            raise InvalidCid(f"{cid!r} looks like a CIDv1; only CIDv0 (Qm…) is supported")
        raise InvalidCid(f"{cid!r} is not a CIDv0 (expected 46 base58 characters starting 'Qm')")
    try:
        raw = b58decode(text)
    except ValueError as exc:
        raise InvalidCid(f"{cid!r} is not a CIDv0: {exc}") from None
    if len(raw) != 34 or raw[:2] != _MH_PREFIX:
        raise InvalidCid(f"{cid!r} is not a sha2-256 CIDv0")
    return raw


def normalize_cid(cid: str) -> str:
    """Validate ``cid`` and return its canonical CIDv0 string."""
    return b58encode(cid_to_multihash(cid))


def verify_block(cid: str, block: bytes) -> None:
    """Raise :class:`BlockCorrupt` unless ``block`` hashes to ``cid``."""
    got = cid_of_block(block)
    if got != cid:
        raise BlockCorrupt(f"block {cid} is corrupt: its bytes hash to {got}")


# --------------------------------------------------------------------------- protobuf


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes | memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """Yield ``(field_number, value)``; value is an int (varint) or a memoryview."""
    view = memoryview(buf)
    pos = 0
    end = len(view)
    while pos < end:
        key, pos = _read_varint(view, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(view, pos)
            yield field, value
        elif wire == 2:
            length, pos = _read_varint(view, pos)
            if pos + length > end:
                raise ValueError("truncated length-delimited field")
            yield field, view[pos:pos + length]
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise ValueError("truncated field")


def _ld(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def leaf_frame(n: int) -> tuple[bytes, bytes]:
    """The bytes around an ``n``-byte chunk in its leaf block: ``block = head + chunk + tail``."""
    head = b"\x08\x02" + (b"\x12" + _varint(n) if n else b"")
    tail = b"\x18" + _varint(n)
    inner = len(head) + n + len(tail)
    return b"\x0a" + _varint(inner) + head, tail


def encode_leaf(chunk: bytes | memoryview) -> bytes:
    """The dag-pb block of one leaf (a UnixFS File node holding ``chunk``)."""
    head, tail = leaf_frame(len(chunk))
    return b"".join((head, chunk, tail))  # one join, so the chunk is copied once


def hash_leaf(chunk: bytes | memoryview) -> tuple[bytes, bytes, bytes]:
    """``(multihash, head, tail)`` of the leaf block of ``chunk``, without building the block.

    The block is ``head + chunk + tail``; hashing the three parts in turn avoids a
    copy of the chunk (and hashlib releases the GIL meanwhile, so other threads run).
    """
    head, tail = leaf_frame(len(chunk))
    h = hashlib.sha256(head)
    h.update(chunk)
    h.update(tail)
    return _MH_PREFIX + h.digest(), head, tail


class _Entry(NamedTuple):
    mh: bytes  # binary CIDv0 of the child
    tsize: int  # child's block size + its descendants' blocks
    filesize: int  # file bytes under the child


def encode_parent(children: list[_Entry]) -> bytes:
    """The dag-pb block of an internal node linking ``children`` in order."""
    parts = []
    for child in children:
        link = b"\x0a\x22" + child.mh + b"\x12\x00" + b"\x18" + _varint(child.tsize)
        parts.append(b"\x12" + _varint(len(link)) + link)
    unixfs = [b"\x08\x02\x18", _varint(sum(c.filesize for c in children))]
    for child in children:
        unixfs.append(b"\x20" + _varint(child.filesize))
    data = b"".join(unixfs)
    parts.append(b"\x0a" + _varint(len(data)) + data)
    return b"".join(parts)


class Link(NamedTuple):
    cid: str
    name: str
    tsize: int


class Node(NamedTuple):
    """A decoded dag-pb block holding UnixFS data."""

    links: list[Link]
    type: int  # UnixFS Data.Type
    data: bytes | memoryview  # inline file bytes (leaves); a view into the block
    filesize: int | None
    blocksizes: list[int]


def decode_node(block: bytes, cid: str = "?") -> Node:
    """Decode a dag-pb block and its UnixFS Data; raise :class:`InvalidDag`."""
    try:
        links: list[Link] = []
        pb_data: memoryview | None = None
        for field, value in _fields(block):
            if field == 2 and isinstance(value, memoryview):
                h, name, tsize = b"", "", 0
                for f, v in _fields(value):
                    if f == 1 and isinstance(v, memoryview):
                        h = bytes(v)
                    elif f == 2 and isinstance(v, memoryview):
                        name = bytes(v).decode("utf-8")
                    elif f == 3 and isinstance(v, int):
                        tsize = v
                if len(h) != 34 or h[:2] != _MH_PREFIX:
                    raise InvalidDag(f"block {cid} links to a non-CIDv0 hash (raw leaves / CIDv1 are not supported)")
                links.append(Link(b58encode(h), name, tsize))
            elif field == 1 and isinstance(value, memoryview):
                pb_data = value
            else:
                raise ValueError(f"unexpected PBNode field {field}")
        if pb_data is None:
            raise InvalidDag(f"block {cid} has no UnixFS Data (not a UnixFS node)")
        utype, data, filesize, blocksizes = None, b"", None, []
        for field, value in _fields(pb_data):
            if field == 1 and isinstance(value, int):
                utype = value
            elif field == 2 and isinstance(value, memoryview):
                data = value  # a view into the block: no copy of the chunk
            elif field == 3 and isinstance(value, int):
                filesize = value
            elif field == 4:
                if isinstance(value, int):
                    blocksizes.append(value)
                else:  # tolerate a packed encoding
                    pos = 0
                    while pos < len(value):
                        v, pos = _read_varint(value, pos)
                        blocksizes.append(v)
        if utype is None:
            raise InvalidDag(f"block {cid}: UnixFS Data has no Type")
        return Node(links, utype, data, filesize, blocksizes)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidDag(f"block {cid} is not valid dag-pb/UnixFS: {exc}") from None


def decode_file_node(block: bytes | memoryview, cid: str, root: str) -> Node:
    """:func:`decode_node`, and :class:`InvalidDag` unless it is part of a file (not a directory...)."""
    node = decode_node(block, cid)
    if node.type not in (_FILE, _RAW):
        kind = {_DIRECTORY: "a directory", _HAMT: "a sharded directory", _SYMLINK: "a symlink"}
        raise InvalidDag(f"{root} is {kind.get(node.type, f'UnixFS type {node.type}')}, not a file")
    return node


# --------------------------------------------------------------------------- builder


Block = tuple[str, bytes]  # (CIDv0, serialized dag-pb block)


class DagBuilder:
    """Incremental builder: feed bytes with :meth:`update`, then :meth:`finish`.

    Both return the blocks completed by that call (``(cid, bytes)`` pairs, children
    before parents); the last block returned by :meth:`finish` is the root, also
    available as :attr:`root`. :attr:`size` counts the file bytes fed so far.
    """

    def __init__(self, chunk_size: int = CHUNK_SIZE, max_links: int = MAX_LINKS) -> None:
        if chunk_size <= 0 or max_links < 2:
            raise ValueError("chunk_size must be > 0 and max_links >= 2")
        self.chunk_size = chunk_size
        self.max_links = max_links
        self.size = 0
        self.root: str | None = None
        self._buf = bytearray()
        self._levels: list[list[_Entry]] = [[]]  # pending entries per tree level
        self._leaves = 0

    def update(self, data: bytes | bytearray | memoryview) -> list[Block]:
        if self.root is not None:
            raise RuntimeError("DagBuilder already finished")
        out: list[Block] = []
        view = memoryview(data).cast("B")
        self.size += len(view)
        pos = 0
        if self._buf:
            take = min(self.chunk_size - len(self._buf), len(view))
            self._buf += view[:take]
            pos = take
            if len(self._buf) == self.chunk_size:
                self._leaf(self._buf, out)
                self._buf = bytearray()
        while len(view) - pos >= self.chunk_size:
            self._leaf(view[pos:pos + self.chunk_size], out)
            pos += self.chunk_size
        if pos < len(view):
            self._buf += view[pos:]
        return out

    def add_leaf(self, mh: bytes, block_size: int, chunk_size: int) -> list[Block]:
        """Add a leaf whose block was built and stored elsewhere (see :func:`hash_leaf`).

        For callers that chunk the file themselves (every chunk ``chunk_size``
        bytes except the last) and must not mix this with :meth:`update`.
        Returns the internal blocks completed by it.
        """
        if self.root is not None:
            raise RuntimeError("DagBuilder already finished")
        if self._buf:
            raise RuntimeError("add_leaf after update with a partial chunk pending")
        out: list[Block] = []
        self.size += chunk_size
        self._leaves += 1
        self._push(0, _Entry(mh, block_size, chunk_size), out)
        return out

    def finish(self) -> list[Block]:
        if self.root is not None:
            raise RuntimeError("DagBuilder already finished")
        out: list[Block] = []
        if self._buf or self._leaves == 0:
            self._leaf(self._buf, out)  # the tail, or the one empty leaf of an empty file
            self._buf = bytearray()
        if self._leaves == 1 and len(self._levels) == 1:
            # a one-chunk file is just its leaf (no parent node)
            self.root = out[-1][0] if out else b58encode(self._levels[0][0].mh)
            return out
        level = 0
        while True:
            entries = self._levels[level]
            higher = any(self._levels[level + 1:])
            if not higher and len(entries) == 1 and level > 0:
                self.root = b58encode(entries[0].mh)
                return out
            if entries:
                self._reduce(level, out)
            level += 1

    def _leaf(self, chunk: bytes | bytearray | memoryview, out: list[Block]) -> None:
        block = encode_leaf(chunk)
        mh = multihash(block)
        out.append((b58encode(mh), block))
        self._leaves += 1
        self._push(0, _Entry(mh, len(block), len(chunk)), out)

    def _push(self, level: int, entry: _Entry, out: list[Block]) -> None:
        self._levels[level].append(entry)
        if len(self._levels[level]) == self.max_links:
            self._reduce(level, out)

    def _reduce(self, level: int, out: list[Block]) -> None:
        children = self._levels[level]
        self._levels[level] = []
        if len(self._levels) == level + 1:
            self._levels.append([])
        block = encode_parent(children)
        mh = multihash(block)
        out.append((b58encode(mh), block))
        entry = _Entry(mh, len(block) + sum(c.tsize for c in children), sum(c.filesize for c in children))
        self._push(level + 1, entry, out)


def _read_chunks(source: bytes | bytearray | memoryview | BinaryIO, chunk_size: int) -> Iterator[bytes | memoryview]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source).cast("B")
        for pos in range(0, len(view), chunk_size):
            yield view[pos:pos + chunk_size]
        return
    read = getattr(source, "read", None)
    if read is None:
        raise TypeError(f"expected bytes or a binary file object, not {type(source).__name__}")
    while True:
        piece = read(chunk_size)
        if not piece:
            return
        if isinstance(piece, str):
            raise TypeError("the stream must be opened in binary mode")
        yield piece


def split_chunks(source: bytes | BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes | memoryview]:
    """The chunks ``ipfs add`` cuts ``source`` into: each ``chunk_size`` bytes but the last.

    Bytes-like input is sliced without copying; short reads from a stream (pipes,
    sockets) are filled up before a chunk is yielded. Nothing for empty input.
    """
    pending = bytearray()
    for piece in _read_chunks(source, chunk_size):
        if not pending and len(piece) == chunk_size:
            yield piece
            continue
        pending += piece
        while len(pending) >= chunk_size:
            yield bytes(pending[:chunk_size])
            del pending[:chunk_size]
    if pending:
        yield bytes(pending)


def iter_blocks(source: bytes | BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[Block]:
    """Yield the DAG's blocks, children before parents; the last one is the root."""
    builder = DagBuilder(chunk_size)
    for piece in _read_chunks(source, chunk_size):
        yield from builder.update(piece)
    yield from builder.finish()


def compute_cid(source: bytes | BinaryIO) -> str:
    """The CID ``ipfs add`` (default settings) would return for ``source``."""
    root = None
    for root, _ in iter_blocks(source):
        pass
    assert root is not None
    return root


# --------------------------------------------------------------------------- decoder


#: Average file bytes per block below which a size-limited read calls a DAG too complex
#: (``ipfs add`` puts 256 KiB in a leaf; even a 1 KiB chunker stays well inside).
MIN_BYTES_PER_BLOCK = 1024


def block_budget(max_size: int) -> int:
    """The most blocks a read limited to ``max_size`` bytes visits (:class:`DagTooComplex` past it).

    Without it, a DAG of empty or one-byte leaves linked many times over could keep a
    reader busy for hours while producing next to nothing.
    """
    return 64 + 2 * (max_size // MIN_BYTES_PER_BLOCK + 1)


def node_size(node: Node, cid: str) -> int:
    """File bytes under ``node``: its inline data plus its children's ``blocksizes``.

    Raises :class:`DagSizeMismatch` when the node has links without one blocksize
    each, or declares a ``filesize`` its own parts do not add up to.
    """
    if len(node.blocksizes) != len(node.links):
        raise DagSizeMismatch(f"block {cid} has {len(node.links)} links but {len(node.blocksizes)} blocksizes")
    size = len(node.data) + sum(node.blocksizes)
    if node.filesize is not None and node.filesize != size:
        raise DagSizeMismatch(f"block {cid} declares {node.filesize} bytes but its parts add up to {size}")
    return size


def check_max_size(max_size: int | None) -> None:
    """``max_size`` must be None or a non-negative integer (a programming error otherwise)."""
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0):
        raise ValueError(f"max_size must be None or a non-negative integer, got {max_size!r}")


def iter_content(root: str, get_block: Callable[[str], bytes], *, verify: bool = True,
                 max_size: int | None = None) -> Iterator[bytes]:
    """Yield the file bytes of the DAG at ``root`` in order.

    ``get_block(cid)`` returns a block's raw bytes (raising a StoreError when it
    is missing). Every block is verified against its CID (:class:`BlockCorrupt`;
    ``verify=False`` when ``get_block`` already does it) and its sizes are checked
    *before* anything under it is yielded: each node must hold exactly the bytes its
    parent's ``blocksizes`` entry gives it and its own parts must add up
    (:class:`DagSizeMismatch`), so the walk can never produce more than the root
    declares. With ``max_size``, a root declaring more raises :class:`ContentTooLarge`
    before the first byte, and visiting more than :func:`block_budget` blocks raises
    :class:`DagTooComplex`. The walk is depth first and keeps only the link lists
    of the current path.
    """
    root = normalize_cid(root)
    check_max_size(max_size)
    budget = None if max_size is None else block_budget(max_size)
    visited = 0
    stack: list[Iterator[tuple[Link, int | None]]] = [iter([(Link(root, "", 0), None)])]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        link, expected = item
        visited += 1
        if budget is not None and visited > budget:
            raise DagTooComplex(f"{root} needs more than {budget} blocks for at most {max_size} bytes")
        block = get_block(link.cid)
        if verify:
            verify_block(link.cid, block)
        node = decode_file_node(block, link.cid, root)
        size = node_size(node, link.cid)
        if expected is None:  # the root: what it declares is all the walk may produce
            if max_size is not None and size > max_size:
                raise ContentTooLarge(root, max_size, size)
        elif size != expected:
            raise DagSizeMismatch(f"block {link.cid} holds {size} bytes; its parent says {expected}")
        if node.data:
            yield node.data
        if node.links:
            stack.append(iter(zip(node.links, node.blocksizes)))


def iter_links(block: bytes, cid: str = "?") -> list[str]:
    """CIDs linked from a dag-pb block (no verification)."""
    return [link.cid for link in decode_node(block, cid).links]

