"""Who may use the console, and how each abuse of it is stopped.

The console signs transactions with a member's key, so it is a target. Who
could abuse it, and what stops each (every line is a test in
``tests/test_console_security.py``):

* **Another user of the same machine** connects to the port (it listens on
  127.0.0.1, which every local user can reach). Nothing but ``/login`` and the
  static files answers without a session; a session is made only by the login
  token, 256 random bits printed once on the member's own terminal (never on a
  command line or in a file another user could read), compared in constant
  time (:func:`hmac.compare_digest`), and good for **one** login: a token seen
  later in a browser history or a terminal scroll-back opens nothing.
  Failed logins are counted and, past :data:`MAX_FAILED_LOGINS`, refused
  outright until the console restarts. *Residual risk*: browsers do not
  separate cookies by port, so a local user who gets the member's browser to
  visit *their* server on 127.0.0.1 receives the session cookie; sessions
  therefore expire after :data:`SESSION_IDLE_SECONDS` idle, and the console
  never keeps a key in the browser.
* **A malicious web page in the same browser** (cross-site request forgery)
  posts a form to ``http://127.0.0.1:PORT/...``. The session cookie is
  ``SameSite=Strict`` (not sent with a cross-site request) and ``HttpOnly``; every
  POST must also carry the session's CSRF token (compared in constant time),
  and a request whose ``Origin`` is not the console's, or whose
  ``Sec-Fetch-Site`` says cross-site, is refused before the form is read.
* **The same page through DNS rebinding** (its own host name re-pointed to
  127.0.0.1, so the browser thinks it is same-origin): the ``Host`` header then
  names the attacker's host, and every request whose ``Host`` is not one of the
  console's own names is refused, login and static files included.
* **Framing the console** to trick clicks (clickjacking):
  ``X-Frame-Options: DENY`` and ``frame-ancestors 'none'``.
* **Script in chain data** (a member name, a dataset name, a plan name, a
  revert reason — anything a member can put on chain): templates autoescape,
  and the Content-Security-Policy admits scripts and styles only from the
  console's own ``/static/`` (no inline script runs even if markup slipped through).
* **Changing what is signed after it was confirmed**: the confirmation page
  stores the exact action server side under a random one-time id; the final
  POST names only that id, so the browser cannot alter an argument in between.
* **Oversized requests** (a huge form or plan upload to exhaust memory):
  bodies larger than :data:`MAX_BODY_BYTES` are refused while they are read;
  a form holds at most a few fields and one file.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fedchain.plan import MAX_PLAN_BYTES

#: Largest request body (a plan upload plus the form around it).
MAX_BODY_BYTES = MAX_PLAN_BYTES + 64 * 1024
#: Failed logins before login is refused until restart.
MAX_FAILED_LOGINS = 20
#: A session unused this long is gone.
SESSION_IDLE_SECONDS = 8 * 3600
#: At most this many live sessions (the token admits one login, so one is normal).
MAX_SESSIONS = 8
#: A confirmed-but-not-yet-signed action is kept this long, and at most this many per session.
PENDING_SECONDS = 15 * 60
MAX_PENDING = 16
#: Paths served without a session (every request still passes the Host check).
PUBLIC_PREFIXES = ("/login", "/static/")

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    # not "no-referrer": browsers then send "Origin: null" with our own form posts
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(bind_host: str, port: int) -> frozenset[str]:
    """The ``Host`` header values the console answers: its own names, with the port."""
    names = {bind_host, "127.0.0.1", "localhost", "[::1]"} if is_loopback(bind_host) else {bind_host}
    shown = {f"[{n}]" if ":" in n and not n.startswith("[") else n for n in names}
    return frozenset(f"{n}:{port}".lower() for n in shown)


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two secrets (False if either is missing)."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape"))


@dataclass
class Pending:
    """An action shown on a confirmation page, waiting for its one 'sign and send'."""

    action: Any
    created: float


@dataclass
class Session:
    id: str
    csrf: str
    created: float
    seen: float
    pending: dict[str, Pending] = field(default_factory=dict)

    def add_pending(self, action: Any) -> str:
        now = time.monotonic()
        for key in [k for k, p in self.pending.items() if now - p.created > PENDING_SECONDS]:
            del self.pending[key]
        while len(self.pending) >= MAX_PENDING:
            del self.pending[next(iter(self.pending))]  # the oldest
        key = secrets.token_urlsafe(18)
        self.pending[key] = Pending(action, now)
        return key

    def take_pending(self, key: str) -> Any | None:
        """The action stored under ``key`` (once; None if unknown or expired)."""
        p = self.pending.pop(key, None)
        if p is None or time.monotonic() - p.created > PENDING_SECONDS:
            return None
        return p.action


class Gate:
    """The login token, the sessions and their CSRF tokens of one console."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.token: str | None = token or secrets.token_urlsafe(32)
        self.cookie = f"fedchain_console_{port}"
        self.failed = 0
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def login(self, candidate: str | None) -> Session | None:
        """A new session if ``candidate`` is the login token (which is then spent), else None."""
        with self._lock:
            if self.failed >= MAX_FAILED_LOGINS:
                return None
            if self.token is None or not same(candidate, self.token):
                self.failed += 1
                return None
            self.token = None  # one login per token
            now = time.monotonic()
            while len(self._sessions) >= MAX_SESSIONS:
                del self._sessions[min(self._sessions, key=lambda k: self._sessions[k].seen)]
            s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now)
            self._sessions[s.id] = s
            return s

    def session(self, cookie: str | None) -> Session | None:
        """The live session a cookie names (constant-time lookup by comparing every id)."""
        if not cookie:
            return None
        now = time.monotonic()
        with self._lock:
            found = None
            for sid, s in list(self._sessions.items()):
                if now - s.seen > SESSION_IDLE_SECONDS:
                    del self._sessions[sid]
                elif same(cookie, sid):
                    found = s
            if found is not None:
                found.seen = now
            return found

    def logout(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.id, None)

    def set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(self.cookie, session.id, httponly=True, samesite="strict", path="/")

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(self.cookie, path="/", httponly=True, samesite="strict")


