"""Secure aggregation: the coordinator learns the sum of the hospitals' updates, not one of them.

This package is the cryptographic core and the message formats of SecAgg
(Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine
Learning", CCS 2017) and its sparse-graph successor SecAgg+ (Bell et al.,
"Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020),
in the honest-but-curious-server model plus the cheap checks against a
malicious one.  It has no chain, store or network: every phase is a pure
function or a method of a small state object that takes messages and returns
messages, each with a canonical byte encoding (:mod:`.messages`).

Phases (on chain: the ``SecureRounds`` contract, one window of blocks each)::

    0 advertise keys   client -> all      AdvertiseKeys (fresh channel + mask X25519 public keys)
    1 share keys       client -> holders  ShareKeys (Shamir shares of the self-mask seed b_i and
                                          of the mask private key, AES-GCM encrypted to each holder)
    2 masked input     client -> server   MaskedInput y_i = x_i + PRG(b_i) + sum_j +-PRG(s_ij) mod 2^k
    3 unmasking        server -> clients  UnmaskRequest (survivors U3, dropped U2 minus U3)
                       client -> server   UnmaskResponse (b-shares of survivors, key shares of dropped)

U1, U2, U3 are the clients whose phase-0, 1, 2 messages were recorded before
each deadline.  Everyone must see the same sets: on fedchain they are what the
chain recorded, which replaces the signed consistency round of Bonawitz et al.
A client refuses a request whose survivors are not the recorded U3
(``committed=`` argument of :meth:`SecAggClient.unmask`).

Modules: :mod:`.config` (round parameters, graph, fixed-point ring encoding,
overflow bound, parameter choice), :mod:`.crypto` (KDF, PRG, AEAD, Shamir),
:mod:`.messages` (encodings), :mod:`.client`, :mod:`.server`
(:func:`reconstruct_sum` is what a replay calls).  Threat model:
``SECURITY.md`` (aggregation modes). Bound to rounds by :mod:`fedchain.secagg_round`.

Example (one process, no dropouts)::

    cfg = SecAggConfig(round_id, round_seed, n_clients=5, threshold=4, degree=4, vector_length=len(x1))
    clients = {i: SecAggClient(cfg, i) for i in cfg.ids}
    server = SecAggServer(cfg)
    for c in clients.values(): server.add_advertise(c.advertise())
    u1 = server.close_advertise()
    for c in clients.values(): server.add_shares(c.share_keys(u1))
    u2 = server.close_shares()
    for i, c in clients.items(): server.add_masked(c.masked_input(xs[i], u2))
    req = server.close_masked()
    for c in clients.values(): server.add_response(c.unmask(req))
    result = server.aggregate()          # result.values == sum of xs (within 2^-(frac_bits+1) each)
"""

from fedchain.secagg.client import SecAggClient
from fedchain.secagg.config import (
    MAX_CLIENTS,
    MAX_VECTOR_LENGTH,
    SecAggConfig,
    choose_parameters,
    decode_vector,
    encode_vector,
)
from fedchain.secagg.errors import (
    SecAggAuthenticationError,
    SecAggConfigError,
    SecAggDropoutError,
    SecAggError,
    SecAggFormatError,
    SecAggInputError,
    SecAggProtocolError,
    SecAggReconstructionError,
    SecAggVersionError,
)
from fedchain.secagg.messages import (
    AdvertiseKeys,
    MaskedInput,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
    max_message_size,
)
from fedchain.secagg.server import AggregateResult, SecAggServer, reconstruct_sum

__all__ = [
    "MAX_CLIENTS",
    "MAX_VECTOR_LENGTH",
    "SecAggConfig",
    "choose_parameters",
    "encode_vector",
    "decode_vector",
    "SecAggClient",
    "SecAggServer",
    "AggregateResult",
    "reconstruct_sum",
    "AdvertiseKeys",
    "ShareKeys",
    "MaskedInput",
    "UnmaskRequest",
    "UnmaskResponse",
    "decode_message",
    "max_message_size",
    "SecAggError",
    "SecAggConfigError",
    "SecAggInputError",
    "SecAggFormatError",
    "SecAggVersionError",
    "SecAggProtocolError",
    "SecAggAuthenticationError",
    "SecAggDropoutError",
    "SecAggReconstructionError",
]
