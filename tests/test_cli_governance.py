"""The governance CLI against a real anvil started by ``fedchain chain up``.

Commands run in-process through ``fedchain.cli.main(argv)`` (one import of torch
and web3 for the whole module); only the walkthrough script runs as a
subprocess. Every fixture that starts a chain stops it and asserts that no
anvil process is left behind.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedchain.contracts.anvil import AnvilError, find_anvil, free_port
from fedchain.cli import main
from fedchain.identity import dev_identity

pytestmark = pytest.mark.anvil

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module", autouse=True)
def _wide_console():
    """Wide rich output, so lines are not wrapped in the middle of what we look for."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLUMNS", "220")
        mp.delenv("FEDCHAIN_HOME", raising=False)
        yield


@pytest.fixture(scope="module", autouse=True)
def _need_anvil():
    try:
        find_anvil()
    except AnvilError as exc:
        pytest.skip(str(exc))


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    def ok(self) -> "Result":
        assert self.code == 0, f"exit {self.code}:\n{self.text}"
        return self

    def refused(self, *phrases: str) -> "Result":
        """Exit 1 with one readable 'error:' line containing every phrase, and no traceback."""
        assert self.code == 1, f"expected exit 1, got {self.code}:\n{self.text}"
        assert "Traceback" not in self.text
        lines = [line for line in self.err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, self.text
        for phrase in phrases:
            assert phrase in lines[0], f"{phrase!r} not in {lines[0]!r}"
        return self


def cli(*args: object, home: Path | None = None) -> Result:
    """Run ``fedchain ARGS [--home HOME]`` in-process."""
    argv = [str(a) for a in args] + (["--home", str(home)] if home is not None else [])
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return Result(code, ANSI.sub("", out.getvalue()), ANSI.sub("", err.getvalue()))


def anvil_pids(home: Path) -> list[int]:
    """Live anvil processes whose state file lives in ``home``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if "anvil" in cmd and str(home) in cmd and ") Z " not in stat:
            pids.append(int(entry.name))
    return pids


def recorded_pid(home: Path) -> int | None:
    return json.loads((home / "network.json").read_text())["processes"].get("anvil")


def stop_chain(home: Path) -> None:
    """Teardown: 'chain down', then make sure nothing is left (kill and fail if something is)."""
    if (home / "network.json").exists():
        cli("chain", "down", home=home)
    left = anvil_pids(home)
    for pid in left:
        os.kill(pid, 9)
    assert not left, f"anvil processes left behind: {left}"


def member(i: int) -> str:
    return dev_identity(i).address


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from fedchain.sample_data import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("data"), n_hospitals=3)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """A 3-member dev network (voting period 3 blocks) shared by this module's tests."""
    home = tmp_path_factory.mktemp("net").resolve()
    try:
        cli("chain", "up", "--port", free_port(), "--dev-founders", 3, "--voting-period", 3, home=home).ok()
        yield home
    finally:
        stop_chain(home)


def register(home: Path, demo, name: str, dev: int, *policy: object, hospital: int | None = None) -> Result:
    h = demo.hospitals[(dev if hospital is None else hospital) % len(demo.hospitals)]
    return cli("dataset", "register", name, "--dev", dev, "--csv", h.csv_path, "--schema", h.schema_path,
               "--description", f"{name} test data", *policy, home=home)


def write_plan(path: Path, demo, datasets: list[str], **changes) -> Path:
    from fedchain.sample_data import demo_plan

    plan = demo_plan(demo.hospitals).with_changes(datasets=datasets, **{"rounds": 1, "min_participants": 1, **changes})
    path.write_bytes(plan.to_canonical_bytes())
    return path


def submit(home: Path, plan: Path, dev: int = 0) -> int:
    r = cli("proposal", "submit", plan, "--dev", dev, home=home).ok()
    m = re.search(r"proposal (\d+) submitted", r.out)
    assert m, r.text
    return int(m.group(1))


def approve(home: Path, pid: int) -> None:
    for dev in (0, 1, 2):
        cli("proposal", "vote", pid, "yes", "--dev", dev, home=home).ok()
    cli("chain", "mine", 4, home=home).ok()
    assert "APPROVED" in cli("proposal", "finalize", pid, "--dev", 0, home=home).ok().out


def table_row(text: str, first_cell: str) -> str:
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)]
        if len(cells) > 2 and cells[1] == first_cell:
            return line
    raise AssertionError(f"no row {first_cell!r} in:\n{text}")


