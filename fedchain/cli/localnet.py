"""A local multi-process fedchain network: anvil + js-ipfs + N hospital processes + a coordinator.

Used by ``scripts/local_network`` and the integration test. Governance set-up
(deploy, datasets, proposal, votes) is the in-process :class:`Simulation`'s, on
anvil and the IPFS daemon instead of the embedded chain and store; then
every hospital node and the coordinator run as **separate OS processes**
(``fedchain node run`` / ``fedchain coordinator run``) that talk to each other
only through the chain (anvil, JSON-RPC) and the IPFS daemon (js-ipfs, Kubo
RPC). All keys are public dev keys (hospital i = dev account i, the coordinator
n, the auditor n + 1): DEV ONLY.

Every process is managed by mirakuru (:class:`RoleProcess` for the roles, the
anvil manager; js-ipfs by its own manager), which signals whole process groups
and sweeps up anything left at interpreter exit. Anvil keeps its state in
``root/anvil-state.json`` and both services restart on the same address
(:meth:`LocalNetwork.restart_chain`, :meth:`LocalNetwork.restart_ipfs`), so the
fault tests can take them away under running role processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Sequence

import mirakuru

from fedchain.cli.simulation import Simulation
from fedchain.contracts.anvil import Anvil
from fedchain.contracts.bindings import Chain, Deployment
from fedchain.errors import FedchainError
from fedchain.ipfs.daemon import JsIpfsDaemon
from fedchain.ipfs.kubo import KuboStore
from fedchain.network import NetworkConfig
from fedchain.sample_data import demo_plan



class RoleProcess(mirakuru.SimpleExecutor):
    """One ``fedchain node run`` / ``coordinator run`` process (its own process group), output to a log."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[Any] = open(log_path, "ab")  # noqa: SIM115 - kept open while the process runs
        super().__init__(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                         envvars=env, timeout=30, expected_returncode=143)  # 143: stopped by SIGTERM, as documented

    _final: int | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def poll(self) -> int | None:
        """The exit status once it ended, else None."""
        return self.process.poll() if self.process is not None else self._final

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def close(self) -> None:
        """Stop it (SIGTERM to its group, then SIGKILL) if it runs; sweep up its children either way."""
        proc = self.process
        if proc is not None:
            if proc.poll() is None:
                try:
                    self.stop()
                except mirakuru.ExecutorError:
                    self.kill()
            else:
                self.kill()  # already exited: kills stragglers of its group, forgets the process
            self._final = proc.returncode
        self._log.close()


