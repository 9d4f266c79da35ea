"""Updates as flat float64 vectors, for the robust rules that compare whole updates.

Robust rules (Krum, coordinate-wise median and trimmed mean, norm bounding,
FoolsGold) look at each update as one vector. To keep their results
bit-identical on every machine — the auditor re-derives every aggregate — the
numbers are computed with fixed-order operations only:

* the flat vector concatenates the tensors in sorted name order, in float64;
* a squared L2 norm or distance squares element by element (each product
  correctly rounded) and sums with numpy's ``add.reduce`` over blocks of
  :data:`BLOCK` elements — numpy's pairwise summation, whose order is fixed by
  its source, not by the CPU's vector width or thread count — and the block
  sums with ``math.fsum`` (correctly rounded, order-independent). BLAS (``dot``,
  ``@``) is never used: its reduction order depends on the machine;
* ties are broken by the canonical update key ``(participant, dataset)``.

Speed (the results above do not change): the rules read the updates' float32
values in place (:func:`prepare`) and work through the coordinates in chunks
that stay in the CPU cache, converting each chunk to float64 once
(``float64(x) - base``, exactly what the whole-vector code computed). A block
sum of :data:`BLOCK` elements is numpy's pairwise summation, which splits a
block of ``2**16`` elements into halves down to runs of :data:`LEAF` (128)
elements summed with eight accumulators; :func:`pair_block_sums` therefore sums
each run of 128 with ``add.reduce`` (the same eight-accumulator loop) and adds
the run sums in the same binary tree — bit for bit ``add.reduce`` of the whole
block (checked at import on a wide-range vector; if a numpy ever splits
differently, whole blocks are reduced as before). Sorting and selection (median,
trimmed mean) work on the raw float32 values: ``x -> float64(x) - base`` is
non-decreasing, so it commutes with sorting, and only the selected values are
converted; they sort whole rows of a chunk at once with a sorting network of
elementwise ``minimum``/``maximum`` (:func:`sort_chunk`), and a sum across
sorted ranks replays ``add.reduce``'s order along a row (:func:`pairwise_sum`,
also checked at import, with a fallback). The pair sums (Krum's distances,
FoolsGold's products) and the deltas that feed them run in compiled loops
(:mod:`~fedchain.coordinator.strategies.kernels`) that fuse difference, square
and the run sums into one pass with the same operations — checked against this
numpy code when first used, which stays the path wherever they are not in use.
Chunks run on as many threads as torch
uses (at most 4; :data:`THREADS` overrides); every chunk's numbers come from the
same operations on any thread, and they are combined in a fixed order, with
``math.fsum`` or as integers.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping, Sequence

import numpy as np
import torch

from fedchain.coordinator.strategies.kernels import LEAF, get as compiled_loops
from fedchain.coordinator.strategies.base import ClientUpdate, canonical_order, check_update

__all__ = ["BLOCK", "LEAF", "flatten", "unflatten", "stack_deltas", "squared_norm", "norm", "pairwise_squared_distances",
           "pairwise_products", "pair_block_sums", "prepare", "raw_vector", "sort_chunk", "chunks", "sorting_network",
           "pairwise_sum", "rank_sum", "in_parallel", "scratch", "THREADS", "tree_sums"]

#: Elements per block of a norm or distance (each block is one pairwise-summed reduction).
BLOCK = 1 << 16
#: Coordinates per chunk of the pair loops (all rows' chunk and the scratch stay in the L2 cache).
SUB = 8192
#: Coordinates per chunk of the sorting rules.
CHUNK = 32768


def flatten(state: Mapping[str, torch.Tensor]) -> np.ndarray:
    """The tensors of ``state`` in sorted name order as one float64 vector.

    Each tensor is widened straight into its slice of the one vector (widening to
    float64 is exact): no per-tensor float64 copies to concatenate, so a 4M-parameter
    model costs one fresh 32 MiB buffer instead of two.
    """
    names = sorted(state)
    tensors = [state[k].detach().reshape(-1) for k in names]
    out = np.empty(sum(t.numel() for t in tensors), dtype=np.float64)
    at = 0
    for t in tensors:
        n = t.numel()
        torch.from_numpy(out[at:at + n]).copy_(t)
        at += n
    return out


def unflatten(vector: np.ndarray, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``vector`` cut back into tensors shaped like ``like`` (float64)."""
    out, at = {}, 0
    for k in sorted(like):
        n = like[k].numel()
        out[k] = torch.from_numpy(np.ascontiguousarray(vector[at:at + n])).reshape(like[k].shape).clone()
        at += n
    return out