# ---------------------------------------------------------------- chain up / down


def test_chain_up_down_up_reloads_state_and_deployment(tmp_path, demo):
    home = tmp_path / "home"
    port = free_port()
    try:
        up = cli("chain", "up", "--port", port, "--dev-founders", 3, home=home).ok()
        assert "new chain" in up.out and "deployed now" in up.out
        pid = recorded_pid(home)
        assert anvil_pids(home.resolve()) == [pid]
        addresses = json.loads((home / "deployment.json").read_text())["addresses"]

        status = cli("chain", "status", home=home).ok()
        assert f"http://127.0.0.1:{port}" in status.out and "dev-0, dev-1, dev-2" in status.out
        assert "already up" in cli("chain", "up", home=home).ok().out

        register(home, demo, "kept-across-restarts", 0, "--purpose", "research").ok()
        height = int(re.search(r"block (\d+)", cli("chain", "status", home=home).out.split("chain ", 1)[1]).group(1))

        down = cli("chain", "down", home=home).ok()
        assert "state saved" in down.out
        assert anvil_pids(home.resolve()) == []
        assert (home / "anvil-state.json").stat().st_size > 0
        cli("chain", "status", home=home).refused("not reachable", "fedchain chain up")
        assert "not running" in cli("chain", "down", home=home).ok().out

        # No founder options this time: the saved chain and deployment come back.
        again = cli("chain", "up", home=home).ok()
        assert "reloaded" in again.out and "reused" in again.out
        assert json.loads((home / "deployment.json").read_text())["addresses"] == addresses
        status = cli("chain", "status", home=home).ok()
        assert f"block {height}," in status.out
        listing = cli("dataset", "list", home=home).ok().out
        assert "research" in table_row(listing, "kept-across-restarts")
        cli("chain", "down", home=home).ok()

        # --block-time: anvil mines on its own; the setting is remembered by the next 'up'.
        cli("chain", "up", "--block-time", 1, home=home).ok()
        before = int(re.search(r"block (\d+)", cli("chain", "status", home=home).out).group(1))
        time.sleep(2.5)
        after = int(re.search(r"block (\d+)", cli("chain", "status", home=home).out).group(1))
        assert after >= before + 2
        assert json.loads((home / "anvil.json").read_text())["block_time"] == 1
    finally:
        stop_chain(home.resolve())


def test_chain_up_needs_founders_and_a_free_port(tmp_path):
    home = tmp_path / "h"
    cli("chain", "up", "--port", free_port(), home=home).refused("needs founders")
    assert anvil_pids(home.resolve()) == []
    cli("chain", "status", home=tmp_path / "empty").refused("no network configured")
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cli("chain", "up", "--port", port, "--dev-founders", 2, home=home).refused(f"port {port}", "in use")
    assert anvil_pids(home.resolve()) == []


