"""KuboStore against a real js-ipfs daemon, and LocalStore/daemon CID equality."""

from __future__ import annotations

import io
import socket
import threading
import time

import pytest

from fixtures_ipfs import payload
from fedchain.ipfs import (
    ContentMismatch,
    ContentNotFound,
    InvalidCid,
    KuboStore,
    NotPinned,
    StoreUnavailable,
    compute_cid,
)
from fedchain.ipfs.daemon import free_port
from fedchain.retry import RetryPolicy

pytestmark = [
    pytest.mark.ipfsd,
    # ipfshttpclient 0.7 passes urllib3 2.x a deprecated argument; harmless
    pytest.mark.filterwarnings("ignore:The 'strict' parameter is no longer needed:FutureWarning"),
]

UNKNOWN = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"

SIZES = [
    0,
    1000,
    300 * 1024,
    5 * 2**20,
    pytest.param(50_000_000, marks=pytest.mark.slow),  # > 174 chunks: a two-level tree
]


@pytest.mark.parametrize("size", SIZES)
def test_same_cid_and_round_trips_on_both(size, local_store, kubo_store):
    data = payload(size)
    local_cid = local_store.put(data)
    daemon_cid = kubo_store.put(data)
    assert local_cid == daemon_cid == compute_cid(data)
    assert local_store.get(local_cid) == data
    assert kubo_store.get(daemon_cid) == data
    out = io.BytesIO()
    assert kubo_store.get_to(daemon_cid, out) == size
    assert out.getvalue() == data
    # streaming put gives the same CID
    assert kubo_store.put(io.BytesIO(data), pin=False) == daemon_cid
    assert kubo_store.has(daemon_cid)
    # pins list, unpin works, on both
    for store, cid in ((local_store, local_cid), (kubo_store, daemon_cid)):
        assert store.is_pinned(cid)
        assert cid in store.pins()
        store.unpin(cid)
        assert not store.is_pinned(cid)
        assert cid not in store.pins()
        with pytest.raises(NotPinned):
            store.unpin(cid)
        store.pin(cid)
        assert store.is_pinned(cid)


def test_daemon_block_by_block_read(kubo_store):
    data = payload(700_000, 3)
    cid = kubo_store.put(data)
    assert b"".join(kubo_store.iter_chunks(cid)) == data


def test_content_added_with_other_settings_is_verified_block_by_block(kubo_store):
    """A CID from `ipfs add --chunker=size-1000` cannot be recomputed from the bytes; the
    blocks are then fetched and hash-checked one by one instead."""
    data = payload(5000, 12)
    cid = kubo_store._client.add_bytes(data, opts={"chunker": "size-1000", "pin": "false"})
    assert cid != compute_cid(data)
    assert kubo_store.get(cid) == data


def test_unknown_and_invalid_cid(kubo_store):
    t0 = time.monotonic()
    with pytest.raises(ContentNotFound, match=UNKNOWN):
        kubo_store.get(UNKNOWN)
    assert time.monotonic() - t0 < 10
    assert not kubo_store.has(UNKNOWN)
    assert not kubo_store.is_pinned(UNKNOWN)
    with pytest.raises(ContentNotFound):
        kubo_store.pin(UNKNOWN)
    with pytest.raises(InvalidCid):
        kubo_store.get("QmNotACid")
    with pytest.raises(InvalidCid):
        kubo_store.unpin("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi")


def test_lying_daemon_is_caught(kubo_store, monkeypatch):
    good = payload(5000, 11)
    cid = kubo_store.put(good)
    bad = bytearray(good)
    bad[100] ^= 1
    monkeypatch.setattr(kubo_store._client, "cat", lambda *a, **k: iter([bytes(bad)]))
    with pytest.raises(ContentMismatch, match=cid):
        kubo_store.get(cid)
    monkeypatch.setattr(kubo_store._client, "add_bytes", lambda chunks, **k: (b"".join(chunks), UNKNOWN)[1])
    with pytest.raises(ContentMismatch, match=UNKNOWN):
        kubo_store.put(good)


def test_concurrent_readers(kubo_store):
    items = [payload(400_000 + i, 20 + i) for i in range(3)]
    cids = [kubo_store.put(d) for d in items]
    errors = []

    def reader(i):
        try:
            for _ in range(3):
                assert kubo_store.get(cids[i % 3]) == items[i % 3]
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_daemon_down_is_store_unavailable_quickly():
    port = free_port()  # nothing listens there
    store = KuboStore(f"/ip4/127.0.0.1/tcp/{port}", retry=RetryPolicy(horizon=0.5, first_wait=0.1, max_wait=0.2))
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        store.put(b"hello")
    assert time.monotonic() - t0 < 5
    msg = str(info.value)
    assert f"/ip4/127.0.0.1/tcp/{port}" in msg and "daemon" in msg and "start" in msg
    for call in (lambda: store.get(UNKNOWN), lambda: store.has(UNKNOWN), lambda: store.pins()):
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            call()
        assert time.monotonic() - t0 < 5


def test_hung_daemon_is_store_unavailable_within_timeout():
    """A daemon that accepts connections but never answers."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        store = KuboStore(f"http://127.0.0.1:{port}", timeout=1.0, connect_timeout=1.0)
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match="timed out"):
            store.get(UNKNOWN)
        assert time.monotonic() - t0 < 5
