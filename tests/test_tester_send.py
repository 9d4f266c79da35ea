"""Sending on the embedded chain without a separate simulation (``TesterBackend.send_raw``).

A transaction is applied to the pending block; a revert must leave the chain exactly as a
refused simulation would: nothing mined, the nonce unused, the pending block (with its clock)
untouched, the contract's custom error raised. Both backends must agree on what is refused.
"""

from __future__ import annotations

import os

from fixtures_chain import reverts


def _state(system):
    chain = system.chain
    return (chain.block_number, chain.w3.eth.get_transaction_count(system.a.address, "pending"),
            chain.balance(system.a.address))


def test_a_reverted_transaction_leaves_no_trace(system):
    before = _state(system)
    with reverts("ConsortiumInvalidX25519Key"):
        system.A.consortium.set_x25519_key(b"\0" * 32)
    assert _state(system) == before  # no block, no nonce, no gas paid
    # the next transaction goes through as if nothing had been tried
    key = os.urandom(32)
    tx = system.A.consortium.set_x25519_key(key)
    assert tx.block_number == before[0] + 1
    assert system.fc.consortium.member_key(system.a.address) == key
    assert system.chain.w3.eth.get_transaction_count(system.a.address) == before[1] + 1


def test_a_revert_keeps_the_pending_block_and_its_clock(system):
    stamp = system.chain.advance_time(3600)
    with reverts("ConsortiumNotAMember"):
        system.O.consortium.set_x25519_key(os.urandom(32))
    tx = system.A.consortium.set_x25519_key(os.urandom(32))
    mined = system.chain.w3.eth.get_block(tx.block_number)
    assert mined["timestamp"] >= stamp and len(mined["transactions"]) == 1