def test_chain_up_with_founders_file_and_keystore_member(tmp_path):
    from fedchain.identity import LIGHT_KDF_N, create_identity

    home = (tmp_path / "h").resolve()
    create_identity(tmp_path / "st-mary.json", "st-mary", "pw", kdf_n=LIGHT_KDF_N)
    entries = [json.loads(cli("identity", "show", "--dev", 1, "--json").ok().out),
               json.loads(cli("identity", "show", tmp_path / "st-mary.json", "--json").ok().out)]
    (tmp_path / "founders.json").write_text(json.dumps(entries))
    try:
        cli("chain", "up", "--port", free_port(), "--founders", tmp_path / "founders.json", home=home).refused(
            "--coordinator")
        cli("chain", "up", "--port", free_port(), "--founders", tmp_path / "founders.json",
            "--coordinator", member(8), home=home).ok()
        listing = cli("member", "list", home=home).ok().out
        assert "dev-1" in table_row(listing, "1") and "st-mary" in table_row(listing, "2")
        # founders without a balance got ETH for gas; 'chain fund' tops up anyone on a dev chain
        assert "balance 101 ETH" in cli("chain", "fund", entries[1]["address"], "--eth", 1, home=home).ok().out
        cli("chain", "fund", "0xnope", home=home).refused("not an address")
        assert f"coordinator: {member(8)} (not a member)" in listing
        with pytest.MonkeyPatch.context() as mp:  # a keystore identity acts like a dev one
            mp.setenv("FEDCHAIN_PASSWORD", "pw")
            r = cli("member", "propose-admit", "--from", tmp_path / "st-mary.json", "--identity",
                    tmp_path / "st-mary.json", home=home)
            r.refused("already a member")
            d3 = dev_identity(3)
            r = cli("member", "propose-admit", "dev-3", d3.address, "0x" + d3.x25519_public.hex(), "--identity",
                    tmp_path / "st-mary.json", home=home).ok()
            assert "motion 1: admit dev-3" in r.out
            assert "st-mary" in table_row(cli("member", "motions", home=home).ok().out, "1")
            mp.setenv("FEDCHAIN_PASSWORD", "wrong")
            cli("proposal", "vote", 1, "yes", "--identity", tmp_path / "st-mary.json", home=home).refused(
                "wrong password")
    finally:
        stop_chain(home)


# ---------------------------------------------------------------- datasets


def test_dataset_register_list_policy_revoke(net, demo):
    register(net, demo, "ds-open", 0).ok()
    r = register(net, demo, "ds-strict", 1, "--purpose", "oncology-qa", "--requester", "dev-0",
                 "--expires", "2099-06-30", "--epsilon", "2.5").ok()
    assert "policy: proposals any approved; purposes oncology-qa; requesters dev-0" in r.out

    listing = cli("dataset", "list", home=net).ok().out
    row = table_row(listing, "ds-open")
    assert "dev-0" in row and "any approved" in row and "any member" in row and "never" in row and "active" in row
    row = table_row(listing, "ds-strict")
    assert "oncology-qa" in row and "dev-0 0xf39F" in row and "2099-06-30" in row and "2.5" in row

    show = cli("dataset", "show", "ds-strict", home=net).ok().out
    assert "policy version │ 1" in show and "rows" in show and "ds-strict test data" in show

    # Change only some fields; the others keep their values.
    r = cli("dataset", "policy", "ds-strict", "--purpose", "research", "--purpose", "education",
            "--dev", 1, home=net).ok()
    assert "version 2" in r.out
    row = table_row(cli("dataset", "list", home=net).out, "ds-strict")
    assert "research, education" in row and "dev-0" in row and "2099-06-30" in row
    cli("dataset", "policy", "ds-strict", "--any-purpose", "--any-requester", "--expires", "never", "--proposal", "none",
        "--dev", 1, home=net).ok()
    row = table_row(cli("dataset", "list", home=net).out, "ds-strict")
    assert "│ any " in row and "any member" in row and "never" in row and "│ none " in row

    # Purposes on chain are hashes: typed ones are remembered in HOME, common ones are known anyway.
    cli("dataset", "policy", "ds-open", "--purpose", "oncology-qa", "--purpose", "research", "--dev", 0, home=net).ok()
    (net / "purposes.json").rename(net / "purposes.json.bak")
    try:
        row = table_row(cli("dataset", "list", home=net).out, "ds-open")
        assert "research" in row and "oncology-qa" not in row and "…" in row  # short hash for the unknown one
    finally:
        (net / "purposes.json.bak").rename(net / "purposes.json")
    assert "oncology-qa, research" in table_row(cli("dataset", "list", home=net).out, "ds-open")

    # Reverts and refusals: one readable line, exit 1.
    cli("dataset", "policy", "ds-open", "--purpose", "x", "--dev", 2, home=net).refused("not the owner of the dataset")
    register(net, demo, "ds-open", 1).refused("already registered")
    register(net, demo, "ds-outsider", 5).refused("not a member (0x9965")
    cli("dataset", "show", "no-such-dataset", home=net).refused("no dataset named 'no-such-dataset'")

    cli("dataset", "revoke", "ds-open", "--dev", 1, "--yes", home=net).refused("not the owner")
    cli("dataset", "revoke", "ds-open", "--dev", 0, "--yes", home=net).ok()
    assert "revoked" in table_row(cli("dataset", "list", home=net).out, "ds-open")
    assert "ds-open" not in cli("dataset", "list", "--active", home=net).out
    cli("dataset", "revoke", "ds-open", "--dev", 0, "--yes", home=net).refused("already revoked")
    cli("dataset", "policy", "ds-open", "--purpose", "x", "--dev", 0, home=net).refused("the dataset is revoked")

    # Expiry is a date on the chain's clock.
    import datetime as dt

    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    register(net, demo, "ds-expiring", 2, "--expires", soon).ok()
    assert "active" in table_row(cli("dataset", "list", home=net).out, "ds-expiring")
    cli("dataset", "policy", "ds-expiring", "--expires", "2001-01-01", "--dev", 2, home=net).refused(
        "the expiry must be in the future")
    cli("chain", "mine", "--seconds", 7200, home=net).ok()
    row = table_row(cli("dataset", "list", home=net).out, "ds-expiring")
    assert "(expired)" in row and "expired" in row.split("│")[-2]


