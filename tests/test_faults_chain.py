"""The chain transport rides out a restarted node (real anvil, state kept in a file).

* a call made while the node is down waits (each wait logged) and gets its answer
  once the node is back on the same URL;
* a transaction the node lost in the restart (anvil keeps mined blocks, not its
  pending pool) is sent again, byte for byte, and is mined exactly once;
* a revert is an answer: it is never retried, however long the retry horizon;
* the node restarted from its state file has no historical state, so the role
  loops never ask for any (everything "as of block N" comes from events).
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from fedchain.contracts.anvil import Anvil
from fedchain.contracts.bindings import Chain, ChainRevert
from fixtures_chain import make_founders
from fedchain.retry import RetryPolicy

pytestmark = [pytest.mark.anvil]

PATIENT = RetryPolicy(horizon=60, first_wait=0.2, max_wait=1.0, jitter=0.1)


@pytest.fixture
def node(tmp_path):
    with Anvil(state_file=tmp_path / "anvil-state.json") as a:
        yield a


def test_a_call_during_a_restart_waits_for_the_node(node, caplog):
    caplog.set_level(logging.WARNING, logger="fedchain.retry")
    chain = Chain.connect(node.url, retry=PATIENT)
    chain.mine(3)
    url = node.url
    node.stop()
    answer: dict = {}
    asking = threading.Thread(target=lambda: answer.setdefault("height", chain.block_number))
    asking.start()  # asked while the node is down ...
    time.sleep(2.0)
    assert asking.is_alive() and not answer
    node.start()  # (from this thread: anvil is tied to the thread that starts it)
    asking.join(30)
    assert answer == {"height": 3}  # ... and answered after its restart
    assert node.url == url  # the same address
    assert any("chain node at " + url in r.getMessage() and "retrying in" in r.getMessage() for r in caplog.records)


def test_a_transaction_lost_in_a_restart_is_sent_again_and_mined_once(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="fedchain.chain")
    with Anvil(state_file=tmp_path / "state.json", extra_args=["--no-mining"]) as node:
        chain = Chain.connect(node.url, retry=PATIENT)
        sender, receiver = chain.dev_accounts[0], chain.dev_accounts[7].address
        before = chain.balance(receiver)
        done: dict = {}

        def send():
            try:
                done["receipt"] = chain.fund(receiver, 12345, sender=sender)
            except BaseException as exc:  # noqa: BLE001 - reported below
                done["error"] = exc

        t = threading.Thread(target=send)
        t.start()
        deadline = time.monotonic() + 20
        while not chain.backend.rpc("txpool_content")["pending"]:  # waiting in the pool, not mined
            assert time.monotonic() < deadline and t.is_alive(), done
            time.sleep(0.05)
        node.restart(down_seconds=1.0)  # the pending pool is not in the state file
        lost = time.monotonic() + 20
        while not chain.backend.rpc("txpool_content")["pending"]:  # ... until the sender sends it again
            assert time.monotonic() < lost, "the lost transaction was not sent again"
            time.sleep(0.1)
        chain.mine(1)
        t.join(30)
        assert "error" not in done, done.get("error")
        assert chain.balance(receiver) == before + 12345  # mined, and only once
        chain.mine(2)
        assert chain.balance(receiver) == before + 12345
    assert any("no longer known" in r.getMessage() and "sending it again" in r.getMessage() for r in caplog.records)


def test_a_revert_is_never_retried(node):
    chain = Chain.connect(node.url, retry=PATIENT)
    accounts = chain.dev_accounts
    dep = chain.deploy(accounts[0], founders=make_founders(accounts[:3]), coordinator=accounts[3].address)
    outsider = chain.attach(dep).as_(accounts[5])
    t0 = time.monotonic()
    with pytest.raises(ChainRevert):
        outsider.rounds.open_round(1, 1)  # not the coordinator
    assert time.monotonic() - t0 < 3  # refused at once, not retried for the 60 s horizon
