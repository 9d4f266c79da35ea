"""A round under ``mode = "secagg"``: the :mod:`fedchain.secagg` protocol bound to chain and plan.

Who is who: the participants are the owners of the proposal's target datasets, numbered
``1..n`` in ascending address order (everyone derives the same ids from the chain). The
round's :class:`~fedchain.secagg.SecAggConfig` is fixed by public facts only:

* ``round_id = SHA-256("fedchain/secagg/round/v1" | chain id | SecureRounds address | proposal | round)``;
* ``round_seed``: the seed the ``SecureRounds`` contract recorded when the session started
  (the hash of the block before it: unknown when the plan was voted);
* ``threshold = n - secagg.max_dropouts`` (the plan's), the full graph (SecAgg, degree ``n - 1``);
* the ring ``Z_{2^64}`` with 32 fractional bits and inputs clipped to ``[-2^15, 2^15]``:
  precision ``2^-33`` per coordinate and input (bit-exact sums; the replay re-derives the same ring
  elements), 8 bytes per parameter on the wire.

What each node masks (FedAvg without revealing a weight): its model vector (norm-bounded at
the node to ``robust.norm_bound`` around the round's start, as under ``he``) times
``n_i / S`` and, as one more coordinate, ``n_i / S`` itself, where ``S`` is the sum of the
targets' registered rows (public, fixed per proposal; ``n_i <= rows_i`` so every weight is at most
1). The unmasked sum then carries ``sum n_i x_i / S`` and ``sum n_i / S``; their ratio is the
sample-weighted mean of the survivors' models. The sample counts themselves are public (each
member's commitment), as in plain mode.

Every message is pinned in the store and named on chain by the sender's own transaction
(``SecureRounds``), which is what authenticates the advertised keys. A message whose encoded
sender id is not the id of the member who posted it is a :class:`SecAggRoundError` (the
round cannot be completed from it; the chain names who posted it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from fedchain.errors import FedchainError
from fedchain.he_round import clip_update, from_vector, vector_length
from fedchain.plan import TrainingPlan
from fedchain.secagg import (
    AdvertiseKeys,
    AggregateResult,
    MaskedInput,
    SecAggClient,
    SecAggConfig,
    SecAggError,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
    max_message_size,
    reconstruct_sum,
)
from fedchain.secagg.server import unmask_request_for
from fedchain.validation import ModelLayout

__all__ = [
    "RING_BITS",
    "FRAC_BITS",
    "CLIP",
    "SecAggRoundError",
    "RoundFacts",
    "round_config",
    "weighted_input",
    "model_from_sum",
    "Participant",
    "decode_phase",
    "message_bound",
    "unmask_request",
    "reconstruct",
]

RING_BITS, FRAC_BITS, CLIP = 64, 32, float(1 << 15)
PHASE_TYPES = {0: AdvertiseKeys, 1: ShareKeys, 2: MaskedInput, 3: UnmaskResponse}


class SecAggRoundError(FedchainError):
    """A secure-aggregation round cannot go on: a bad message, too few participants, a failed session."""


@dataclass(frozen=True)
class RoundFacts:
    """The public facts a round's config is derived from."""

    chain_id: int
    secure_rounds: str  # SecureRounds address
    proposal: int
    round: int
    seed: bytes  # the session's seed on chain
    members: tuple[str, ...]  # the targets' owners (any order; ids follow ascending address order)
    total_rows: int  # sum of the targets' registered rows

    @property
    def ids(self) -> dict[str, int]:
        return {m: i + 1 for i, m in enumerate(sorted({m.lower() for m in self.members}))}


def round_config(facts: RoundFacts, plan: TrainingPlan, layout: ModelLayout) -> SecAggConfig:
    n = len(facts.ids)
    if n < 2:
        raise SecAggRoundError("secure aggregation needs at least two participants")
    round_id = hashlib.sha256(b"fedchain/secagg/round/v1" + facts.chain_id.to_bytes(32, "big")
                              + bytes.fromhex(facts.secure_rounds.lower().removeprefix("0x"))
                              + facts.proposal.to_bytes(32, "big") + facts.round.to_bytes(2, "big")).digest()
    threshold = n - plan.secagg.max_dropouts
    try:
        return SecAggConfig(round_id, facts.seed, n_clients=n, threshold=threshold, degree=n - 1,
                            vector_length=vector_length(layout) + 1, ring_bits=RING_BITS, frac_bits=FRAC_BITS,
                            clip=CLIP)
    except SecAggError as exc:
        raise SecAggRoundError(f"no secure-aggregation config for this round: {exc}") from None