# ---------------------------------------------------------------- proposals


def test_proposal_submit_vote_finalize_show_list(net, demo, tmp_path):
    register(net, demo, "p-a", 0, "--proposal", "any").ok()
    register(net, demo, "p-b", 1, "--purpose", "research").ok()  # the plan's purpose is 'diagnosis'
    # Targets must be registered first: the chain records each one's owner with the proposal.
    early = write_plan(tmp_path / "early.json", demo, ["p-a", "p-b", "p-later"])
    cli("proposal", "submit", early, "--dev", 0, home=net).refused("the target dataset is not registered", "'p-later'")
    plan = write_plan(tmp_path / "plan.json", demo, ["p-a", "p-b"])
    r = cli("proposal", "submit", plan, "--dev", 0, home=net).ok()
    pid = int(re.search(r"proposal (\d+) submitted", r.out).group(1))
    assert "purpose 'diagnosis'" in r.out

    row = table_row(cli("proposal", "list", home=net).ok().out, str(pid))
    assert "ACTIVE" in row and "diagnosis" in row and "dev-0" in row and "block(s) left" in row

    cli("proposal", "vote", pid, "yes", "--dev", 0, home=net).ok()
    cli("proposal", "vote", pid, "abstain", "--dev", 2, home=net).ok()
    # Reverts name their reason.
    cli("proposal", "vote", pid, "no", "--dev", 0, home=net).refused("already voted", "dev-0 0xf39F")
    cli("proposal", "vote", pid, "yes", "--dev", 6, home=net).refused(f"not a member ({member(6)[:6]}")
    cli("proposal", "finalize", pid, "--dev", 0, home=net).refused("the voting period is still running")
    cli("proposal", "cancel", pid, "--dev", 0, home=net).refused("votes were already cast")
    cli("proposal", "vote", pid, "yes", "--dev", 1, home=net).ok()

    cli("chain", "mine", 4, home=net).ok()
    cli("proposal", "vote", pid, "yes", "--dev", 1, home=net).refused("the voting period is over")
    r = cli("proposal", "finalize", pid, "--dev", 2, home=net).ok()
    assert "APPROVED (yes 2, no 0, abstain 1 of 4 eligible)" in r.out
    cli("proposal", "finalize", pid, "--dev", 2, home=net).refused("already finalized or cancelled")

    show = cli("proposal", "show", pid, home=net).ok().out
    assert "breast-cancer-demo" in show
    assert "yes" in table_row(show, "vote of dev-0") and "yes" in table_row(show, "vote of dev-1")
    assert "abstain" in table_row(show, "vote of dev-2")
    assert "admits" in table_row(show, "target p-a") and "owner dev-0" in table_row(show, "target p-a")
    assert "does not admit: purpose not allowed" in table_row(show, "target p-b")
    assert "owner dev-1" in table_row(show, "target p-b") and " rows" in table_row(show, "target p-b")
    cli("proposal", "show", 999, home=net).refused("no proposal 999")

    # A proposal can be withdrawn before any vote, by its proposer only.
    other = submit(net, plan, dev=1)
    cli("proposal", "cancel", other, "--dev", 0, home=net).refused("only the proposer may do this")
    cli("proposal", "cancel", other, "--dev", 1, home=net).ok()
    assert "CANCELLED" in table_row(cli("proposal", "list", home=net).out, str(other))


