"""Secure aggregation core: correctness under dropouts, what the server sees, refusals."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

import numpy as np
import pytest

from fedchain.secagg import (
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    choose_parameters,
    decode_message,
    encode_vector,
    reconstruct_sum,
)
from fedchain.secagg.config import decode_vector
from fedchain.secagg.errors import (
    SecAggAuthenticationError,
    SecAggConfigError,
    SecAggDropoutError,
    SecAggFormatError,
    SecAggInputError,
    SecAggProtocolError,
    SecAggReconstructionError,
)
from fedchain.secagg.messages import (
    KIND_MASK_KEY,
    AdvertiseKeys,
    EncryptedShare,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)


def make_cfg(n=5, t=3, degree=None, length=64, seed=b"s", **kw) -> SecAggConfig:
    return SecAggConfig(
        round_id=hashlib.sha256(b"round" + seed).digest(),
        round_seed=hashlib.sha256(b"seed" + seed).digest(),
        n_clients=n, threshold=t, degree=n - 1 if degree is None else degree, vector_length=length, **kw,
    )


def inputs(cfg: SecAggConfig, seed: int = 0, scale: float = 2.0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i: rng.uniform(-scale, scale, cfg.vector_length).astype(np.float32) for i in cfg.ids}


def wire(msg):
    """Every message crosses the boundary as canonical bytes."""
    return decode_message(msg.encode())


class Round:
    """One round driven in-process, with dropouts at each phase."""

    def __init__(self, cfg, xs, *, no_keys=(), no_shares=(), no_masked=(), no_response=()):
        self.cfg, self.xs = cfg, xs
        self.clients = {i: SecAggClient(cfg, i) for i in cfg.ids}
        self.server = SecAggServer(cfg)
        self.no_keys, self.no_shares, self.no_masked, self.no_response = map(set, (no_keys, no_shares, no_masked, no_response))

    def phase0(self):
        for i, c in self.clients.items():
            adv = c.advertise()
            if i not in self.no_keys:
                self.server.add_advertise(wire(adv))
        self.u1 = self.server.close_advertise()
        return self.u1

    def phase1(self):
        for i in self.u1:
            sk = self.clients[i].share_keys(self.u1)
            if i not in self.no_shares:
                self.server.add_shares(wire(sk))
        self.u2 = self.server.close_shares()
        return self.u2

    def phase2(self):
        for i in self.u2:
            mi = self.clients[i].masked_input(self.xs[i], self.u2)
            if i not in self.no_masked:
                self.server.add_masked(wire(mi))
        self.request = wire(self.server.close_masked())
        return self.request

    def phase3(self):
        for i in self.request.survivors:
            if i not in self.no_response:
                self.server.add_response(wire(self.clients[i].unmask(self.request, committed=self.server.masked)))
        return self.server.aggregate()

    def run(self):
        self.phase0()
        self.phase1()
        self.phase2()
        return self.phase3()


def expected_ring_sum(cfg, xs, ids):
    total = np.zeros(cfg.vector_length, dtype=cfg.dtype)
    for i in ids:
        total += encode_vector(xs[i], cfg)[0]
    return total


# ----------------------------------------------------------------------------- correctness

CASES = [
    # (n, t, degree, dropouts by phase: keys, shares, masked)
    (3, 2, None, (), (), ()),
    (3, 2, None, (), (), (3,)),
    (5, 3, None, (), (), (2, 5)),            # n - t dropouts after sharing
    (5, 3, None, (4,), (), (1,)),            # one never advertised, one dropped after sharing
    (6, 3, None, (), (6,), (1, 2)),          # one advertised but never shared
    (8, 5, None, (), (), (1, 4, 8)),
    (12, 3, 4, (), (), ()),                  # SecAgg+ sparse graph
    (12, 3, 4, (), (), (2, 7, 11)),
    (12, 3, 4, (5,), (9,), (2,)),
]


@pytest.mark.parametrize("n,t,degree,no_keys,no_shares,no_masked", CASES)
def test_unmasked_sum_equals_plaintext_sum(n, t, degree, no_keys, no_shares, no_masked):
    cfg = make_cfg(n, t, degree, length=257)
    xs = inputs(cfg, seed=n)
    rnd = Round(cfg, xs, no_keys=no_keys, no_shares=no_shares, no_masked=no_masked)
    result = rnd.run()
    survivors = tuple(i for i in cfg.ids if i not in set(no_keys) | set(no_shares) | set(no_masked))
    assert result.survivors == survivors
    # Exact: every mask removed, bit for bit.
    assert np.array_equal(result.ring_sum, expected_ring_sum(cfg, xs, survivors))
    # Within the fixed-point precision of the float sum.
    exact = sum(xs[i].astype(np.float64) for i in survivors)
    assert np.max(np.abs(result.values - exact)) <= len(survivors) * 2.0 ** -(cfg.frac_bits + 1)
    assert np.allclose(result.mean(), exact / len(survivors), atol=2.0 ** -(cfg.frac_bits + 1))


def test_ring64_and_clipping():
    cfg = make_cfg(4, 3, length=50, ring_bits=64, frac_bits=32, clip=1000.0)
    xs = inputs(cfg, seed=3, scale=500.0)
    xs[2][:5] = [5000.0, -5000.0, 1e30, -1e30, 999.5]
    rnd = Round(cfg, xs, no_masked=(4,))
    result = rnd.run()
    assert rnd.clients[2].clipped == 4
    exact = sum(np.clip(xs[i].astype(np.float64), -1000, 1000) for i in (1, 2, 3))
    assert np.max(np.abs(result.values - exact)) <= 3 * 2.0**-33


def test_dropping_n_minus_t_after_masked_input_still_recovers():
    cfg = make_cfg(7, 4)
    xs = inputs(cfg, seed=7)
    result = Round(cfg, xs, no_masked=(1, 3, 6)).run()
    assert result.survivors == (2, 4, 5, 7)
    assert np.array_equal(result.ring_sum, expected_ring_sum(cfg, xs, (2, 4, 5, 7)))


def test_fewer_than_t_survivors_fails_with_named_error():
    cfg = make_cfg(5, 3)
    rnd = Round(cfg, inputs(cfg), no_masked=(1, 2, 3))
    rnd.phase0()
    rnd.phase1()
    with pytest.raises(SecAggDropoutError, match="fewer than the threshold 3"):
        rnd.phase2()


def test_fewer_than_t_responses_fails_with_named_error():
    cfg = make_cfg(5, 4)
    rnd = Round(cfg, inputs(cfg), no_response=(2, 3))
    with pytest.raises(SecAggDropoutError, match="shares of client"):
        rnd.run()


def test_fewer_than_t_advertised_fails():
    cfg = make_cfg(5, 4)
    with pytest.raises(SecAggDropoutError):
        Round(cfg, inputs(cfg), no_keys=(1, 2)).phase0()


def test_replay_re_derives_the_sum_bit_for_bit_from_public_messages():
    cfg = make_cfg(6, 4)
    xs = inputs(cfg, seed=11)
    rnd = Round(cfg, xs, no_masked=(3,), no_response=(5,))
    result = rnd.run()
    s = rnd.server
    # A replayer gets only bytes: the pinned config and every message.
    blobs = {
        "cfg": cfg.encode(),
        "adv": {i: m.encode() for i, m in s.advertised.items()},
        "shares": {i: m.encode() for i, m in s.share_messages.items()},
        "masked": {i: m.encode() for i, m in s.masked.items()},
        "request": s.request.encode(),
        "responses": {i: m.encode() for i, m in s.responses.items()},
    }
    cfg2 = SecAggConfig.decode(blobs["cfg"])
    replay = reconstruct_sum(
        cfg2,
        {i: decode_message(b, AdvertiseKeys) for i, b in blobs["adv"].items()},
        {i: decode_message(b, ShareKeys) for i, b in blobs["shares"].items()},
        {i: decode_message(b) for i, b in blobs["masked"].items()},
        decode_message(blobs["request"], UnmaskRequest),
        {i: decode_message(b, UnmaskResponse) for i, b in blobs["responses"].items()},
    )
    assert replay.digest == result.digest
    assert np.array_equal(replay.values, result.values)


# ----------------------------------------------------------------------------- what the server sees


def test_masked_input_is_independent_of_the_input():
    """Over many rounds, client 1's masked coordinate is uncorrelated with its input, and
    the masked values are uniform over the ring, even for a constant input."""
    trials = 300
    xs_seen, ys_seen = [], []
    for k in range(trials):
        cfg = make_cfg(3, 2, length=16, seed=b"ind%d" % k)
        xs = inputs(cfg, seed=k, scale=8.0)
        xs[1][8:] = 0.0  # constant half: must look as random as the rest
        rnd = Round(cfg, xs)
        rnd.phase0()
        rnd.phase1()
        rnd.phase2()
        y = rnd.server.masked[1].vector
        xs_seen.append(encode_vector(xs[1], cfg)[0].view(np.int32).astype(np.float64))
        ys_seen.append(y.astype(np.float64))
    X, Y = np.array(xs_seen), np.array(ys_seen)
    # Across trials, per coordinate of the varying half: |corr| small (5 sigma ~ 5/sqrt(trials)).
    for c in range(8):
        r = np.corrcoef(X[:, c], Y[:, c])[0, 1]
        assert abs(r) < 5 / np.sqrt(trials), (c, r)
    # Pooled over coordinates, too.
    r = np.corrcoef(X[:, :8].ravel(), Y[:, :8].ravel())[0, 1]
    assert abs(r) < 5 / np.sqrt(X[:, :8].size)
    # Uniformity: the top 4 bits of every masked element, chi-square with 15 dof
    # (p = 1e-6 critical value ~ 51), for the varying and the constant half alike.
    for half in (Y[:, :8], Y[:, 8:]):
        buckets = np.bincount((half.astype(np.uint64) >> 28).astype(np.int64).ravel(), minlength=16)
        expected = half.size / 16
        chi2 = float(np.sum((buckets - expected) ** 2 / expected))
        assert chi2 < 51, chi2
    # Low bits are uniform too (a mask that only covered high bits would fail here).
    low = np.bincount((Y.astype(np.uint64) & 15).astype(np.int64).ravel(), minlength=16)
    assert float(np.sum((low - Y.size / 16) ** 2 / (Y.size / 16))) < 51


def test_same_input_twice_gives_unrelated_masked_vectors():
    cfg = make_cfg(3, 2, length=1024)
    xs = inputs(cfg, seed=1)
    ys = []
    for _ in range(2):
        rnd = Round(cfg, xs)
        rnd.phase0()
        rnd.phase1()
        rnd.phase2()
        ys.append(rnd.server.masked[1].vector.copy())
    assert np.mean(ys[0] == ys[1]) < 0.01


# ----------------------------------------------------------------------------- refusals


def test_tampered_share_ciphertext_is_refused_by_its_recipient():
    cfg = make_cfg(4, 3)
    rnd = Round(cfg, inputs(cfg))
    rnd.phase0()
    rnd.phase1()
    u2 = dict(rnd.u2)
    msg = u2[1]
    ct = bytearray(msg.shares[0].ciphertext)
    ct[10] ^= 1
    u2[1] = replace(msg, shares=(EncryptedShare(msg.shares[0].recipient, bytes(ct)),) + msg.shares[1:])
    with pytest.raises(SecAggAuthenticationError, match="share from client 1"):
        rnd.clients[msg.shares[0].recipient].masked_input(rnd.xs[2], u2)


def test_share_moved_to_another_recipient_is_refused():
    cfg = make_cfg(4, 3)
    rnd = Round(cfg, inputs(cfg))
    rnd.phase0()
    rnd.phase1()
    u2 = dict(rnd.u2)
    msg = u2[1]  # shares for 2, 3, 4: give 2's ciphertext to 3 and vice versa
    a, b = msg.shares[0], msg.shares[1]
    u2[1] = replace(msg, shares=(EncryptedShare(a.recipient, b.ciphertext), EncryptedShare(b.recipient, a.ciphertext), msg.shares[2]))
    with pytest.raises(SecAggAuthenticationError):
        rnd.clients[2].masked_input(rnd.xs[2], u2)


def test_messages_for_another_round_are_refused():
    cfg, other = make_cfg(4, 3), make_cfg(4, 3, seed=b"other")
    server = SecAggServer(cfg)
    with pytest.raises(SecAggProtocolError, match="another round"):
        server.add_advertise(SecAggClient(other, 1).advertise())


def test_server_cannot_substitute_a_clients_own_keys():
    cfg = make_cfg(4, 3)
    rnd = Round(cfg, inputs(cfg))
    u1 = rnd.phase0()
    forged = dict(u1)
    forged[1] = AdvertiseKeys(cfg.digest, 1, os.urandom(32), os.urandom(32))
    with pytest.raises(SecAggProtocolError, match="own advertised keys"):
        rnd.clients[1].share_keys(forged)
    mirrored = dict(u1)
    mirrored[2] = AdvertiseKeys(cfg.digest, 2, u1[1].channel_public, u1[2].mask_public)
    with pytest.raises(SecAggProtocolError, match="already used"):
        rnd.clients[3].share_keys(mirrored)


def test_low_order_public_key_is_refused_on_arrival():
    cfg = make_cfg(4, 3)
    server = SecAggServer(cfg)
    server.add_advertise(SecAggClient(cfg, 1).advertise())
    good = SecAggClient(cfg, 2).advertise()
    with pytest.raises(SecAggProtocolError, match="mask key of client 2"):
        server.add_advertise(replace(good, mask_public=bytes(32)))  # the identity point
    server.add_advertise(good)
    assert sorted(server.advertised) == [1, 2]


def test_client_refuses_a_request_naming_a_client_both_survivor_and_dropped():
    cfg = make_cfg(5, 3)
    rnd = Round(cfg, inputs(cfg), no_masked=(5,))
    rnd.phase0()
    rnd.phase1()
    rnd.phase2()
    evil = UnmaskRequest(cfg.digest, (1, 2, 3, 4, 5), (5,))
    with pytest.raises(SecAggProtocolError, match="both survivor and dropped"):
        rnd.clients[1].unmask(evil)


def test_client_refuses_a_second_different_request():
    """First say 4 survived (reveal b_4 shares), then that it dropped (ask for its key shares):
    together they would unmask client 4's input."""
    cfg = make_cfg(5, 3)
    rnd = Round(cfg, inputs(cfg))
    rnd.phase0()
    rnd.phase1()
    rnd.phase2()
    first = UnmaskRequest(cfg.digest, (1, 2, 3, 4, 5), ())
    second = UnmaskRequest(cfg.digest, (1, 2, 3, 5), (4,))
    r1 = rnd.clients[1].unmask(first)
    assert rnd.clients[1].unmask(first) == r1  # the same request is answered the same
    with pytest.raises(SecAggProtocolError, match="already answered a different"):
        rnd.clients[1].unmask(second)
    # A client that checks the chain's committed set refuses the lie up front.
    with pytest.raises(SecAggProtocolError, match="committed masked inputs"):
        rnd.clients[2].unmask(second, committed=(1, 2, 3, 4, 5))


