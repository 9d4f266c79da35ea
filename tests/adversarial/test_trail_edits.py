"""An edited trail never verifies: anchoring the exported trail to the chain, offline.

The attack: a coordinator leaves an honest member's update out of a round
without a word (the true record shows it: the update verifies, yet the scores
document neither includes nor rejects it). Then whoever hands the trail to the
auditor deletes that ``UpdateCommitted`` line and edits the round's
``committed`` count to match. Judged on its own consistency -- as replay used
to -- the edited trail verified: the exclusion was gone from the record.

Now the trail carries every block's raw header and the raw receipts of the
blocks with the contracts' logs, and replay checks them up to a block hash the
auditor trusts (``--checkpoint``). Each way of hiding the edit is tried here --
leaving the receipts, rewriting them, dropping them, rewriting the header,
dropping the block, re-forging every header after it -- and each is named; only
a full re-forgery without a trusted checkpoint gets as far as UNANCHORED, which
still exits 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rlp

from adversary import LyingCoordinator, make_world
from fedchain.cli import main as cli_main
from fedchain.contracts.bindings import Chain, FounderSpec
from fedchain.contracts.proofs import Receipt, bloom_of, decode_receipt, encode_receipt, keccak, receipts_root
from fedchain.coordinator.audit.anchor import ANCHORED, DISCREPANCY, UNANCHORED, check_offline
from fedchain.coordinator.audit.replay import VERIFIED, replay_trail
from fedchain.coordinator.audit.trail import TrailError, export_trail, read_trail
from fedchain.identity import dev_identity
from fedchain.ipfs.local import LocalStore

VICTIM = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """One round in which a dishonest coordinator silently leaves the victim out; the trail exported."""
    d = tmp_path_factory.mktemp("trail-edits")
    world = make_world(d, rounds=1)
    victim = world.address(VICTIM).lower()
    world.fresh(LyingCoordinator, tamper=lambda items: [(c, o) for c, o in items if c.participant.lower() != victim])
    deadline = world.open(1).value
    world.commit_honest(1, (0, 1, 2, 3))
    world.sim.chain.mine(deadline - world.sim.chain.block_number + 1)  # (an early close would be named as well)
    res = world.coord.close_round(world.pid, 1)
    assert res.closed and len(res.participants) == 3 and not res.rejected
    export_trail(world.fed, world.sim.store, d / "trail.jsonl")
    head = world.sim.chain.block_number
    return {"dir": d, "trail": d / "trail.jsonl", "store": world.sim.store, "auditor": world.sim.auditor,
            "victim": victim, "checkpoint": world.sim.chain.block_hash(head), "auditor_dev": 5}


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write(path: Path, recs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in recs))
    return path


def erase_exclusion(recs: list[dict], victim: str) -> tuple[list[dict], dict]:
    """The edit: drop the victim's UpdateCommitted line, make RoundClosed count one fewer."""
    commit = next(r for r in recs if r.get("event") == "UpdateCommitted" and r["args"]["member"].lower() == victim)
    out = [r for r in recs if r is not commit]
    for r in out:
        if r.get("event") == "RoundClosed":
            r["args"]["committed"] -= 1
    return out, commit


def block_of(recs: list[dict], number: int) -> dict:
    return next(r for r in recs if r.get("kind") == "block" and r["number"] == number)


def without_log(block: dict, commit: dict) -> list[str]:
    """The block's receipts with the victim's log removed (re-encoded, blooms recomputed)."""
    out = []
    index = 0
    for raw in block["receipts"]:
        r = decode_receipt(bytes.fromhex(raw[2:]))
        keep = []
        for log in r.logs:
            if index != commit["log_index"]:
                keep.append(log)
            index += 1
        out.append("0x" + encode_receipt(Receipt(r.type, r.status, r.cumulative_gas, tuple(keep))).hex())
    return out


def with_committed_count(block: dict, closed: dict, committed: int) -> list[str]:
    """The block's receipts with the RoundClosed log's ``committed`` (its 5th data word) set to ``committed``."""
    out, index = [], 0
    for raw in block["receipts"]:
        r = decode_receipt(bytes.fromhex(raw[2:]))
        logs = []
        for log in r.logs:
            if index == closed["log_index"]:
                log = type(log)(log.address, log.topics, log.data[:128] + committed.to_bytes(32, "big") + log.data[160:])
            logs.append(log)
            index += 1
        out.append("0x" + encode_receipt(Receipt(r.type, r.status, r.cumulative_gas, tuple(logs))).hex())
    return out