def weighted_input(state: Mapping[str, torch.Tensor], start: Mapping[str, torch.Tensor], n_samples: int,
                   total_rows: int, plan: TrainingPlan, layout: ModelLayout) -> np.ndarray:
    """What a node masks: ``[x * n/S, n/S]`` (see the module docstring)."""
    if not 0 < n_samples <= total_rows:
        raise SecAggRoundError(f"{n_samples} samples outside 1..{total_rows}")
    w = n_samples / total_rows
    x = clip_update(state, start, plan.robust.norm_bound, layout)
    if not np.all(np.isfinite(x)) or np.max(np.abs(x)) > CLIP:
        raise SecAggRoundError(f"the trained model has values that are not finite or beyond +-{CLIP:g}")
    return np.concatenate([x * w, [w]])


def model_from_sum(result: AggregateResult, layout: ModelLayout) -> dict[str, torch.Tensor]:
    """The survivors' sample-weighted mean model from the unmasked sum."""
    values = np.asarray(result.values, dtype=np.float64)
    if not values[-1] > 0:
        raise SecAggRoundError("the unmasked sum carries no weight")
    return from_vector(values[:-1] / values[-1], layout)


class Participant:
    """A node's side of one round (wraps :class:`~fedchain.secagg.SecAggClient`); returns message bytes."""

    def __init__(self, cfg: SecAggConfig, client_id: int) -> None:
        self.cfg, self.id = cfg, client_id
        self.client = SecAggClient(cfg, client_id)

    def advertise(self) -> bytes:
        return self.client.advertise().encode()

    def share(self, advertised: Mapping[int, bytes]) -> bytes:
        msgs = decode_phase(self.cfg, 0, advertised)
        return self.client.share_keys(msgs).encode()

    def masked(self, x: np.ndarray, shares: Mapping[int, bytes]) -> bytes:
        return self.client.masked_input(x, decode_phase(self.cfg, 1, shares)).encode()

    def unmask(self, shares: Mapping[int, bytes], masked_ids: Sequence[int]) -> bytes:
        """Answer the unmask request the chain implies (U2 from the shares, U3 from the marked inputs)."""
        req = unmask_request(self.cfg, shares, masked_ids)
        return self.client.unmask(req, committed=list(masked_ids)).encode()


def decode_phase(cfg: SecAggConfig, phase: int, blobs: Mapping[int, bytes]) -> dict:
    """Decode one phase's messages ``{id: bytes}``; each must be of the phase's type, for this round,
    from the id that posted it."""
    out = {}
    kind = PHASE_TYPES[phase]
    for i, blob in blobs.items():
        try:
            msg = decode_message(blob, kind)
        except SecAggError as exc:
            raise SecAggRoundError(f"participant {i}'s phase-{phase} message does not decode: {exc}") from None
        if msg.sender != i or msg.config_digest != cfg.digest:
            raise SecAggRoundError(f"participant {i}'s phase-{phase} message names sender {msg.sender} or another round")
        out[i] = msg
    return out


def unmask_request(cfg: SecAggConfig, shares: Mapping[int, bytes], masked_ids: Sequence[int]) -> UnmaskRequest:
    """The request everyone derives from the chain: survivors U3, dropped U2 minus U3."""
    u2 = decode_phase(cfg, 1, shares)
    stand_ins = {i: None for i in masked_ids}  # unmask_request_for reads only the ids of U3
    return unmask_request_for(cfg, u2, stand_ins)  # type: ignore[arg-type]


def message_bound(cfg: SecAggConfig, phase: int) -> int:
    """Most bytes a phase message of this round may have (fetching is bounded by it)."""
    return max_message_size(PHASE_TYPES[phase], cfg.n_clients, cfg.vector_length, cfg.ring_bits)


def reconstruct(cfg: SecAggConfig, advertised: Mapping[int, bytes], shares: Mapping[int, bytes],
                masked: Mapping[int, bytes], responses: Mapping[int, bytes]) -> AggregateResult:
    """The unmasked sum of U3's inputs from the messages the chain names (coordinator and replay)."""
    adv = decode_phase(cfg, 0, advertised)
    u2 = decode_phase(cfg, 1, shares)
    u3 = decode_phase(cfg, 2, masked)
    req = unmask_request_for(cfg, u2, u3)
    try:
        return reconstruct_sum(cfg, adv, u2, u3, req, decode_phase(cfg, 3, responses))
    except SecAggError as exc:
        raise SecAggRoundError(f"the sum cannot be unmasked: {exc}") from None