def test_client_refuses_requests_that_break_the_rules():
    cfg = make_cfg(5, 3)
    rnd = Round(cfg, inputs(cfg))
    rnd.phase0()
    rnd.phase1()
    rnd.phase2()
    with pytest.raises(SecAggDropoutError):
        rnd.clients[1].unmask(UnmaskRequest(cfg.digest, (1, 2), (3, 4, 5)))
    with pytest.raises(SecAggProtocolError, match="not among"):
        rnd.clients[1].unmask(UnmaskRequest(cfg.digest, (2, 3, 4), (1, 5)))
    with pytest.raises(SecAggProtocolError, match="not the clients that shared"):
        rnd.clients[1].unmask(UnmaskRequest(cfg.digest, (1, 2, 3), (4,)))


def test_server_refuses_a_response_revealing_a_survivors_mask_key_share():
    cfg = make_cfg(5, 3)
    rnd = Round(cfg, inputs(cfg), no_masked=(5,))
    rnd.phase0()
    rnd.phase1()
    req = rnd.phase2()
    honest = rnd.clients[1].unmask(req)
    shares = list(honest.shares)
    shares[1] = replace(shares[1], kind=KIND_MASK_KEY)  # owner 2 is a survivor
    with pytest.raises(SecAggProtocolError, match="mask-key share of survivor 2"):
        rnd.server.add_response(replace(honest, shares=tuple(shares)))
    dropped_b = list(honest.shares)
    dropped_b[-1] = replace(dropped_b[-1], kind=1)  # owner 5 dropped: its self-mask share must not be revealed
    with pytest.raises(SecAggProtocolError, match="self-mask share of dropped client 5"):
        rnd.server.add_response(replace(honest, shares=tuple(dropped_b)))
    rnd.server.add_response(honest)  # the honest one is still accepted
    with pytest.raises(SecAggProtocolError, match="already sent"):
        rnd.server.add_response(honest)