def reforge(recs: list[dict], edits: dict[int, list[str]]) -> None:
    """Give blocks new receipts, rewrite their headers over them, re-link every later header (and the events)."""
    blocks = sorted((r for r in recs if r.get("kind") == "block"), key=lambda r: r["number"])
    start = min(edits)
    new_hash: dict[int, str] = {}
    for blk in blocks:
        n = blk["number"]
        if n < start:
            continue
        fields = rlp.decode(bytes.fromhex(blk["header"][2:]))
        if n in edits:
            blk["receipts"] = edits[n]
            raws = [bytes.fromhex(x[2:]) for x in edits[n]]
            fields[5] = receipts_root(raws)
            fields[6] = bloom_of([log for raw in raws for log in decode_receipt(raw).logs])
        if n > start:
            fields[0] = bytes.fromhex(new_hash[n - 1][2:])
        raw = rlp.encode(fields)
        blk["header"], blk["hash"] = "0x" + raw.hex(), "0x" + keccak(raw).hex()
        new_hash[n] = blk["hash"]
    for r in recs:
        if r.get("kind") == "event" and r["block"] in new_hash:
            r["block_hash"] = new_hash[r["block"]]
        if r.get("kind") == "checkpoint" and r["to_block"] in new_hash:
            r["block_hash"] = new_hash[r["to_block"]]


def anchor(path: Path, checkpoint):
    return check_offline(read_trail(path), checkpoint)


# ------------------------------------------------------------------------------- the record


def test_the_true_record_names_the_silent_exclusion(run):
    trail = read_trail(run["trail"])
    a = check_offline(trail, run["checkpoint"])
    assert a.status == ANCHORED, a.detail
    report = replay_trail(trail, run["store"], run["auditor"], anchor=a)
    (v,) = report.rounds
    assert f"update of {run['victim']} verifies but the scores document neither includes nor rejects it" in v.problems


def test_judged_on_its_own_consistency_the_edited_trail_would_verify(run, tmp_path):
    """The attack works against the rounds alone -- which is why the trail must be anchored."""
    recs, _ = erase_exclusion(records(run["trail"]), run["victim"])
    report = replay_trail(read_trail(write(tmp_path / "t.jsonl", recs)), run["store"], run["auditor"])
    assert [v.status for v in report.rounds] == [VERIFIED]


# ------------------------------------------------------------------------------- the edits, caught


def test_erasing_the_commitment_is_named_against_the_receipts(run, tmp_path, capsys):
    recs, commit = erase_exclusion(records(run["trail"]), run["victim"])
    edited = write(tmp_path / "t.jsonl", recs)
    for checkpoint in (run["checkpoint"], None):  # the trail's own receipts already contradict it
        a = anchor(edited, checkpoint)
        assert a.status == DISCREPANCY
        assert (f"the chain's Rounds.UpdateCommitted at block {commit['block']}, log {commit['log_index']} "
                "is missing from the trail") in a.detail
    argv = ["audit", "replay", "--trail", str(edited), "--store", str(run["store"].root),
            "--auditor-dev", str(run["auditor_dev"]), "--checkpoint", run["checkpoint"]]
    assert cli_main(argv + ["--allow-unverifiable"]) == 1  # a DISCREPANCY is never allowed
    out = " ".join(capsys.readouterr().out.split())
    assert "trail DISCREPANCY" in out and "is missing from the trail" in out


def test_rewriting_the_receipts_is_named(run, tmp_path):
    recs, commit = erase_exclusion(records(run["trail"]), run["victim"])
    blk = block_of(recs, commit["block"])
    blk["receipts"] = without_log(blk, commit)
    a = anchor(write(tmp_path / "t.jsonl", recs), run["checkpoint"])
    assert a.status == DISCREPANCY and f"block {commit['block']}'s receipts do not hash to its receipts root" in a.detail


def test_dropping_the_receipts_is_named_by_the_bloom(run, tmp_path):
    recs, commit = erase_exclusion(records(run["trail"]), run["victim"])
    del block_of(recs, commit["block"])["receipts"]
    a = anchor(write(tmp_path / "t.jsonl", recs), run["checkpoint"])
    assert a.status == DISCREPANCY
    assert f"block {commit['block']}'s bloom may hold the contracts' logs, but the trail has no receipts" in a.detail


def test_dropping_the_block_is_named(run, tmp_path):
    recs, commit = erase_exclusion(records(run["trail"]), run["victim"])
    recs.remove(block_of(recs, commit["block"]))
    a = anchor(write(tmp_path / "t.jsonl", recs), run["checkpoint"])
    assert a.status == DISCREPANCY and f"the header of block {commit['block']} is missing" in a.detail