def stack_deltas(
    arrays: Mapping[str, torch.Tensor], updates: Sequence[ClientUpdate]
) -> tuple[list[ClientUpdate], np.ndarray]:
    """The updates in canonical order (checked against the global model) and their
    differences to it as the rows of one float64 matrix."""
    ordered = canonical_order(updates)
    for u in ordered:
        check_update(arrays, u)
    base = flatten(arrays)
    rows = np.empty((len(ordered), base.size), dtype=np.float64)
    for i, u in enumerate(ordered):  # written in place: float64(w) - base, as flatten(w) - base would give
        at = 0
        for k in sorted(arrays):
            t = u.state[k].detach().reshape(-1).numpy()
            np.subtract(t, base[at:at + t.size], out=rows[i, at:at + t.size], dtype=np.float64)
            at += t.size
    return ordered, rows


def squared_norm(v: np.ndarray) -> float:
    """``sum(v**2)``, the same on every machine (see the module docstring)."""
    v = np.ascontiguousarray(v, dtype=np.float64).reshape(-1)
    return math.fsum(float(np.add.reduce(v[i:i + BLOCK] * v[i:i + BLOCK])) for i in range(0, v.size, BLOCK))


def norm(v: np.ndarray) -> float:
    """The L2 norm of ``v`` (see :func:`squared_norm`)."""
    return math.sqrt(squared_norm(v))