def _tamper_response(resp: UnmaskResponse, owner: int) -> UnmaskResponse:
    shares = tuple(replace(s, share=bytes(b ^ 0xFF for b in s.share)) if s.owner == owner else s for s in resp.shares)
    return replace(resp, shares=shares)


@pytest.mark.parametrize("owner", [1, 5])  # a survivor's self-mask seed, a dropped client's mask key
def test_a_wrong_revealed_share_is_detected(owner):
    cfg = make_cfg(5, 3)
    xs = inputs(cfg, seed=5)
    rnd = Round(cfg, xs, no_masked=(5,))
    rnd.phase0()
    rnd.phase1()
    req = rnd.phase2()
    resp = {i: rnd.clients[i].unmask(req) for i in req.survivors}
    resp[2] = _tamper_response(resp[2], owner)
    args = (cfg, rnd.server.advertised, rnd.server.share_messages, rnd.server.masked, req)
    # With exactly t responders the wrong share cannot be outvoted: named error.
    exactly_t = {i: resp[i] for i in (1, 2, 3)}
    with pytest.raises(SecAggReconstructionError, match=f"client {owner}'s"):
        reconstruct_sum(*args, exactly_t)
    # With spare responders another subset verifies and the sum is still exact.
    result = reconstruct_sum(*args, resp)
    assert np.array_equal(result.ring_sum, expected_ring_sum(cfg, xs, (1, 2, 3, 4)))


