"""Canonical safetensors serialization: determinism, dtype policy, strict validation."""

from __future__ import annotations

import json
import os
import pickle
import random
import struct
import subprocess
import sys
import textwrap

import pytest
import safetensors.torch
import torch

from fedchain.serialize import (
    METADATA,
    SerializationError,
    bytes_to_state_dict,
    file_to_state_dict,
    sha256_file,
    sha256_hex,
    state_dict_sha256,
    state_dict_to_bytes,
    state_dict_to_file,
)

# Built identically here and in a subprocess (see test_same_bytes_in_another_process).
MODEL_SRC = textwrap.dedent(
    """
    import torch
    def make_state_dict(order_seed):
        import random
        g = torch.Generator().manual_seed(1234)
        items = [
            ("features.0.weight", torch.randn(8, 3, 3, 3, generator=g)),
            ("features.0.bias", torch.randn(8, generator=g)),
            ("bn.running_mean", torch.randn(8, generator=g, dtype=torch.float64)),
            ("bn.num_batches_tracked", torch.tensor(17)),
            ("classifier.weight", torch.randn(10, 8, generator=g).t()),  # non-contiguous
            ("classifier.bias", torch.randn(10, generator=g, dtype=torch.float16)),
            ("emb", torch.randn(5, 4, generator=g, dtype=torch.bfloat16)),
            ("scalar", torch.tensor(0.5)),
            ("empty", torch.empty(0, 3)),
            ("counts", torch.arange(6, dtype=torch.int32).reshape(2, 3)),
        ]
        random.Random(order_seed).shuffle(items)
        return dict(items)
    """
)
_ns: dict = {}
exec(MODEL_SRC, _ns)
make_state_dict = _ns["make_state_dict"]


def test_byte_identical_across_insertion_orders():
    blobs = {state_dict_to_bytes(make_state_dict(seed)) for seed in range(10)}
    assert len(blobs) == 1
    # and the mapping's order really did differ
    assert list(make_state_dict(0)) != list(make_state_dict(1))


