"""Role configuration files (TOML) shared by ``node run`` and ``coordinator run``.

Example::
    [identity]
    keystore = "keys/st-mary.json"   # password from $FEDCHAIN_PASSWORD (or password_env)
    # dev = 1                        # DEV ONLY instead of a keystore: anvil's public dev key 1

    [network]
    home = ".fedchain"               # folder written by 'fedchain chain up' (network.json)
    # chain = "http://127.0.0.1:8545"; deployment = "deployment.json"; store = "/ip4/127.0.0.1/tcp/5001"

    poll_seconds = 1.0               # how often to ask the chain for new events

A node config adds::
    [dataset]
    name = "st-mary-bc"
    csv = "data/st-mary.csv"
    schema = "data/st-mary.schema.json"

Relative paths are relative to the config file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedchain import identity as ident
from fedchain.errors import ConfigError
from fedchain.network import NetworkConfig


@dataclass
class IdentityConfig:
    keystore: Path | None
    password_env: str
    dev: int | None

    def load(self):
        if self.dev is not None:
            return ident.dev_identity(self.dev)
        assert self.keystore is not None
        password = os.environ.get(self.password_env)
        if password is None:
            raise ConfigError(f"set ${self.password_env} to the password of {self.keystore}")
        return ident.load_identity(self.keystore, password)


@dataclass
class RoleConfig:
    source: Path
    identity: IdentityConfig
    chain_url: str
    deployment_file: Path
    store: str
    poll_seconds: float
    raw: dict[str, Any]

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


def load_role_config(path: Path, *, extra_sections: set[str] = frozenset()) -> RoleConfig:
    """Parse and check a role config; every problem names the file and the key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(raw) - {"identity", "network", "poll_seconds"} - set(extra_sections)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s): {', '.join(sorted(unknown))}")
    base = path.parent

    def rel(v: str) -> Path:
        p = Path(v).expanduser()
        return p if p.is_absolute() else base / p

    ident = _table(raw, "identity", path, {"keystore", "password_env", "dev"})
    if ("keystore" in ident) == ("dev" in ident):
        raise ConfigError(f"{path}: [identity] needs exactly one of keystore = \"...\" or dev = N")
    identity = IdentityConfig(
        keystore=rel(ident["keystore"]) if "keystore" in ident else None,
        password_env=str(ident.get("password_env", "FEDCHAIN_PASSWORD")),
        dev=int(ident["dev"]) if "dev" in ident else None,
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
    return RoleConfig(path, identity, chain_url, deployment, store, float(poll), raw)
