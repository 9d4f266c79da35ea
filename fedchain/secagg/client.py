"""The client side of secure aggregation: one small state object, four phase methods.

A :class:`SecAggClient` lives for one round.  Its methods must be called in
order, each at most once (except :meth:`SecAggClient.unmask`, which answers
the same request again but refuses a different one)::

    c = SecAggClient(cfg, my_id)
    adv = c.advertise()                      # phase 0 -> AdvertiseKeys
    sk  = c.share_keys(advertised)           # phase 1, {id: AdvertiseKeys} = U1 -> ShareKeys
    mi  = c.masked_input(x, share_messages)  # phase 2, {id: ShareKeys} = U2 -> MaskedInput
    r   = c.unmask(request)                  # phase 3, UnmaskRequest -> UnmaskResponse

What a client checks (each a named error, nothing is sent on failure):

* every message is for this round (config digest) and well formed;
* its own advertised keys / own share message are in the sets it is given,
  unchanged (a server cannot substitute them);
* public keys are pairwise distinct (a server cannot mirror a client's key back);
* enough participants remain: at least ``threshold`` in U1 and U2, and at least
  ``threshold`` of its own holders in U2 (else its secrets could not be
  reconstructed, and a dropout could not be tolerated);
* each ShareKeys message addresses exactly the holders the graph says, and every
  share addressed to it decrypts and names the right dealer, recipient and
  x-coordinate (:class:`SecAggAuthenticationError` otherwise);
* the unmask request: survivors and dropped are disjoint, together exactly U2,
  at least ``threshold`` survivors, itself a survivor, survivors equal to the
  set of masked inputs committed (when the caller passes it from the chain),
  and identical to any request it already answered.  It never reveals both the
  self-mask share and the mask-key share of one client: a server holding both
  could unmask that client's input.
"""

from __future__ import annotations

import os
from typing import Collection, Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedchain.secagg.config import SecAggConfig, encode_vector
from fedchain.secagg.crypto import (
    SECRET_SIZE,
    SHARE_SIZE,
    channel_key,
    check_public_key,
    commit_self_mask,
    open_share,
    pairwise_seed,
    prg,
    seal_share,
    self_mask_seed,
    split_secret,
    x25519_private_bytes,
    x25519_public,
)
from fedchain.secagg.errors import SecAggDropoutError, SecAggProtocolError
from fedchain.secagg.messages import (
    KIND_MASK_KEY,
    KIND_SELF_MASK,
    AdvertiseKeys,
    EncryptedShare,
    MaskedInput,
    RevealedShare,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
    share_ad,
)

__all__ = ["SecAggClient", "check_member", "check_advertised", "check_share_keys"]

_PHASES = ("new", "advertised", "shared", "masked", "unmasked")


def check_member(cfg: SecAggConfig, i: object) -> int:
    """``i`` as a client id of this round, else :class:`SecAggProtocolError`."""
    if not isinstance(i, int) or isinstance(i, bool) or not 1 <= i <= cfg.n_clients:
        raise SecAggProtocolError(f"{i!r} is not a client id of this round (1..{cfg.n_clients})")
    return i


def check_advertised(cfg: SecAggConfig, advertised: Mapping[int, AdvertiseKeys]) -> None:
    """Validate a U1 key set: ids, round, sender fields, distinct keys, size >= threshold."""
    keys: set[bytes] = set()
    for i, adv in advertised.items():
        check_member(cfg, i)
        if not isinstance(adv, AdvertiseKeys):
            raise SecAggProtocolError(f"U1 entry {i} is not an AdvertiseKeys message")
        if adv.config_digest != cfg.digest:
            raise SecAggProtocolError(f"AdvertiseKeys of client {i} is for another round")
        if adv.sender != i:
            raise SecAggProtocolError(f"AdvertiseKeys filed under client {i} names sender {adv.sender}")
        for k, what in ((adv.channel_public, "channel key"), (adv.mask_public, "mask key")):
            check_public_key(k, f"the {what} of client {i}")
            if k in keys:
                raise SecAggProtocolError(f"client {i} advertises a public key already used in this round")
            keys.add(k)
    if len(advertised) < cfg.threshold:
        raise SecAggDropoutError(f"{len(advertised)} clients advertised keys, fewer than the threshold {cfg.threshold}")


def check_share_keys(cfg: SecAggConfig, u1: Collection[int], msg: ShareKeys, sender: int) -> None:
    """Validate one ShareKeys message: round, sender, in U1, recipients = its holders in U1 but itself."""
    check_member(cfg, sender)
    if not isinstance(msg, ShareKeys):
        raise SecAggProtocolError(f"U2 entry {sender} is not a ShareKeys message")
    if msg.config_digest != cfg.digest:
        raise SecAggProtocolError(f"ShareKeys of client {sender} is for another round")
    if msg.sender != sender:
        raise SecAggProtocolError(f"ShareKeys filed under client {sender} names sender {msg.sender}")
    if sender not in u1:
        raise SecAggProtocolError(f"client {sender} sent shares without having advertised keys")
    want = tuple(h for h in cfg.holders(sender) if h in u1 and h != sender)
    got = tuple(s.recipient for s in msg.shares)
    if got != want:
        raise SecAggProtocolError(f"ShareKeys of client {sender} addresses {list(got)}, expected its holders {list(want)}")