def test_rewriting_the_header_breaks_the_hash_chain(run, tmp_path):
    recs, commit = erase_exclusion(records(run["trail"]), run["victim"])
    n = commit["block"]
    receipts = without_log(block_of(recs, n), commit)
    # Re-forge only block n: the next block still names the true hash as its parent.
    blocks = [r for r in recs if r.get("kind") == "block" and r["number"] <= n]
    reforge(blocks, {n: receipts})
    a = anchor(write(tmp_path / "t.jsonl", recs), run["checkpoint"])
    assert a.status == DISCREPANCY and f"block {n + 1}'s parent hash is not the hash of block {n}" in a.detail


def test_reforging_every_later_header_misses_the_checkpoint_and_is_at_best_unanchored(run, tmp_path):
    recs, commit = erase_exclusion(records(run["trail"]), run["victim"])
    closed = next(r for r in recs if r.get("event") == "RoundClosed")
    reforge(recs, {commit["block"]: without_log(block_of(recs, commit["block"]), commit),
                   closed["block"]: with_committed_count(block_of(recs, closed["block"]), closed,
                                                         closed["args"]["committed"])})
    forged = write(tmp_path / "t.jsonl", recs)
    a = anchor(forged, run["checkpoint"])
    assert a.status == DISCREPANCY and f"the checkpoint {run['checkpoint'].lower()} is not the hash" in a.detail
    assert anchor(forged, None).status == UNANCHORED  # consistent, but tied to nothing the auditor trusts
    argv = ["audit", "replay", "--trail", str(forged), "--store", str(run["store"].root),
            "--auditor-dev", str(run["auditor_dev"])]
    assert cli_main(argv) == 1


@pytest.mark.parametrize("field, value", [("args.cid", "QmNotTheCommittedUpdate"), ("timestamp", 1),
                                          ("log_index", 7), ("gas_used", 1), ("block_hash", "0x" + "11" * 32)])
def test_editing_any_field_of_an_event_is_named(run, tmp_path, field, value):
    recs = records(run["trail"])
    ev = next(r for r in recs if r.get("event") == "UpdateCommitted")
    if field.startswith("args."):
        ev["args"][field[5:]] = value
    else:
        ev[field] = value
    a = anchor(write(tmp_path / "t.jsonl", recs), run["checkpoint"])
    assert a.status == DISCREPANCY, a.detail
    assert f"Rounds.UpdateCommitted at block {ev['block']}" in a.detail


def test_a_fabricated_event_is_named(run, tmp_path):
    recs = records(run["trail"])
    ev = next(r for r in recs if r.get("event") == "UpdateCommitted")
    fake = json.loads(json.dumps(ev))
    fake["log_index"] += 1
    fake["args"]["member"] = "0x" + "12" * 20
    recs.insert(recs.index(ev) + 1, fake)
    a = anchor(write(tmp_path / "t.jsonl", recs), run["checkpoint"])
    assert a.status == DISCREPANCY, a.detail


def test_a_checkpoint_past_the_last_event_anchors_and_one_before_it_does_not(run):
    trail = read_trail(run["trail"])
    last_event = max(e.block for e in trail.events)
    early = trail.blocks[last_event - 1].hash
    a = check_offline(trail, early)
    assert a.status == UNANCHORED and f"the events up to block {last_event - 1} are anchored" in a.detail
    assert check_offline(trail, run["checkpoint"].upper().replace("0X", "0x")).status == ANCHORED


def test_an_export_never_appends_to_another_chains_trail(tmp_path):
    """A restarted dev chain has the same contract addresses: resuming its export into the old trail would
    splice two histories into one record. The last checkpoint's block hash tells them apart."""

    def deployment(seconds):
        chain = Chain.connect("eth-tester://")
        m = [dev_identity(i) for i in range(2)]
        dep = chain.deploy(chain.dev_accounts[0], [FounderSpec(f"m{i}", x.address, x.x25519_public)
                                                   for i, x in enumerate(m)], m[0].address, voting_period_blocks=3)
        chain.advance_time(seconds)  # a different history from the first block after the deployment
        return chain.attach(dep)

    store = LocalStore(tmp_path / "store", fsync=False)
    first, second = deployment(7), deployment(7 * 86400)
    assert first.deployment.addresses == second.deployment.addresses
    assert first.chain.block_number == second.chain.block_number
    out = tmp_path / "trail.jsonl"
    export_trail(first, store, out)
    first.chain.mine(1)
    second.chain.mine(1)
    before = out.read_text()
    with pytest.raises(TrailError, match="another chain"):
        export_trail(second, store, out)
    assert out.read_text() == before
    export_trail(first, store, out)  # the same chain resumes
    assert check_offline(read_trail(out), first.chain.block_hash(first.chain.block_number)).status == ANCHORED
