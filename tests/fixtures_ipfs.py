"""IPFS fixtures (js-ipfs daemon, LocalStore)."""

from __future__ import annotations

import os
import random
import shutil

import pytest

from fedchain.ipfs import JsIpfsDaemon, JsIpfsNotFound, KuboStore, LocalStore
from fedchain.ipfs.daemon import find_jsipfs

__all__ = ["ipfs_daemon", "kubo_store", "local_store", "payload", "require_jsipfs"]


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
