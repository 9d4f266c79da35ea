"""Compiled inner loops for the robust rules, bit for bit the numpy operations they replace.

Krum, Multi-Krum and FoolsGold compare every pair of updates, and norm bounding
measures every update, over all parameters. With numpy each pair costs three
passes over memory (difference, square, ``add.reduce``); the loops here fuse
them into one (compiled with numba, https://numba.pydata.org). They produce the
same bits, on every machine:

* every number is computed by the same IEEE operations, in the same order, as
  the numpy code: ``float64(x) - base``, the difference of two rows, each
  square or product rounded once, and each run of :data:`LEAF` (128) elements
  summed as numpy's pairwise summation does — eight running sums over the
  elements in steps of eight, combined as ``((s0 + s1) + (s2 + s3)) + ((s4 +
  s5) + (s6 + s7))``, added to ``0.0``;
* nothing may reassociate or fuse them: numba compiles without ``fastmath``, so
  LLVM neither reorders additions nor contracts a multiply and an add into one
  FMA. The eight running sums are independent, so the compiler may keep them in
  vector lanes (LLVM's SLP vectoriser, switched on for these functions only):
  each lane still does the same scalar operations in the same order.

That is checked, not assumed: :func:`get` compiles the loops once per process
and compares them with numpy on vectors of random values spread over 2**-60 to
2**60, with zeros of both signs; any difference — or numba missing — and the
callers keep their numpy path (:func:`get` returns ``None`` and logs why). Set
``FEDCHAIN_KERNELS=0`` to use the numpy path always (to compare the two).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from types import SimpleNamespace

import numpy as np

__all__ = ["get", "LEAF"]

#: numpy's pairwise summation sums runs of up to this many elements with eight accumulators.
LEAF = 128

log = logging.getLogger(__name__)
_lock = threading.Lock()
_built: SimpleNamespace | None | bool = False  # False: not tried yet


def get() -> SimpleNamespace | None:
    """The compiled loops (``pair_leaves``, ``deltas``, ``add_deltas``, ``delta_square_sum``, ``clip``, see
    :mod:`~fedchain.coordinator.strategies.loops`), or ``None`` when numba is
    missing, switched off (``FEDCHAIN_KERNELS=0``) or gives a single bit that numpy does not."""
    global _built
    if _built is False:
        with _lock:
            if _built is False:
                _built = _build()
    return _built or None


def _build() -> SimpleNamespace | None:
    if os.environ.get("FEDCHAIN_KERNELS", "1") == "0":
        return None
    try:
        # numba (and LLVM) load only when a robust rule first runs: ~0.5 s the other commands do not pay
        from numba.core import config
    except ImportError as exc:  # pragma: no cover - numba is a dependency; a broken install falls back
        log.warning("numba is not importable (%s): the robust rules use their numpy path", exc)
        return None
    # numba re-reads its NUMBA_* settings from the environment before it compiles, so the SLP
    # vectoriser is switched on there, for the import that compiles the loops, and off again after
    before = os.environ.get("NUMBA_SLP_VECTORIZE")
    os.environ["NUMBA_SLP_VECTORIZE"] = "1"
    try:
        config.reload_config()
        # the loops compile (or load from numba's cache) when their module is imported
        loops = importlib.import_module("fedchain.coordinator.strategies.loops")
    finally:
        if before is None:
            del os.environ["NUMBA_SLP_VECTORIZE"]
        else:
            os.environ["NUMBA_SLP_VECTORIZE"] = before
        config.reload_config()
    kernels = _of(loops)
    problem = _mismatch(kernels)
    if problem:
        log.warning("compiled robust-rule loops differ from numpy (%s): the rules use their numpy path", problem)
        return None
    return kernels


def _of(loops) -> SimpleNamespace:
    """The loops :func:`get` hands out, from the module that holds them."""
    return SimpleNamespace(pair_leaves=loops.pair_leaves, deltas=loops.deltas, add_deltas=loops.add_deltas,
                           delta_square_sum=loops.delta_square_sum, clip=loops.clip)


def _wide(rng: np.random.Generator, shape) -> np.ndarray:
    """Random values over 2**-60..2**60 of both signs, with zeros of both signs and repeats."""
    v = rng.standard_normal(shape) * np.exp2(rng.integers(-60, 60, shape).astype(np.float64))
    flat = v.reshape(-1)
    flat[::13] = 0.0
    flat[5::17] = -0.0
    flat[7::19] = flat[3::19][: flat[7::19].size]
    return v


def _mismatch(k: SimpleNamespace) -> str | None:
    """What differs between the compiled loops and numpy on wide-range inputs (``None``: nothing)."""
    rng = np.random.default_rng(20261202)
    for n, width in ((2, 128), (3, 384), (5, 1024), (7, 256)):
        rows = _wide(rng, (n, width))
        for diagonal in (False, True):
            for product in (False, True):
                pairs = [(i, j) for i in range(n) for j in range(i if diagonal else i + 1, n)]
                got = np.full((len(pairs), width // LEAF + 1), np.nan)
                k.pair_leaves(rows, got, 1, diagonal, product)
                for p, (i, j) in enumerate(pairs):
                    terms = rows[j] * rows[i] if product else (rows[j] - rows[i]) ** 2
                    want = np.add.reduce(terms.reshape(-1, LEAF), axis=1)
                    if got[p, 1:].tobytes() != want.tobytes():
                        kind = "products" if product else "squared differences"
                        return f"{kind} of rows {i} and {j} of {n} x {width}"
    for dtype in (np.float32, np.float64):
        raw = _wide(rng, 1024).astype(dtype)
        base = _wide(rng, 1024) * 1e-3
        work = np.empty(1024)
        total = k.delta_square_sum(raw, base, work)
        d = raw.astype(np.float64) - base
        got = np.empty(1024)
        k.deltas(raw, base, got)
        if got.tobytes() != d.tobytes():
            return f"deltas of {np.dtype(dtype).name} values"
        history = _wide(rng, 1024)
        k.add_deltas(raw, base, history, got)
        if got.tobytes() != (history + d).tobytes():
            return f"histories plus deltas of {np.dtype(dtype).name} values"
        if work.tobytes() != d.tobytes() or float(total).hex() != float(np.add.reduce(d * d)).hex():
            return f"squared deltas of {np.dtype(dtype).name} values"
        out = np.empty(1024, dtype=np.float32)
        with np.errstate(over="ignore"):
            k.clip(raw, base, 0.37, out)
            want = np.empty(1024, dtype=np.float32)
            np.add(base, (raw.astype(np.float64) - base) * 0.37, out=want)
        if out.tobytes() != want.tobytes():
            return f"clipped {np.dtype(dtype).name} values"
    return None
