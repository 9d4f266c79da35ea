"""Run a local anvil (Foundry's dev chain) as a child process, managed by mirakuru.

``Anvil`` picks a free port on 127.0.0.1, starts the binary from the
repository's node_modules and waits until JSON-RPC answers (a mirakuru
``Executor`` whose start check is ``eth_chainId``); :meth:`Anvil.stop` sends
SIGTERM to its process group (anvil then writes its state file), waits, then
SIGKILLs. With ``state_file`` the chain state — mined blocks, their
transactions and logs, balances and storage; not the pending pool, not the
state *as of* earlier blocks — is loaded at start and written back at stop,
so it survives restarts. A restarted instance listens on the port it had, so
clients reconnect to the same URL (:meth:`Anvil.restart`, or mirakuru's
``stopped()`` context for "while the chain is down" tests). The child asks
the kernel for SIGTERM if this Python process dies (Linux
``PR_SET_PDEATHSIG``), and mirakuru stops every instance at interpreter exit,
so no anvil is left behind.

>>> with Anvil() as node:          # doctest: +SKIP
...     chain = Chain.connect(node.url)
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import mirakuru
from mirakuru.exceptions import AlreadyRunning, ExecutorError

from fedchain.errors import FedchainError

REPO_ROOT = Path(__file__).resolve().parent.parent
NPM_ANVIL = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
#: Environment variable naming the anvil binary to use.
ENV_VAR = "FEDCHAIN_ANVIL"
DEFAULT_CHAIN_ID = 31337


class AnvilError(FedchainError):
    """anvil is missing, would not start, or did not answer."""


def find_anvil() -> Path:
    """Locate the anvil binary.

    Order: ``$FEDCHAIN_ANVIL``; ``<repo>/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil``;
    ``anvil`` on PATH. Raises :class:`AnvilError` naming all three if none exists.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise AnvilError(f"{ENV_VAR}={env} is not an executable file")
    local = REPO_ROOT / NPM_ANVIL
    if local.is_file() and os.access(local, os.X_OK):
        return local
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    raise AnvilError(
        f"anvil not found: set {ENV_VAR}, run `npm install` in {REPO_ROOT} "
        f"(provides {NPM_ANVIL}), or put anvil on PATH"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def rpc_ready(url: str, timeout: float = 1.0) -> bool:
    """Whether a JSON-RPC server at ``url`` answers ``eth_chainId``."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return "result" in json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return False


def _setsid_and_pdeathsig() -> None:  # runs in the child between fork and exec
    os.setsid()  # its own process group, which stop() signals (what mirakuru does)
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - not Linux/glibc: mirakuru's atexit sweep still stops it
        pass


class _AnvilExecutor(mirakuru.Executor):
    """mirakuru's process manager, ready when ``eth_chainId`` answers at ``url``."""

    def __init__(self, command: list[str], url: str, log: Any, *, timeout: float, die_with_parent: bool) -> None:
        super().__init__(command, timeout=timeout, sleep=0.05, stdin=subprocess.DEVNULL, stdout=log,
                         stderr=subprocess.STDOUT)
        self.url = url
        self.die_with_parent = die_with_parent

    @property
    def _popen_kwargs(self) -> dict[str, Any]:
        kwargs = super()._popen_kwargs
        if self.die_with_parent and sys.platform.startswith("linux"):
            kwargs["preexec_fn"] = _setsid_and_pdeathsig
        return kwargs

    def pre_start_check(self) -> bool:  # something already answers there: not ours to start
        return rpc_ready(self.url, timeout=0.2)

    def after_start_check(self) -> bool:
        return rpc_ready(self.url, timeout=1.0)


class Anvil:
    """One anvil process. Use as a context manager or call :meth:`start` / :meth:`stop`.

    :param port: TCP port on 127.0.0.1 (default: a free one, kept across restarts).
    :param state_file: load state from and save it to this JSON file (``--state``).
    :param chain_id: chain id (anvil's default 31337).
    :param accounts: number of prefunded dev accounts.
    :param block_time: seconds between blocks; ``None`` = mine on every transaction.
    :param hardfork: EVM hardfork name (default: anvil's own).
    :param extra_args: further command-line arguments.
    :param binary: anvil binary (default: :func:`find_anvil`).
    :param die_with_parent: ask the kernel to SIGTERM anvil when the thread that
        started it exits (Linux ``PR_SET_PDEATHSIG``) - a guard against orphans if
        Python is killed. Start from a long-lived thread, or pass False.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        state_file: str | Path | None = None,
        chain_id: int = DEFAULT_CHAIN_ID,
        accounts: int = 10,
        block_time: float | None = None,
        hardfork: str | None = None,
        extra_args: tuple[str, ...] | list[str] = (),
        binary: str | Path | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.requested_port = port
        self.port: int | None = None
        self.host = "127.0.0.1"
        self.state_file = Path(state_file) if state_file else None
        self.chain_id = chain_id
        self.accounts = accounts
        self.block_time = block_time
        self.hardfork = hardfork
        self.extra_args = list(extra_args)
        self.binary = Path(binary) if binary else None
        self.die_with_parent = die_with_parent
        self._executor: _AnvilExecutor | None = None
        self._last_port: int | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ properties

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (only while started)."""
        if self.port is None:
            raise AnvilError("anvil is not running")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running anvil, else ``None``."""
        proc = self._executor.process if self._executor is not None else None
        return proc.pid if proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._executor is not None and self._executor.running()

    def command(self, port: int) -> list[str]:
        """The command line used to start anvil on ``port``."""
        binary = self.binary or find_anvil()
        cmd = [
            str(binary),
            "--host", self.host,
            "--port", str(port),
            "--chain-id", str(self.chain_id),
            "--accounts", str(self.accounts),
        ]
        if self.block_time is not None:
            cmd += ["--block-time", str(self.block_time)]
        if self.hardfork:
            cmd += ["--hardfork", self.hardfork]
        if self.state_file is not None:
            cmd += ["--state", str(self.state_file)]
        return cmd + self.extra_args

    # ------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 30.0) -> "Anvil":
        """Start anvil and wait until it answers JSON-RPC; returns ``self``.

        A restart uses the port of the previous run (clients keep their URL).
        """
        with self._lock:
            if self.running:
                return self
            if self.state_file is not None:
                self.state_file.parent.mkdir(parents=True, exist_ok=True)
            fixed = self.requested_port or self._last_port
            attempts = 1 if fixed else 3
            last_error = ""
            for _ in range(attempts):
                port = fixed or free_port(self.host)
                if self._log is None:
                    self._log = tempfile.NamedTemporaryFile(prefix="anvil-", suffix=".log")
                executor = _AnvilExecutor(self.command(port), f"http://{self.host}:{port}", self._log,
                                          timeout=timeout, die_with_parent=self.die_with_parent)
                try:
                    executor.start()
                except AlreadyRunning:
                    raise AnvilError(f"something already answers JSON-RPC on port {port}") from None
                except mirakuru.TimeoutExpired:
                    raise AnvilError(f"anvil did not answer on port {port} within {timeout:.0f}s:\n"
                                     f"{self.log_tail()}") from None
                except ExecutorError:  # exited during start-up (port taken, bad arguments)
                    last_error = self.log_tail()
                    continue
                self._executor, self.port, self._last_port = executor, port, port
                return self
            raise AnvilError(f"anvil exited during start-up:\n{last_error}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop anvil: SIGTERM to its group, wait up to ``timeout`` (state is saved), then SIGKILL."""
        with self._lock:
            self._stop(timeout)

    def _stop(self, timeout: float = 10.0) -> None:
        executor, self._executor = self._executor, None
        self.port = None
        if executor is not None:
            executor._timeout = timeout
            try:
                executor.stop()
            except ExecutorError:  # it exited with an error status: it is gone all the same
                executor.kill()

    def restart(self, down_seconds: float = 0.0, timeout: float = 30.0) -> "Anvil":
        """Stop (state saved), stay down ``down_seconds``, start again on the same port."""
        self.stop()
        time.sleep(down_seconds)
        return self.start(timeout)

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines anvil printed."""
        if self._log is None:
            return ""
        try:
            text = Path(self._log.name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Stop and drop the log file."""
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "Anvil":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"url={self.url}" if self.port else "stopped"
        return f"<Anvil {state} pid={self.pid}>"
