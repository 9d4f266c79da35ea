"""Role configuration files (TOML) shared by ``node run`` and ``coordinator run``.

A complete example (every key; all but ``[identity]`` optional)::

    poll_seconds = 1.0                  # how often to look at the chain for something to do

    [identity]
    keystore = "keys/st-mary.json"      # encrypted keystore ('fedchain identity create')
    password_file = "keys/st-mary.pass" # its password: a file readable by its owner only (0600/0400) ...
    # password_env = "ST_MARY_PASSWORD" # ... or an environment variable (default FEDCHAIN_PASSWORD)
    # dev = 1                           # DEV ONLY instead of a keystore: anvil's public dev key 1

    [network]
    home = ".fedchain"                  # folder written by 'fedchain chain up' (network.json) ...
    # chain = "http://127.0.0.1:8545"   # ... or all three of chain, deployment and store
    # deployment = "deployment.json"
    # store = "/ip4/127.0.0.1/tcp/5001"

    [retry]                             # riding out an unreachable chain node or IPFS daemon
    horizon_seconds = 600               # keep retrying this long, then exit (code 3 or 4)
    first_wait_seconds = 0.5            # first wait; doubles each time ...
    max_wait_seconds = 30               # ... up to this
    jitter_seconds = 1.0                # plus a random 0..jitter

    [log]
    json = false                        # one JSON object per line (same as --log-json)
    level = "info"                      # debug | info | warning | error

A node config adds ``[dataset]`` (name, csv, schema) and optionally
``[limits] max_model_parameters``; a coordinator config ``[coordinator]
eval_grace_blocks`` (and, for ``mode = "he"`` plans, ``decryptor_url``); a decryptor config
``[decryptor]`` (see :mod:`fedchain.usecases.he_decryptor`). Relative paths are relative to the config file.

Passwords: with ``password_file`` the file (one line; a trailing newline is
dropped) must be a regular file owned by the user running the process with no
permission for group or others — anything looser is refused, since anyone
who can read it can sign as the member. Without it the password comes from the
environment variable ``password_env`` names, else (only when standard input is
a terminal) a prompt; a background service with neither stops with a
:class:`~fedchain.errors.ConfigError` that says what to set.
"""

from __future__ import annotations

import getpass
import os
import stat
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedchain import identity as ident
from fedchain.errors import ConfigError
from fedchain.network import NetworkConfig
from fedchain.retry import RetryPolicy

DEFAULT_PASSWORD_ENV = "FEDCHAIN_PASSWORD"
#: A password file larger than this is not a password file.
MAX_PASSWORD_FILE_BYTES = 4096
LOG_LEVELS = ("debug", "info", "warning", "error")


