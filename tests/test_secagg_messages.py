"""Canonical encodings of secure-aggregation messages: round trips and bounded, named refusals."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedchain.secagg.config import MAX_CLIENTS, MAX_VECTOR_LENGTH, SecAggConfig
from fedchain.secagg.errors import SecAggError, SecAggFormatError, SecAggVersionError
from fedchain.secagg.messages import (
    HEADER_SIZE,
    SHARE_CIPHERTEXT_SIZE,
    AdvertiseKeys,
    EncryptedShare,
    MaskedInput,
    RevealedShare,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
    max_message_size,
)

ids = st.integers(1, MAX_CLIENTS)
b32 = st.binary(min_size=32, max_size=32)
id_sets = st.lists(ids, unique=True, max_size=40).map(lambda xs: tuple(sorted(xs)))

advertise = st.builds(AdvertiseKeys, b32, ids, b32, b32)
share_keys = st.builds(
    lambda d, s, c, rs, cts: ShareKeys(d, s, c, tuple(EncryptedShare(r, ct) for r, ct in zip(rs, cts))),
    b32, ids, b32, id_sets, st.lists(st.binary(min_size=SHARE_CIPHERTEXT_SIZE, max_size=SHARE_CIPHERTEXT_SIZE), min_size=40, max_size=40),
)
masked = st.builds(
    lambda d, s, rb, n, seed: MaskedInput.from_vector(
        d, s, rb, np.random.default_rng(seed).integers(0, 2**rb, n, dtype=np.uint64 if rb == 64 else np.uint32)),
    b32, ids, st.sampled_from([32, 64]), st.integers(1, 300), st.integers(0, 2**32),
)
request = st.builds(UnmaskRequest, b32, id_sets, id_sets)
response = st.builds(
    lambda d, s, r, owners, kinds, idx, shares: UnmaskResponse(
        d, s, r, tuple(RevealedShare(o, k, i, sh) for o, k, i, sh in zip(owners, kinds, idx, shares))),
    b32, ids, b32, id_sets,
    st.lists(st.sampled_from([1, 2]), min_size=40, max_size=40),
    st.lists(ids, min_size=40, max_size=40),
    st.lists(b32, min_size=40, max_size=40),
)
messages = st.one_of(advertise, share_keys, masked, request, response)


@settings(max_examples=150, deadline=None, database=None)
@given(messages)
def test_round_trip_is_exact(msg):
    data = msg.encode()
    back = decode_message(data)
    assert back == msg
    assert back.encode() == data
    assert decode_message(data, type(msg)) == msg
    assert len(data) <= max_message_size(type(msg), MAX_CLIENTS, 300, 64)


@settings(max_examples=100, deadline=None, database=None)
@given(messages, st.data())
def test_every_truncation_and_extension_is_refused(msg, data):
    blob = msg.encode()
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(SecAggFormatError):
        decode_message(blob[:cut])
    with pytest.raises(SecAggFormatError, match="trailing"):
        decode_message(blob + data.draw(st.binary(min_size=1, max_size=8)))


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=400), st.integers(1, 5))
def test_random_bytes_give_only_named_errors(tail, typ):
    blob = b"FCSA" + bytes([1, typ]) + bytes(32) + tail
    try:
        decode_message(blob)
    except SecAggError:
        pass


def test_header_checks():
    msg = AdvertiseKeys(bytes(32), 1, bytes(range(32)), bytes(32))
    blob = bytearray(msg.encode())
    with pytest.raises(SecAggFormatError, match="magic"):
        decode_message(b"XXXX" + bytes(blob[4:]))
    blob[4] = 2
    with pytest.raises(SecAggVersionError):
        decode_message(bytes(blob))
    blob[4], blob[5] = 1, 9
    with pytest.raises(SecAggFormatError, match="unknown message type"):
        decode_message(bytes(blob))
    with pytest.raises(SecAggFormatError, match="expected a MaskedInput"):
        decode_message(msg.encode(), MaskedInput)
    with pytest.raises(SecAggFormatError, match="at least"):
        decode_message(b"FCSA")
    # a config is not a message
    cfg = SecAggConfig(bytes(32), bytes(32), 3, 2, 2, 4)
    with pytest.raises(SecAggFormatError):
        decode_message(cfg.encode())


def test_declared_sizes_are_bounded_before_allocation():
    head = b"FCSA" + bytes([1, 3]) + bytes(32)
    # a MaskedInput claiming 2^28 + 1 elements
    with pytest.raises(SecAggFormatError, match="outside"):
        decode_message(head + struct.pack(">HBI", 1, 32, MAX_VECTOR_LENGTH + 1))
    # claiming 2^28 elements with no data behind them: refused as truncated, nothing allocated
    with pytest.raises(SecAggFormatError, match="truncated"):
        decode_message(head + struct.pack(">HBI", 1, 64, MAX_VECTOR_LENGTH))
    # a share list longer than MAX_CLIENTS
    shares_head = b"FCSA" + bytes([1, 2]) + bytes(32) + struct.pack(">H", 1) + bytes(32)
    with pytest.raises(SecAggFormatError, match="exceed the bound"):
        decode_message(shares_head + struct.pack(">H", MAX_CLIENTS + 1))
    with pytest.raises(SecAggFormatError, match="do not fit"):
        decode_message(shares_head + struct.pack(">H", 3) + bytes(10))


def test_non_canonical_orders_and_values_are_refused():
    d = bytes(32)
    with pytest.raises(SecAggFormatError, match="ascending"):
        UnmaskRequest(d, (2, 1), ())
    with pytest.raises(SecAggFormatError, match="ascending"):
        decode_message(b"FCSA" + bytes([1, 4]) + d + struct.pack(">HHHH", 2, 3, 3, 0))
    with pytest.raises(SecAggFormatError, match="kind"):
        RevealedShare(1, 3, 1, bytes(32))
    with pytest.raises(SecAggFormatError, match="client id"):
        AdvertiseKeys(d, 0, d, d)
    with pytest.raises(SecAggFormatError, match="ring_bits"):
        decode_message(b"FCSA" + bytes([1, 3]) + d + struct.pack(">HBI", 1, 16, 1) + bytes(2))
    assert len(AdvertiseKeys(d, 1, d, d).encode()) == HEADER_SIZE + 66
