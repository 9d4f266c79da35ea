"""How a long-running role process stops: signals, interruptible waits, exit codes.

``fedchain node run`` and ``fedchain coordinator run`` call :func:`install`:
the first SIGTERM or SIGINT only *asks* the process to stop. The step under
way (training, aggregating, a transaction) is finished, the process says so
and exits with :data:`ExitCode.TERMINATED` (143) or :data:`ExitCode.INTERRUPTED`
(130). Anything that waits — the pause between chain polls, a back-off
before retrying an unreachable chain node or store (:mod:`fedchain.retry`) —
waits through :func:`sleep`, which gives up at once with
:class:`StopRequested`: a wait is abandoned, never finished. A second signal
abandons the step under way as well. Every role step is resumable from the
chain (nothing half-done is ever recorded there), so either way a restart
picks up where this process left off.

Without :func:`install` (a library caller, the tests, the demo) :func:`sleep`
is a plain sleep and signals keep Python's defaults.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from enum import IntEnum
from typing import Callable, Iterator

__all__ = [
    "EXIT_CODES_HELP", "ExitCode", "StopRequested", "activity", "check", "exit_code_for", "handling", "install",
    "request",
    "requested", "reset", "set_activity", "signal_name", "sleep", "uninstall",
]


class ExitCode(IntEnum):
    """Why a role process stopped (its exit status; documented in ``--help`` and the README)."""

    #: Every proposal it was asked to serve is finished (or none was left).
    DONE = 0
    #: An error it cannot ride out: bad configuration, a plan that fails its hash, a revert it did not expect.
    ERROR = 1
    #: The command line was wrong (click's usage errors).
    USAGE = 2
    #: The chain node stayed unreachable for the whole retry horizon.
    CHAIN_UNAVAILABLE = 3
    #: The content store (IPFS daemon) stayed unreachable for the whole retry horizon.
    STORE_UNAVAILABLE = 4
    #: Stopped by SIGINT (Ctrl-C), 128 + 2 as shells report it.
    INTERRUPTED = 130
    #: Stopped by SIGTERM (``kill``, systemd, Docker), 128 + 15 as shells report it.
    TERMINATED = 143


#: The help text every role command shows for its exit codes.
EXIT_CODES_HELP = (
    "Exit codes: 0 every served proposal finished (or none was left); 1 error; 2 usage error; "
    "3 chain node unreachable for the whole retry horizon; 4 content store unreachable for the whole "
    "retry horizon; 130 stopped by SIGINT; 143 stopped by SIGTERM."
)


class StopRequested(BaseException):
    """A signal asked the process to stop; raised out of a wait (or, on a second signal, out of a step).

    A ``BaseException`` (like ``KeyboardInterrupt``) so that no ``except Exception``
    on the way up swallows it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal_name(signum)}")

    @property
    def exit_code(self) -> ExitCode:
        return exit_code_for(self.signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code_for(signum: int) -> ExitCode:
    return ExitCode.INTERRUPTED if signum == signal.SIGINT else ExitCode.TERMINATED


class _State:
    def __init__(self) -> None:
        self.activity = ""
        self.signum: int | None = None
        self.count = 0
        self.on_first: Callable[[int], None] | None = None
        self.previous: dict[int, object] = {}
        self.lock = threading.Lock()


_STATE = _State()
_SLICE = 0.1  # seconds: how quickly a wait notices a stop request


def _handler(signum: int, _frame) -> None:
    _STATE.count += 1
    if _STATE.signum is None:
        _STATE.signum = signum
    if _STATE.count > 1:
        raise StopRequested(signum)  # a second signal: abandon the step under way too
    if _STATE.on_first is not None:
        _STATE.on_first(signum)


def set_activity(text: str) -> None:
    """Say what the process is doing now (what a stop request will report it finishes)."""
    _STATE.activity = text


def activity() -> str:
    """What the process said it is doing (see :func:`set_activity`; "" outside a role process)."""
    return _STATE.activity


def install(on_first: Callable[[int], None] | None = None) -> None:
    """Handle SIGTERM and SIGINT as described in the module docstring (main thread only).

    ``on_first(signum)`` runs in the handler on the first signal (say what is being finished).
    """
    with _STATE.lock:
        _STATE.signum, _STATE.count, _STATE.on_first = None, 0, on_first
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.signal(sig, _handler)
            _STATE.previous.setdefault(sig, previous)


def uninstall() -> None:
    """Put back the handlers :func:`install` replaced and forget any request."""
    with _STATE.lock:
        for sig, previous in _STATE.previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        _STATE.previous.clear()
        reset()


def reset() -> None:
    """Forget a stop request and the activity (tests)."""
    _STATE.signum, _STATE.count, _STATE.activity = None, 0, ""


def requested() -> int | None:
    """The signal that asked us to stop, or None."""
    return _STATE.signum


def request(signum: int = signal.SIGTERM) -> None:
    """Ask for a stop as if ``signum`` had arrived (tests; a caller that wants to wind down)."""
    _STATE.count += 1
    if _STATE.signum is None:
        _STATE.signum = signum


def check() -> None:
    """Raise :class:`StopRequested` if a stop was asked for."""
    if _STATE.signum is not None:
        raise StopRequested(_STATE.signum)


def sleep(seconds: float) -> None:
    """Sleep ``seconds``, or raise :class:`StopRequested` as soon as a stop is asked for."""
    check()
    end = time.monotonic() + max(0.0, float(seconds))
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(_SLICE, left))
        check()


@contextmanager
def handling(logger: logging.Logger) -> Iterator[None]:
    """:func:`install` for the block, saying on ``logger`` what a signal does and did.

    The first signal logs what is being finished (:func:`activity`); leaving the block
    with :class:`StopRequested` logs what was stopped and the exit code.
    """

    def on_first(signum: int) -> None:
        name = signal_name(signum)
        logger.warning("received %s: finishing %s, then stopping (send it again to stop at once)",
                       name, activity(), extra={"fields": {"signal": name}})

    set_activity("connecting")
    install(on_first)
    try:
        yield
    except StopRequested as stop:
        name = signal_name(stop.signum)
        logger.warning("stopped by %s while %s; a restart resumes from the chain (exit code %d)",
                       name, activity(), int(stop.exit_code),
                       extra={"fields": {"signal": name, "exit_code": int(stop.exit_code)}})
        raise
    finally:
        uninstall()
