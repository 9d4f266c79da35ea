"""Serve the console with uvicorn on the member's own machine, and print the one-time login link."""

from __future__ import annotations

import socket
from typing import Callable

import uvicorn

from fedchain.console.app import create_app
from fedchain.console.security import is_loopback
from fedchain.console.state import ConsoleState
from fedchain.errors import ConfigError

DEFAULT_PORT = 8765


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another --port)") from None
    sock.listen(64)
    return sock


def serve(state: ConsoleState, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          say: Callable[[str], None] = lambda line: print(line, flush=True)) -> None:
    """Run the console until interrupted; ``say`` prints the login link (and a warning off loopback)."""
    sock = bind(host, port)
    port = sock.getsockname()[1]
    console = create_app(state, port=port, host=host)
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if not is_loopback(host):
        say(f"WARNING: listening on {host}, reachable from other machines, without TLS; "
            "anyone on that network who sees the login link can act as you")
    model = state.model()
    role = state.role(model)
    who = f"{role.name} ({role.address})" if role.address else "no identity"
    say(f"fedchain console for {who}: {role.label}" + ("" if role.can_act else f" ({role.read_only_because})"))
    say(f"open this link once to log in (the token works for one login): "
        f"http://{shown}:{port}/login?token={console.gate.token}")
    config = uvicorn.Config(console, log_level="warning", timeout_graceful_shutdown=1, proxy_headers=False,
                            server_header=False, date_header=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