def test_masked_input_of_wrong_size_or_unknown_sender_is_refused():
    cfg = make_cfg(4, 3, length=10)
    rnd = Round(cfg, inputs(cfg))
    rnd.phase0()
    rnd.phase1()
    good = rnd.clients[1].masked_input(rnd.xs[1], rnd.u2)
    bad = replace(good, data=good.data[:-4])
    with pytest.raises(SecAggProtocolError, match="expects 10"):
        rnd.server.add_masked(bad)
    with pytest.raises(SecAggProtocolError, match="not a client id"):
        rnd.server.add_masked(replace(good, sender=9))


def test_phases_must_run_in_order():
    cfg = make_cfg(3, 2)
    c = SecAggClient(cfg, 1)
    with pytest.raises(SecAggProtocolError):
        c.masked_input(np.zeros(cfg.vector_length), {})
    c.advertise()
    with pytest.raises(SecAggProtocolError):
        c.advertise()
    with pytest.raises(SecAggProtocolError):
        c.unmask(UnmaskRequest(cfg.digest, (1, 2), (3,)))


def test_share_message_must_address_exactly_the_holders():
    cfg = make_cfg(4, 3)
    rnd = Round(cfg, inputs(cfg))
    rnd.phase0()
    sk = rnd.clients[1].share_keys(rnd.u1)
    with pytest.raises(SecAggProtocolError, match="expected its holders"):
        rnd.server.add_shares(replace(sk, shares=sk.shares[:-1]))


