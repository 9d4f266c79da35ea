"""Where a local fedchain network lives: chain URL, deployment file, content store.

``fedchain chain up`` writes ``<home>/network.json``; every other command reads
it. ``home`` is ``$FEDCHAIN_HOME`` or ``./.fedchain``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fedchain.errors import ConfigError

EMBEDDED_CHAIN = "eth-tester://"


def default_home() -> Path:
    return Path(os.environ.get("FEDCHAIN_HOME", ".fedchain"))


@dataclass
class NetworkConfig:
    """The addresses a command needs to reach a running network."""

    chain_url: str
    deployment_file: str
    store: str
    processes: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def path(home: Path) -> Path:
        return home / "network.json"

    def save(self, home: Path) -> Path:
        home.mkdir(parents=True, exist_ok=True)
        target = self.path(home)
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, target)
        return target

    @classmethod
    def load(cls, home: Path) -> "NetworkConfig":
        target = cls.path(home)
        if not target.exists():
            raise ConfigError(
                f"no network configured in {home}/ (run 'fedchain chain up' first, "
                "or pass --home / set FEDCHAIN_HOME)"
            )
        try:
            raw = json.loads(target.read_text())
            return cls(**raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{target} is not a valid network file: {exc}") from exc
