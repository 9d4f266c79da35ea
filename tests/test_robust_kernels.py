"""The robust rules' compiled loops (coordinator/strategies/kernels.py, loops.py).

Who could abuse them: nobody sends them code, but a wrong loop would make the
coordinator and an auditor on another machine derive different Krum scores,
FoolsGold factors or clipped updates, so replay would name an honest
coordinator. They must give numpy's bits exactly, be used when they do, and be
refused when they do not.
"""

from __future__ import annotations

import logging
import numpy as np
import pytest

from fedchain.coordinator.strategies import kernels, loops, vectors
from fedchain.coordinator.strategies.vectors import BLOCK, LEAF


def _wide(seed, shape):
    return kernels._wide(np.random.default_rng(seed), shape)


def test_the_loops_are_used_here():
    """numba is a dependency: on this machine the rules run the compiled loops (so the bit-exact
    tests against tests/robust_reference.py exercise them)."""
    assert kernels.get() is not None


@pytest.mark.parametrize("product", [False, True])
@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_pair_leaves_are_numpys_run_sums(seed, diagonal, product):
    rows = _wide(seed, (6, 3 * LEAF))
    pairs = [(i, j) for i in range(6) for j in range(i if diagonal else i + 1, 6)]
    got = np.empty((len(pairs), 3))
    assert loops.pair_leaves(rows, got, 0, diagonal, product) == len(pairs)
    for p, (i, j) in enumerate(pairs):
        terms = rows[j] * rows[i] if product else (rows[j] - rows[i]) ** 2
        assert got[p].tobytes() == np.add.reduce(terms.reshape(3, LEAF), axis=1).tobytes()


def test_pairwise_distances_and_products_match_the_numpy_path(monkeypatch):
    """Whole blocks (the compiled path) and a ragged tail: the same bits with and without the loops."""
    rows = _wide(7, (5, 2 * BLOCK + 300))
    fast_d = vectors.pairwise_squared_distances(rows)
    fast_g = vectors.pairwise_products(list(rows))
    monkeypatch.setattr(kernels, "_built", None)
    assert fast_d.tobytes() == vectors.pairwise_squared_distances(rows).tobytes()
    assert fast_g.tobytes() == vectors.pairwise_products(list(rows)).tobytes()


def test_a_loop_that_sums_in_another_order_is_refused(monkeypatch, caplog):
    """The start-up check compares the loops with numpy and falls back when one bit differs:
    here a loop that sums each run left to right (what an optimiser allowed to reassociate
    could produce) is caught and never used."""
    def left_to_right(rows, leaves, col, diagonal, product):
        n, p = rows.shape[0], 0
        for i in range(n):
            for j in range(i if diagonal else i + 1, n):
                terms = rows[j] * rows[i] if product else (rows[j] - rows[i]) ** 2
                for m in range(rows.shape[1] // LEAF):
                    acc = 0.0
                    for t in terms[m * LEAF:(m + 1) * LEAF]:
                        acc += t
                    leaves[p, col + m] = acc
                p += 1
        return p

    broken = kernels._of(loops)
    broken.pair_leaves = left_to_right
    assert kernels._mismatch(broken) is not None
    assert kernels._mismatch(kernels._of(loops)) is None

    import fedchain.coordinator.strategies.loops as real

    monkeypatch.setattr(real, "pair_leaves", left_to_right)
    monkeypatch.setattr(kernels, "_built", False)
    with caplog.at_level(logging.WARNING, logger=kernels.__name__):
        assert kernels.get() is None
    assert "differ from numpy" in caplog.text
    rows = _wide(3, (4, BLOCK))
    monkeypatch.setattr(kernels, "_built", None)
    numpy_path = vectors.pairwise_squared_distances(rows)
    monkeypatch.setattr(kernels, "_built", False)
    assert vectors.pairwise_squared_distances(rows).tobytes() == numpy_path.tobytes()


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("FEDCHAIN_KERNELS", "0")
    monkeypatch.setattr(kernels, "_built", False)
    assert kernels.get() is None


def test_deltas_norms_and_clip_round_each_step_once():
    rng = np.random.default_rng(11)
    for dtype in (np.float32, np.float64):
        raw = kernels._wide(rng, 4 * LEAF).astype(dtype)
        base = kernels._wide(rng, 4 * LEAF) * 1e-3
        work = np.empty(raw.size)
        total = loops.delta_square_sum(raw, base, work)
        d = raw.astype(np.float64) - base
        assert work.tobytes() == d.tobytes()
        assert float(total).hex() == float(np.add.reduce(d * d)).hex()
        got = np.empty(raw.size)
        loops.deltas(raw, base, got)
        assert got.tobytes() == d.tobytes()
        history = kernels._wide(rng, raw.size)
        loops.add_deltas(raw, base, history, got)
        assert got.tobytes() == (history + d).tobytes()
        out, want = np.empty(raw.size, np.float32), np.empty(raw.size, np.float32)
        with np.errstate(over="ignore"):
            loops.clip(raw, base, 0.25, out)
            np.add(base, d * 0.25, out=want)
        assert out.tobytes() == want.tobytes()
