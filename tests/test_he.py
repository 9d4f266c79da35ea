"""CKKS homomorphic aggregation: accuracy, key separation, bounded decoding, decryptor checks."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts

from fedchain.he import (
    MAGIC,
    MAX_ABS,
    OUTPUT_FRAC_BITS,
    DecryptorKey,
    EncryptedVector,
    HEFormatError,
    HEInputError,
    HEKeyError,
    HEParams,
    HEProtocolError,
    PublicContext,
    max_ciphertext_bytes,
)

LENGTH = 5000  # two chunks: 4096 + 904


@pytest.fixture(scope="module")
def key() -> DecryptorKey:
    return DecryptorKey.generate()


@pytest.fixture(scope="module")
def pub(key) -> PublicContext:
    # what nodes and the coordinator get: bytes from the store
    return PublicContext.decode(key.public_context().encode(), HEParams())


def tolerance(xs) -> float:
    """The stated bound: 2^-19 * max(1, max |x|) per coordinate (weights summing to 1)."""
    return 2.0**-19 * max(1.0, max(float(np.max(np.abs(x))) for x in xs))


@pytest.mark.parametrize("scale", [1.0, 8.0, 1000.0])
def test_weighted_mean_matches_plaintext_within_the_stated_tolerance(key, pub, scale):
    rng = np.random.default_rng(int(scale))
    xs = [rng.uniform(-scale, scale, LENGTH).astype(np.float32) for _ in range(4)]
    counts = [120, 35, 800, 45]
    cts = [EncryptedVector.decode(pub.encrypt(x).encode()) for x in xs]  # over the wire
    agg = EncryptedVector.decode(pub.weighted_mean(cts, counts).encode())
    weights = [c / sum(counts) for c in counts]
    got = key.decrypt_aggregate(cts, weights, agg)
    want = sum(w * x.astype(np.float64) for w, x in zip(weights, xs))
    err = float(np.max(np.abs(got - want)))
    assert err <= tolerance(xs), err
    assert got.shape == (LENGTH,)
    # output is on the 2^-20 grid
    assert np.array_equal(got, np.round(got * 2.0**OUTPUT_FRAC_BITS) / 2.0**OUTPUT_FRAC_BITS)


def test_public_context_holds_no_secret_key_and_cannot_decrypt(key, pub):
    raw = pub.encode()
    loaded = ts.context_from(raw[4 + 2 + 7 + 4:])
    assert not loaded.has_secret_key() and loaded.is_public()
    with pytest.raises(ValueError):
        loaded.secret_key()
    ct = pub.encrypt(np.ones(10))
    vec = ts.ckks_vector_from(loaded, ct.chunks[0])
    with pytest.raises(ValueError, match="secret"):
        vec.decrypt()
    # the secret context is larger by (at least) the secret key
    assert len(key.to_bytes()) > len(raw) + 8192 * 2 * 8 // 2


def test_a_context_with_a_secret_key_is_refused_as_public(key):
    def wrap(raw: bytes) -> bytes:
        return MAGIC + bytes([1, 1]) + HEParams().encode() + len(raw).to_bytes(4, "big") + raw

    # the whole secret context is over the public context's size bound ...
    with pytest.raises(HEFormatError, match="declares"):
        PublicContext.decode(wrap(key.to_bytes()[7:]))
    # ... and one that fits the bound is refused for holding the secret key
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 60])
    ctx.global_scale = 2.0**40
    raw = ctx.serialize(save_public_key=False, save_secret_key=True, save_galois_keys=False, save_relin_keys=False)
    with pytest.raises(HEKeyError, match="secret key"):
        PublicContext.decode(wrap(raw))


def test_ciphertext_under_another_key_is_refused(key, pub):
    other = DecryptorKey.generate()
    ct = other.public_context().encrypt(np.ones(10))
    with pytest.raises(HEKeyError, match="another public context"):
        pub.weighted_sum([ct], [1.0])
    with pytest.raises(HEKeyError):
        key.decrypt(ct)


def test_decryptor_decrypts_only_the_aggregate(key, pub):
    xs = [np.full(10, v) for v in (1.0, 2.0, 3.0)]
    cts = [pub.encrypt(x) for x in xs]
    w = [0.2, 0.3, 0.5]
    agg = pub.weighted_sum(cts, w)
    # a single node's ciphertext dressed as an aggregate
    lone = pub.weighted_sum([cts[0]], [1.0])
    with pytest.raises(HEProtocolError, match="not the weighted sum"):
        key.decrypt_aggregate(cts, w, lone)
    with pytest.raises(HEProtocolError, match="at least 2 distinct"):
        key.decrypt_aggregate([cts[0]], [1.0], lone)
    with pytest.raises(HEProtocolError, match="distinct"):
        key.decrypt_aggregate([cts[0], cts[0]], [0.5, 0.5], pub.weighted_sum([cts[0], cts[0]], [0.5, 0.5]))
    with pytest.raises(HEProtocolError, match="not the weighted sum"):
        key.decrypt_aggregate(cts, [0.5, 0.3, 0.2], agg)
    with pytest.raises(HEProtocolError, match="level"):
        pub.weighted_sum([agg, cts[0]], [0.5, 0.5])  # no second multiplication level
    assert np.allclose(key.decrypt_aggregate(cts, w, agg), 0.2 + 0.6 + 1.5, atol=1e-5)


def test_weighted_sum_is_deterministic(pub):
    cts = [pub.encrypt(np.linspace(-1, 1, 100) * k) for k in (1, 2)]
    assert pub.weighted_sum(cts, [0.25, 0.75]).encode() == pub.weighted_sum(cts, [0.25, 0.75]).encode()


def test_secret_context_round_trip(key, pub):
    again = DecryptorKey.from_bytes(key.to_bytes())
    assert again.public_context().digest != b""  # a fresh serialization, same key:
    ct = pub.encrypt(np.arange(5.0))
    assert np.allclose(again.decrypt(ct), np.arange(5.0), atol=1e-5)


def test_inputs_and_weights_are_checked(pub):
    with pytest.raises(HEInputError, match="NaN"):
        pub.encrypt(np.array([1.0, np.nan]))
    with pytest.raises(HEInputError, match="lie in"):
        pub.encrypt(np.array([MAX_ABS * 2]))
    ct = pub.encrypt(np.ones(3))
    for bad in ([0.0], [-1.0], [float("nan")], [5.0]):
        with pytest.raises(HEInputError, match="weights"):
            pub.weighted_sum([ct], bad)
    with pytest.raises(HEInputError, match="same length"):
        pub.weighted_sum([ct, pub.encrypt(np.ones(4))], [0.5, 0.5])


def test_decoding_bounds_every_size(pub):
    ct = pub.encrypt(np.ones(LENGTH)).encode()
    head = 4 + 2 + 32
    with pytest.raises(HEFormatError, match="chunks"):
        EncryptedVector.decode(ct[:head + 5] + (3).to_bytes(4, "big") + ct[head + 9:])
    with pytest.raises(HEFormatError, match="outside"):
        EncryptedVector.decode(ct[:head] + (1 << 30).to_bytes(4, "big") + ct[head + 4:])
    first = head + 9
    big = max_ciphertext_bytes(HEParams()) + 1
    with pytest.raises(HEFormatError, match="bound"):
        EncryptedVector.decode(ct[:first] + big.to_bytes(4, "big") + ct[first + 4:])
    with pytest.raises(HEFormatError, match="trailing"):
        EncryptedVector.decode(ct + b"\0")
    with pytest.raises(HEFormatError, match="truncated"):
        EncryptedVector.decode(ct[:-1])
    # a chunk of garbage of an allowed size parses as a vector header but not as a ciphertext
    ev = EncryptedVector.decode(ct)
    garbage = EncryptedVector(ev.context_digest, ev.length, 0, (b"\x01" * 500, ev.chunks[1]))
    with pytest.raises(HEFormatError, match="chunk 0"):
        pub.weighted_sum([garbage], [1.0])
    # a valid ciphertext holding the wrong number of values for its position
    swapped = EncryptedVector(ev.context_digest, ev.length, 0, (ev.chunks[1], ev.chunks[0]))
    with pytest.raises(HEFormatError, match="values"):
        pub.weighted_sum([swapped], [1.0])
    ctx = pub.encode()
    with pytest.raises(HEFormatError, match="declares"):
        PublicContext.decode(ctx[:13] + (len(ctx)).to_bytes(4, "big") + ctx[17:])
    with pytest.raises(HEFormatError):
        PublicContext.decode(ctx[:17] + b"\x00" * 100)


def test_parameters_are_checked():
    with pytest.raises(HEInputError, match="128-bit"):
        HEParams(4096, (60, 40, 60), 40)
    with pytest.raises(HEInputError):
        HEParams(8192, (60, 30, 60), 40)
    assert HEParams.decode(HEParams().encode()) == HEParams()