# ----------------------------------------------------------------------------- config, graph, encoding


def test_config_round_trip_and_overflow_bound():
    cfg = make_cfg(10, 6, length=1000, clip=3.5)
    assert SecAggConfig.decode(cfg.encode()) == cfg
    assert len(cfg.digest) == 32 and cfg.digest != make_cfg(10, 6, length=1000, clip=3.25).digest
    # 2^31 / 2^19 = 4096 clients at clip 8, 16 fractional bits: the 4096th overflows.
    make_cfg(4095, 3000, length=1)
    with pytest.raises(SecAggConfigError, match="overflow"):
        make_cfg(4096, 3000, length=1)
    with pytest.raises(SecAggConfigError, match="overflow"):
        make_cfg(5, 3, frac_bits=28)
    with pytest.raises(SecAggConfigError, match="degree"):
        make_cfg(10, 3, degree=5)
    with pytest.raises(SecAggConfigError, match="threshold"):
        make_cfg(10, 6, degree=4)
    with pytest.raises(SecAggFormatError):
        SecAggConfig.decode(cfg.encode()[:-1])
    bad = bytearray(cfg.encode())
    bad[4] = 2
    with pytest.raises(SecAggFormatError, match="version"):
        SecAggConfig.decode(bytes(bad))


def test_overflow_bound_is_tight():
    """At the bound, n clients all at +clip sum without wrapping; a ring one bit smaller would wrap."""
    cfg = SecAggConfig(bytes(32), bytes(32), n_clients=4095, threshold=2, degree=2, vector_length=2)
    enc = encode_vector(np.array([8.0, -8.0]), cfg)[0]
    total = np.zeros(2, dtype=cfg.dtype)
    for _ in range(cfg.n_clients):
        total += enc
    assert np.array_equal(decode_vector(total, cfg), [8.0 * 4095, -8.0 * 4095])


