"""LocalStore: the embedded block store (no daemon)."""

from __future__ import annotations

import errno
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fixtures_ipfs import payload
from fedchain.ipfs import (
    BlockCorrupt,
    ContentNotFound,
    InvalidCid,
    KuboStore,
    LocalStore,
    NotPinned,
    StoreError,
    compute_cid,
    open_store,
)
from fedchain.ipfs.unixfs import decode_node, iter_blocks

UNKNOWN = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"


@pytest.mark.parametrize("size", [0, 1000, 300 * 1024, 5 * 2**20])
def test_round_trip_bytes_and_stream(local_store, size):
    data = payload(size)
    cid = local_store.put(data)
    assert cid == compute_cid(data)
    assert local_store.get(cid) == data
    assert local_store.put(io.BytesIO(data), pin=False) == cid
    out = io.BytesIO()
    assert local_store.get_to(cid, out) == size
    assert out.getvalue() == data
    assert local_store.has(cid)


class Trickle(io.RawIOBase):
    """A stream that hands out at most 100_000 bytes per read, like a pipe or socket."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        piece = self.data[self.pos:self.pos + min(n if n >= 0 else len(self.data), 100_000)]
        self.pos += len(piece)
        return piece


def test_short_reads_from_a_stream_give_the_same_cid(local_store):
    data = payload(3 * 262144 + 12345, 8)
    cid = local_store.put(Trickle(data))
    assert cid == compute_cid(data) and local_store.get(cid) == data


def test_pins_and_gc(local_store):
    a, b = payload(700_000, 1), payload(1000, 2)
    ca = local_store.put(a)
    cb = local_store.put(b, pin=False)
    assert local_store.is_pinned(ca) and not local_store.is_pinned(cb)
    assert local_store.pins() == [ca]
    local_store.pin(cb)
    assert local_store.pins() == sorted([ca, cb])
    local_store.unpin(ca)
    assert not local_store.is_pinned(ca)
    with pytest.raises(NotPinned):
        local_store.unpin(ca)
    removed = local_store.gc()
    assert removed == 4  # root + 3 leaves of `a`
    assert not local_store.has(ca)
    with pytest.raises(ContentNotFound):
        local_store.get(ca)
    assert local_store.get(cb) == b
    with pytest.raises(ContentNotFound):
        local_store.pin(ca)


def test_flipped_byte_is_block_corrupt(local_store):
    data = payload(600_000)
    cid = local_store.put(data)
    leaf = decode_node(local_store.block_path(cid).read_bytes()).links[1].cid
    path = local_store.block_path(leaf)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(BlockCorrupt, match=leaf):
        local_store.get(cid)
    with pytest.raises(BlockCorrupt, match=leaf):
        local_store.verify(cid)
    # a same-size corrupt block is caught on read; removing it and putting again heals
    path.unlink()
    assert not local_store.has(cid)
    local_store.put(data)
    assert local_store.get(cid) == data


def test_corrupt_root_block(local_store):
    cid = local_store.put(b"tiny")
    path = local_store.block_path(cid)
    path.write_bytes(path.read_bytes()[:-1] + b"X")
    with pytest.raises(BlockCorrupt, match=cid):
        local_store.get(cid)


def test_unknown_and_invalid_cids(local_store):
    with pytest.raises(ContentNotFound, match=UNKNOWN):
        local_store.get(UNKNOWN)
    assert not local_store.has(UNKNOWN)
    assert not local_store.is_pinned(UNKNOWN)
    for bad in ("not-a-cid", "Qm123", "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"):
        with pytest.raises(InvalidCid):
            local_store.get(bad)
        with pytest.raises(InvalidCid):
            local_store.pin(bad)


def test_missing_inner_block_names_it(local_store):
    data = payload(600_000)
    cid = local_store.put(data)
    leaf = decode_node(local_store.block_path(cid).read_bytes()).links[0].cid
    local_store.block_path(leaf).unlink()
    assert not local_store.has(cid)
    with pytest.raises(ContentNotFound, match=leaf):
        local_store.get(cid)


def test_crash_leftovers_do_not_corrupt(tmp_path):
    root = tmp_path / "store"
    store = LocalStore(root)
    data = payload(800_000)
    cid = compute_cid(data)
    # a crash mid-put: half-written temp files, a pin temp file, never renamed
    (root / "tmp" / f"{cid}.1234.deadbeef.tmp").write_bytes(b"\x12garbage")
    (root / "tmp" / "pin.1234.tmp").write_bytes(b"rec")
    # a block file truncated by a lying disk (size differs from the real block)
    blocks = dict(iter_blocks(data))
    some_leaf = next(iter(blocks))
    p = store.block_path(some_leaf)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(blocks[some_leaf][:100])

    reopened = LocalStore(root)
    assert not reopened.has(cid)
    assert reopened.pins() == []
    assert reopened.put(data) == cid  # rewrites the wrong-sized block
    assert reopened.get(cid) == data
    reopened.gc()
    assert list((root / "tmp").iterdir()) == []
    assert reopened.get(cid) == data


@pytest.fixture(params=["tmpfile", "renamed"])
def any_mode_store(request, tmp_path) -> LocalStore:
    """A LocalStore writing through O_TMPFILE + link, or through named temp files + rename."""
    store = LocalStore(tmp_path / "store")
    if request.param == "renamed":
        store._tmpfile = False
    else:
        assert store._tmpfile, "O_TMPFILE is expected on Linux ext4/tmpfs"
    return store


def test_put_writes_complete_files_or_none(any_mode_store, monkeypatch):
    """An interrupted write (part of a block written, then ENOSPC) leaves no partial block in place."""
    local_store = any_mode_store
    real_writev = os.writev
    calls = {"n": 0}
    lock = threading.Lock()

    def failing_writev(fd, buffers):
        with lock:
            calls["n"] += 1
            n = calls["n"]
        if n == 3:
            real_writev(fd, [bytes(buffers[0])[:5]])  # a torn temp file
            raise OSError(28, "No space left on device")
        return real_writev(fd, buffers)

    monkeypatch.setattr(os, "writev", failing_writev)
    data = payload(900_000)
    with pytest.raises(StoreError, match="No space left"):
        local_store.put(data)
    monkeypatch.setattr(os, "writev", real_writev)
    cid = compute_cid(data)
    assert not local_store.is_pinned(cid)
    assert list((local_store.root / "tmp").iterdir()) == []
    for shard in (local_store.root / "blocks").iterdir():  # every block in place is whole
        for f in shard.iterdir():
            local_store._read_block(f.name)
    assert local_store.put(data) == cid and local_store.get(cid) == data


def test_put_survives_short_writes(any_mode_store, monkeypatch):
    """The kernel may write less than asked: every block still lands whole."""
    local_store = any_mode_store
    real_writev = os.writev

    def short_writev(fd, buffers):
        first = bytes(buffers[0])
        return real_writev(fd, [first[: max(1, len(first) // 3)]])

    monkeypatch.setattr(os, "writev", short_writev)
    data = payload(700_000, 3)
    cid = local_store.put(data)
    monkeypatch.setattr(os, "writev", real_writev)
    assert cid == compute_cid(data)
    assert local_store.get(cid) == data and local_store.verify(cid) == len(data)


def test_falls_back_to_named_temp_files_without_o_tmpfile(local_store, monkeypatch):
    real_open = os.open

    def no_tmpfile(path, flags, *args, **kwargs):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_tmpfile)
    data = payload(600_000, 5)
    cid = local_store.put(data)
    assert local_store._tmpfile is False
    monkeypatch.setattr(os, "open", real_open)
    assert cid == compute_cid(data) and local_store.get(cid) == data and local_store.is_pinned(cid)
    assert list((local_store.root / "tmp").iterdir()) == []


def test_damaged_block_is_replaced_in_place(any_mode_store):
    """A block file of the wrong size (a lying disk) is rewritten by the next put of that content."""
    data = payload(600_000, 6)
    blocks = dict(iter_blocks(data))
    leaf = next(iter(blocks))
    path = any_mode_store.block_path(leaf)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blocks[leaf][:10])
    cid = any_mode_store.put(data)
    assert path.read_bytes() == blocks[leaf]
    assert any_mode_store.get(cid) == data
    assert sorted(f.name for f in path.parent.iterdir() if f.name.startswith(".")) == []


def test_concurrent_readers_and_writers(local_store):
    items = [payload(300_000 + i, i) for i in range(4)]
    cids = [local_store.put(d) for d in items]
    errors = []

    def reader(i: int) -> None:
        try:
            for _ in range(5):
                assert local_store.get(cids[i % 4]) == items[i % 4]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def writer(i: int) -> None:
        try:
            assert local_store.put(items[i % 4]) == cids[i % 4]
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    threads += [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # a second store object on the same directory (as another process would) sees it all
    other = LocalStore(local_store.root)
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(other.get, cids)) == items


def test_open_store(tmp_path):
    assert isinstance(open_store(f"local:{tmp_path / 'a'}"), LocalStore)
    assert isinstance(open_store(str(tmp_path / "b")), LocalStore)
    assert isinstance(open_store(tmp_path / "c"), LocalStore)
    k = open_store("/ip4/127.0.0.1/tcp/5999")
    assert isinstance(k, KuboStore) and k.addr == "/ip4/127.0.0.1/tcp/5999"
    k = open_store("http://127.0.0.1:5998")
    assert isinstance(k, KuboStore) and k.addr == "/ip4/127.0.0.1/tcp/5998"
    assert open_store("https://ipfs.example:8443").addr == "/dns/ipfs.example/tcp/8443/https"
    assert Path(open_store(f"local:{tmp_path / 'a'}").root) == (tmp_path / "a").resolve()
