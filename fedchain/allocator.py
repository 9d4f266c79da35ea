"""Tune glibc's allocator once per process for work that moves model-sized buffers.

A round handles many large buffers: a 4.3M-parameter update is 17 MB as tensors, again as its
serialization, its envelope, the store's blocks and the coordinator's decrypted copy. They are
made and freed on several threads (training workers, the store's I/O threads, the vector threads).
With glibc's defaults such a buffer is nearly always served from fresh pages: each thread allocates
from its own arena (up to 8 per core), memory freed into one arena is not reused by the others, an
allocation over the dynamic mmap threshold is a fresh mapping, and free memory at the top of a heap is
handed back to the kernel. Every fresh page is a page fault plus zeroing by the kernel, ~4,150 of them per
17 MB. In the benchmark's MLP job (5 hospitals) that was 100,000-170,000 minor faults and
0.6-1.0 s of system CPU per round, on a round of ~2 CPU-seconds.

:func:`tune` sets, through ``mallopt(3)``: arenas = CPU count (at least 2), mmap threshold 32 MiB
(glibc's largest), trim threshold 256 MiB and top pad 64 MiB. Freed buffers are then reused
(1,000-7,000 faults a round, ``getrusage`` over rounds 2-5; the round went from 1.39-1.68 s to
1.16-1.24 s in interleaved pairs, see the README's benchmark section). The cost is memory the
process keeps instead of returning: up to the trim threshold per heap. The MLP job's peak RSS went
down, from ~1.4 GiB to ~1.05 GiB, because fewer arenas hold fewer idle buffers.

The ``fedchain`` command calls :func:`tune` before any command runs (so do the benchmark's job
scripts); a library import changes nothing. A setting whose ``MALLOC_*`` environment variable is set,
or any setting if ``GLIBC_TUNABLES`` names ``glibc.malloc``, is left to the environment: the operator
decides. Other C libraries (musl, macOS) are left alone. No input from the network reaches this.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt(3) parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

MIB = 1 << 20


def settings() -> dict[str, tuple[int, int]]:
    """What :func:`tune` sets: environment variable -> (``mallopt`` parameter, value)."""
    return {
        "MALLOC_ARENA_MAX": (M_ARENA_MAX, max(2, os.cpu_count() or 2)),
        "MALLOC_MMAP_THRESHOLD_": (M_MMAP_THRESHOLD, 32 * MIB),
        "MALLOC_TRIM_THRESHOLD_": (M_TRIM_THRESHOLD, 256 * MIB),
        "MALLOC_TOP_PAD_": (M_TOP_PAD, 64 * MIB),
    }


_done: dict[str, int] | None = None


def applied() -> dict[str, int] | None:
    """What :func:`tune` set in this process (variable -> value), or ``None`` before it ran."""
    return None if _done is None else dict(_done)


def tune() -> dict[str, int]:
    """Apply :func:`settings` once per process; return what was set (variable -> value).

    Empty when the C library is not glibc or ``GLIBC_TUNABLES`` configures malloc; a variable the
    environment sets is skipped. A later call returns the first call's answer without setting anything.
    """
    global _done
    if _done is not None:
        return dict(_done)
    done: dict[str, int] = {}
    if platform.libc_ver()[0] == "glibc" and "glibc.malloc" not in os.environ.get("GLIBC_TUNABLES", ""):
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):  # pragma: no cover - a glibc without mallopt
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            mallopt.restype = ctypes.c_int
            for var, (param, value) in settings().items():
                if var not in os.environ and mallopt(param, value) == 1:
                    done[var] = value
    _done = done
    return dict(done)