def test_graph_is_symmetric_regular_and_seeded():
    cfg = make_cfg(40, 5, degree=6)
    for i in cfg.ids:
        nb = cfg.neighbors(i)
        assert len(nb) == 6 and i not in nb
        assert all(i in cfg.neighbors(j) for j in nb)
    again = make_cfg(40, 5, degree=6)
    other = make_cfg(40, 5, degree=6, seed=b"x")
    assert [again.neighbors(i) for i in cfg.ids] == [cfg.neighbors(i) for i in cfg.ids]
    assert [other.neighbors(i) for i in cfg.ids] != [cfg.neighbors(i) for i in cfg.ids]
    assert cfg.share_index(3, 3) == cfg.holders(3).index(3) + 1


def test_choose_parameters():
    assert choose_parameters(5) == (4, 4)           # full graph, t > (n + n/3) / 2
    assert choose_parameters(30, adversarial_rate=1 / 3, dropout_rate=0.1)[0] <= 29
    k, t = choose_parameters(1000, adversarial_rate=0.05, dropout_rate=0.05, malicious_server=False)
    assert k < 100 and 2 <= t <= k                  # SecAgg+: logarithmic-ish degree
    make_cfg(1000, t, degree=k, length=1)           # and it is a valid config
    with pytest.raises(SecAggConfigError, match="no threshold"):
        choose_parameters(3, adversarial_rate=0.34, dropout_rate=0.34)


def test_encode_vector_refuses_bad_input():
    cfg = make_cfg(3, 2, length=4)
    with pytest.raises(SecAggInputError, match="NaN"):
        encode_vector(np.array([0, np.nan, 0, 0]), cfg)
    with pytest.raises(SecAggInputError, match="4"):
        encode_vector(np.zeros(5), cfg)
    with pytest.raises(SecAggInputError, match="dtype"):
        encode_vector(np.array(["a", "b", "c", "d"]), cfg)
    enc, clipped = encode_vector(np.array([1.5, -1.5, 2.0**-17, 100.0], dtype=np.float32), cfg)
    assert clipped == 1
    assert np.array_equal(decode_vector(enc, cfg), [1.5, -1.5, 0.0, 8.0])  # half-to-even at 2^-17
