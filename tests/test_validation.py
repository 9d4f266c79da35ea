"""Per-update validation: every malformed or hostile update is a Rejection with a stable code.

Who: any member, through the update it seals and commits. Before fedchain.validation, a deep
safetensors header raised RecursionError (killing the coordinator and `audit replay`), and a
validly sealed update with NaN, a wrong shape, a wrong dtype or an extra tensor raised out of
aggregation. Now each is a Rejection(code, detail), derived from the bytes alone, so replay
can re-derive it and compare the code.
"""

from __future__ import annotations

import json
import struct

import pytest
import torch

from fixtures_ipfs import expanding_dag
from fedchain import content as C
from fedchain import envelope as E
from fedchain.envelope import EnvelopeContext
from fedchain.identity import dev_identity
from fedchain.ipfs import LocalStore, StoreUnavailable
from fedchain.models import initial_state
from fedchain.serialize import state_dict_to_bytes
from fedchain.validation import (
    SLACK,
    Accepted,
    Reason,
    Rejection,
    UpdateRejected,
    model_layout,
    model_size,
    open_update,
    update_size_limit,
    validate_update,
)

SPEC = {"kind": "mlp", "in_features": 30, "n_classes": 2, "hidden": [8]}
LAYOUT = model_layout(SPEC)
CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
COORD, AUDITOR, A = dev_identity(0, "coordinator"), dev_identity(1, "auditor"), dev_identity(3, "hospital-a")
RECIPIENTS = [COORD.x25519_public, AUDITOR.x25519_public]


def good() -> dict[str, torch.Tensor]:
    return initial_state(SPEC, 7)


def with_(**changes) -> bytes:
    sd = good()
    for k, v in changes.items():
        if v is None:
            del sd[k.replace("__", ".")]
        else:
            sd[k.replace("__", ".")] = v
    return state_dict_to_bytes(sd)


def header_bytes(obj, pad=True) -> bytes:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    if pad:
        raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def code(data) -> Reason:
    v = validate_update(data, LAYOUT)
    assert isinstance(v, Rejection), v
    # the detail is ours: short, no library exception text, no local path
    assert len(v.detail) < 200 and not any(t in v.detail for t in ("Expecting", "line 1 column", "codec", "/tmp", "/work"))
    assert validate_update(data, LAYOUT) == v  # deterministic
    return v.code


# --------------------------------------------------------------------------- layout and sizes


@pytest.mark.parametrize("spec", [
    SPEC,
    {"kind": "logreg", "in_features": 5, "n_classes": 3},
    {"kind": "cnn", "input_shape": [1, 8, 8], "n_classes": 2, "conv_channels": [4], "hidden": [6]},
])
def test_layout_is_exactly_the_models(spec):
    sd = initial_state(spec, 1)
    layout = model_layout(spec)
    assert {t.name: t.shape for t in layout.tensors} == {k: tuple(v.shape) for k, v in sd.items()}
    assert {t.dtype for t in layout.tensors} == {"F32"}
    blob = state_dict_to_bytes(sd)
    assert model_size(spec) == layout.size == len(blob) and blob.startswith(layout.header)
    assert isinstance(validate_update(blob, layout), Accepted)


def test_update_size_limit_admits_every_honest_sealing():
    payload = state_dict_to_bytes(good())
    ctx = EnvelopeContext(31337, CONTRACT, 1, 1, A.address)
    for cs in (E.MIN_CHUNK_SIZE, E.DEFAULT_CHUNK_SIZE):
        assert len(E.seal(payload, ctx, A.account, RECIPIENTS, chunk_size=cs)) <= update_size_limit(SPEC, 2)
    assert update_size_limit(LAYOUT, 2) == E.max_sealed_size(LAYOUT.size + SLACK, 2)


# --------------------------------------------------------------------------- pure validation