class Guard:
    """ASGI middleware in front of every request: Host check, body limit, security headers, login.

    Requests for other hosts are refused (DNS rebinding); requests without a live
    session go to ``/login`` (pages) or get 401 (anything else); cross-site
    POSTs are refused before their body is read. The session is put in
    ``scope["state"]["session"]``.
    """

    def __init__(self, app: ASGIApp, gate: Gate, hosts: Iterable[str]) -> None:
        self.app = app
        self.gate = gate
        self.hosts = frozenset(h.lower() for h in hosts)
        self.origins = frozenset(f"http://{h}" for h in self.hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        send = _with_headers(send)
        host = headers.get("host", "").lower()
        if host not in self.hosts:
            await PlainTextResponse("unexpected Host header: this console answers only its own address",
                                    status_code=403)(scope, receive, send)
            return
        method = scope["method"]
        if method not in ("GET", "HEAD", "POST"):
            await PlainTextResponse("method not allowed", status_code=405)(scope, receive, send)
            return
        if method == "POST":
            origin = headers.get("origin")
            if (origin is not None and origin.lower() not in self.origins) or \
                    headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                await PlainTextResponse("cross-site request refused", status_code=403)(scope, receive, send)
                return
            length = headers.get("content-length")
            if length is None or not length.isdigit():
                await PlainTextResponse("a request body needs a Content-Length", status_code=411)(scope, receive, send)
                return
            if int(length) > MAX_BODY_BYTES:
                await PlainTextResponse(f"request body larger than {MAX_BODY_BYTES} bytes",
                                        status_code=413)(scope, receive, send)
                return
            receive = _limited(receive, MAX_BODY_BYTES)
        path = scope["path"]
        session = self.gate.session(_cookie(headers, self.gate.cookie))
        scope.setdefault("state", {})["session"] = session
        if session is None and not path.startswith(PUBLIC_PREFIXES):
            if method == "GET" and not path.startswith("/events"):
                response: Response = Response(status_code=303, headers={"location": "/login"})
            else:
                response = PlainTextResponse("log in first (use the link the console printed)", status_code=401)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _cookie(headers: Headers, name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _with_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            raw = list(message.get("headers", []))
            present = {k.lower() for k, _ in raw}
            for k, v in SECURITY_HEADERS.items():
                if k.encode() not in present:
                    raw.append((k.encode(), v.encode()))
            if b"cache-control" not in present:
                raw.append((b"cache-control", b"no-store"))
            message = {**message, "headers": raw}
        await send(message)

    return wrapped


class BodyTooLarge(Exception):
    """A request body grew past its Content-Length or the limit while being read."""


def _limited(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(f"request body larger than {limit} bytes")
        return message

    return wrapped
