"""Riding out outages: the one retry policy for every call to the chain node and the store.

A :class:`RetryPolicy` is a settings object (in the spirit of web3's
``ExceptionRetryConfiguration``) handed to the two transports — the JSON-RPC
provider of :class:`~fedchain.contracts.bindings.Chain` and
:class:`~fedchain.ipfs.KuboStore` — which are the only places that retry. A
call that fails because the other side cannot be reached (connection refused
or reset, a timeout) is tried again after an exponentially growing wait with
random jitter (tenacity's ``wait_exponential_jitter``), each wait logged on the
``fedchain.retry`` logger, until it succeeds or the policy's ``horizon`` has
passed; then the transport raises its "unavailable" error
(``ChainUnavailable``, ``StoreUnavailable``). Nothing else is retried: a
revert, a refusal or a hash mismatch is an answer, not an outage.

Waits go through :func:`fedchain.lifecycle.sleep`, so a role process asked to
stop (SIGTERM) abandons a wait at once instead of sitting out the horizon.

Two policies matter in practice: :meth:`RetryPolicy.brief` (a couple of
seconds; the default for one-shot commands and library use, so a typo'd URL
fails fast) and the role processes' policy from their config file
(``[retry]``; default :data:`DEFAULT_HORIZON` = 10 minutes), long enough to
ride out a restart of the chain node or the IPFS daemon.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, TypeVar

import tenacity

from fedchain import lifecycle
from fedchain.errors import ConfigError

__all__ = ["DEFAULT_HORIZON", "RetryPolicy", "log"]

T = TypeVar("T")

#: Seconds a role process keeps retrying an unreachable chain node or store.
DEFAULT_HORIZON = 600.0

log = logging.getLogger("fedchain.retry")


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how patiently to retry a call whose peer is unreachable.

    :param horizon: seconds after the first failure at which to give up (0: never retry).
    :param first_wait: the first wait, in seconds; each further wait doubles it …
    :param max_wait: … up to this many seconds;
    :param jitter: plus a random 0..``jitter`` seconds, so processes that lost the
        same peer do not all come back in the same instant.
    """

    horizon: float = DEFAULT_HORIZON
    first_wait: float = 0.5
    max_wait: float = 30.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        for name in ("horizon", "first_wait", "max_wait", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"retry {name} must be a number >= 0, got {value!r}")
        if self.first_wait <= 0 or self.max_wait < self.first_wait:
            raise ConfigError("retry waits must satisfy 0 < first_wait <= max_wait")

    @classmethod
    def brief(cls) -> "RetryPolicy":
        """A couple of seconds: enough for a blip, short enough for a command run by hand."""
        return cls(horizon=2.0, first_wait=0.1, max_wait=1.0, jitter=0.1)

    @classmethod
    def never(cls) -> "RetryPolicy":
        """Fail on the first error."""
        return cls(horizon=0.0, first_wait=0.1, max_wait=0.1, jitter=0.0)

    def call(
        self,
        fn: Callable[[], T],
        *,
        transient: tuple[type[BaseException], ...],
        what: str,
        can_retry: Callable[[], bool] | None = None,
        before_retry: Callable[[], None] | None = None,
    ) -> T:
        """``fn()``, retried on ``transient`` exceptions as this policy says; the last one is re-raised.

        ``what`` names the peer and the call for the log (``"chain node at http://… (eth_call)"``);
        ``can_retry()`` false stops at once (a stream that cannot be replayed);
        ``before_retry()`` runs before each new attempt (rewind what the failed one consumed).
        """
        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, transient) and (can_retry is None or can_retry())

        try:  # the common case, without building a retrier
            return fn()
        except BaseException as exc:
            if self.horizon <= 0 or not retryable(exc):
                raise
            first: BaseException | None = exc

        def attempt() -> T:  # tenacity's first attempt is the failure above, then fn() again
            nonlocal first
            if first is not None:
                failed, first = first, None
                raise failed
            return fn()

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            left = max(0.0, self.horizon - (state.seconds_since_start or 0.0))
            log.warning(
                "%s unreachable (%s); retrying in %.1f s (attempt %d, giving up in %s)%s",
                what, _describe(exc), wait, state.attempt_number + 1, _duration(left),
                f" while {lifecycle.activity()}" if lifecycle.activity() else "",
                extra={"fields": {"peer": what, "attempt": state.attempt_number + 1, "wait_s": round(wait, 3),
                                  "horizon_s": self.horizon, "activity": lifecycle.activity()}},
            )
            if before_retry is not None:
                before_retry()

        retrying = tenacity.Retrying(
            stop=tenacity.stop_before_delay(self.horizon),
            wait=tenacity.wait_exponential_jitter(multiplier=self.first_wait, max=self.max_wait, jitter=self.jitter),
            retry=tenacity.retry_if_exception(retryable),
            before_sleep=before_sleep,
            sleep=lifecycle.sleep,
            reraise=True,
        )
        result = retrying(attempt)
        if retrying.statistics.get("attempt_number", 1) > 1:
            log.info("%s answers again after %d attempts", what, retrying.statistics["attempt_number"],
                     extra={"fields": {"peer": what, "attempt": retrying.statistics["attempt_number"]}})
        return result


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no answer"
    text = " ".join(str(exc).split())
    if "refused" in text.lower():
        return "connection refused"
    if len(text) > 120:
        text = text[:117] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"
