"""Model registry: names, shapes, deterministic initialization."""

from __future__ import annotations

import hashlib

import pytest
import torch

from fedchain.errors import ConfigError
from fedchain.models import build_model, initial_state, known_kinds
from fedchain.plan import PlanError, parse_model_spec

LOGREG = {"kind": "logreg", "in_features": 5, "n_classes": 3}
MLP = {"kind": "mlp", "in_features": 4, "n_classes": 2, "hidden": [3]}
CNN = {"kind": "cnn", "n_classes": 4, "input_shape": [1, 8, 8], "conv_channels": [4, 8], "hidden": [16]}


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].numpy().tobytes())
    return h.hexdigest()


def test_known_kinds():
    assert known_kinds() == ("logreg", "mlp", "cnn")


def test_parameter_names_and_shapes():
    assert {k: tuple(v.shape) for k, v in initial_state(LOGREG, 0).items()} == {
        "linear.weight": (3, 5),
        "linear.bias": (3,),
    }
    assert {k: tuple(v.shape) for k, v in initial_state(MLP, 0).items()} == {
        "hidden.0.weight": (3, 4),
        "hidden.0.bias": (3,),
        "out.weight": (2, 3),
        "out.bias": (2,),
    }
    assert {k: tuple(v.shape) for k, v in initial_state(CNN, 0).items()} == {
        "conv.0.weight": (4, 1, 3, 3),
        "conv.0.bias": (4,),
        "conv.1.weight": (8, 4, 3, 3),
        "conv.1.bias": (8,),
        "hidden.0.weight": (16, 32),
        "hidden.0.bias": (16,),
        "out.weight": (4, 16),
        "out.bias": (4,),
    }


@pytest.mark.parametrize("spec", [LOGREG, MLP, CNN], ids=["logreg", "mlp", "cnn"])
def test_forward_shapes_and_float32(spec):
    model = build_model(spec, 3)
    n_features = parse_model_spec(spec).n_features
    out = model(torch.randn(7, n_features))
    assert out.shape == (7, spec["n_classes"])
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    assert list(model.buffers()) == []


@pytest.mark.parametrize("spec", [LOGREG, MLP, CNN], ids=["logreg", "mlp", "cnn"])
def test_init_is_deterministic_and_ignores_global_rng(spec):
    torch.manual_seed(0)
    a = initial_state(spec, 11)
    torch.manual_seed(999)
    rng_before = torch.random.get_rng_state()
    b = initial_state(spec, 11)
    assert torch.equal(rng_before, torch.random.get_rng_state()), "building a model must not consume the global RNG"
    assert _digest(a) == _digest(b)
    c = initial_state(spec, 12)
    assert _digest(a) != _digest(c)
    # weights lie in the default +-1/sqrt(fan_in) range and are not all equal
    for name, t in a.items():
        assert t.unique().numel() > 1 or t.numel() == 1, name


def test_init_is_pinned_across_machines():
    # Golden digest: same seed must give these exact bytes on any machine and torch CPU build.
    state = initial_state(MLP | {"hidden": [3]}, 123)
    assert _digest(state) == "b7e994805b0636969d3fd9c616a61deb00fd0bcf089e1ee71a1684b90578fe1f"
    assert state["out.bias"].tolist() == [0.21679656207561493, -0.34212538599967957]


def test_thread_count_does_not_matter():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = initial_state(CNN, 5)
        torch.set_num_threads(2)
        b = initial_state(CNN, 5)
    finally:
        torch.set_num_threads(threads)
    assert _digest(a) == _digest(b)


def test_unknown_kind_lists_known_ones():
    with pytest.raises(ConfigError) as exc:
        build_model({"kind": "transformer", "n_classes": 2}, 0)
    for kind in ("logreg", "mlp", "cnn"):
        assert kind in str(exc.value)


def test_spec_dict_is_validated():
    with pytest.raises(PlanError) as exc:
        build_model({"kind": "mlp", "in_features": 4, "n_classes": 2, "hidden": []}, 0)
    assert exc.value.field == "model.hidden"
    with pytest.raises(ConfigError, match="seed"):
        build_model(LOGREG, -1)


def test_spec_object_and_dict_agree():
    spec = parse_model_spec(MLP)
    assert _digest(initial_state(spec, 9)) == _digest(initial_state(MLP, 9))


def test_seeded_init_is_the_documented_formula():
    # Every tensor is ((u * 2 - 1) * 1/sqrt(fan_in)) of float64 uniforms from its own derived seed, cast once.
    from fedchain.plan import derive_seed

    spec = MLP | {"hidden": [300]}
    state = initial_state(spec, 21)
    for name, fan_in in (("hidden.0.weight", 4), ("hidden.0.bias", 4), ("out.weight", 300), ("out.bias", 300)):
        gen = torch.Generator().manual_seed(derive_seed(21, "init", name))
        u = torch.rand(state[name].shape, generator=gen, dtype=torch.float64)
        assert torch.equal(state[name], ((u * 2.0 - 1.0) * (1.0 / fan_in**0.5)).to(torch.float32)), name


def test_initial_state_is_a_fresh_copy_each_call():
    a = initial_state(MLP, 4)
    for t in a.values():
        t.add_(1.0)
    b = initial_state(MLP, 4)
    assert _digest(b) == _digest(build_model(MLP, 4).state_dict())
    assert _digest(a) != _digest(b)


@pytest.mark.parametrize("spec", [LOGREG, MLP, CNN], ids=["logreg", "mlp", "cnn"])
def test_empty_model_takes_any_state(spec):
    from fedchain.models import empty_model

    state = initial_state(spec, 8)
    model = empty_model(spec)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in state.items()}
    model.load_state_dict(state)
    assert _digest(model.state_dict()) == _digest(state)
    assert list(model.buffers()) == []


def test_all_finite_sees_every_nan_and_infinity():
    from fedchain.models import all_finite

    t = torch.randn(64, 33)
    assert all_finite(t) and all_finite(torch.empty(0)) and all_finite(torch.tensor(3.0))
    for bad in (float("nan"), float("inf"), float("-inf")):
        for where in ((0, 0), (63, 32), (17, 5)):
            u = t.clone()
            u[where] = bad
            assert not all_finite(u), (bad, where)
    assert not all_finite(torch.full((5,), float("nan")))
    assert not all_finite(torch.tensor([float("inf"), float("-inf")]))
