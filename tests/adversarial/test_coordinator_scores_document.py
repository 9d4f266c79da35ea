"""What the coordinator publishes about a rejected update: a stable code and a short detail, nothing else.

Before, the scores document (public, pinned, hashed on chain) carried
``f"{type(exc).__name__}: {exc}"`` for each rejection: library exception text a
member could steer with the bytes it sealed, and local paths of the
coordinator's temporary files and store. Now each entry is ``{"code", "detail"}``:
a :class:`~fedchain.validation.Reason` and a detail written by fedchain, bounded,
with no exception text and no path of the machine that judged it.
"""

from __future__ import annotations

import re
import struct
import tempfile

import pytest
import torch

from adversary import make_world
from fedchain.serialize import state_dict_to_bytes
from fedchain.validation import Reason

HOSTILE = "Traceback (most recent call last): /home/coordinator/.fedchain/keys.json <script>alert(1)</script>"


def _not_safetensors() -> bytes:
    header = HOSTILE.encode() * 3
    return struct.pack("<Q", len(header)) + header + b"\0" * 64


def _hostile_names() -> bytes:
    """A well-formed safetensors file whose tensors are named by the attacker."""
    return state_dict_to_bytes({f"{HOSTILE} {i}": torch.zeros(2) for i in range(6)})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("coord-scores"), rounds=1)


@pytest.mark.parametrize("payload, code", [(_not_safetensors, Reason.MALFORMED_HEADER),
                                           (_hostile_names, Reason.WRONG_TENSORS)])
def test_a_rejection_publishes_a_code_and_a_short_detail_only(world, payload, code):
    world.fresh()
    world.open(1)
    world.commit_honest(1, (0, 1, 2))
    world.seal_and_commit(3, 1, payload())
    res = world.coord.close_round(world.pid, 1)
    assert res.closed
    entry = world.scores_doc(1)["rejected"][world.address(3).lower()]
    assert set(entry) == {"code", "detail"} and entry["code"] == code.value
    detail = entry["detail"]
    assert len(detail) <= 400
    for leak in (str(world.sim.root), str(world.sim.store.root), tempfile.gettempdir(), "Traceback", ".fedchain"):
        assert leak not in detail, (leak, detail)
    assert not re.search(r"\b[A-Z][A-Za-z]*(Error|Exception)\b", detail), detail
    if code == Reason.WRONG_TENSORS:  # the plan's names are quoted, the member's only counted
        assert "<script>" not in detail and "6 not in the plan's model" in detail
