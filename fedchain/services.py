"""Background services that outlive one CLI command (``chain up``, ``ipfs up``).

A service is a detached process (own session, output to a log file) whose pid
is recorded in the network file; ``stop_pid`` ends it cleanly: a polite signal
first, then SIGKILL after a grace period. (Not mirakuru, which manages the
processes a Python process owns — anvil in tests and local networks, the role
processes — and kills them all when that process exits: these must outlive it.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence

from fedchain.errors import FedchainError


class ServiceError(FedchainError):
    """A background service did not start or stop as expected."""


def start_detached(
    argv: Sequence[str],
    log_file: Path,
    ready: Callable[[], bool],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    what: str = "service",
) -> int:
    """Start ``argv`` detached, wait until ``ready()`` is true, return its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(
                f"{what} exited with status {proc.returncode} while starting; see {log_file}"
            )
        try:
            if ready():
                return proc.pid
        except Exception:  # not listening yet
            pass
        time.sleep(0.1)
    stop_pid(proc.pid)
    raise ServiceError(f"{what} did not become ready within {timeout:.0f} s; see {log_file}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def stop_pid(pid: int, *, sig: int = signal.SIGINT, grace: float = 10.0) -> bool:
    """Stop the process group of ``pid``; return False if it was not running."""
    if not pid_alive(pid):
        return False
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True