# ---------------------------------------------------------------- rounds


def test_round_open_commit_show(net, demo, tmp_path):
    from fedchain.models import initial_state
    from fedchain.plan import load_plan
    from fedchain.serialize import state_dict_to_file

    register(net, demo, "r-open", 0).ok()
    register(net, demo, "r-only-member-1", 1, "--requester", "dev-1").ok()  # proposer is member 0
    plan = write_plan(tmp_path / "plan.json", demo, ["r-open", "r-only-member-1"], rounds=2)
    pid = submit(net, plan)
    cli("round", "open", pid, "--dev", 9, home=net).refused("the proposal is not approved", "active")
    approve(net, pid)
    update = tmp_path / "update.safetensors"
    p = load_plan(plan)
    state_dict_to_file(initial_state(p.model, p.seed), update)

    cli("round", "open", pid, "--dev", 0, home=net).refused("only the coordinator may do this")
    r = cli("round", "open", pid, "--dev", 9, home=net).ok()
    assert f"round 1 of proposal {pid} open" in r.out
    cli("round", "open", pid, 1, "--dev", 9, home=net).refused("rounds must be opened in order")

    commit = ("round", "commit", pid, "--update", update, "--samples", 42)
    cli(*commit, "--dataset", "r-open", "--dev", 0, home=net).ok()
    cli(*commit, "--dataset", "r-open", "--dev", 0, home=net).refused("already committed")
    cli(*commit, "--dataset", "r-open", "--dev", 0, "--no-precheck", home=net).refused("already committed")
    cli(*commit, "--dataset", "r-open", "--dev", 1, home=net).refused("not the owner of the dataset")
    cli(*commit, "--dataset", "r-open", "--dev", 1, "--no-precheck", home=net).refused("not the owner of the dataset")
    register(net, demo, "r-not-a-target", 2).ok()
    cli(*commit, "--dataset", "r-not-a-target", "--dev", 2, home=net).refused("not a target of the proposal")
    cli(*commit, "--dataset", "r-not-a-target", "--dev", 2, "--no-precheck", home=net).refused(
        "not a target of the proposal")
    # Refused before anything is pinned (pre-check) ...
    cli(*commit, "--dataset", "r-only-member-1", "--dev", 1, home=net).refused(
        "the dataset's policy does not admit the proposal: requester not allowed", "r-only-member-1")
    # ... and by the contract itself, with the same readable reason.
    cli(*commit, "--dataset", "r-only-member-1", "--dev", 1, "--no-precheck", home=net).refused(
        "the dataset's policy does not admit the proposal: requester not allowed (dataset r-only-member-1)")

    show = cli("round", "show", pid, home=net).ok().out
    assert "OPEN" in show and "1 (min 1)" in table_row(show, "committed")
    assert "r-open" in table_row(show, "dev-0 0xf39F…2266") and "42 samples" in show
    cli("round", "show", pid, 2, home=net).refused("round 2", "has not been opened")
    cli(*commit, 2, "--dataset", "r-open", "--dev", 0, home=net).refused("the round is not open", "phase none")
    cli(*commit, 2, "--dataset", "r-open", "--dev", 0, "--no-precheck", home=net).refused(
        "the round is not open", "phase none")

    # A bad update file is refused before anything reaches the chain.
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model")
    assert cli("round", "commit", pid, "--update", junk, "--samples", 1, "--dataset", "r-open", "--dev", 0,
               home=net).code == 1


# ---------------------------------------------------------------- members


