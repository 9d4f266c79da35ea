"""The exported trail: order, paging, resume after an interruption, and strict reading."""

from __future__ import annotations

import json

import pytest

from fedchain.contracts.bindings import Chain, FounderSpec, Policy, Vote
from fedchain.coordinator.audit import trail as trail_mod
from fedchain.coordinator.audit.trail import TrailError, export_trail, read_trail
from fedchain.content import pin_document
from fedchain.identity import dev_identity
from fedchain.ipfs.local import LocalStore


@pytest.fixture(scope="module")
def chain_with_history(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trail")
    chain = Chain.connect("eth-tester://")
    members = [dev_identity(i) for i in range(3)]
    dep = chain.deploy(chain.dev_accounts[0], [FounderSpec(f"m{i}", m.address, m.x25519_public) for i, m in enumerate(members)],
                       members[0].address, voting_period_blocks=5)
    fed = chain.attach(dep)
    store = LocalStore(tmp / "store", fsync=False)
    for i, m in enumerate(members):
        cid, sha = pin_document(store, f"metadata {i}".encode())
        fed.as_(m.account).registry.register_dataset(f"ds-{i}", cid, sha, b"\x01" * 32, Policy.open())
    plan_cid, plan_sha = pin_document(store, b'{"not": "a real plan, just a document"}')
    pid = fed.as_(members[0].account).proposals.submit_proposal(plan_cid, plan_sha, "diagnosis", ["ds-0"], 1, 1, 10).value
    for m in members:
        fed.as_(m.account).proposals.vote(pid, Vote.YES)
    return fed, store, tmp


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_is_ordered_and_carries_the_plan_document(chain_with_history):
    fed, store, tmp = chain_with_history
    out = tmp / "full.jsonl"
    n = export_trail(fed, store, out)
    recs = records(out)
    assert recs[0]["kind"] == "header" and recs[0]["addresses"] == fed.deployment.addresses
    events = [r for r in recs if r["kind"] == "event"]
    assert len(events) == n == len(fed.events(fed.deployment.deploy_block))
    keys = [(e["block"], e["log_index"]) for e in events]
    assert keys == sorted(keys)
    assert all(e["timestamp"] > 0 and e["gas_used"] > 0 for e in events)
    docs = [r for r in recs if r["kind"] == "document"]
    assert len(docs) == 1 and docs[0]["content"] == '{"not": "a real plan, just a document"}'
    t = read_trail(out)
    assert [e.event for e in t.events].count("Voted") == 3


def test_export_in_small_pages_resumes_to_the_same_trail(chain_with_history, monkeypatch):
    fed, store, tmp = chain_with_history
    full = tmp / "ref.jsonl"
    export_trail(fed, store, full)
    monkeypatch.setattr(trail_mod, "PAGE_BLOCKS", 3)
    part = tmp / "part.jsonl"
    mid = fed.deployment.deploy_block + 7
    first = export_trail(fed, store, part, to_block=mid)
    # An interrupted page: a half-written line after the last checkpoint.
    with open(part, "a") as f:
        f.write('{"kind": "event", "block": ')
    rest = export_trail(fed, store, part)
    strip = lambda recs: [r for r in recs if r["kind"] != "checkpoint"]  # noqa: E731
    assert strip(records(part)) == strip(records(full))
    assert first + rest == len([r for r in records(full) if r["kind"] == "event"])


def test_export_refuses_to_append_to_another_deployments_trail(chain_with_history, tmp_path):
    fed, store, _ = chain_with_history
    out = tmp_path / "other.jsonl"
    out.write_text(json.dumps({"kind": "header", "format": "fedchain-trail/1", "chain_id": 1,
                               "addresses": {}, "deploy_block": 0}) + "\n")
    with pytest.raises(TrailError, match="another deployment"):
        export_trail(fed, store, out)


def test_malformed_trail_line_is_named(chain_with_history, tmp_path):
    fed, store, _ = chain_with_history
    out = tmp_path / "t.jsonl"
    export_trail(fed, store, out)
    lines = out.read_text().splitlines()
    lines[3] = '{"kind": "event", "block": 1}'
    out.write_text("\n".join(lines) + "\n")
    with pytest.raises(TrailError, match=r":4: malformed"):
        read_trail(out)
