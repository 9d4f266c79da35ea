"""Fuzz: whatever a trail file holds, reading and anchoring it raise only fedchain's named errors.

A trail is a file anyone can hand an auditor. Reading it (:func:`read_trail`),
folding its events (:class:`History` and its checks) and checking it against
the block headers and receipts it carries (:func:`check_offline`) must end in a
verdict or a :class:`~fedchain.errors.FedchainError` -- never a ``KeyError``, a
``TypeError``, an RLP or ABI library exception, or a ``RecursionError`` (with
py-evm loaded the recursion limit is 100,000, so a deeply nested JSON line would
crash the interpreter instead).

Three generators, each from a real exported trail (headers and receipts
included): arbitrary bytes, a record's field replaced by arbitrary JSON, and
byte flips inside lines. Hypothesis runs derandomized, like ``tests/test_fuzz.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedchain import usecases as uc
from fedchain.contracts.bindings import Chain, FounderSpec, Policy, Vote
from fedchain.contracts.proofs import Header, ProofError, decode_receipt
from fedchain.coordinator.audit.anchor import AnchorVerdict, check_offline
from fedchain.coordinator.audit.history import History
from fedchain.coordinator.audit.trail import TrailError, export_trail, read_trail
from fedchain.errors import FedchainError
from fedchain.identity import dev_identity
from fedchain.ipfs.local import LocalStore
from fedchain.sample_data import demo_plan, demo_schema
from fedchain.schema import parse_schema

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**260) | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> tuple[list[str], str]:
    """A real trail's lines (members, datasets with policies, a proposal and its votes) and its head hash."""
    d = tmp_path_factory.mktemp("trail-fuzz")
    chain = Chain.connect("eth-tester://")
    members = [dev_identity(i) for i in range(3)]
    dep = chain.deploy(chain.dev_accounts[0],
                       [FounderSpec(f"m{i}", m.address, m.x25519_public) for i, m in enumerate(members)],
                       members[0].address, voting_period_blocks=5)
    fed = chain.attach(dep)
    store = LocalStore(d / "store", fsync=False)
    schema = parse_schema(demo_schema())
    for i, m in enumerate(members):
        uc.datasets.register(fed.as_(m.account), store, name=f"ds-{i}", schema=schema, n_rows=10 + i,
                             description=f"metadata {i}", policy=Policy.open())
    plan = demo_plan(seed=3).with_changes(datasets=["ds-0"], rounds=1, min_participants=1)
    pid = uc.proposals.propose(fed.as_(members[0].account), store, plan).id
    for m in members:
        uc.proposals.vote(fed.as_(m.account), pid, Vote.YES)
    export_trail(fed, store, d / "trail.jsonl")
    return (d / "trail.jsonl").read_text().splitlines(), chain.block_hash(chain.block_number)


def judge(path: Path, checkpoint: str | None) -> None:
    """Read, fold and anchor the file: a verdict or a FedchainError, nothing else."""
    try:
        trail = read_trail(path)
    except TrailError:
        return
    h = History(trail.events, trail.header.get("params"))
    for p in h.proposals.values():
        h.proposal_problems(p)
    for r in h.rounds.values():
        h.round_governance_problems(r)
    assert isinstance(check_offline(trail, checkpoint), AnchorVerdict)


def test_the_seed_trail_itself_anchors(seed, tmp_path):
    lines, head = seed
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    assert check_offline(read_trail(tmp_path / "t.jsonl"), head).status == "ANCHORED"


@FUZZ
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes(tmp_path, data):
    (tmp_path / "t.jsonl").write_bytes(data)
    judge(tmp_path / "t.jsonl", None)


@FUZZ
@given(data=st.data())
def test_a_field_replaced_by_arbitrary_json(seed, tmp_path, data):
    lines, head = seed
    i = data.draw(st.integers(0, len(lines) - 1))
    rec = json.loads(lines[i])
    target = rec
    if "args" in rec and data.draw(st.booleans()):
        target = rec["args"]
    key = data.draw(st.sampled_from(sorted(target)) if target else st.text(max_size=5))
    if data.draw(st.integers(0, 4)) == 0:
        target.pop(key, None)
    else:
        target[key] = data.draw(JSON)
    edited = lines[:i] + [json.dumps(rec)] + lines[i + 1:]
    (tmp_path / "t.jsonl").write_text("\n".join(edited) + "\n")
    judge(tmp_path / "t.jsonl", head)


@FUZZ
@given(data=st.data())
def test_bytes_flipped_inside_lines(seed, tmp_path, data):
    lines, head = seed
    raw = bytearray(("\n".join(lines) + "\n").encode())
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    (tmp_path / "t.jsonl").write_bytes(bytes(raw))
    judge(tmp_path / "t.jsonl", head)


def test_a_deeply_nested_line_is_a_trail_error_not_a_crash(seed, tmp_path):
    lines, _ = seed
    (tmp_path / "t.jsonl").write_text(lines[0] + "\n" + "[" * 200_000 + "\n")
    with pytest.raises(TrailError, match=":2: malformed trail record"):
        read_trail(tmp_path / "t.jsonl")


@FUZZ
@given(raw=st.binary(max_size=700))
def test_raw_headers_and_receipts(raw):
    for parse in (Header.decode, decode_receipt):
        try:
            parse(raw)
        except ProofError:
            pass
        except FedchainError as exc:  # pragma: no cover - only ProofError is expected
            raise AssertionError(f"{parse.__qualname__}: {type(exc).__name__}") from exc
