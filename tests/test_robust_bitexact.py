"""The fast robust rules give the same bytes and decisions as the code they replaced.

tests/robust_reference.py holds the previous implementations verbatim; trails
written by them must still verify, so every aggregate tensor and every recorded
number (Krum scores, trimmed shares, norms, FoolsGold factors, FoolsGold state)
is compared bit for bit on random rounds: odd and even counts, duplicated
updates and equal coordinates (ties), free riders (update == global model),
zeros, signed zeros, tiny and huge magnitudes, empty tensors, and models larger
than one block of the vectors module (so the block and leaf arithmetic is hit).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedchain.coordinator.strategies.fedavg import FedAvg
from fedchain.coordinator.strategies.base import ClientUpdate
from fedchain.coordinator.strategies.foolsgold import FoolsGold, foolsgold_weights
from fedchain.coordinator.strategies.krum import MultiKrum
from fedchain.coordinator.strategies.median import FedMedian
from fedchain.coordinator.strategies.normbound import NormBound
from fedchain.coordinator.strategies.trimmedmean import FedTrimmedMean
from fedchain.coordinator.strategies.vectors import BLOCK, pairwise_squared_distances, squared_norm

from tests import robust_reference as ref

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

LAYOUTS = [
    {"w": (3, 4), "b": (3,)},
    {"a": (0,), "w": (5, 7), "z": (2, 0)},  # empty tensors around a real one
    {"big": (BLOCK + 1000,), "e": (0,), "s": (17,)},  # one full block and a ragged tail
    {"w": (2 * BLOCK,)},  # exactly two full blocks
]


def _values(rng, size, style):
    if style == "normal":
        return rng.standard_normal(size)
    if style == "wide":  # tiny and huge magnitudes, where float64(x) - base may round
        return rng.standard_normal(size) * np.exp2(rng.integers(-60, 60, size))
    if style == "coarse":  # few distinct values: ties everywhere
        return rng.integers(-2, 3, size).astype(np.float64) * 0.5
    return np.where(rng.random(size) < 0.5, 0.0, -0.0) * rng.integers(0, 2, size)  # zeros of both signs


def _state(rng, layout, style):
    return {k: torch.from_numpy(_values(rng, int(np.prod(s)), style).astype(np.float32).reshape(s))
            for k, s in layout.items()}


@st.composite
def rounds(draw, min_n=2, max_n=9):
    layout = LAYOUTS[draw(st.integers(0, len(LAYOUTS) - 1))]
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    style = draw(st.sampled_from(["normal", "wide", "coarse", "zeros"]))
    base_style = draw(st.sampled_from(["normal", "wide", "coarse", "zeros"]))
    n = draw(st.integers(min_n, max_n))
    glob = _state(rng, layout, base_style)
    states = []
    for i in range(n):
        kind = draw(st.sampled_from(["fresh", "fresh", "dup", "free", "scaled"]))
        if kind == "dup" and states:
            states.append({k: t.clone() for k, t in states[draw(st.integers(0, len(states) - 1))].items()})
        elif kind == "free":
            states.append({k: t.clone() for k, t in glob.items()})
        elif kind == "scaled":
            states.append({k: (t + 1e3 * torch.from_numpy(_values(rng, t.numel(), style).astype(np.float32))
                               .reshape(t.shape)) for k, t in glob.items()})
        else:
            states.append({k: (t + torch.from_numpy(_values(rng, t.numel(), style).astype(np.float32))
                               .reshape(t.shape)) for k, t in glob.items()})
    ups = [ClientUpdate("0x" + f"{(i * 7919) % 1000 + 1:040x}", f"d{i % 3}", 10 + i, s) for i, s in enumerate(states)]
    order = draw(st.permutations(range(n)))
    return glob, [ups[i] for i in order]


def _same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
        assert a[k].numpy().tobytes() == b[k].numpy().tobytes(), k


def _decisions(rule):
    return [(d.participant, d.dataset_id, d.action, d.reason, float(d.value).hex()) for d in rule.last_decisions]


def _run(new, old, glob, ups, server_round=1):
    try:
        want = old.aggregate_train(server_round, glob, ups)
    except Exception as e:  # noqa: BLE001 - the new code must fail the same way
        with pytest.raises(type(e)):
            new.aggregate_train(server_round, glob, ups)
        return
    got = new.aggregate_train(server_round, glob, ups)
    _same(got, want)
    assert _decisions(new) == _decisions(old)


@SETTINGS
@given(rounds())
def test_median_is_bit_identical(r):
    _run(FedMedian(), ref.RefMedian(), *r)


@SETTINGS
@given(rounds(), st.sampled_from([0.1, 0.2, 0.25, 0.34, 0.49]))
def test_trimmed_mean_is_bit_identical(r, beta):
    _run(FedTrimmedMean(beta=beta), ref.RefTrimmedMean(beta=beta), *r)


@SETTINGS
@given(rounds(min_n=3), st.integers(0, 3), st.integers(1, 4))
def test_multikrum_is_bit_identical(r, f, keep):
    _run(MultiKrum(byzantine=f, keep=keep), ref.RefMultiKrum(byzantine=f, keep=keep), *r)


@SETTINGS
@given(rounds(), st.sampled_from([1e-3, 0.5, 3.0, 1e4]))
def test_normbound_is_bit_identical(r, bound):
    _run(NormBound(FedAvg(), bound=bound), ref.RefNormBound(FedAvg(), bound=bound), *r)


@SETTINGS
@given(rounds(), rounds())
def test_foolsgold_is_bit_identical_over_two_rounds(r1, r2):
    glob, ups = r1
    new, old = FoolsGold(FedAvg()), ref.RefFoolsGold(FedAvg())
    _run(new, old, glob, ups, 1)
    _, ups2 = r2
    # the second round reuses the first one's global model (same layout) with the second's values when they fit
    if sorted(ups2[0].state) == sorted(glob) and all(ups2[0].state[k].shape == glob[k].shape for k in glob):
        _run(new, old, glob, ups2 + ups[:1] if all(u.key != ups[0].key for u in ups2) else ups2, 2)
    assert sorted(new.state()) == sorted(old.state())
    for k, t in old.state().items():
        assert new.state()[k].numpy().tobytes() == t.numpy().tobytes(), k


@SETTINGS
@given(st.integers(1, 7), st.sampled_from([1, 5, BLOCK - 1, BLOCK, BLOCK + 129, 3 * BLOCK + 7]),
       st.sampled_from(["normal", "wide", "coarse", "zeros"]), st.integers(0, 2**32 - 1))
def test_vector_math_is_bit_identical(n, width, style, seed):
    rng = np.random.default_rng(seed)
    rows = _values(rng, n * width, style).reshape(n, width)
    if n > 2:
        rows[2] = rows[0]  # a duplicate: a zero distance
    assert pairwise_squared_distances(rows).tobytes() == ref.pairwise_squared_distances(rows).tobytes()
    assert squared_norm(rows[0]).hex() == ref.squared_norm(rows[0]).hex()
    hs = list(rows)
    assert [x.hex() for x in foolsgold_weights(hs)] == [x.hex() for x in ref.foolsgold_weights(hs)]


@pytest.mark.parametrize("n", range(1, 19))
def test_sorting_network_sorts_every_zero_one_input(n):
    from fedchain.coordinator.strategies.vectors import sorting_network

    x = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).T.astype(np.int8)  # the 0-1 principle
    rows = list(x.copy())
    for i, j in sorting_network(n):
        rows[i], rows[j] = np.minimum(rows[i], rows[j]), np.maximum(rows[i], rows[j])
    assert (np.stack(rows) == np.sort(x, axis=0)).all()


@pytest.mark.parametrize("n", [19, 20, 24, 33, 64, 100])
def test_sorting_network_sorts_larger_counts(n):
    from fedchain.coordinator.strategies.vectors import sorting_network

    x = np.random.default_rng(n).integers(0, 5, (n, 20000)).astype(np.float32)
    rows = list(x.copy())
    for i, j in sorting_network(n):
        rows[i], rows[j] = np.minimum(rows[i], rows[j]), np.maximum(rows[i], rows[j])
    assert (np.stack(rows) == np.sort(x, axis=0)).all()


@pytest.mark.parametrize("m", [*range(1, 40), 64, 127, 128, 129, 136, 300, 1000])
def test_pairwise_sum_is_add_reduce_along_a_row(m):
    from fedchain.coordinator.strategies.vectors import pairwise_sum

    rng = np.random.default_rng(m)
    x = rng.standard_normal((m, 500)) * np.exp2(rng.integers(-50, 50, (m, 500)).astype(np.float64))
    want = np.add.reduce(np.ascontiguousarray(x.T), axis=1)
    assert pairwise_sum(list(x)).tobytes() == want.tobytes()
    wide = np.ascontiguousarray(np.concatenate([x, x[:3]]).T)[:, :m]  # a slice of a wider array, as before
    assert np.add.reduce(wide, axis=1).tobytes() == want.tobytes()


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rounds(min_n=10, max_n=24), st.sampled_from([0.1, 0.2, 0.3, 0.45]))
def test_many_updates_are_bit_identical(r, beta):
    _run(FedMedian(), ref.RefMedian(), *r)
    _run(FedTrimmedMean(beta=beta), ref.RefTrimmedMean(beta=beta), *r)
    _run(MultiKrum(byzantine=3, keep=4), ref.RefMultiKrum(byzantine=3, keep=4), *r)


@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(rounds(min_n=5, max_n=12))
def test_fallbacks_and_one_thread_give_the_same_bits(monkeypatch, r):
    """Without the leaf tree, without the rank sum replay, without the compiled loops, on one
    thread: still the reference's bits."""
    from fedchain.coordinator.strategies import kernels, vectors

    with monkeypatch.context() as m:
        m.setattr(vectors, "_TREE", False)
        m.setattr(vectors, "_RANKS", False)
        m.setattr(vectors, "THREADS", 1)
        _run(FedTrimmedMean(beta=0.2), ref.RefTrimmedMean(beta=0.2), *r)
        _run(MultiKrum(byzantine=1, keep=2), ref.RefMultiKrum(byzantine=1, keep=2), *r)
        _run(FoolsGold(FedAvg()), ref.RefFoolsGold(FedAvg()), *r)
    with monkeypatch.context() as m:
        m.setattr(kernels, "_built", None)  # numpy only
        _run(MultiKrum(byzantine=1, keep=2), ref.RefMultiKrum(byzantine=1, keep=2), *r)
        _run(FoolsGold(FedAvg()), ref.RefFoolsGold(FedAvg()), *r)
        _run(NormBound(FedAvg(), bound=0.5), ref.RefNormBound(FedAvg(), bound=0.5), *r)
