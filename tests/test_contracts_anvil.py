"""The anvil process manager."""

from __future__ import annotations

import os
import socket

import pytest

from fedchain.contracts import anvil as anvil_mod
from fedchain.contracts.anvil import Anvil, AnvilError, find_anvil, rpc_ready
from fedchain.contracts.bindings import Chain

pytestmark = pytest.mark.anvil


@pytest.fixture(scope="module")
def binary():
    try:
        return find_anvil()
    except AnvilError as exc:
        pytest.skip(str(exc))


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # still listed: must at least not be running (a zombie would be reaped by wait())
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] == "Z"


def test_find_anvil_env_override(monkeypatch, tmp_path, binary):
    monkeypatch.setenv("FEDCHAIN_ANVIL", str(binary))
    assert find_anvil() == binary
    monkeypatch.setenv("FEDCHAIN_ANVIL", str(tmp_path / "nope"))
    with pytest.raises(AnvilError, match="FEDCHAIN_ANVIL"):
        find_anvil()


def test_find_anvil_missing(monkeypatch, tmp_path):
    monkeypatch.delenv("FEDCHAIN_ANVIL", raising=False)
    monkeypatch.setattr(anvil_mod, "REPO_ROOT", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AnvilError, match="npm install"):
        find_anvil()


def test_start_stop_leaves_no_process(binary):
    node = Anvil()
    with node:
        pid = node.pid
        assert node.running and rpc_ready(node.url)
        assert node.url.startswith("http://127.0.0.1:")
        assert Chain.connect(node.url).chain_id == 31337
    assert not node.running and node.pid is None
    assert _gone(pid)
    with pytest.raises(AnvilError):
        node.url  # noqa: B018
    node.stop()  # idempotent


def test_context_manager_stops_on_error(binary):
    node = Anvil(chain_id=4242)
    with pytest.raises(RuntimeError):
        with node:
            pid = node.pid
            assert Chain.connect(node.url).chain_id == 4242
            raise RuntimeError("boom")
    assert _gone(pid)


def test_state_persists_across_restarts(binary, tmp_path):
    state = tmp_path / "chain" / "state.json"
    node = Anvil(state_file=state)
    with node:
        chain = Chain.connect(node.url)
        key = chain.dev_accounts[0]
        chain.fund(chain.dev_accounts[9].address, 12345, sender=key)
        chain.mine(4)
        height = chain.block_number
        balance = chain.balance(chain.dev_accounts[9].address)
    assert state.exists() and state.stat().st_size > 0
    with Anvil(state_file=state) as again:
        chain = Chain.connect(again.url)
        assert chain.block_number == height
        assert chain.balance(chain.dev_accounts[9].address) == balance


def test_port_in_use(binary):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        with pytest.raises(AnvilError):
            Anvil(port=port).start(timeout=10)