class SecAggClient:
    """One client's state for one round (keys, secrets, received shares)."""

    def __init__(self, cfg: SecAggConfig, client_id: int):
        self.cfg = cfg
        self.id = cfg.check_id(client_id)
        self._phase = "new"
        self._channel = X25519PrivateKey.generate()
        self._mask = X25519PrivateKey.generate()
        self._b = os.urandom(SECRET_SIZE)
        self._advertised: dict[int, AdvertiseKeys] = {}
        self._own_shares: ShareKeys | None = None
        self._self_share: bytes = b""  # own share of own secrets (b || s)
        self._received: dict[int, tuple[bytes, bytes]] = {}  # dealer -> (b share, s share)
        self._u2: tuple[int, ...] = ()
        self._answered: UnmaskRequest | None = None
        self._response: UnmaskResponse | None = None
        #: coordinates clipped by the fixed-point encoding of the last input
        self.clipped = 0

    def _enter(self, expected: str, new: str) -> None:
        if self._phase != expected:
            raise SecAggProtocolError(f"client {self.id}: cannot move to phase '{new}' from phase '{self._phase}'")
        self._phase = new

    # ------------------------------------------------------------------ phase 0

    def advertise(self) -> AdvertiseKeys:
        """Phase 0: the fresh channel and mask public keys for this round."""
        self._enter("new", "advertised")
        return AdvertiseKeys(self.cfg.digest, self.id, x25519_public(self._channel), x25519_public(self._mask))

    # ------------------------------------------------------------------ phase 1

    def share_keys(self, advertised: Mapping[int, AdvertiseKeys]) -> ShareKeys:
        """Phase 1: Shamir-share the self-mask seed and the mask private key among the
        holders in U1 (``advertised``), each share encrypted to its holder."""
        cfg = self.cfg
        advertised = dict(advertised)
        check_advertised(cfg, advertised)
        mine = advertised.get(self.id)
        if mine is None or mine.channel_public != x25519_public(self._channel) or mine.mask_public != x25519_public(self._mask):
            raise SecAggProtocolError(f"client {self.id}: U1 does not hold this client's own advertised keys")
        holders = cfg.holders(self.id)
        present = [h for h in holders if h in advertised]
        if len(present) < cfg.threshold:
            raise SecAggDropoutError(
                f"client {self.id}: only {len(present)} of its share holders advertised keys, threshold {cfg.threshold}")
        self._enter("advertised", "shared")
        self._advertised = advertised
        b_shares = split_secret(self._b, cfg.threshold, len(holders))
        s_shares = split_secret(x25519_private_bytes(self._mask), cfg.threshold, len(holders))
        own_pub = x25519_public(self._channel)
        out = []
        for pos, h in enumerate(holders):
            if h == self.id:
                self._self_share = b_shares[pos] + s_shares[pos]
                continue
            if h not in advertised:
                continue
            plain = (self.id.to_bytes(2, "big") + h.to_bytes(2, "big") + (pos + 1).to_bytes(2, "big")
                     + b_shares[pos] + s_shares[pos])
            key = channel_key(cfg.digest, self.id, own_pub, h, advertised[h].channel_public,
                              self._channel, advertised[h].channel_public)
            out.append(EncryptedShare(h, seal_share(key, plain, share_ad(cfg.digest, self.id, h))))
        self._own_shares = ShareKeys(cfg.digest, self.id, commit_self_mask(cfg.digest, self.id, self._b), tuple(out))
        return self._own_shares

    # ------------------------------------------------------------------ phase 2

    def masked_input(self, x: object, share_messages: Mapping[int, ShareKeys]) -> MaskedInput:
        """Phase 2: decrypt and check the shares addressed to this client (U2 =
        ``share_messages``), then mask the encoded input with the self mask and
        the pairwise masks of its neighbours in U2."""
        cfg = self.cfg
        if self._phase != "shared":
            raise SecAggProtocolError(f"client {self.id}: cannot send a masked input from phase '{self._phase}'")
        share_messages = dict(share_messages)
        u1 = self._advertised
        for j, msg in share_messages.items():
            check_share_keys(cfg, u1, msg, j)
        if share_messages.get(self.id) != self._own_shares:
            raise SecAggProtocolError(f"client {self.id}: U2 does not hold this client's own ShareKeys unchanged")
        if len(share_messages) < cfg.threshold:
            raise SecAggDropoutError(f"{len(share_messages)} clients shared keys, fewer than the threshold {cfg.threshold}")
        in_u2 = [h for h in cfg.holders(self.id) if h in share_messages]
        if len(in_u2) < cfg.threshold:
            raise SecAggDropoutError(
                f"client {self.id}: only {len(in_u2)} of its share holders shared keys, threshold {cfg.threshold}")
        encoded, clipped = encode_vector(x, cfg)
        received = {}
        own_pub = x25519_public(self._channel)
        for j in sorted(share_messages):
            if j == self.id or self.id not in cfg.holders(j):
                continue
            entry = share_messages[j].for_recipient(self.id)
            if entry is None:  # unreachable after check_share_keys; kept as a guard
                raise SecAggProtocolError(f"client {j} sent no share to client {self.id}")
            key = channel_key(cfg.digest, j, u1[j].channel_public, self.id, own_pub, self._channel, u1[j].channel_public)
            plain = open_share(key, entry.ciphertext, share_ad(cfg.digest, j, self.id), f"share from client {j}")
            dealer, recipient, index = (int.from_bytes(plain[k:k + 2], "big") for k in (0, 2, 4))
            if (dealer, recipient, index) != (j, self.id, cfg.share_index(j, self.id)):
                raise SecAggProtocolError(f"share from client {j} names dealer {dealer}, recipient {recipient}, index {index}")
            received[j] = (plain[6:6 + SHARE_SIZE], plain[6 + SHARE_SIZE:])
        y = encoded  # fresh array from encode_vector; updated in place, wrapping mod 2^k
        y += prg(self_mask_seed(cfg.digest, self.id, self._b), cfg.vector_length, cfg.dtype)
        own_mask_pub = x25519_public(self._mask)
        for j in cfg.neighbors(self.id):
            if j not in share_messages:
                continue
            seed = pairwise_seed(cfg.digest, self.id, self._mask, own_mask_pub, j, u1[j].mask_public)
            if self.id < j:
                y += prg(seed, cfg.vector_length, cfg.dtype)
            else:
                y -= prg(seed, cfg.vector_length, cfg.dtype)
        self._phase = "masked"
        self._received = received
        self._u2 = tuple(sorted(share_messages))
        self.clipped = clipped
        return MaskedInput.from_vector(cfg.digest, self.id, cfg.ring_bits, y)

    # ------------------------------------------------------------------ phase 3

    def unmask(self, request: UnmaskRequest, committed: Collection[int] | None = None) -> UnmaskResponse:
        """Phase 3: reveal, for each dealer in U2 this client holds shares of, the
        self-mask share if the dealer survived, the mask-key share if it dropped.

        ``committed``: the ids whose masked input the chain recorded; when given,
        the request's survivors must be exactly these."""
        cfg = self.cfg
        if self._phase not in ("masked", "unmasked"):
            raise SecAggProtocolError(f"client {self.id}: cannot unmask from phase '{self._phase}'")
        if not isinstance(request, UnmaskRequest) or request.config_digest != cfg.digest:
            raise SecAggProtocolError("the unmask request is for another round")
        if self._answered is not None:
            if request != self._answered:
                raise SecAggProtocolError(
                    f"client {self.id} already answered a different unmask request for this round; refusing to reveal more")
            assert self._response is not None
            return self._response
        surv, drop = set(request.survivors), set(request.dropped)
        both = surv & drop
        if both:
            raise SecAggProtocolError(
                f"the unmask request names client(s) {sorted(both)} as both survivor and dropped; "
                "revealing both shares would expose their inputs")
        if surv | drop != set(self._u2):
            raise SecAggProtocolError(
                f"the unmask request's survivors and dropped {sorted(surv | drop)} are not the clients that shared keys {list(self._u2)}")
        if committed is not None and surv != set(committed):
            raise SecAggProtocolError(
                f"the unmask request's survivors {sorted(surv)} differ from the committed masked inputs {sorted(set(committed))}")
        if self.id not in surv:
            raise SecAggProtocolError(f"client {self.id} is not among the request's survivors")
        if len(surv) < cfg.threshold:
            raise SecAggDropoutError(f"only {len(surv)} survivors, fewer than the threshold {cfg.threshold}")
        shares = []
        for owner in self._u2:
            if self.id not in cfg.holders(owner):
                continue
            if owner == self.id:
                b_share, s_share = self._self_share[:SHARE_SIZE], self._self_share[SHARE_SIZE:]
            else:
                b_share, s_share = self._received[owner]
            index = cfg.share_index(owner, self.id)
            if owner in surv:
                shares.append(RevealedShare(owner, KIND_SELF_MASK, index, b_share))
            else:
                shares.append(RevealedShare(owner, KIND_MASK_KEY, index, s_share))
        self._answered = request
        self._response = UnmaskResponse(cfg.digest, self.id, request.digest, tuple(shares))
        self._phase = "unmasked"
        return self._response

    def __repr__(self) -> str:  # never show secrets
        return f"SecAggClient(id={self.id}, phase={self._phase!r})"