def _tree_matches_numpy() -> bool:
    """Whether ``add.reduce`` of a full block equals the tree of its :data:`LEAF` run sums."""
    rng = np.random.default_rng(12345)
    v = rng.standard_normal(BLOCK) * np.exp2(rng.integers(-40, 40, BLOCK).astype(np.float64))
    sums = np.add.reduce(v.reshape(1, BLOCK // LEAF, LEAF), axis=2)
    while sums.shape[1] > 1:
        sums = sums[:, 0::2] + sums[:, 1::2]
    return float(sums[0, 0]).hex() == float(np.add.reduce(v)).hex()


_TREE = _tree_matches_numpy()


def tree_sums() -> bool:
    """Whether a full block's ``add.reduce`` is the pairwise tree of its :data:`LEAF` run sums here."""
    return _TREE

#: Threads for the chunk loops (numpy releases the GIL inside its loops). Each chunk's numbers come
#: from the same operations whichever thread runs it, and chunks are combined in a fixed order (or
#: with math.fsum / integer sums), so the thread count never changes a result.
#: ``None``: as many as torch uses for its own loops (``torch.get_num_threads()``, which FedAvg's
#: weighted mean runs on), at most 4.
THREADS: int | None = None


def _threads() -> int:
    return max(1, THREADS if THREADS is not None else min(4, torch.get_num_threads()))


_pool: ThreadPoolExecutor | None = None
_pool_pid = 0  # a forked child has the parent's pool object but not its threads: it makes its own
_pool_lock = threading.Lock()


def in_parallel(jobs: Sequence, work, parallel: bool = True) -> list:
    """``[work(job, local) for job in jobs]``, the jobs shared out over up to :data:`THREADS` (or
    torch's thread count, at most 4) threads (one with ``parallel=False``: for small work, where
    starting threads costs more); ``local`` is a dict private to one thread (for its scratch buffers)."""
    global _pool, _pool_pid
    jobs = list(jobs)
    threads = min(_threads(), len(jobs)) if parallel else 1
    if threads <= 1:
        local: dict = {}
        return [work(job, local) for job in jobs]
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fedchain-vectors")
            _pool_pid = os.getpid()
    out: list = [None] * len(jobs)

    def run(t: int) -> None:
        local: dict = {}
        for k in range(t, len(jobs), threads):
            out[k] = work(jobs[k], local)

    for f in [_pool.submit(run, t) for t in range(threads)]:
        f.result()
    return out


def scratch(local: dict, name: str, size: int, dtype=np.float64) -> np.ndarray:
    """A thread's reusable buffer of at least ``size`` elements."""
    buf = local.get(name)
    if buf is None or buf.size < size or buf.dtype != dtype:
        buf = local[name] = np.empty(size, dtype=dtype)
    return buf[:size]


def raw_vector(state: Mapping[str, torch.Tensor], names: Sequence[str]) -> np.ndarray:
    """The tensors ``names`` as one flat vector of their own values: float32 when they all are
    (a view when there is one tensor), else float64 (:func:`flatten`). ``float64`` of either is
    the same number, so ``raw - base`` is the delta :func:`stack_deltas` computes."""
    ts = [state[k].detach().reshape(-1) for k in names]
    if ts and all(t.dtype == torch.float32 for t in ts):
        ts = [t for t in ts if t.numel()] or ts[:1]  # an empty tensor adds nothing: often one view, no copy
        return ts[0].numpy() if len(ts) == 1 else np.concatenate([t.numpy() for t in ts])
    if not ts:
        return np.empty(0, dtype=np.float64)
    return np.concatenate([t.to(torch.float64).numpy() for t in ts])


def prepare(
    arrays: Mapping[str, torch.Tensor], updates: Sequence[ClientUpdate]
) -> tuple[list[ClientUpdate], np.ndarray, list[np.ndarray]]:
    """The updates in canonical order (checked against the global model, as :func:`stack_deltas`
    does), the global model as float64 (:func:`flatten`) and each update's raw flat values."""
    ordered = canonical_order(updates)
    for u in ordered:
        check_update(arrays, u)
    names = sorted(arrays)
    return ordered, flatten(arrays), [raw_vector(u.state, names) for u in ordered]


@functools.lru_cache(maxsize=None)
def sorting_network(n: int) -> tuple[tuple[int, int], ...]:
    """Batcher's odd-even merge sort for ``n`` inputs: comparators ``(i, j)``, ``i < j``, after
    which position ``i`` holds the smaller value (Knuth, TAOCP vol. 3, 5.3.4, for any ``n``)."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k - 1, n - j - k - 1) + 1):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple(pairs)


def sort_chunk(raws: Sequence[np.ndarray], start: int, stop: int, local: dict) -> list[np.ndarray]:
    """``ranked[r]`` holds, for each coordinate in ``[start, stop)``, the ``r``-th smallest of the
    updates' raw values there (arrays in the thread's scratch, reused by its next chunk).

    Sorted by a sorting network of elementwise ``minimum``/``maximum`` over whole rows (cache-sized,
    no transposition). A network sorts exactly; only the sign of a zero may move between two equal
    zeros, which no rule can see: a zero delta is added to the global value, and ``b + 0.0 ==
    b + -0.0`` except for ``b == 0.0``, where ``float64(±0) - 0.0`` gives a zero either way and the
    sum is ``+0.0``; for ``b == -0.0`` both give ``+0.0`` deltas; a sum of deltas that has a
    non-zero term does not depend on the sign of its zero terms.
    """
    n, w = len(raws), stop - start
    dtype = np.result_type(*raws) if raws else np.float64
    buf = scratch(local, "sort", (n + 1) * w, dtype).reshape(n + 1, w)
    rows = [buf[i] for i in range(n + 1)]
    for i, r in enumerate(raws):
        np.copyto(rows[i], r[start:stop])
    spare = rows.pop()
    for i, j in sorting_network(n):
        np.minimum(rows[i], rows[j], out=spare)
        np.maximum(rows[i], rows[j], out=rows[j])
        rows[i], spare = spare, rows[i]
    return rows


def chunks(width: int, chunk: int = CHUNK) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of ``chunk`` coordinates covering ``width``."""
    return [(a, min(a + chunk, width)) for a in range(0, width, chunk)]


def pairwise_sum(terms: Sequence[np.ndarray]) -> np.ndarray:
    """Elementwise ``add.reduce`` of ``terms`` (float64 arrays) as if they were the rows' values
    along a reduced axis: ``0.0 +`` numpy's pairwise summation — fewer than 8 terms added one by
    one, up to :data:`LEAF` with eight accumulators, more split in halves of a multiple of 8."""
    def pw(ts):
        m = len(ts)
        if m < 8:
            res = np.zeros_like(ts[0]) if m else 0.0
            for t in ts:
                res = res + t
            return res
        if m <= LEAF:
            r = [ts[j].copy() for j in range(8)]
            i = 8
            while i < m - m % 8:
                for j in range(8):
                    r[j] += ts[i + j]
                i += 8
            res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
            for t in ts[i:]:
                res += t
            return res
        m2 = m // 2
        m2 -= m2 % 8
        return pw(ts[:m2]) + pw(ts[m2:])

    return 0.0 + pw(list(terms))


def pair_block_sums(n: int, width: int, load, op, diagonal: bool) -> tuple[list[tuple[int, int]], np.ndarray]:
    """For every pair ``i < j`` (and ``i == j`` when ``diagonal``), the per-block sums
    ``add.reduce(op(row_j, row_i))`` over blocks of :data:`BLOCK` elements.

    ``load(a, b, out)`` gives the rows' float64 values in ``[a, b)`` as an ``(n, b - a)`` array
    (it may fill and return ``out``, a scratch array of that shape); ``op(rows, row, out)``
    writes the elementwise values to sum for ``rows`` against ``row``. A full block is loaded in
    chunks of :data:`SUB`; each chunk's runs of :data:`LEAF` are summed, and the run sums added
    in numpy's pairwise tree (see the module docstring), so a block sum is bit for bit
    ``add.reduce`` of the block's values. Blocks are shared out over threads
    (:func:`in_parallel`). Returns the pairs and a ``(pairs, blocks)`` array.
    """
    pairs = [(i, j) for i in range(n) for j in range(i if diagonal else i + 1, n)]
    nblocks = -(-width // BLOCK)
    sums = np.empty((len(pairs), nblocks), dtype=np.float64)
    if not pairs:
        return pairs, sums

    compiled = compiled_loops() if op in (squared_difference, product) else None

    def block(b: int, local: dict) -> None:
        start = b * BLOCK
        stop = min(start + BLOCK, width)
        tree = _TREE and stop - start == BLOCK
        step = SUB if tree else stop - start
        leaves = np.empty((len(pairs), BLOCK // LEAF if tree else 1), dtype=np.float64)
        for a in range(start, stop, step):
            e = min(a + step, stop)
            w = e - a
            nl = w // LEAF if tree else 1
            l0 = (a - start) // LEAF if tree else 0
            rows = load(a, e, scratch(local, "rows", n * w).reshape(n, w))
            if compiled and tree:  # the same run sums, in one fused pass per pair
                if not rows.flags.c_contiguous:  # a view into a caller's matrix
                    dense = scratch(local, "dense", n * w).reshape(n, w)
                    np.copyto(dense, rows)
                    rows = dense
                compiled.pair_leaves(rows, leaves, l0, diagonal, op is product)
                continue
            work = scratch(local, "work", n * w)
            p = 0
            for i in range(n):
                j0 = i if diagonal else i + 1
                r = n - j0
                if not r:
                    continue
                out = work[:r * w].reshape(r, w)
                op(rows[j0:], rows[i], out)
                np.add.reduce(out.reshape(r, nl, w // nl), axis=2, out=leaves[p:p + r, l0:l0 + nl])
                p += r
        while leaves.shape[1] > 1:  # pairwise: (left half) + (right half), level by level
            leaves = leaves[:, 0::2] + leaves[:, 1::2]
        sums[:, b] = leaves[:, 0]

    in_parallel(range(nblocks), block)
    return pairs, sums


def squared_difference(rows: np.ndarray, row: np.ndarray, out: np.ndarray) -> None:
    """``(rows - row)**2``, each difference and square rounded once (as ``diff * diff``)."""
    np.subtract(rows, row, out=out)
    np.multiply(out, out, out=out)


def product(rows: np.ndarray, row: np.ndarray, out: np.ndarray) -> None:
    """``rows * row`` (each product rounded once)."""
    np.multiply(rows, row, out=out)


def _fsum_matrix(n: int, pairs, sums: np.ndarray) -> np.ndarray:
    d = np.zeros((n, n), dtype=np.float64)
    for (i, j), row in zip(pairs, sums.tolist()):
        d[i, j] = d[j, i] = math.fsum(row)
    return d


def pairwise_squared_distances(rows: np.ndarray) -> np.ndarray:  
    """``d[i, j] = sum((rows[i] - rows[j])**2)`` for every pair, the same on every machine.

    Each pair's block sums (:func:`pair_block_sums`) are combined with ``math.fsum``.
    """
    n, width = rows.shape
    pairs, sums = pair_block_sums(n, width, lambda a, b, out: rows[:, a:b], squared_difference, diagonal=False)
    return _fsum_matrix(n, pairs, sums)


def pairwise_products(rows) -> np.ndarray:
    """``g[i, j] = sum(rows[i] * rows[j])`` (the diagonal: squared norms), the same on every machine:
    for every pair, bit for bit ``math.fsum`` of the block sums :func:`squared_norm` uses."""
    n = len(rows)
    width = rows[0].size if n else 0

    def load(a, b, out):
        if isinstance(rows, np.ndarray):
            return rows[:, a:b]
        for i, r in enumerate(rows):
            out[i] = r[a:b]
        return out

    pairs, sums = pair_block_sums(n, width, load, product, diagonal=True)
    return _fsum_matrix(n, pairs, sums)


def _pairwise_sum_matches_numpy() -> bool:
    """Whether :func:`pairwise_sum` over ranks equals ``add.reduce`` along rows, for many lengths."""
    rng = np.random.default_rng(54321)
    for m in [*range(1, 41), 127, 128, 129, 257, 1000]:
        x = rng.standard_normal((m, 7)) * np.exp2(rng.integers(-40, 40, (m, 7)).astype(np.float64))
        if pairwise_sum(list(x)).tobytes() != np.add.reduce(np.ascontiguousarray(x.T), axis=1).tobytes():
            return False
    return True


_RANKS = _pairwise_sum_matches_numpy()


def rank_sum(terms: Sequence[np.ndarray]) -> np.ndarray:
    """``add.reduce`` along the rows of ``stack(terms, axis=1)`` — what summing each coordinate's
    sorted values gave — by :func:`pairwise_sum` when it matches this numpy, else literally."""
    if _RANKS or not terms:
        return pairwise_sum(terms)
    return np.add.reduce(np.stack(terms, axis=1), axis=1)