def test_member_admit_by_motion(net):
    new = dev_identity(4, name="st-mary")
    r = cli("member", "propose-admit", "st-mary", new.address, "0x" + new.x25519_public.hex(), "--dev", 0, home=net).ok()
    motion = int(re.search(r"motion (\d+)", r.out).group(1))
    cli("member", "vote", motion, "yes", "--dev", 0, home=net).ok()
    cli("member", "vote", motion, "yes", "--dev", 1, home=net).ok()
    cli("member", "vote", motion, "no", "--dev", 1, home=net).refused("already voted")
    cli("member", "vote", motion, "yes", "--dev", 7, home=net).refused("not a member")
    cli("member", "vote", motion, "maybe", "--dev", 2, home=net).refused("'yes' or 'no'")
    cli("member", "finalize", motion, "--dev", 0, home=net).refused("the voting period is still running")
    assert "admit" in table_row(cli("member", "motions", home=net).ok().out, str(motion))
    cli("chain", "mine", 4, home=net).ok()
    assert "APPROVED" in cli("member", "finalize", motion, "--dev", 2, home=net).ok().out
    listing = cli("member", "list", home=net).ok().out
    assert "st-mary" in table_row(listing, "5") and new.address in listing
    cli("member", "propose-admit", "bad", "0x1234", "0x" + "00" * 32, "--dev", 0, home=net).refused("not an address")


# ---------------------------------------------------------------- bad input


def test_bad_input_is_one_clear_line(net, tmp_path):
    cli("proposal", "submit", tmp_path / "missing.toml", "--dev", 0, home=net).refused("cannot read plan", "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\npurpose = 3\n')
    r = cli("proposal", "submit", bad, "--dev", 0, home=net).refused("bad.toml", "problems in the plan")
    assert "bad.toml:2: plan field 'purpose': must be a string" in r.err  # every problem, each with its line
    cli("dataset", "policy", "whatever", "--expires", "30/06/2027", "--dev", 0, home=net).refused(
        "--expires takes an ISO date", "30/06/2027")
    cli("dataset", "policy", "whatever", "--epsilon", "-1", "--dev", 0, home=net).refused("--epsilon must be a non-negative")
    cli("dataset", "policy", "whatever", "--purpose", "x", "--dev", 0, home=net).refused("no dataset named 'whatever'")
    cli("dataset", "register", "x", "--csv", tmp_path / "no.csv", "--schema", tmp_path / "no.json", "--dev", 0,
        home=net).refused("no.json", "cannot read schema")
    cli("proposal", "vote", 1, "perhaps", "--dev", 0, home=net).refused("yes, no or abstain")
    cli("proposal", "vote", 1, "yes", home=net).refused("--identity", "--dev")
    cli("proposal", "vote", 1, "yes", "--dev", 1000, home=net).refused("dev identity index")
    cli("round", "show", 999, home=net).refused("no proposal 999")
    usage = cli("proposal", "vote", home=net)
    assert usage.code == 2 and "Traceback" not in usage.text  # click usage error


# ---------------------------------------------------------------- walkthrough


@pytest.mark.slow
def test_walkthrough_script(tmp_path):
    home = tmp_path / "walk"
    env = dict(os.environ, COLUMNS="200")
    env.pop("FEDCHAIN_HOME", None)
    t0 = time.monotonic()
    proc = subprocess.run([str(REPO / "scripts" / "walkthrough"), "--home", str(home)], capture_output=True,
                          text=True, timeout=600, env=env, cwd=REPO)
    out = proc.stdout + proc.stderr
    try:
        assert proc.returncode == 0, out[-5000:]
        assert "walkthrough OK" in out
        assert "error: already voted" in out
        assert "error: the dataset's policy does not admit the proposal: purpose not allowed (dataset hospital-c" in out
        assert "purpose not allowed (dataset hospital-c)" in out  # the contract's own revert
        assert "Traceback" not in out
        assert "state saved" in out  # chain down ran
        print(f"walkthrough took {time.monotonic() - t0:.0f} s")
    finally:
        left = anvil_pids(home.resolve())
        for pid in left:
            os.kill(pid, 9)
        assert not left, f"the walkthrough left anvil running: {left}"
