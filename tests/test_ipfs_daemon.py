"""JsIpfsDaemon lifecycle: clean stop, no process left behind, repo reuse, crash recovery."""

from __future__ import annotations

import os
import signal

import pytest

from fixtures_ipfs import payload, require_jsipfs
from fedchain.ipfs import JsIpfsDaemon, JsIpfsNotFound, KuboStore

pytestmark = [
    pytest.mark.ipfsd,
    pytest.mark.filterwarnings("ignore:The 'strict' parameter is no longer needed:FutureWarning"),
]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_session_daemon_is_running(ipfs_daemon):
    assert ipfs_daemon.running and not gone(ipfs_daemon.pid)
    assert ipfs_daemon.api_addr.startswith("/ip4/127.0.0.1/tcp/")
    assert ipfs_daemon.url == "http://127.0.0.1:" + ipfs_daemon.api_addr.rsplit("/", 1)[1]
    assert "Version" in KuboStore(ipfs_daemon.url).version()


@pytest.mark.slow
def test_stop_restart_keeps_content_and_recovers_from_kill(tmp_path):
    require_jsipfs()
    repo = tmp_path / "repo"
    data = payload(400_000, 99)

    with JsIpfsDaemon(repo=repo) as daemon:
        pid = daemon.pid
        cid = daemon.store().put(data)
    assert gone(pid) and group_gone(pid)
    assert not (repo / "repo.lock").exists() and not (repo / "api").exists()

    daemon = JsIpfsDaemon(repo=repo)
    daemon.start()
    killed_pid = daemon.pid
    try:
        store = daemon.store(fetch_timeout=2)
        assert store.get(cid) == data and store.is_pinned(cid)
    finally:
        os.killpg(killed_pid, signal.SIGKILL)  # crash: a fresh repo.lock is left behind
        daemon._proc.wait()
    assert (repo / "repo.lock").exists()
    assert gone(killed_pid)

    with JsIpfsDaemon(repo=repo) as again:  # starts without waiting for the 20 s lock expiry
        assert again.store(fetch_timeout=2).get(cid) == data
        pid = again.pid
    daemon.stop()  # already dead: only cleans up
    assert gone(pid) and group_gone(pid)
    assert repo.exists()  # a caller-provided repo is kept


def test_missing_jsipfs_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDCHAIN_JSIPFS", str(tmp_path / "nope" / "jsipfs"))
    with pytest.raises(JsIpfsNotFound, match="FEDCHAIN_JSIPFS"):
        JsIpfsDaemon(repo=tmp_path / "r").start()
