"""The server side of secure aggregation, and the pure function that re-derives the sum.

:class:`SecAggServer` collects each phase's messages, refusing any single bad
one with a named error (so the caller can drop that message and go on), and at
the end calls :func:`reconstruct_sum`.  :func:`reconstruct_sum` takes only
public messages -- the advertised keys (U1), the share messages (U2), the
masked inputs (U3), the unmask request and the responses -- re-validates all
of them and returns the same :class:`AggregateResult` bit for bit on any
machine, so an auditor can replay a round from the store without trusting the
server.

Reconstruction
==============

For every survivor ``j`` the self-mask seed ``b_j`` is interpolated from
``threshold`` revealed shares and checked against ``j``'s commitment; for
every dropped client ``d`` the mask private key is interpolated and checked
against ``d``'s advertised mask public key.  Shares are tried in ascending
holder order; if the first ``threshold`` do not verify (a holder lied) and
more were revealed, further ``threshold``-subsets are tried in lexicographic
order, at most :data:`MAX_SUBSETS` of them, the first that verifies wins
(deterministic, so replays agree).  Then::

    sum = sum_{i in U3} y_i  -  sum_{i in U3} PRG(b_i)
          -  sum_{d dropped} sum_{i in U3, i ~ d} sign(i, d) * PRG(s_{i,d})      (mod 2^k)

with ``sign(i, d) = +1`` if ``i < d`` else ``-1`` (the sign ``i`` used when
masking).  Pairwise masks between two survivors cancel in the sum.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from fedchain.secagg.client import check_advertised, check_member, check_share_keys
from fedchain.secagg.config import SecAggConfig, decode_vector
from fedchain.secagg.crypto import combine_secret, commit_self_mask, pairwise_seed, prg, public_from_private, self_mask_seed
from fedchain.secagg.errors import SecAggDropoutError, SecAggProtocolError, SecAggReconstructionError
from fedchain.secagg.messages import (
    KIND_MASK_KEY,
    KIND_SELF_MASK,
    AdvertiseKeys,
    MaskedInput,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)

__all__ = ["MAX_SUBSETS", "AggregateResult", "SecAggServer", "check_masked_input", "check_response",
           "unmask_request_for", "reconstruct_sum"]

#: share subsets tried per secret when the first threshold-many do not verify
MAX_SUBSETS = 64


@dataclass(frozen=True, eq=False)  # holds arrays: compare .digest
class AggregateResult:
    """The unmasked sum of the survivors' encoded inputs."""

    survivors: tuple[int, ...]
    ring_sum: np.ndarray  # ring elements, config dtype
    values: np.ndarray    # float64, the decoded sum

    def mean(self) -> np.ndarray:
        """Unweighted mean over the survivors (float64)."""
        return self.values / len(self.survivors)

    @property
    def digest(self) -> bytes:
        """SHA-256 of the ring sum's little-endian bytes (what a replay compares)."""
        return hashlib.sha256(np.ascontiguousarray(self.ring_sum).tobytes()).digest()


def check_masked_input(cfg: SecAggConfig, u2: Mapping[int, ShareKeys], msg: MaskedInput, sender: int) -> None:
    if not isinstance(msg, MaskedInput):
        raise SecAggProtocolError(f"U3 entry {sender} is not a MaskedInput message")
    if msg.config_digest != cfg.digest:
        raise SecAggProtocolError(f"MaskedInput of client {sender} is for another round")
    if msg.sender != sender:
        raise SecAggProtocolError(f"MaskedInput filed under client {sender} names sender {msg.sender}")
    if sender not in u2:
        raise SecAggProtocolError(f"client {sender} sent a masked input without having shared keys")
    if msg.ring_bits != cfg.ring_bits or msg.length != cfg.vector_length:
        raise SecAggProtocolError(
            f"MaskedInput of client {sender} has {msg.length} elements of {msg.ring_bits} bits; "
            f"the round expects {cfg.vector_length} of {cfg.ring_bits}")


def unmask_request_for(cfg: SecAggConfig, u2: Mapping[int, ShareKeys], masked: Mapping[int, MaskedInput]) -> UnmaskRequest:
    """The one request consistent with U2 and U3 (raises :class:`SecAggDropoutError` below threshold)."""
    survivors = tuple(sorted(masked))
    if len(survivors) < cfg.threshold:
        raise SecAggDropoutError(f"only {len(survivors)} masked inputs arrived, fewer than the threshold {cfg.threshold}")
    return UnmaskRequest(cfg.digest, survivors, tuple(sorted(set(u2) - set(masked))))