def read_password_file(path: Path) -> str:
    """The password in ``path``; refused unless only its owner (the current user) can read it."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise ConfigError(f"password file {path} not found") from None
    except OSError as exc:
        raise ConfigError(f"password file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"password file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"password file {path} has mode {stat.S_IMODE(st.st_mode):04o}; anyone in its group or on the "
            f"machine could read it. Make it readable by its owner only: chmod 600 {path}"
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise ConfigError(f"password file {path} belongs to another user (uid {st.st_uid}); it must be yours")
    if st.st_size > MAX_PASSWORD_FILE_BYTES:
        raise ConfigError(f"password file {path} is {st.st_size} bytes; a password file holds one line")
    try:
        text = path.read_bytes()[: MAX_PASSWORD_FILE_BYTES + 1].decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"password file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"password file {path}: {exc.strerror}") from None
    password = text[:-1] if text.endswith("\n") else text
    password = password[:-1] if password.endswith("\r") else password
    if not password:
        raise ConfigError(f"password file {path} is empty")
    return password


def read_password(what: str, *, env: str = DEFAULT_PASSWORD_ENV, file: Path | None = None,
                  interactive: bool | None = None) -> str:
    """The password of ``what``: from ``file``, else ``$env``, else a prompt on a terminal.

    Never prompts without a terminal (``interactive`` None = whether stdin is one): it
    says what to set instead, so a service fails with a sentence, not a warning and a hang.
    """
    if file is not None:
        return read_password_file(file)
    password = os.environ.get(env)
    if password is not None:
        return password
    if interactive is None:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    if not interactive:
        raise ConfigError(
            f"no password for {what}: set ${env}, or give password_file = \"...\" (mode 0600) "
            "in the role config; there is no terminal to ask on"
        )
    return getpass.getpass(f"password for {what}: ")


@dataclass
class IdentityConfig:
    keystore: Path | None
    password_env: str
    dev: int | None
    password_file: Path | None = None

    def load(self):
        if self.dev is not None:
            return ident.dev_identity(self.dev)
        assert self.keystore is not None
        return ident.load_identity(self.keystore, read_password(str(self.keystore), env=self.password_env,
                                                                file=self.password_file))


@dataclass
class RoleConfig:
    source: Path
    identity: IdentityConfig
    chain_url: str
    deployment_file: Path
    store: str
    poll_seconds: float
    raw: dict[str, Any]
    retry: RetryPolicy = RetryPolicy()
    log_json: bool = False
    log_level: str = "info"

    def section(self, name: str) -> dict[str, Any]:
        sec = self.raw.get(name)
        if not isinstance(sec, dict):
            raise ConfigError(f"{self.source}: missing [{name}] section")
        return sec

    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.source.parent / p)


def _table(raw: dict, name: str, source: Path, allowed: set[str]) -> dict:
    sec = raw.get(name, {})
    if not isinstance(sec, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    unknown = set(sec) - allowed
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in [{name}]: {', '.join(sorted(unknown))}")
    return sec


def _number(sec: dict, key: str, source: Path, table: str, default: float, low: float, high: float) -> float:
    value = sec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"{source}: [{table}] {key} must be a number between {low:g} and {high:g}")
    return float(value)


def _string(sec: dict, key: str, source: Path, table: str) -> str:
    value = sec[key]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{source}: [{table}] {key} must be a non-empty string")
    return value


def _retry(raw: dict, path: Path) -> RetryPolicy:
    sec = _table(raw, "retry", path, {"horizon_seconds", "first_wait_seconds", "max_wait_seconds", "jitter_seconds"})
    base = RetryPolicy()
    if not sec:
        return base
    horizon = _number(sec, "horizon_seconds", path, "retry", base.horizon, 0, 7 * 86400)
    first = _number(sec, "first_wait_seconds", path, "retry", base.first_wait, 0.01, 3600)
    most = _number(sec, "max_wait_seconds", path, "retry", max(base.max_wait, first), 0.01, 3600)
    if most < first:
        raise ConfigError(f"{path}: [retry] max_wait_seconds must be at least first_wait_seconds")
    jitter = _number(sec, "jitter_seconds", path, "retry", base.jitter, 0, 3600)
    return RetryPolicy(horizon=horizon, first_wait=first, max_wait=most, jitter=jitter)


def load_role_config(path: Path, *, extra_sections: set[str] = frozenset()) -> RoleConfig:
    """Parse and check a role config; every problem names the file and the key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(raw) - {"identity", "network", "poll_seconds", "retry", "log"} - set(extra_sections)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s): {', '.join(sorted(unknown))}")
    base = path.parent

    def rel(v: str) -> Path:
        p = Path(v).expanduser()
        return p if p.is_absolute() else base / p

    ids = _table(raw, "identity", path, {"keystore", "password_env", "password_file", "dev"})
    if ("keystore" in ids) == ("dev" in ids):
        raise ConfigError(f"{path}: [identity] needs exactly one of keystore = \"...\" or dev = N")
    if "dev" in ids and ({"password_env", "password_file"} & set(ids)):
        raise ConfigError(f"{path}: [identity] dev = N takes no password")
    if "password_env" in ids and "password_file" in ids:
        raise ConfigError(f"{path}: [identity] give password_file or password_env, not both")
    dev = ids.get("dev")
    if dev is not None and (isinstance(dev, bool) or not isinstance(dev, int)):
        raise ConfigError(f"{path}: [identity] dev must be an integer (a dev account index)")
    identity = IdentityConfig(
        keystore=rel(_string(ids, "keystore", path, "identity")) if "keystore" in ids else None,
        password_env=_string(ids, "password_env", path, "identity") if "password_env" in ids else DEFAULT_PASSWORD_ENV,
        dev=dev,
        password_file=rel(_string(ids, "password_file", path, "identity")) if "password_file" in ids else None,
    )
    net = _table(raw, "network", path, {"home", "chain", "deployment", "store"})
    if "chain" in net:
        missing = {"deployment", "store"} - set(net)
        if missing:
            raise ConfigError(f"{path}: [network] with chain = ... also needs {', '.join(sorted(missing))}")
        chain_url, deployment, store = str(net["chain"]), rel(net["deployment"]), str(net["store"])
    else:
        home = rel(net.get("home", ".fedchain"))
        nc = NetworkConfig.load(home)
        chain_url, deployment, store = nc.chain_url, Path(nc.deployment_file), nc.store
    if store.startswith("local:"):
        store = "local:" + str(rel(store.removeprefix("local:")))
    poll = raw.get("poll_seconds", 1.0)
    if not isinstance(poll, (int, float)) or isinstance(poll, bool) or not 0.05 <= poll <= 60:
        raise ConfigError(f"{path}: poll_seconds must be a number between 0.05 and 60")
    logs = _table(raw, "log", path, {"json", "level"})
    if not isinstance(logs.get("json", False), bool):
        raise ConfigError(f"{path}: [log] json must be true or false")
    level = logs.get("level", "info")
    if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
        raise ConfigError(f"{path}: [log] level must be one of {', '.join(LOG_LEVELS)}")
    return RoleConfig(path, identity, chain_url, deployment, store, float(poll), raw, retry=_retry(raw, path),
                      log_json=bool(logs.get("json", False)), log_level=level.lower())