def test_same_bytes_in_another_process():
    expected = state_dict_sha256(make_state_dict(0))
    code = MODEL_SRC + textwrap.dedent(
        """
        from fedchain.serialize import state_dict_sha256
        print(state_dict_sha256(make_state_dict(99)))
        """
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


def test_format_is_standard_safetensors():
    sd = make_state_dict(0)
    ours = state_dict_to_bytes(sd)
    # safetensors reads our bytes ...
    loaded = safetensors.torch.load(ours)
    assert set(loaded) == set(sd)
    # ... and for canonical tensors writes exactly the same bytes
    canonical = {k: (v.float() if v.is_floating_point() else v.long()).contiguous() for k, v in sd.items()}
    assert safetensors.torch.save(canonical, metadata=METADATA) == ours
    n = struct.unpack("<Q", ours[:8])[0]
    header = json.loads(ours[8 : 8 + n])
    assert header["__metadata__"] == {"format": "fedchain/1"}
    assert (8 + n) % 8 == 0


def test_round_trip_values_and_dtypes(tmp_path):
    sd = make_state_dict(3)
    out = bytes_to_state_dict(state_dict_to_bytes(sd))
    path = tmp_path / "m.safetensors"
    digest = state_dict_to_file(sd, path)
    out_file = file_to_state_dict(path)
    assert digest == sha256_file(path) == state_dict_sha256(sd)
    assert path.read_bytes() == state_dict_to_bytes(sd)
    for d in (out, out_file):
        assert set(d) == set(sd)
        for k, v in sd.items():
            want = v.float() if v.is_floating_point() else v.long()
            assert d[k].dtype == want.dtype
            assert d[k].shape == want.shape
            assert torch.equal(d[k], want), k
            assert d[k].is_contiguous()
    assert list(out) == list(out_file)


def test_dtype_policy():
    b = bytes_to_state_dict(state_dict_to_bytes({"h": torch.ones(2, dtype=torch.float16),
                                                 "i": torch.ones(2, dtype=torch.uint8)}))
    assert b["h"].dtype == torch.float32 and b["i"].dtype == torch.int64
    for bad in (torch.ones(2, dtype=torch.bool), torch.ones(2, dtype=torch.complex64)):
        with pytest.raises(SerializationError):
            state_dict_to_bytes({"x": bad})
    with pytest.raises(SerializationError, match="cast=False"):
        state_dict_to_bytes({"x": torch.ones(2, dtype=torch.float64)}, cast=False)
    state_dict_to_bytes({"x": torch.ones(2), "n": torch.tensor(1)}, cast=False)  # already canonical


def test_bad_inputs():
    for sd in ({"": torch.ones(1)}, {"__metadata__": torch.ones(1)}, {1: torch.ones(1)},
               {"x": [1.0, 2.0]}, {"x": torch.ones(2).to_sparse()}):
        with pytest.raises(SerializationError):
            state_dict_to_bytes(sd)
    with pytest.raises(SerializationError):
        state_dict_to_bytes([("x", torch.ones(1))])


def test_grad_and_views_serialize_like_their_values():
    w = torch.randn(3, 4, requires_grad=True)
    assert state_dict_to_bytes({"w": w}) == state_dict_to_bytes({"w": w.detach().clone()})
    t = torch.randn(4, 3).t()
    assert state_dict_to_bytes({"t": t}) == state_dict_to_bytes({"t": t.contiguous()})


def test_sha256_helpers(tmp_path):
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    p = tmp_path / "f"
    p.write_bytes(b"abc" * 1000)
    assert sha256_file(p) == sha256_hex(b"abc" * 1000)


# --------------------------------------------------------------------------- validation on load


def _good() -> bytes:
    return state_dict_to_bytes({"a": torch.arange(4.0), "n": torch.tensor(3)})


def _with_header(header_text: bytes, data: bytes) -> bytes:
    return struct.pack("<Q", len(header_text)) + header_text + data


def _check_rejected(blob: bytes, tmp_path, match: str | None = None):
    with pytest.raises(SerializationError, match=match):
        bytes_to_state_dict(blob)
    p = tmp_path / "bad.safetensors"
    p.write_bytes(blob)
    with pytest.raises(SerializationError, match=match):
        file_to_state_dict(p)


def test_rejects_garbage_and_bad_header_lengths(tmp_path):
    good = _good()
    _check_rejected(b"", tmp_path)
    _check_rejected(b"\x00" * 5, tmp_path)
    _check_rejected(struct.pack("<Q", 10**9) + good[8:], tmp_path, "header length")
    _check_rejected(struct.pack("<Q", 4) + b"{{{{", tmp_path, "JSON")
    _check_rejected(_with_header(b"[1,2,3]  ", b""), tmp_path)


def test_rejects_pickle(tmp_path):
    p = tmp_path / "model.pt"
    torch.save({"a": torch.ones(2)}, p)
    _check_rejected(p.read_bytes(), tmp_path)


def test_rejects_wrong_dtype(tmp_path):
    good = _good()
    bad = good.replace(b'"dtype":"F32"', b'"dtype":"F16"')  # same length, header stays consistent
    assert bad != good
    _check_rejected(bad, tmp_path, "F16")
    bad = good.replace(b'"dtype":"I64"', b'"dtype":"F64"')
    _check_rejected(bad, tmp_path, "F64")


def test_rejects_unexpected_metadata(tmp_path):
    sd = {"a": torch.arange(4.0)}
    _check_rejected(safetensors.torch.save(sd), tmp_path, "metadata")
    _check_rejected(safetensors.torch.save(sd, metadata={"format": "pt"}), tmp_path, "metadata")
    _check_rejected(safetensors.torch.save(sd, metadata={"format": "fedchain/1", "x": "y"}), tmp_path, "metadata")


def test_rejects_non_canonical_encodings(tmp_path):
    good = _good()
    n = struct.unpack("<Q", good[:8])[0]
    header, data = json.loads(good[8 : 8 + n]), good[8 + n :]
    # same content, different (valid JSON) spelling: spaces after separators
    spaced = json.dumps(header, separators=(", ", ": ")).encode()
    _check_rejected(_with_header(spaced + b" " * (-len(spaced) % 8), data), tmp_path, "canonical")
    # tensors listed in another order
    reordered = {"__metadata__": header["__metadata__"], "a": header["a"], "n": header["n"]}
    text = json.dumps(reordered, separators=(",", ":")).encode()
    _check_rejected(_with_header(text + b" " * (-len(text) % 8), data), tmp_path, "canonical")
    # duplicate keys
    dup = good[8 : 8 + n].replace(b'"n":', b'"n":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"n":', 1)
    _check_rejected(_with_header(dup + b" " * (-len(dup) % 8), data), tmp_path, "duplicate")


def test_rejects_truncated_or_extended_data(tmp_path):
    good = _good()
    _check_rejected(good[:-1], tmp_path)
    _check_rejected(good + b"\x00" * 8, tmp_path)


def test_loading_never_unpickles(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    assert torch.equal(bytes_to_state_dict(_good())["a"], torch.arange(4.0))


@pytest.mark.parametrize("opener,closer", [(b"[", b"]"), (b"{\"a\":", b"}")])
def test_deeply_nested_header_is_a_serialization_error_not_recursion(tmp_path, opener, closer):
    """Who: any member, in a sealed update. Without the depth check json.loads raised
    RecursionError (not a FedchainError) and took the coordinator and `audit replay` down."""
    raw = opener * 200_000 + b"1" + closer * 200_000
    blob = struct.pack("<Q", len(raw)) + raw
    _check_rejected(blob, tmp_path, match="nests 200000 levels deep")


def test_brackets_inside_names_do_not_count_as_nesting():
    from fedchain.serialize import json_depth

    sd = {"w[[[[{{{{": torch.zeros(2), 'q"\\[': torch.ones(1)}
    assert bytes_to_state_dict(state_dict_to_bytes(sd)).keys() == sd.keys()
    assert json_depth(b'{"a":[1,[2]],"b[[[":{}}') == 3