def check_response(cfg: SecAggConfig, u2: Mapping[int, ShareKeys], request: UnmaskRequest,
                   response: UnmaskResponse, sender: int) -> None:
    """A response must come from a survivor, answer this request, and reveal exactly
    the self-mask shares of survivors and the mask-key shares of dropped clients that
    its sender holds -- never a mask-key share of a survivor or a self-mask share of
    a dropped client."""
    if not isinstance(response, UnmaskResponse):
        raise SecAggProtocolError(f"response entry {sender} is not an UnmaskResponse")
    if response.config_digest != cfg.digest:
        raise SecAggProtocolError(f"the response of client {sender} is for another round")
    if response.sender != sender:
        raise SecAggProtocolError(f"response filed under client {sender} names sender {response.sender}")
    if response.request_digest != request.digest:
        raise SecAggProtocolError(f"client {sender} answered a different unmask request")
    if sender not in request.survivors:
        raise SecAggProtocolError(f"client {sender} responded but is not a survivor")
    survivors = set(request.survivors)
    expected = [(o, KIND_SELF_MASK if o in survivors else KIND_MASK_KEY, cfg.share_index(o, sender))
                for o in sorted(u2) if sender in cfg.holders(o)]
    got = [(s.owner, s.kind, s.index) for s in response.shares]
    if got != expected:
        for s in response.shares:
            if s.owner in survivors and s.kind == KIND_MASK_KEY:
                raise SecAggProtocolError(
                    f"client {sender} revealed a mask-key share of survivor {s.owner}; refused "
                    "(with its self-mask share that would expose the survivor's input)")
            if s.owner not in survivors and s.kind == KIND_SELF_MASK:
                raise SecAggProtocolError(f"client {sender} revealed a self-mask share of dropped client {s.owner}; refused")
        raise SecAggProtocolError(f"client {sender} revealed shares {got}, expected {expected}")


def _reconstruct(cfg: SecAggConfig, owner: int, what: str, points: list[tuple[int, bytes]], verify) -> bytes:
    t = cfg.threshold
    if len(points) < t:
        raise SecAggDropoutError(f"only {len(points)} shares of client {owner}'s {what}, the threshold is {t}")
    for subset in itertools.islice(itertools.combinations(points, t), MAX_SUBSETS):
        secret = combine_secret(list(subset))
        if verify(secret):
            return secret
    raise SecAggReconstructionError(
        f"no set of {t} revealed shares reconstructs client {owner}'s {what} "
        f"({len(points)} shares, {min(MAX_SUBSETS, math.comb(len(points), t))} subsets tried): a revealed share is wrong")


def reconstruct_sum(
    cfg: SecAggConfig,
    advertised: Mapping[int, AdvertiseKeys],
    share_messages: Mapping[int, ShareKeys],
    masked: Mapping[int, MaskedInput],
    request: UnmaskRequest,
    responses: Mapping[int, UnmaskResponse],
) -> AggregateResult:
    """Re-validate every message and return the unmasked sum of U3's inputs."""
    check_advertised(cfg, advertised)
    for j, msg in share_messages.items():
        check_share_keys(cfg, advertised, msg, j)
    for j, msg in masked.items():
        check_masked_input(cfg, share_messages, msg, j)
    if request != unmask_request_for(cfg, share_messages, masked):
        raise SecAggProtocolError("the unmask request does not match the committed share messages and masked inputs")
    for j, r in responses.items():
        check_response(cfg, share_messages, request, r, j)
    survivors, dropped = request.survivors, request.dropped

    # Revealed shares per owner, in ascending holder order.
    points: dict[int, list[tuple[int, bytes]]] = {o: [] for o in survivors + dropped}
    for j in sorted(responses):
        for s in responses[j].shares:
            points[s.owner].append((s.index, s.share))

    dtype, n = cfg.dtype, cfg.vector_length
    total = np.zeros(n, dtype=dtype)
    for i in survivors:
        total += masked[i].vector
    for i in survivors:
        commitment = share_messages[i].self_mask_commitment
        b = _reconstruct(cfg, i, "self-mask seed", points[i],
                         lambda s, i=i, c=commitment: commit_self_mask(cfg.digest, i, s) == c)
        total -= prg(self_mask_seed(cfg.digest, i, b), n, dtype)
    surv = set(survivors)
    for d in dropped:
        pub = advertised[d].mask_public
        s_d = _reconstruct(cfg, d, "mask private key", points[d], lambda s, p=pub: public_from_private(s) == p)
        for i in cfg.neighbors(d):
            if i not in surv:
                continue
            mask = prg(pairwise_seed(cfg.digest, d, s_d, pub, i, advertised[i].mask_public), n, dtype)
            if i < d:  # client i added +PRG(s_id); remove it
                total -= mask
            else:
                total += mask
    return AggregateResult(tuple(survivors), total, decode_vector(total, cfg))


