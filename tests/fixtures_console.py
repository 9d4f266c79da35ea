"""Console fixtures: a consortium on the embedded chain and store, and logged-in browsers (TestClient).

``consortium`` (module): a :class:`Simulation` with three hospitals and their
datasets registered, a chain snapshot taken after set-up and restored after
every test. ``browser(identity)`` gives a logged-in client of a console acting
as that identity (None: no identity), with helpers to follow the three steps of
an action.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.testclient import TestClient

from fedchain.cli.simulation import Simulation
from fedchain.console import ConsoleState, create_app
from fedchain.sample_data import demo_plan

PORT = 8765
BASE = f"http://127.0.0.1:{PORT}"
TOKEN = "test-login-token-" + "x" * 32


@dataclass
class Browser:
    """A logged-in client of one console."""

    client: TestClient
    console: Any
    state: ConsoleState

    def get(self, path: str, **kw: Any):
        return self.client.get(path, **kw)

    def csrf(self) -> str:
        return csrf_of(self.get("/").text)

    def prepare(self, action: str, files: dict | None = None, **fields: Any):
        data = {"csrf": self.csrf(), "action": action, **{k: str(v) for k, v in fields.items()}}
        return self.client.post("/prepare", data=data, files=files)

    def confirm(self, page) -> Any:
        key = re.search(r'action="/act/([^"]+)"', page.text)
        assert key, f"no confirmation form on the page ({page.status_code}): {text_of(page.text)[:1500]}"
        return self.client.post(f"/act/{key.group(1)}", data={"csrf": csrf_of(page.text)})

    def do(self, action: str, files: dict | None = None, **fields: Any):
        """Prepare and confirm one action; the result page."""
        return self.confirm(self.prepare(action, files=files, **fields))


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def text_of(html: str) -> str:
    """The page's visible words (tags dropped, whitespace folded)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    sim = Simulation.create(tmp_path_factory.mktemp("console"), hospitals=3, seed=7, fsync=False)
    sim.register_datasets()
    snap = sim.chain.snapshot()
    holder = {"snap": snap}
    sim._console_snapshot = holder  # type: ignore[attr-defined]
    yield sim


@pytest.fixture
def sim(consortium):
    yield consortium
    consortium.chain.revert(consortium._console_snapshot["snap"])
    consortium._console_snapshot["snap"] = consortium.chain.snapshot()


def open_console(sim: Simulation, identity, *, read_only: bool = False, token: str = TOKEN):
    state = ConsoleState(sim.chain, sim.deployment, f"local:{sim.root / 'store'}", identity, home=sim.root,
                         read_only=read_only)
    console = create_app(state, port=PORT, token=token, pulse_seconds=0.05)
    return state, console, TestClient(console, base_url=BASE)


def login(sim: Simulation, identity, **kw: Any) -> Browser:
    state, console, client = open_console(sim, identity, **kw)
    r = client.get(f"/login?token={TOKEN}", follow_redirects=False)
    assert r.status_code == 303, r.text
    return Browser(client, console, state)


@pytest.fixture
def browser(sim):
    return lambda identity, **kw: login(sim, identity, **kw)


def plan_bytes(sim: Simulation, *, rounds: int = 2, auditors_extra: tuple = ()) -> bytes:
    plan = sim.plan(demo_plan(sim.data.hospitals, seed=7), rounds=rounds, min_participants=2)
    if auditors_extra:
        plan = plan.with_changes(auditors=list(plan.auditors) + ["0x" + k.hex() for k in auditors_extra])
    return plan.to_canonical_bytes()


__all__ = ["BASE", "Browser", "PORT", "TOKEN", "browser", "consortium", "csrf_of", "login", "open_console",
           "plan_bytes", "sim", "text_of"]
