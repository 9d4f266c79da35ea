"""Start and stop a real js-ipfs daemon (Kubo-compatible RPC API) for tests and local networks.

::

    with JsIpfsDaemon() as d:            # throw-away repo, removed on stop
        store = KuboStore(d.api_addr)

    d = JsIpfsDaemon(repo=home / "ipfs-repo", log_file=home / "ipfs.log", detached=True)
    d.start()                           # keeps running after this process exits

The daemon runs ``jsipfs daemon --offline --enable-preload=false`` (offline: no
swarm dialling; no preload: ``add`` would otherwise call public preload nodes)
in its own session, with ``IPFS_PATH`` pointing at ``repo`` (initialised with
``jsipfs init --profile test`` on first use) and its API, gateway and gRPC
addresses on free 127.0.0.1 ports. A repo reused across restarts keeps its
content. ``stop()`` sends SIGTERM to the process group, waits, then SIGKILLs.

The process is managed here with ``subprocess`` rather than mirakuru (which
manages anvil and the role processes): ``fedchain ipfs up`` starts the daemon
*detached*, to outlive the command, and mirakuru by design kills at
interpreter exit every process its executors started; one code path serves
both modes.

js-ipfs locks its repo with ``repo.lock`` (considered stale only after 20 s);
after an unclean death the lock is cleared here when the pid recorded in
``fedchain-daemon.pid`` is gone, so a restart need not wait.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path

from fedchain.services import pid_alive

from .kubo import KuboStore
from .store import StoreError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PID_FILE = "fedchain-daemon.pid"
PORTS_FILE = "fedchain-ports.json"
_LOCK_STALE_S = 20.0  # js-ipfs-repo's STALE_TIME


class DaemonError(StoreError):
    """The js-ipfs daemon could not be found, initialised, started or stopped."""


class JsIpfsNotFound(DaemonError):
    """``jsipfs`` (or ``node``) is not installed where we look for it."""


def find_jsipfs() -> Path:
    """Locate ``jsipfs``: ``$FEDCHAIN_JSIPFS``, else ``<project>/node_modules/.bin/jsipfs``."""
    env = os.environ.get("FEDCHAIN_JSIPFS")
    if env:
        path = Path(env).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise JsIpfsNotFound(f"FEDCHAIN_JSIPFS={env} is not an executable file")
        return path
    path = PROJECT_ROOT / "node_modules" / ".bin" / "jsipfs"
    if not path.exists():
        raise JsIpfsNotFound(
            f"jsipfs not found at {path}; run `npm install` in {PROJECT_ROOT} "
            "(or set FEDCHAIN_JSIPFS to a jsipfs executable)"
        )
    if shutil.which("node") is None:
        raise JsIpfsNotFound("node is not on PATH; jsipfs needs Node.js (>= 18)")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` now (as Node.js does: with SO_REUSEADDR, so the
    TIME_WAIT connections a stopped daemon leaves behind do not move a restarted one elsewhere)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _tcp_port(multiaddr: object) -> int:
    """Port of a ``/ip4/127.0.0.1/tcp/N[/…]`` multiaddr, or 0."""
    if not isinstance(multiaddr, str):
        return 0
    parts = multiaddr.strip("/").split("/")
    if len(parts) >= 4 and parts[0] == "ip4" and parts[1] == "127.0.0.1" and parts[2] == "tcp":
        try:
            return int(parts[3])
        except ValueError:
            return 0
    return 0


def _stop_group(proc: subprocess.Popen | None, pid: int, grace: float) -> bool:
    """SIGTERM the process group led by ``pid``, wait ``grace`` s, then SIGKILL. True if killed."""

    def alive() -> bool:
        if proc is not None:
            return proc.poll() is None
        return pid_alive(pid)

    if not alive():
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive():
        time.sleep(0.05)
    killed = alive()
    try:  # also sweeps any straggler left in the group after the leader exited
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc is not None:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable process
            raise DaemonError(f"js-ipfs (pid {pid}) did not exit after SIGKILL") from None
    return killed


def _finalize(proc: subprocess.Popen, grace: float) -> None:
    """Safety net for a non-detached daemon nobody stopped (object collected / interpreter exit)."""
    try:
        _stop_group(proc, proc.pid, grace)
    except Exception:  # pragma: no cover - best effort at shutdown
        pass


class JsIpfsDaemon:
    """A js-ipfs daemon bound to 127.0.0.1; see the module docstring.

    ``repo=None`` creates a temporary repo that :meth:`stop` deletes. With
    ``detached=True`` the daemon outlives this Python process (stop it with
    :meth:`stop` or by signalling the process group of :attr:`pid`); otherwise it
    is stopped at the latest when the object is collected or the interpreter exits.
    """

    def __init__(
        self,
        repo: Path | str | None = None,
        *,
        jsipfs: Path | str | None = None,
        log_file: Path | str | None = None,
        detached: bool = False,
        startup_timeout: float = 90.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self._owns_repo = repo is None
        self.repo = Path(repo).expanduser().resolve() if repo is not None else None
        self._jsipfs = Path(jsipfs) if jsipfs is not None else None
        self.log_file = Path(log_file).expanduser().resolve() if log_file is not None else None
        self.detached = detached
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None
        self._api_port = 0
        self._gateway_port = 0
        self._ready = False

    # ------------------------------------------------------------------ properties

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def api_addr(self) -> str:
        """The RPC API multiaddr, e.g. ``/ip4/127.0.0.1/tcp/41234`` (what ``KuboStore`` takes)."""
        self._require_started()
        return f"/ip4/127.0.0.1/tcp/{self._api_port}"

    @property
    def url(self) -> str:
        """The RPC API base URL, e.g. ``http://127.0.0.1:41234``."""
        self._require_started()
        return f"http://127.0.0.1:{self._api_port}"

    @property
    def gateway_url(self) -> str:
        self._require_started()
        return f"http://127.0.0.1:{self._gateway_port}"

    def _require_started(self) -> None:
        if not self._api_port:
            raise DaemonError("the js-ipfs daemon has not been started")

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "JsIpfsDaemon":
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _env(self) -> dict[str, str]:
        assert self.repo is not None
        env = dict(os.environ)
        env["IPFS_PATH"] = str(self.repo)
        env.pop("IPFS_API", None)
        return env

    def start(self) -> "JsIpfsDaemon":
        """Initialise the repo if needed, configure ports, start, wait for the API."""
        if self.running:
            raise DaemonError(f"js-ipfs daemon already running (pid {self.pid})")
        jsipfs = self._jsipfs or find_jsipfs()
        if self.repo is None:
            self.repo = Path(tempfile.mkdtemp(prefix="fedchain-ipfs-"))
        self.repo.mkdir(parents=True, exist_ok=True)
        if self.log_file is None:
            self.log_file = self.repo / "daemon.log"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)

        if not (self.repo / "config").exists():
            self._init(jsipfs)
        self._clear_stale_lock()
        self._configure()

        with open(self.log_file, "ab") as log:
            log.write(f"--- fedchain: starting js-ipfs daemon, API {self._api_port} ---\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [str(jsipfs), "daemon", "--offline", "--enable-preload=false"],
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() signals all of it
                cwd=self.repo,
            )
        (self.repo / PID_FILE).write_text(f"{self._proc.pid}\n")
        if not self.detached:
            self._finalizer = weakref.finalize(self, _finalize, self._proc, self.stop_timeout)
        try:
            self._wait_ready()
            self._ready = True
        except BaseException:
            self._kill_and_cleanup(remove_repo=False)
            raise
        return self

    def _init(self, jsipfs: Path) -> None:
        assert self.repo is not None
        try:
            res = subprocess.run(
                [str(jsipfs), "init", "--profile", "test"],
                env=self._env(), stdin=subprocess.DEVNULL, capture_output=True, timeout=180, cwd=self.repo,
            )
        except subprocess.TimeoutExpired:
            raise DaemonError(f"`jsipfs init` in {self.repo} timed out") from None
        if res.returncode != 0 or not (self.repo / "config").exists():
            out = (res.stdout + res.stderr).decode(errors="replace").strip()[-2000:]
            raise DaemonError(f"`jsipfs init --profile test` failed in {self.repo} (exit {res.returncode}):\n{out}")

    def _clear_stale_lock(self) -> None:
        """Remove the repo lock / api file a killed daemon left behind."""
        assert self.repo is not None
        lock = self.repo / "repo.lock"
        pid_file = self.repo / PID_FILE
        old_pid = _read_pid(pid_file)
        age = time.time() - lock.stat().st_mtime if lock.exists() else None
        fresh = age is not None and age < _LOCK_STALE_S  # a live js-ipfs refreshes it every ~10 s
        if fresh and old_pid is not None and pid_alive(old_pid):
            raise DaemonError(
                f"a js-ipfs daemon (pid {old_pid}) is already running on repo {self.repo}; stop it first"
            )
        if fresh and old_pid is None:
            raise DaemonError(
                f"repo {self.repo} is locked by another process ({lock} updated {age:.0f} s ago); "
                "stop that daemon first"
            )
        # the recorded daemon is dead (or the lock is stale): its lock is ours to clear
        if lock.exists():
            _rmtree(lock)
        (self.repo / "api").unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)

    def _configure(self) -> None:
        """Point API / Gateway / RPC at free 127.0.0.1 ports.

        Ports this class chose before (recorded in ``fedchain-ports.json``) are kept
        across restarts while they are free, so the API address stays stable.
        """
        assert self.repo is not None
        path = self.repo / "config"
        config = json.loads(path.read_text())
        addrs = config.setdefault("Addresses", {})
        ports_file = self.repo / PORTS_FILE
        try:
            ours = json.loads(ports_file.read_text())
        except (OSError, ValueError):
            ours = {}
        used: set[int] = set()

        def pick(key: str) -> int:
            port = _tcp_port(addrs.get(key))
            if port != ours.get(key):
                port = 0  # init defaults (e.g. RPC 5003) would collide between daemons
            if not port or port in used or not _port_free(port):
                port = free_port()
                while port in used:
                    port = free_port()
            used.add(port)
            return port

        self._api_port = pick("API")
        self._gateway_port = pick("Gateway")
        rpc_port = pick("RPC")
        addrs["API"] = f"/ip4/127.0.0.1/tcp/{self._api_port}"
        addrs["Gateway"] = f"/ip4/127.0.0.1/tcp/{self._gateway_port}"
        addrs["RPC"] = f"/ip4/127.0.0.1/tcp/{rpc_port}"
        addrs["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]  # js-ipfs listens even with --offline
        config["Bootstrap"] = []
        ports_file.write_text(json.dumps({"API": self._api_port, "Gateway": self._gateway_port, "RPC": rpc_port}))
        tmp = path.with_name(f".config.{os.getpid()}.tmp")
        with open(tmp, "w") as fh:
            json.dump(config, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def _api_answers(self, timeout: float = 1.0) -> bool:
        req = urllib.request.Request(f"http://127.0.0.1:{self._api_port}/api/v0/version", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status == 200 and b"Version" in resp.read()
        except (OSError, urllib.error.URLError):
            return False

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise DaemonError(
                    f"js-ipfs daemon exited with status {code} while starting; log {self.log_file}:\n{self._log_tail()}"
                )
            if self._api_answers():
                return
            time.sleep(0.1)
        raise DaemonError(
            f"js-ipfs API on 127.0.0.1:{self._api_port} did not answer within {self.startup_timeout:.0f} s; "
            f"log {self.log_file}:\n{self._log_tail()}"
        )

    def _log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_file.read_bytes()[-n:].decode(errors="replace") if self.log_file else ""
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, grace period, SIGKILL) and reap it. Idempotent."""
        self._kill_and_cleanup(remove_repo=self._owns_repo)

    def _kill_and_cleanup(self, *, remove_repo: bool) -> None:
        proc, self._proc = self._proc, None
        ready, self._ready = self._ready, False
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if proc is not None:
            killed = _stop_group(proc, proc.pid, self.stop_timeout)
            if self.repo is not None and _read_pid(self.repo / PID_FILE) == proc.pid:
                # (a later daemon on this repo rewrites the pid file; then nothing here is ours)
                (self.repo / PID_FILE).unlink(missing_ok=True)
                if killed or ready:  # it held the lock; if it died uncleanly the lock is stale
                    _rmtree(self.repo / "repo.lock")
                (self.repo / "api").unlink(missing_ok=True)  # js-ipfs leaves it even on SIGTERM
        if remove_repo and self.repo is not None and self.repo.exists():
            _rmtree(self.repo)
            self._api_port = 0

    def store(self, **kwargs):
        """A :class:`~ipfs.kubo.KuboStore` talking to this daemon."""
        return KuboStore(self.api_addr, **kwargs)

    def __repr__(self) -> str:
        state = f"pid {self.pid}, API {self._api_port}" if self.running else "stopped"
        return f"JsIpfsDaemon(repo={str(self.repo)!r}, {state})"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _rmtree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