def test_a_good_update_is_accepted_as_its_tensors():
    v = validate_update(state_dict_to_bytes(good()), LAYOUT)
    assert isinstance(v, Accepted)
    assert all(torch.equal(v.state[k], t) for k, t in good().items())
    assert v.unwrap() is v.state


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_not_finite(value):
    bias = torch.zeros(2)
    bias[1] = value
    assert code(with_(out__bias=bias)) is Reason.NOT_FINITE


def test_wrong_shape_dtype_and_tensors():
    assert code(with_(out__bias=torch.zeros(3))) is Reason.WRONG_SHAPE
    assert code(with_(out__weight=torch.zeros(8, 2))) is Reason.WRONG_SHAPE  # same size, transposed
    assert code(with_(out__bias=torch.zeros(2, dtype=torch.int64))) is Reason.WRONG_DTYPE
    assert code(with_(extra=torch.zeros(1))) is Reason.WRONG_TENSORS
    assert code(with_(out__bias=None)) is Reason.WRONG_TENSORS
    sd = good()
    sd["out.bias2"] = sd.pop("out.bias")  # renamed, same count
    assert code(state_dict_to_bytes(sd)) is Reason.WRONG_TENSORS


def test_hostile_headers():
    deep = b"[" * 100_000 + b"]" * 100_000
    assert code(struct.pack("<Q", len(deep)) + deep) is Reason.TOO_LARGE  # larger than the model: not even parsed
    deep = b"[" * 300 + b"]" * 300
    assert code(struct.pack("<Q", len(deep)) + deep) is Reason.HEADER_TOO_DEEP
    obj = b'{"a":' * 200 + b"1" + b"}" * 200
    assert code(struct.pack("<Q", len(obj)) + obj) is Reason.HEADER_TOO_DEEP
    assert code(b"") is Reason.MALFORMED_HEADER
    assert code(b"\xff" * 7) is Reason.MALFORMED_HEADER
    assert code(struct.pack("<Q", 10**12) + b"{}") is Reason.MALFORMED_HEADER  # past the end
    assert code(struct.pack("<Q", LAYOUT.size) + b"x" * LAYOUT.size) is Reason.MALFORMED_HEADER
    assert code(struct.pack("<Q", 4) + b"\xff\xfe{}") is Reason.MALFORMED_HEADER  # not UTF-8
    assert code(header_bytes([1, 2])) is Reason.MALFORMED_HEADER
    assert code(header_bytes({"__metadata__": {"format": "pt"}})) is Reason.MALFORMED_HEADER
    dup = b'{"__metadata__":{"format":"fedchain/1"},"__metadata__":{"format":"fedchain/1"}}'
    assert code(struct.pack("<Q", len(dup)) + dup) is Reason.MALFORMED_HEADER
    # the right tensors, dtypes and shapes, but not canonical (spacing)
    blob = state_dict_to_bytes(good())
    (n,) = struct.unpack("<Q", blob[:8])
    hdr = json.loads(blob[8 : 8 + n])
    spaced = json.dumps(hdr).encode()
    spaced += b" " * (-len(spaced) % 8)
    assert code(struct.pack("<Q", len(spaced)) + spaced + blob[8 + n :]) is Reason.MALFORMED_HEADER
    # a tensor entry that is not an object; a dtype that is not a string
    hdr2 = dict(hdr)
    hdr2["out.bias"] = [1]
    assert code(header_bytes(hdr2) + blob[8 + n :]) is Reason.MALFORMED_HEADER
    hdr3 = json.loads(blob[8 : 8 + n])
    hdr3["out.bias"]["dtype"] = ["F32"]
    assert code(header_bytes(hdr3) + blob[8 + n :]) is Reason.WRONG_DTYPE


def test_sizes():
    blob = state_dict_to_bytes(good())
    assert code(blob[:-1]) is Reason.TRUNCATED
    assert code(blob + b"\0") is Reason.TOO_LARGE
    assert code(blob + b"\0" * (SLACK + 1)) is Reason.TOO_LARGE
    big_header = struct.pack("<Q", len(LAYOUT.header) + SLACK) + b" " * (len(LAYOUT.header) + SLACK)
    assert code(big_header) is Reason.MALFORMED_HEADER


