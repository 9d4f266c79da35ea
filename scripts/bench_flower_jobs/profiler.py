"""Where a fedchain round's time goes: exclusive wall time per category.

:class:`Profiler` wraps functions (by attribute, on a module or a class) so that
entering one starts its category's clock and pauses the caller's; time spent
outside every wrapped function is ``other``. Categories:

* ``chain``: the bindings (calls, transactions, the event read model, any RPC);
* ``store``: the content store (put, get);
* ``crypto``: sealing and opening envelopes;
* ``serialize``: canonical safetensors in and out;
* ``training``: local training and evaluation (node.train);
* ``aggregation``: the strategy's verbs.

Only the main thread is timed, so the categories add up to the round's wall
time: a simulation trains the next hospital on a worker thread while the main
thread commits, and only the time the main thread spends waiting for that
training (``Future.result``) counts as ``training``.

It patches process-wide attributes, so it is for benchmarks only.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import defaultdict
from typing import Any, Callable

CATEGORIES = ("chain", "store", "crypto", "serialize", "training", "aggregation", "other")


class Profiler:
    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self._local = threading.local()
        self._undo: list[tuple[Any, str, Any]] = []

    def _stack(self) -> list[list]:
        st = getattr(self._local, "stack", None)
        if st is None:
            st = self._local.stack = [["other", time.perf_counter()]]
        return st

    def _enter(self, category: str) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        now = time.perf_counter()
        st = self._stack()
        top = st[-1]
        self.totals[top[0]] += now - top[1]
        st.append([category, now])

    def _leave(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        now = time.perf_counter()
        st = self._stack()
        cat, since = st.pop()
        self.totals[cat] += now - since
        st[-1][1] = now

    def snapshot(self) -> dict[str, float]:
        """Totals so far (the running ``other`` clock of this thread included)."""
        now = time.perf_counter()
        st = self._stack()
        out = dict(self.totals)
        for cat, since in st[-1:]:
            out[cat] = out.get(cat, 0.0) + now - since
        return {c: out.get(c, 0.0) for c in CATEGORIES}

    def wrap(self, owner: Any, name: str, category: str) -> None:
        """Time ``owner.name`` (a function or method) under ``category``; no-op if absent."""
        original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if original is None:
            return
        if isinstance(original, property):
            fget = self._timed(original.fget, category)
            setattr(owner, name, property(fget, original.fset, original.fdel, original.__doc__))
        elif isinstance(original, (staticmethod, classmethod)):
            return
        else:
            setattr(owner, name, self._timed(original, category))
        self._undo.append((owner, name, original))

    def _timed(self, fn: Callable, category: str) -> Callable:
        prof = self

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            prof._enter(category)
            try:
                return fn(*args, **kwargs)
            finally:
                prof._leave()

        return timed

    def restore(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


def instrument(prof: Profiler) -> None:
    """Wrap fedchain's functions in their categories (see the module docstring)."""
    # imports here: the profiler module itself must stay importable without fedchain
    import concurrent.futures

    from fedchain import envelope, serialize
    from fedchain.contracts.bindings import chain as chain_mod
    from fedchain.contracts.bindings import deployment
    from fedchain.coordinator import runner as coord_runner
    from fedchain.coordinator.strategies import base as strategies
    from fedchain.ipfs import kubo, local, store
    from fedchain.node import runner as node_runner
    from fedchain.node import train

    for name in ("send", "mine", "fund", "block_hash"):
        prof.wrap(chain_mod.Chain, name, "chain")
    for name in ("block_number", "block_timestamp"):
        prof.wrap(chain_mod.Chain, name, "chain")
    for name in ("call", "send", "read_model", "iter_events", "events", "wait_for_events", "voting_period"):
        prof.wrap(deployment.Fedchain, name, "chain")
    for cls in (local.LocalStore, kubo.KuboStore, store.ContentStore):
        for name in ("put", "get", "get_to", "pin", "unpin", "has"):
            prof.wrap(cls, name, "store")
    for name in ("seal", "seal_stream", "open_", "open_stream"):
        prof.wrap(envelope, name, "crypto")
    for mod in (serialize, node_runner, coord_runner):
        for name in ("state_dict_to_bytes", "bytes_to_state_dict", "file_to_state_dict", "state_dict_to_file"):
            prof.wrap(mod, name, "serialize")
    for mod in (train, node_runner):
        for name in ("train_local", "evaluate"):
            prof.wrap(mod, name, "training")
    prof.wrap(concurrent.futures.Future, "result", "training")  # waiting for a worker's training
    for cls in _subclasses(strategies.Strategy):
        for name in ("aggregate_train", "aggregate_evaluate", "contribution_scores"):
            prof.wrap(cls, name, "aggregation")


def _subclasses(cls: type) -> list[type]:
    out, todo = [], [cls]
    while todo:
        c = todo.pop()
        out.append(c)
        todo.extend(c.__subclasses__())
    return out
