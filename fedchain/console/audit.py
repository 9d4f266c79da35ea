"""The audit page's replay, run in the background with the console's identity as the auditor key.

The replay module (:mod:`fedchain.coordinator.audit.replay`) re-derives every
aggregate and score from the committed updates; it decrypts them with the key
of an auditor the plan names. The console passes its own identity: a member
whose key the plan lists as an auditor verifies every round, anyone else sees
which rounds they cannot open. On a JSON-RPC chain the replay reads the chain
on its own connection, so pages stay responsive while it runs.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from fedchain.console.state import ConsoleState
from fedchain.contracts.bindings import Chain
from fedchain.coordinator.audit.replay import replay_live
from fedchain.errors import FedchainError


class AuditRunner:
    """At most one replay at a time; its last report, and a version that changes when it does."""

    def __init__(self, state: ConsoleState) -> None:
        self.state = state
        self.status = "not run yet"
        self.report: Any = None
        self.error = ""
        self.started: float | None = None
        self.finished: float | None = None
        self.block: int | None = None
        self.seconds: float | None = None
        self.version = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def available(self) -> str:
        """"" if a replay can run, else why not."""
        if self.state.identity is None:
            return "the replay decrypts updates with an auditor's key: start the console with --identity"
        return ""

    def start(self) -> bool:
        """Start a replay unless one is running (or none can run); True if started."""
        with self._lock:
            if self.running or self.available:
                return False
            self.status, self.error = "running", ""
            self.started = time.time()
            self.version += 1
            self._thread = threading.Thread(target=self._run, name="fedchain-console-replay", daemon=True)
            self._thread.start()
            return True

    def wait(self, timeout: float | None = None) -> None:
        t = self._thread
        if t is not None:
            t.join(timeout)

    def _run(self) -> None:
        t0 = time.monotonic()
        try:
            report, block = self._replay()
            self.report, self.block, self.status = report, block, "done"
        except (FedchainError, OSError, ValueError) as exc:
            self.status, self.error = "failed", str(exc)
        finally:
            self.seconds = time.monotonic() - t0
            self.finished = time.time()
            self.version += 1

    def _replay(self) -> tuple[Any, int]:
        st = self.state
        if st.chain.url.startswith(("http://", "https://")):
            chain = Chain.connect(st.chain.url)
            fed = chain.attach(st.deployment)
            block = chain.block_number
            with st.store() as store:
                return replay_live(fed, store, st.identity), block
        with st.lock, st.store() as store:  # the embedded chain has one connection: share it
            return replay_live(st.fed, store, st.identity), st.chain.block_number