def test_details_quote_names_safely():
    v = validate_update(with_(**{"x\n" * 100: torch.zeros(1)}), LAYOUT)
    assert v.code is Reason.WRONG_TENSORS and "\n" not in v.detail and len(v.detail) < 200
    with pytest.raises(UpdateRejected) as ei:
        v.unwrap()
    assert ei.value.code is Reason.WRONG_TENSORS and str(ei.value).startswith("WRONG_TENSORS: ")
    assert str(Reason.NOT_FINITE) == "NOT_FINITE"


# --------------------------------------------------------------------------- fetch, open, validate


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store", fsync=False)


def ctx(round_=1, sender=A) -> EnvelopeContext:
    return EnvelopeContext(31337, CONTRACT, 1, round_, sender.address)


def commit(store, payload: bytes, recipients=RECIPIENTS, round_=1) -> C.Sealed:
    return C.seal_and_pin(store, payload, ctx(round_), A, recipients)


def verdicts(store, sealed_or_pair, context=None):
    cid, sha = sealed_or_pair[0], sealed_or_pair[1]
    return [open_update(store, cid, sha, context or ctx(), who, LAYOUT, recipients=RECIPIENTS)
            for who in (COORD, AUDITOR)]


def test_open_update_accepts_and_the_auditor_agrees(store):
    vs = verdicts(store, commit(store, state_dict_to_bytes(good())))
    assert all(isinstance(v, Accepted) for v in vs)
    assert all(torch.equal(vs[0].state[k], vs[1].state[k]) for k in vs[0].state)


def test_open_update_rejections_are_the_same_for_coordinator_and_auditor(store):
    nan = torch.full((2,), float("nan"))
    cases = {
        Reason.NOT_FINITE: commit(store, with_(out__bias=nan)),
        Reason.WRONG_SHAPE: commit(store, with_(out__bias=torch.zeros(5))),
        Reason.HEADER_TOO_DEEP: commit(store, struct.pack("<Q", 600) + b"[" * 300 + b"]" * 300),
        Reason.BAD_ENVELOPE: commit(store, state_dict_to_bytes(good()), round_=2),  # sealed for round 2
        Reason.TOO_LARGE: commit(store, with_(big=torch.zeros(SLACK))),  # refused while fetching
    }
    for expected, sealed in cases.items():
        assert [v.code for v in verdicts(store, sealed)] == [expected, expected], expected
    other = C.pin_document(store, b"not this")
    assert [v.code for v in verdicts(store, (cases[Reason.NOT_FINITE].cid, other.sha256))] == [Reason.HASH_MISMATCH] * 2
    unknown = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
    assert [v.code for v in verdicts(store, (unknown, "00" * 32))] == [Reason.NOT_FOUND] * 2
    assert [v.code for v in verdicts(store, ("QmNotACid", "00" * 32))] == [Reason.NOT_FOUND] * 2


def test_an_update_the_auditor_cannot_open_is_rejected_by_the_coordinator(store):
    sealed = commit(store, state_dict_to_bytes(good()), recipients=[COORD.x25519_public])
    v = open_update(store, sealed.cid, sealed.sha256, ctx(), COORD, LAYOUT, recipients=RECIPIENTS)
    assert v.code is Reason.BAD_ENVELOPE and "plan's recipients" in v.detail


def test_expanding_dag_is_too_large_fast(store):
    root, blocks = expanding_dag()
    for b in blocks:
        store.put_block(b)
    v = open_update(store, root, "00" * 32, ctx(), COORD, LAYOUT, recipients=RECIPIENTS)
    assert v.code is Reason.TOO_LARGE


def test_our_own_store_being_down_is_raised_not_blamed_on_the_member():
    class Down:
        def get_to(self, cid, out, *, max_size=None):
            raise StoreUnavailable("IPFS daemon at /ip4/127.0.0.1/tcp/1 is not reachable")

    with pytest.raises(StoreUnavailable):
        open_update(Down(), "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "00" * 32, ctx(), COORD, LAYOUT,
                    recipients=RECIPIENTS)
