"""A round under ``mode = "he"``: what nodes, coordinator, decryptor and auditor each do with CKKS.

The cryptography is :mod:`fedchain.he`; this module is the round protocol on top of it.

* **Node** (:func:`encrypt_update`): the trained model (clipped to the plan's
  ``robust.norm_bound`` around the round's starting model, at the node, since nobody
  else sees it) is flattened in the plan model's canonical tensor order and encrypted
  under the plan's pinned public context (``he.context_cid``; its sha256
  ``he.context_sha256`` is in the plan the members voted on). The ciphertext is pinned
  as it is (it needs no envelope: only the decryptor could read it, and the member's
  own transaction commits its sha256) and committed like any update.
* **Coordinator** (:func:`check_input`, :func:`fedavg_weights`): fetches each committed
  ciphertext (bounded by :func:`ciphertext_size_limit`, hash-checked, every chunk
  parsed), leaves out the ones that fail with a stable reason code, and computes the
  FedAvg weighted sum ``sum_i (n_i / sum n) x_i`` on ciphertexts with the public
  context only. It pins the encrypted sum and asks the decryptor for the aggregate.
* **Decryptor** (:class:`Decryptor`): re-reads the inputs the coordinator lists,
  requires each to be a commitment on chain with that CID, sha256 and sample count,
  recomputes the weighted sum itself and decrypts only if it equals the coordinator's
  byte for byte and combines at least ``max(2, min_participants)`` inputs
  (:meth:`fedchain.he.DecryptorKey.decrypt_aggregate`). It pins the decrypted model
  (canonical safetensors) and signs a *decryption statement* with its Ethereum key:
  chain, Rounds contract, proposal, round, context hash, the inputs and weights, the
  sha256 of the encrypted sum and of the model. The coordinator closes the round with
  the model's CID and sha256 and embeds statement and signature in the scores document.
* **Replay** (:func:`verify_statement` and the replay in ``coordinator/audit``): from the
  committed ciphertexts it recomputes the encrypted sum and requires its sha256 to be
  the one the decryptor signed, the signature to recover the plan's decryptor, and the
  model to be the one closed on chain; an auditor that holds the decryptor key also
  decrypts the sum and checks the published model within :func:`tolerance`.

Tolerance: :mod:`fedchain.he` states ``|error| <= 2^-19 * max(1, max_i |x_i|)`` per
coordinate for weights summing to 1; the float32 cast of the published model adds at
most one float32 ulp of the value. Inputs are bounded by ``MAX_ABS = 2^14``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from eth_account import Account
from eth_account.messages import encode_defunct

from fedchain.content import ContentTooLarge, HashMismatch, fetch_document, pin_document
from fedchain.errors import FedchainError
from fedchain.he import (
    MAX_ABS,
    DecryptorKey,
    EncryptedVector,
    HEError,
    HEParams,
    PublicContext,
    max_ciphertext_bytes,
    max_context_bytes,
)
from fedchain.plan import TrainingPlan, canonical_json, sha256_hex
from fedchain.serialize import state_dict_to_bytes
from fedchain.validation import ModelLayout, Reason, Rejection

__all__ = [
    "STATEMENT_FORMAT",
    "HERoundError",
    "HEInput",
    "DecryptRequest",
    "Decryption",
    "Decryptor",
    "vector_length",
    "to_vector",
    "from_vector",
    "clip_update",
    "encrypt_update",
    "load_public_context",
    "ciphertext_size_limit",
    "check_input",
    "fedavg_weights",
    "statement_bytes",
    "verify_statement",
    "tolerance",
    "hex_sha256",
]

STATEMENT_FORMAT = "fedchain-he-decryption/1"
#: A decryption statement is small: a few hundred bytes per input.
MAX_STATEMENT_BYTES = 1 << 20


class HERoundError(FedchainError):
    """A homomorphic round cannot proceed: a plan without a usable context, a decryption refused,
    a statement that does not verify."""


# --------------------------------------------------------------------------- vectors


def _float_tensors(layout: ModelLayout):
    for t in layout.tensors:
        if t.dtype != "F32":
            raise HERoundError(f"tensor {t.name} is {t.dtype}: homomorphic aggregation sums float tensors only")
        yield t


def vector_length(layout: ModelLayout) -> int:
    return sum(math.prod(t.shape) for t in _float_tensors(layout))


def to_vector(state: Mapping[str, torch.Tensor], layout: ModelLayout) -> np.ndarray:
    """The model's tensors, flattened in the layout's canonical order, as float64."""
    return np.concatenate([state[t.name].detach().to(torch.float64).reshape(-1).numpy()
                           for t in _float_tensors(layout)])


def from_vector(vec: np.ndarray, layout: ModelLayout) -> dict[str, torch.Tensor]:
    """Inverse of :func:`to_vector` (float32 tensors)."""
    vec = np.asarray(vec, dtype=np.float64)
    if vec.size != vector_length(layout):
        raise HERoundError(f"{vec.size} values for a model of {vector_length(layout)}")
    out, pos = {}, 0
    for t in _float_tensors(layout):
        n = math.prod(t.shape)
        out[t.name] = torch.from_numpy(vec[pos:pos + n].copy()).reshape(t.shape).to(torch.float32).contiguous()
        pos += n
    return out


def clip_update(state: Mapping[str, torch.Tensor], start: Mapping[str, torch.Tensor], bound: float | None,
                layout: ModelLayout) -> np.ndarray:
    """The update as a vector, its distance to ``start`` clipped to ``bound`` (L2 over all tensors)."""
    x = to_vector(state, layout)
    if bound is None:
        return x
    s = to_vector(start, layout)
    d = x - s
    size = float(np.linalg.norm(d))
    return s + d * (bound / size) if size > bound else x


def load_public_context(store, plan: TrainingPlan) -> PublicContext:
    """The plan's pinned public context, hash-checked; refuses a context that carries a secret key."""
    he = plan.he
    if plan.mode != "he" or he.context_cid is None or he.context_sha256 is None:
        raise HERoundError("the plan is not a homomorphic plan with a pinned public context")
    params = HEParams()
    raw = fetch_document(store, he.context_cid, he.context_sha256, max_size=max_context_bytes(params) + 64)
    return PublicContext.decode(raw, params)


