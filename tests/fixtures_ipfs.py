"""IPFS fixtures (js-ipfs daemon, LocalStore)."""

from __future__ import annotations

import os
import random
import shutil

import pytest

from fedchain.ipfs import JsIpfsDaemon, JsIpfsNotFound, KuboStore, LocalStore
from fedchain.ipfs.daemon import find_jsipfs

__all__ = ["expanding_dag", "ipfs_daemon", "kubo_store", "local_store", "payload", "require_jsipfs"]


def require_jsipfs() -> None:
    """Skip when Node.js/npm are absent (outside CI); fail when CI=true or jsipfs is missing."""
    in_ci = os.environ.get("CI", "").lower() == "true"
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        msg = f"js-ipfs daemon tests need {' and '.join(missing)} on PATH (install Node.js >= 18, then `npm install`)"
        if in_ci:
            pytest.fail(msg + " -- CI=true, so this is an error, not a skip")
        pytest.skip(msg)
    try:
        find_jsipfs()
    except JsIpfsNotFound as exc:
        pytest.fail(str(exc))


def payload(size: int, seed: int | None = None) -> bytes:
    """Deterministic pseudo-random bytes (seeded by ``size`` unless told)."""
    return random.Random(size if seed is None else seed).randbytes(size)


def expanding_dag(levels: int = 4, fanout: int = 174) -> tuple[str, list[bytes]]:
    """The DAG-expansion attack, built with ipfs.unixfs's own encoders: ``(root CID, blocks)``.

    One 256 KiB leaf, then ``levels`` internal nodes that each link the node below
    ``fanout`` times with honest sizes: about 300 KB of blocks whose root declares
    (and whose walk would produce) 256 KiB x 174**4, about 218 TiB.
    """
    from fedchain.ipfs.unixfs import CHUNK_SIZE, _Entry, cid_of_block, encode_leaf, encode_parent, multihash

    leaf = encode_leaf(b"x" * CHUNK_SIZE)
    blocks = [leaf]
    entry = _Entry(multihash(leaf), len(leaf), CHUNK_SIZE)
    for _ in range(levels):
        block = encode_parent([entry] * fanout)
        blocks.append(block)
        entry = _Entry(multihash(block), len(block) + entry.tsize * fanout, entry.filesize * fanout)
    return cid_of_block(blocks[-1]), blocks


@pytest.fixture(scope="session")
def ipfs_daemon(tmp_path_factory):
    """One real js-ipfs daemon for the whole session, stopped (and checked gone) at the end."""
    require_jsipfs()
    daemon = JsIpfsDaemon(repo=tmp_path_factory.mktemp("jsipfs") / "repo")
    daemon.start()
    pid = daemon.pid
    try:
        yield daemon
    finally:
        daemon.stop()
        try:  # nothing may survive the session: neither the daemon nor its process group
            os.killpg(pid, 0)
        except ProcessLookupError:
            pass
        else:  # pragma: no cover - would be a bug in JsIpfsDaemon.stop
            pytest.fail(f"js-ipfs process group {pid} still alive after stop()")


@pytest.fixture
def local_store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def kubo_store(ipfs_daemon):
    """A KuboStore on the session daemon; short lookup timeouts (the daemon is offline)."""
    store = KuboStore(ipfs_daemon.api_addr, fetch_timeout=2, has_timeout=1)
    try:
        yield store
    finally:
        store.close()
