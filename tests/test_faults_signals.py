"""Role processes stop for a reason and say which: signals and exit codes (real processes on anvil).

* SIGTERM while a node trains: it says so, finishes the step (the update is
  committed on chain), then exits 143;
* SIGINT while the coordinator waits: it says so and exits 130 at once;
* SIGTERM while a node waits out an unreachable chain node: it abandons the
  wait at once and exits 143;
* a chain node or store that stays unreachable for the whole retry horizon:
  exit 3 or 4, with a sentence naming it.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from fedchain.cli import main
from fedchain.cli.localnet import RoleProcess
from fedchain.cli.simulation import Simulation
from fedchain.contracts.anvil import Anvil
from fedchain.ipfs.daemon import free_port
from fedchain.lifecycle import ExitCode
from fedchain.sample_data import demo_plan

pytestmark = [pytest.mark.anvil, pytest.mark.slow, pytest.mark.alone]

RETRY = "[retry]\nhorizon_seconds = 120\nfirst_wait_seconds = 0.2\nmax_wait_seconds = 1\n"


class Net:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.anvil = Anvil(state_file=root / "anvil-state.json").start()
        self.sim = Simulation.create(root, hospitals=2, seed=5, chain_url=self.anvil.url, approval_bps=5001,
                                     voting_period_blocks=8, fsync=False)
        self.sim.register_datasets()
        self.sim.deployment.save(root / "deployment.json")
        self.procs: list[RoleProcess] = []

    def network(self, *, chain: str | None = None, store: str | None = None) -> str:
        return (f'[network]\nchain = "{chain or self.anvil.url}"\ndeployment = "{self.root / "deployment.json"}"\n'
                f'store = "{store or "local:" + str(self.root / "store")}"\n')

    def node_config(self, i: int, extra: str = RETRY, **net) -> Path:
        h = self.sim.data.hospitals[i]
        path = self.root / f"{h.name}.toml"
        path.write_text(f"poll_seconds = 0.2\n[identity]\ndev = {i}\n{self.network(**net)}"
                        f'[dataset]\nname = "{h.name}"\ncsv = "{h.csv_path}"\nschema = "{h.schema_path}"\n{extra}')
        return path

    def coordinator_config(self, extra: str = RETRY, **net) -> Path:
        path = self.root / "coordinator.toml"
        path.write_text(f"poll_seconds = 0.2\n[identity]\ndev = 2\n{self.network(**net)}{extra}")
        return path

    def approve(self, **changes) -> int:
        plan = self.sim.plan(demo_plan(self.sim.data.hospitals, seed=5), rounds=1, min_participants=2, **changes)
        return self.sim.approve(plan)

    def start(self, role: str, config: Path, *args: str) -> RoleProcess:
        import sys

        proc = RoleProcess(config.stem, [sys.executable, "-m", "fedchain.cli", role, "run", "-c", str(config), *args],
                           self.root / f"{config.stem}-{len(self.procs)}.log", {"PYTHONUNBUFFERED": "1"})
        self.procs.append(proc.start())
        return proc

    def close(self) -> None:
        for p in self.procs:
            p.close()
        self.anvil.close()


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    n = Net(tmp_path_factory.mktemp("signals"))
    yield n
    n.close()


def log_of(proc: RoleProcess) -> str:
    return proc.log_path.read_text(errors="replace")


def wait_for_line(proc: RoleProcess, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in log_of(proc):
        assert proc.poll() is None, f"exited {proc.poll()} before {text!r}:\n{log_of(proc)}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n{log_of(proc)}"
        time.sleep(0.05)


def wait_exit(proc: RoleProcess, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, f"still running after {timeout} s:\n{log_of(proc)}"
        time.sleep(0.05)
    return proc.poll()


def test_sigterm_while_training_finishes_the_step_says_so_and_exits_143(net):
    pid = net.approve(local_epochs=1000)  # seconds of training: the signal lands inside the step
    net.sim.coordinator().open_round(pid, 1)
    node = net.start("node", net.node_config(0), "--proposal", str(pid))
    wait_for_line(node, "training round 1 of proposal 1")
    node.signal(signal.SIGTERM)
    assert wait_exit(node, 60) == ExitCode.TERMINATED == 143
    text = log_of(node)
    assert "received SIGTERM: finishing training round 1 of proposal 1, then stopping" in text
    assert "committed round 1" in text and "stopped by SIGTERM" in text and "exit code 143" in text
    assert net.sim.fed().rounds.commitment_of(pid, 1, net.sim.members[0].address) is not None
    assert "Traceback" not in text


def test_sigint_while_the_coordinator_waits_exits_130_at_once(net):
    coord = net.start("coordinator", net.coordinator_config(), "--no-exit-when-done")
    wait_for_line(coord, "coordinating on")
    time.sleep(1.0)  # waiting for a new block (the chain mines only on transactions)
    t0 = time.monotonic()
    coord.signal(signal.SIGINT)
    assert wait_exit(coord, 10) == ExitCode.INTERRUPTED == 130
    assert time.monotonic() - t0 < 5
    text = log_of(coord)
    assert "received SIGINT" in text and "stopped by SIGINT while waiting for the chain" in text


def test_sigterm_while_waiting_for_an_unreachable_chain_abandons_the_wait(net):
    node = net.start("node", net.node_config(1), "--no-exit-when-done")
    wait_for_line(node, "serving dataset")
    net.anvil.stop()
    try:
        wait_for_line(node, "unreachable (connection refused); retrying in", timeout=30)
        t0 = time.monotonic()
        node.signal(signal.SIGTERM)
        assert wait_exit(node, 10) == 143
        assert time.monotonic() - t0 < 5  # not the 120 s horizon
    finally:
        net.anvil.start()
    assert "stopped by SIGTERM" in log_of(node)


def test_unreachable_for_the_whole_horizon_exits_3_for_the_chain(net, capsys):
    brief = "[retry]\nhorizon_seconds = 1\nfirst_wait_seconds = 0.1\nmax_wait_seconds = 0.3\n"
    dead = f"http://127.0.0.1:{free_port()}"
    code = main(["coordinator", "run", "-c", str(net.coordinator_config(brief, chain=dead))])
    assert code == ExitCode.CHAIN_UNAVAILABLE == 3
    err = capsys.readouterr().err
    assert f"chain node unavailable at {dead}" in err and "gave up after the retry horizon" in err


def test_unreachable_for_the_whole_horizon_exits_4_for_the_store(net, capsys):
    pid = net.approve()
    net.sim.coordinator().open_round(pid, 1)  # the node now needs the plan from the store
    brief = "[retry]\nhorizon_seconds = 1\nfirst_wait_seconds = 0.1\nmax_wait_seconds = 0.3\n"
    dead = f"/ip4/127.0.0.1/tcp/{free_port()}"
    code = main(["node", "run", "-c", str(net.node_config(1, brief, store=dead)), "--proposal", str(pid)])
    assert code == ExitCode.STORE_UNAVAILABLE == 4
    err = capsys.readouterr().err
    assert f"IPFS daemon at {dead}" in err and "gave up after the retry horizon" in err