class SecAggServer:
    """Collects one round's messages phase by phase, refusing bad ones one at a time.

    ``add_*`` raise a named error for a message that does not fit (and keep
    nothing of it); ``close_*`` end a phase (after the deadline) and return the
    set the clients need for the next phase.
    """

    def __init__(self, cfg: SecAggConfig):
        self.cfg = cfg
        self.advertised: dict[int, AdvertiseKeys] = {}
        self.share_messages: dict[int, ShareKeys] = {}
        self.masked: dict[int, MaskedInput] = {}
        self.request: UnmaskRequest | None = None
        self.responses: dict[int, UnmaskResponse] = {}
        self._phase = 0

    def _in(self, phase: int, what: str) -> None:
        if self._phase != phase:
            raise SecAggProtocolError(f"{what} is not accepted in phase {self._phase}")

    def _dup(self, store: Mapping[int, object], sender: int, what: str) -> None:
        if sender in store:
            raise SecAggProtocolError(f"client {sender} already sent its {what}")

    def add_advertise(self, msg: AdvertiseKeys) -> None:
        self._in(0, "AdvertiseKeys")
        check_member(self.cfg, msg.sender)
        self._dup(self.advertised, msg.sender, "keys")
        partial = dict(self.advertised)
        partial[msg.sender] = msg
        try:
            check_advertised(self.cfg, partial)
        except SecAggDropoutError:
            pass  # below the threshold is fine while the phase is open
        self.advertised[msg.sender] = msg

    def close_advertise(self) -> dict[int, AdvertiseKeys]:
        self._in(0, "closing the key phase")
        check_advertised(self.cfg, self.advertised)
        self._phase = 1
        return dict(self.advertised)

    def add_shares(self, msg: ShareKeys) -> None:
        self._in(1, "ShareKeys")
        check_member(self.cfg, msg.sender)
        self._dup(self.share_messages, msg.sender, "shares")
        check_share_keys(self.cfg, self.advertised, msg, msg.sender)
        self.share_messages[msg.sender] = msg

    def close_shares(self) -> dict[int, ShareKeys]:
        self._in(1, "closing the share phase")
        if len(self.share_messages) < self.cfg.threshold:
            raise SecAggDropoutError(
                f"{len(self.share_messages)} clients shared keys, fewer than the threshold {self.cfg.threshold}")
        self._phase = 2
        return dict(self.share_messages)

    def add_masked(self, msg: MaskedInput) -> None:
        self._in(2, "MaskedInput")
        check_member(self.cfg, msg.sender)
        self._dup(self.masked, msg.sender, "masked input")
        check_masked_input(self.cfg, self.share_messages, msg, msg.sender)
        self.masked[msg.sender] = msg

    def close_masked(self) -> UnmaskRequest:
        self._in(2, "closing the masked-input phase")
        self.request = unmask_request_for(self.cfg, self.share_messages, self.masked)
        self._phase = 3
        return self.request

    def add_response(self, msg: UnmaskResponse) -> None:
        self._in(3, "UnmaskResponse")
        assert self.request is not None
        check_member(self.cfg, msg.sender)
        self._dup(self.responses, msg.sender, "unmask response")
        check_response(self.cfg, self.share_messages, self.request, msg, msg.sender)
        self.responses[msg.sender] = msg

    def aggregate(self) -> AggregateResult:
        """The unmasked sum (raises :class:`SecAggDropoutError` if too few shares arrived)."""
        self._in(3, "aggregating")
        assert self.request is not None
        return reconstruct_sum(self.cfg, self.advertised, self.share_messages, self.masked, self.request, self.responses)