def encrypt_update(public: PublicContext, state: Mapping[str, torch.Tensor], start: Mapping[str, torch.Tensor],
                   plan: TrainingPlan, layout: ModelLayout) -> bytes:
    """What a node pins and commits under ``mode = "he"`` (see the module docstring)."""
    x = clip_update(state, start, plan.robust.norm_bound, layout)
    if not np.all(np.isfinite(x)):
        raise HERoundError("the trained model has NaN or infinite values")
    if np.max(np.abs(x)) > MAX_ABS:
        raise HERoundError(f"the trained model has values beyond +-{MAX_ABS:g}, outside CKKS's stated precision")
    return public.encrypt(x).encode()


def ciphertext_size_limit(layout: ModelLayout, params: HEParams | None = None) -> int:
    """Most bytes a committed ciphertext of this model may have (what fetching is bounded by)."""
    params = params or HEParams()
    chunks = -(-vector_length(layout) // params.slots)
    return 6 + 32 + 4 + 1 + 4 + chunks * (4 + max_ciphertext_bytes(params))


def check_input(store, cid: str, sha256: str, public: PublicContext, layout: ModelLayout) -> EncryptedVector | Rejection:
    """One committed ciphertext: the vector, or why it is left out (a stable code).

    Raises the store's own errors (``ContentUnavailable``, ``StoreError``): the caller
    decides what absence means. Everything the member controls becomes a
    :class:`~fedchain.validation.Rejection`."""
    try:
        raw = fetch_document(store, cid, sha256, max_size=ciphertext_size_limit(layout, public.params))
    except ContentTooLarge:
        return Rejection(Reason.TOO_LARGE, "the ciphertext exceeds the bound for the plan's model")
    except HashMismatch:
        return Rejection(Reason.HASH_MISMATCH, "the blob's sha256 is not the committed one")
    try:
        ev = EncryptedVector.decode(raw, public.params)
        if ev.context_digest != public.digest:
            return Rejection(Reason.BAD_ENVELOPE, "encrypted under another public context than the plan's")
        public.check(ev, vector_length(layout))
    except HEError as exc:
        return Rejection(Reason.MALFORMED_HEADER, f"not a ciphertext of the plan's model ({type(exc).__name__})")
    return ev


def fedavg_weights(n_samples: Sequence[int]) -> list[float]:
    """``n_i / sum n`` in float64 (what the coordinator, the decryptor and the replay all use)."""
    total = math.fsum(float(n) for n in n_samples)
    return [float(n) / total for n in n_samples]


# --------------------------------------------------------------------------- the decryption statement


@dataclass(frozen=True)
class HEInput:
    """One included input, as the chain recorded its commitment."""

    participant: str
    dataset: str
    cid: str
    sha256: str
    n_samples: int


def hex_sha256(h: str | bytes) -> str:
    """``0x`` + lower-case hex of a sha256 given as bytes or (0x-)hex text."""
    return ("0x" + bytes(h).hex()) if isinstance(h, (bytes, bytearray)) else "0x" + h.lower().removeprefix("0x")


def statement_bytes(*, chain_id: int, rounds: str, proposal: int, round_: int, context_sha256: str,
                    inputs: Sequence[HEInput], aggregate_sha256: str, model_sha256: str) -> bytes:
    """The canonical JSON the decryptor signs (inputs in (participant, dataset) order)."""
    order = sorted(inputs, key=lambda i: (i.participant.lower(), i.dataset))
    weights = fedavg_weights([i.n_samples for i in order])
    return canonical_json({
        "format": STATEMENT_FORMAT,
        "chain_id": chain_id,
        "rounds": rounds.lower(),
        "proposal": proposal,
        "round": round_,
        "context_sha256": hex_sha256(context_sha256),
        "inputs": [f"{i.participant.lower()} {i.dataset} {i.cid} {hex_sha256(i.sha256)} {i.n_samples}" for i in order],
        "weights": [repr(w) for w in weights],
        "aggregate_sha256": hex_sha256(aggregate_sha256),
        "model_sha256": hex_sha256(model_sha256),
    })


def _digest(statement: bytes) -> bytes:
    return bytes.fromhex(sha256_hex(b"fedchain/he/statement/v1" + statement).removeprefix("0x"))


def verify_statement(statement: str, signature: str, decryptor: str) -> dict:
    """The statement as a dict if ``signature`` recovers ``decryptor``; :class:`HERoundError` otherwise."""
    if not isinstance(statement, str) or len(statement) > MAX_STATEMENT_BYTES or not isinstance(signature, str):
        raise HERoundError("the decryption statement or its signature is missing or malformed")
    try:
        sig = bytes.fromhex(signature.removeprefix("0x"))
        signer = Account.recover_message(encode_defunct(primitive=_digest(statement.encode())), signature=sig)
        doc = json.loads(statement)
    except Exception as exc:  # eth_keys raises several types for a malformed signature
        raise HERoundError(f"the decryption statement's signature does not verify ({type(exc).__name__})") from None
    if signer.lower() != decryptor.lower():
        raise HERoundError(f"the decryption statement is signed by {signer}, not the plan's decryptor {decryptor}")
    if not isinstance(doc, dict) or doc.get("format") != STATEMENT_FORMAT:
        raise HERoundError(f"not a {STATEMENT_FORMAT} statement")
    return doc


def tolerance(inputs_max_abs: float) -> float:
    """The stated per-coordinate tolerance of a decrypted FedAvg aggregate (see the module docstring)."""
    return 2.0**-19 * max(1.0, inputs_max_abs) + 2.0**-23 * max(1.0, inputs_max_abs)


# --------------------------------------------------------------------------- the decryptor


@dataclass(frozen=True)
class DecryptRequest:
    """What the coordinator asks the decryptor: decrypt the encrypted sum of these committed inputs."""

    chain_id: int
    rounds: str
    proposal: int
    round: int
    plan: TrainingPlan
    inputs: tuple[HEInput, ...]
    aggregate_cid: str
    aggregate_sha256: str


@dataclass(frozen=True)
class Decryption:
    """The decryptor's answer: the pinned model and the signed statement."""

    model_cid: str
    model_sha256: str
    statement: str
    signature: str


class Decryptor:
    """Holds the CKKS secret key of a plan (and the Ethereum account that signs statements).

    ``committed(proposal, round)`` returns the round's commitments as the chain recorded
    them (``HEInput`` list): the decryptor trusts the chain, not the coordinator, for what
    the inputs are. It decrypts at most one aggregate per round.
    """

    def __init__(self, key: DecryptorKey, account, store,
                 committed: Callable[[int, int], Sequence[HEInput]]) -> None:
        self._key = key
        self.account = account
        self.store = store
        self.committed = committed
        self._done: dict[tuple[int, int], Decryption] = {}

    @property
    def address(self) -> str:
        return self.account.address

    def __call__(self, req: DecryptRequest) -> Decryption:
        return self.decrypt_round(req)

    def decrypt_round(self, req: DecryptRequest) -> Decryption:
        key = (req.proposal, req.round)
        if key in self._done:
            raise HERoundError(f"round {req.round} of proposal {req.proposal} was decrypted already: one "
                               "aggregate per round")
        plan = req.plan
        if plan.mode != "he" or (plan.he.decryptor or "").lower() != self.address.lower():
            raise HERoundError("this decryptor is not the plan's decryptor")
        public = self._key.public_context()
        if sha256_hex(public.encode()) != plan.he.context_sha256:
            raise HERoundError("the plan's public context is not this decryptor's")
        on_chain = {(c.participant.lower(), c.dataset): c for c in self.committed(req.proposal, req.round)}
        seen = set()
        for i in req.inputs:
            c = on_chain.get((i.participant.lower(), i.dataset))
            if c is None or (c.cid, hex_sha256(c.sha256), c.n_samples) != (i.cid, hex_sha256(i.sha256), i.n_samples):
                raise HERoundError(f"input of {i.participant} is not the commitment on chain")
            if i.participant.lower() in seen:
                raise HERoundError(f"{i.participant} is listed twice")
            seen.add(i.participant.lower())
        from fedchain.validation import model_layout  # builds the model on the meta device: only here
        layout = model_layout(plan.model)
        order = sorted(req.inputs, key=lambda i: (i.participant.lower(), i.dataset))
        vectors = []
        for i in order:
            got = check_input(self.store, i.cid, i.sha256, public, layout)
            if isinstance(got, Rejection):
                raise HERoundError(f"input of {i.participant} is not a valid ciphertext: {got.code}")
            vectors.append(got)
        raw = fetch_document(self.store, req.aggregate_cid, req.aggregate_sha256,
                             max_size=ciphertext_size_limit(layout, public.params))
        aggregate = EncryptedVector.decode(raw, public.params)
        try:
            values = self._key.decrypt_aggregate(vectors, fedavg_weights([i.n_samples for i in order]), aggregate,
                                                 min_inputs=max(2, plan.min_participants))
        except HEError as exc:
            raise HERoundError(f"refusing to decrypt: {exc}") from None
        model = state_dict_to_bytes(from_vector(values, layout))
        pinned = pin_document(self.store, model)
        statement = statement_bytes(chain_id=req.chain_id, rounds=req.rounds, proposal=req.proposal, round_=req.round,
                                    context_sha256=plan.he.context_sha256, inputs=order,
                                    aggregate_sha256=req.aggregate_sha256, model_sha256=pinned.sha256)
        sig = self.account.sign_message(encode_defunct(primitive=_digest(statement))).signature
        out = Decryption(pinned.cid, "0x" + pinned.sha256, statement.decode(), "0x" + bytes(sig).hex())
        self._done[key] = out
        return out