@dataclass
class LocalNetwork:
    """Owns the processes; use as a context manager so everything stops."""

    root: Path
    hospitals: int = 3
    rounds: int = 3
    block_time: float = 1.0
    seed: int = 7
    anvil: object = None
    ipfs: object = None
    procs: dict[str, RoleProcess] = field(default_factory=dict)
    proposal_id: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    #: Extra TOML appended to every role config (e.g. a shorter ``[retry]`` for tests).
    role_config_extra: str = ""
    sim: Simulation | None = None
    #: The plan's ``[secagg]`` table (``max_dropouts``, ``phase_blocks``): the proposal runs ``mode = "secagg"``,
    #: with a round deadline just after its four phases and ``min_participants`` at the session's threshold.
    secagg: dict | None = None
    #: The plan's ``[he]`` table (``decryptor``, ``context_cid``, ``context_sha256``, as ``fedchain decryptor
    #: keygen`` prints them): the proposal runs ``mode = "he"``; ``he_url`` goes into the coordinator's config
    #: as ``[coordinator] decryptor_url`` (a ``fedchain decryptor serve`` process: :meth:`start_role` "decryptor").
    he: dict | None = None
    he_url: str | None = None

    def __enter__(self) -> "LocalNetwork":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- infrastructure ---------------------------------------------------------------

    def start_services(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.anvil = Anvil(block_time=self.block_time, state_file=self.root / "anvil-state.json").start()
        self.ipfs = JsIpfsDaemon(repo=self.root / "ipfs-repo", log_file=self.root / "ipfs.log").start()

    def restart_chain(self, down_seconds: float) -> None:
        """Stop anvil (its state is saved), stay down ``down_seconds``, start it again on the same URL."""
        self.anvil.restart(down_seconds)

    def restart_ipfs(self, down_seconds: float) -> None:
        """Stop js-ipfs (its repo stays), stay down ``down_seconds``, start it again on the same API port."""
        self.ipfs.stop()
        time.sleep(down_seconds)
        self.ipfs.start()

    def stop(self) -> None:
        for p in self.procs.values():
            p.close()
        if self.ipfs is not None:
            self.ipfs.stop()
        if self.anvil is not None:
            self.anvil.close()

    # -- governance -------------------------------------------------------------------------

    def set_up_governance(self, *, propose: bool = True, auditors: Sequence[str] = ()) -> dict:
        """Deploy, register one dataset per hospital, write the plan and the role configs; then propose,
        vote and finalize (unless ``propose`` is False: then members take it from ``plan.json``).

        ``auditors`` (X25519 keys, 0x-hex) are named in the plan beside the consortium's auditor.
        ``network.json`` in the root lets ``--home ROOT`` commands (e.g. ``fedchain console``) reach it.
        """
        store = KuboStore(self.ipfs.api_addr)
        sim = Simulation.create(self.root, hospitals=self.hospitals, seed=self.seed, chain_url=self.anvil.url,
                                store=store, approval_bps=5001, voting_period_blocks=30)
        sim.deployment.save(self.root / "deployment.json")
        NetworkConfig(chain_url=self.anvil.url, deployment_file=str(self.root / "deployment.json"),
                      store=self.ipfs.api_addr).save(self.root)
        sim.register_datasets(description="local network")
        plan = self._plan(sim, self.seed, self.rounds)
        if auditors:
            plan = plan.with_changes(auditors=list(plan.auditors) + list(auditors))
        (self.root / "plan.json").write_bytes(plan.to_canonical_bytes())
        self.sim = sim
        self._write_configs(sim.data, sim.deployment)
        info = {"members": [m.address for m in sim.members], "auditor_dev": self.hospitals + 1,
                "plan": self.root / "plan.json", "simulation": sim}
        if propose:
            self.proposal_id = pid = sim.approve(plan)  # DEV: mines past the 30-block vote instead of waiting 30 s
            info.update(proposal=pid, plan_cid=sim.fed().proposals.proposal(pid).plan_cid)
        store.close()
        return info

    def propose(self, *, rounds: int, seed: int | None = None) -> int:
        """Approve one more proposal (the same demo plan, ``rounds`` rounds); its id."""
        assert self.sim is not None, "set_up_governance() first"
        plan = self._plan(self.sim, self.seed if seed is None else seed, rounds)
        with KuboStore(self.ipfs.api_addr) as store:
            self.sim.store = store
            return self.sim.approve(plan)

    def _plan(self, sim: Simulation, seed: int, rounds: int):
        base = demo_plan(sim.data.hospitals, seed=seed)
        if self.he is not None:
            return sim.plan(base, rounds=rounds, min_participants=self.hospitals, round_deadline_blocks=120,
                            mode="he", he=dict(self.he))
        if self.secagg is None:
            return sim.plan(base, rounds=rounds, min_participants=self.hospitals, round_deadline_blocks=120)
        blocks, dropouts = int(self.secagg["phase_blocks"]), int(self.secagg.get("max_dropouts", 0))
        return sim.plan(base, rounds=rounds, min_participants=max(2, self.hospitals - dropouts), mode="secagg",
                        secagg={"max_dropouts": dropouts, "phase_blocks": blocks},
                        round_deadline_blocks=4 * blocks + 4)

    def _write_configs(self, data, deployment) -> None:
        net = (f'[network]\nchain = "{self.anvil.url}"\ndeployment = "{self.root / "deployment.json"}"\n'
               f'store = "{self.ipfs.api_addr}"\n')
        for i, h in enumerate(data.hospitals):
            (self.root / f"{h.name}.toml").write_text(
                f"poll_seconds = 0.5\n\n[identity]\ndev = {i}\n\n{net}\n"
                f'[dataset]\nname = "{h.name}"\ncsv = "{h.csv_path}"\nschema = "{h.schema_path}"\n'
                + self.role_config_extra
            )
        (self.root / "coordinator.toml").write_text(
            f"poll_seconds = 0.5\n\n[identity]\ndev = {self.hospitals}\n\n{net}\n"
            "[coordinator]\neval_grace_blocks = 30\n"
            + (f'decryptor_url = "{self.he_url}"\n' if self.he_url else "") + self.role_config_extra
        )

    # -- role processes -----------------------------------------------------------------------

    def launch(self, *, hospitals: bool = True, coordinator: bool = True, proposal: bool = True) -> None:
        """Start every hospital node and/or the coordinator as separate processes.

        ``proposal``: pass ``--proposal`` with this network's proposal (else they find what to do).
        """
        if hospitals:
            for cfg in sorted(self.root.glob("hospital-*.toml")):
                self.start_role(cfg.stem, proposal=proposal)
        if coordinator:
            self.start_role("coordinator", proposal=proposal)

    def start_role(self, name: str, *, proposal: bool = True, extra: tuple[str, ...] = ()) -> RoleProcess:
        """Start role process ``name`` (``hospital-a`` … , ``coordinator``, or ``decryptor``: ``fedchain
        decryptor serve`` with ``root/decryptor.toml``, which the caller writes); its log is appended to."""
        old = self.procs.get(name)
        if old is not None:
            old.close()
        role = name if name in ("coordinator", "decryptor") else "node"
        argv = [sys.executable, "-m", "fedchain.cli", role, "serve" if role == "decryptor" else "run",
                "--config", str(self.root / f"{name}.toml")]
        if proposal and role != "decryptor":
            argv += ["--proposal", str(self.proposal_id)]
        env = {"PYTHONUNBUFFERED": "1", "COLUMNS": "160"}
        proc = RoleProcess(name, argv + list(extra), self.root / f"{name}.log", env)
        self.codes.pop(name, None)
        self.procs[name] = proc.start()
        return proc

    def kill_role(self, name: str) -> None:
        """SIGKILL a role process (a crash: it says nothing, finishes nothing)."""
        self.procs[name].signal(signal.SIGKILL)
        self.procs[name].process.wait()

    def wait(self, timeout: float = 600.0, names: list[str] | None = None) -> dict[str, int]:
        """Wait for the role processes (``names``, default all) to exit; raise with their logs' tails
        if one fails or hangs."""
        names = list(self.procs) if names is None else names
        deadline = time.monotonic() + timeout
        while True:
            for name in names:
                code = self.procs[name].poll()
                if name not in self.codes and code is not None:
                    self.codes[name] = code
                    if code != 0:
                        raise FedchainError(f"{name} exited with {code}:\n{self.log_tail(name)}")
            if all(n in self.codes for n in names):
                return {n: self.codes[n] for n in names}
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {n}\n{self.log_tail(n)}" for n in names if n not in self.codes)
                raise FedchainError(f"network did not finish within {timeout:.0f} s:\n{tails}")
            time.sleep(0.2)

    def log_tail(self, name: str, n: int = 3000) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"

    def summary(self) -> dict:
        chain = Chain.connect(self.anvil.url)
        fed = chain.attach(Deployment.load(self.root / "deployment.json"))
        rounds = []
        for r in range(1, self.rounds + 1):
            info = fed.rounds.round_info(self.proposal_id, r)
            rounds.append({"round": r, "phase": info.phase.name, "committed": info.committed,
                           "evaluations": info.evaluations, "global_metric_ppm": info.global_metric_ppm,
                           "aggregate_cid": info.aggregate_cid})
        out = {"proposal": self.proposal_id, "rounds": rounds}
        (self.root / "summary.json").write_text(json.dumps(out, indent=2) + "\n")
        return out
