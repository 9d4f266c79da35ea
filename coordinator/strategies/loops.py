"""The compiled loops behind :mod:`~fedchain.coordinator.strategies.kernels` (numba).

Import this module through :func:`kernels.get`, which switches on LLVM's SLP vectoriser
while they compile and checks them against numpy before any rule uses them. Each loop
is compiled once for its signature and kept in numba's on-disk cache (next to this file,
or in the user's cache directory when that is read-only), so later processes load it.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import boolean, float32, float64, int64, uint64, void

__all__ = ["pair_leaves", "deltas", "add_deltas", "delta_square_sum", "clip", "TILE_RUNS"]

U = uint64  # unsigned indices: no negative-index wrap-around code, so LLVM can vectorise
_OPTS = dict(nogil=True, cache=True, boundscheck=False)


@numba.njit([float64(float64[::1], float64[::1], uint64)], **_OPTS)
def square_leaf(a, b, s):
    """numpy's ``add.reduce`` of ``(b[s:s+128] - a[s:s+128])**2``: eight running sums over the
    elements in steps of eight, combined pairwise, added to ``0.0``."""
    d0 = b[s] - a[s]
    d1 = b[s + U(1)] - a[s + U(1)]
    d2 = b[s + U(2)] - a[s + U(2)]
    d3 = b[s + U(3)] - a[s + U(3)]
    d4 = b[s + U(4)] - a[s + U(4)]
    d5 = b[s + U(5)] - a[s + U(5)]
    d6 = b[s + U(6)] - a[s + U(6)]
    d7 = b[s + U(7)] - a[s + U(7)]
    r0 = d0 * d0
    r1 = d1 * d1
    r2 = d2 * d2
    r3 = d3 * d3
    r4 = d4 * d4
    r5 = d5 * d5
    r6 = d6 * d6
    r7 = d7 * d7
    k = s + U(8)
    while k < s + U(128):
        d0 = b[k] - a[k]
        d1 = b[k + U(1)] - a[k + U(1)]
        d2 = b[k + U(2)] - a[k + U(2)]
        d3 = b[k + U(3)] - a[k + U(3)]
        d4 = b[k + U(4)] - a[k + U(4)]
        d5 = b[k + U(5)] - a[k + U(5)]
        d6 = b[k + U(6)] - a[k + U(6)]
        d7 = b[k + U(7)] - a[k + U(7)]
        r0 += d0 * d0
        r1 += d1 * d1
        r2 += d2 * d2
        r3 += d3 * d3
        r4 += d4 * d4
        r5 += d5 * d5
        r6 += d6 * d6
        r7 += d7 * d7
        k += U(8)
    return 0.0 + (((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)))


@numba.njit([float64(float64[::1], float64[::1], uint64)], **_OPTS)
def product_leaf(a, b, s):
    """numpy's ``add.reduce`` of ``b[s:s+128] * a[s:s+128]`` (the same order as :func:`square_leaf`)."""
    r0 = b[s] * a[s]
    r1 = b[s + U(1)] * a[s + U(1)]
    r2 = b[s + U(2)] * a[s + U(2)]
    r3 = b[s + U(3)] * a[s + U(3)]
    r4 = b[s + U(4)] * a[s + U(4)]
    r5 = b[s + U(5)] * a[s + U(5)]
    r6 = b[s + U(6)] * a[s + U(6)]
    r7 = b[s + U(7)] * a[s + U(7)]
    k = s + U(8)
    while k < s + U(128):
        r0 += b[k] * a[k]
        r1 += b[k + U(1)] * a[k + U(1)]
        r2 += b[k + U(2)] * a[k + U(2)]
        r3 += b[k + U(3)] * a[k + U(3)]
        r4 += b[k + U(4)] * a[k + U(4)]
        r5 += b[k + U(5)] * a[k + U(5)]
        r6 += b[k + U(6)] * a[k + U(6)]
        r7 += b[k + U(7)] * a[k + U(7)]
        k += U(8)
    return 0.0 + (((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)))


#: Runs of 128 per tile of :func:`pair_leaves`: two rows' tiles (2 x 16 KiB) stay in the L1 cache
#: while a pair is summed, all rows' tiles in L2 while every pair uses them.
TILE_RUNS = 16


@numba.njit([int64(float64[:, ::1], float64[:, ::1], int64, boolean, boolean)], **_OPTS)
def pair_leaves(rows, leaves, col, diagonal, product):
    """For every pair ``i < j`` (``i <= j`` with ``diagonal``), in that order, the 128-element run
    sums of ``rows[j] * rows[i]`` (``product``) or ``(rows[j] - rows[i])**2`` into
    ``leaves[pair, col:]``; the row width must be a multiple of 128. Returns the pair count.
    Worked through in tiles of columns (each run sum is the same whatever the tiling)."""
    n = rows.shape[0]
    runs = rows.shape[1] // 128
    p = 0
    for t in range(0, runs, TILE_RUNS):
        stop = min(t + TILE_RUNS, runs)
        p = 0
        for i in range(n):
            a = rows[i]
            for j in range(i if diagonal else i + 1, n):
                b = rows[j]
                if product:
                    for m in range(t, stop):
                        leaves[p, col + m] = product_leaf(a, b, U(m) * U(128))
                else:
                    for m in range(t, stop):
                        leaves[p, col + m] = square_leaf(a, b, U(m) * U(128))
                p += 1
    return p


@numba.njit([void(float32[::1], float64[::1], float64[::1]), void(float64[::1], float64[::1], float64[::1])],
            **_OPTS)
def deltas(raw, base, out):
    """``out = float64(raw) - base`` (one rounding per element)."""
    for k in range(raw.shape[0]):
        out[k] = np.float64(raw[k]) - base[k]


@numba.njit([void(float32[::1], float64[::1], float64[::1], float64[::1]),
             void(float64[::1], float64[::1], float64[::1], float64[::1])], **_OPTS)
def add_deltas(raw, base, history, out):
    """``out = history + (float64(raw) - base)`` (each step rounded once)."""
    for k in range(raw.shape[0]):
        out[k] = history[k] + (np.float64(raw[k]) - base[k])


@numba.njit([float64(float32[::1], float64[::1], float64[::1]), float64(float64[::1], float64[::1], float64[::1])],
            **_OPTS)
def delta_square_sum(raw, base, work):
    """``work = float64(raw) - base``, then numpy's ``add.reduce(work * work)`` for a length of
    128 times a power of two: the 128-element run sums, added pairwise level by level (numpy
    halves such a length down to runs of 128)."""
    for k in range(raw.shape[0]):
        work[k] = np.float64(raw[k]) - base[k]
    runs = raw.shape[0] // 128
    sums = np.empty(runs)
    for m in range(runs):
        sums[m] = product_leaf(work, work, U(m) * U(128))
    while runs > 1:
        runs //= 2
        for m in range(runs):
            sums[m] = sums[2 * m] + sums[2 * m + 1]
    return sums[0]


@numba.njit([void(float32[::1], float64[::1], float64, float32[::1]),
             void(float64[::1], float64[::1], float64, float32[::1])], **_OPTS)
def clip(raw, base, scale, out):
    """``out = float32(base + (float64(raw) - base) * scale)``, each step rounded once."""
    for k in range(raw.shape[0]):
        out[k] = np.float32(base[k] + (np.float64(raw[k]) - base[k]) * scale)
