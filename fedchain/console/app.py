"""The console's web application (Starlette, Jinja2 templates with autoescape, no CDN).

Pages are rendered on the server from :mod:`fedchain.console.views`; the one
script (``static/console.js``, written here) listens to ``/events`` (server-sent
events: the block height, the read model's last event block, the audit
version) and re-fetches the page's live parts when the chain changed, so a vote
cast elsewhere appears without a reload.

Every action goes through three steps: ``POST /prepare`` (the form: inputs
checked, the contracts asked by dry run) shows the confirmation page or the
contracts' refusal; ``POST /act/{id}`` signs and sends exactly the confirmed
action and shows the transaction or the named revert. See
:mod:`fedchain.console.security` for who could abuse the console and what
stops them.

Pages for features that come later (models, privacy budgets) are listed in
:data:`PAGES` with ``later`` set: their place in the navigation is kept.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response, \
    StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import fedchain.console.actions as actions
import fedchain.console.views as views
from fedchain.console.audit import AuditRunner
from fedchain.console.security import MAX_BODY_BYTES, BodyTooLarge, Gate, Guard, Session, allowed_hosts, same
from fedchain.console.state import ConsoleState, short
from fedchain.contracts.readmodel import ReadModel
from fedchain.contracts.errors import ChainRevert, ChainUnavailable
from fedchain.errors import FedchainError
from fedchain.plan import MAX_PLAN_BYTES
from fedchain.usecases import preflight

HERE = Path(__file__).parent
#: Seconds between two looks at the chain for the live updates.
PULSE_SECONDS = 1.0
#: At most this many open event streams (each holds a connection).
MAX_STREAMS = 16


@dataclass(frozen=True)
class Page:
    path: str
    title: str
    #: Set for a page whose feature comes later: what it will show.
    later: str = ""


PAGES = (
    Page("/", "Overview"),
    Page("/proposals", "Proposals"),
    Page("/datasets", "Datasets"),
    Page("/rounds", "Rounds"),
    Page("/audit", "Audit"),
    Page("/members", "Members"),
    Page("/models", "Models", later="the global models each proposal produced, with their hashes and where to fetch "
                                    "them; it arrives with the model commands"),
    Page("/budgets", "Privacy budgets", later="each dataset's differential-privacy budget and what every round spent "
                                               "of it; it arrives with the privacy-budget accounting"),
)


def templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["short"] = short
    return env


class Console:
    """One console application: state, login gate, replay runner, templates."""

    def __init__(self, state: ConsoleState, *, port: int, host: str = "127.0.0.1", token: str | None = None,
                 pulse_seconds: float = PULSE_SECONDS) -> None:
        self.state = state
        self.gate = Gate(port, token)
        self.hosts = allowed_hosts(host, port)
        self.audit = AuditRunner(state)
        self.env = templates()
        self.pulse_seconds = pulse_seconds
        self.streams = 0
        routes = [
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/", self.page_overview),
            Route("/proposals", self.page_proposals),
            Route("/proposals/{pid:int}", self.page_proposal),
            Route("/datasets", self.page_datasets),
            Route("/datasets/{name:path}", self.page_dataset),
            Route("/rounds", self.page_rounds),
            Route("/audit", self.page_audit),
            Route("/audit/replay", self.run_replay, methods=["POST"]),
            Route("/members", self.page_members),
            *[Route(p.path, self.page_later) for p in PAGES if p.later],
            Route("/prepare", self.prepare, methods=["POST"]),
            Route("/act/{key}", self.act, methods=["POST"]),
            Route("/events", self.events),
            Route("/pulse", self.pulse_json),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        self.app = Guard(Starlette(routes=routes, exception_handlers={
            ChainUnavailable: self.on_unavailable, BodyTooLarge: self.on_too_large, CsrfRefused: self.on_csrf}),
            self.gate, self.hosts)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    # -- rendering ----------------------------------------------------------------------------

    def model(self, request: Request) -> ReadModel:
        """The read model for this request; the first read fixes the block the page is stamped with.

        The browser refreshes a page when the pulse's block differs from the page's
        ``data-events``. Stamping it with a block read *after* the content was built (a
        second read in :meth:`render`) would claim events the page does not show, and a
        round closed between the two reads would never appear without a reload.
        """
        model, block = self.state.snapshot()
        if getattr(request.state, "events_block", None) is None:
            request.state.events_block = block
        return model

    def render(self, request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        session: Session | None = request.state.session
        model = self.model(request)
        head, now = self.state.head()
        role = self.state.role(model)
        base = {
            "pages": PAGES, "path": request.url.path, "role": role, "head": head, "now": now,
            "chain_url": self.state.chain.url, "chain_id": self.state.chain.chain_id,
            "csrf": session.csrf if session else "", "events_block": request.state.events_block,
            "audit_version": self.audit.version, "until_block": None,
        }
        base.update(ctx)
        return HTMLResponse(self.env.get_template(template).render(**base), status_code=status)

    def problem(self, request: Request, title: str, message: str, status: int = 400, **ctx: Any) -> HTMLResponse:
        return self.render(request, "problem.html", status=status, title=title, message=message, **ctx)

    def on_unavailable(self, request: Request, exc: Exception) -> Response:
        return PlainTextResponse(f"the chain is not reachable: {exc}", status_code=503)

    def on_csrf(self, request: Request, exc: Exception) -> Response:
        return PlainTextResponse("refused: the form carries no valid CSRF token", status_code=403)

    def on_too_large(self, request: Request, exc: Exception) -> Response:
        return PlainTextResponse(str(exc), status_code=413)

    # -- login --------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        if request.method == "POST":
            form = await request.form(max_files=0, max_fields=4)
            candidate = form.get("token")
        else:
            candidate = request.query_params.get("token")
            if candidate is None:
                return HTMLResponse(self.env.get_template("login.html").render(failed=False), status_code=200)
        session = self.gate.login(candidate if isinstance(candidate, str) else None)
        if session is None:
            return HTMLResponse(self.env.get_template("login.html").render(failed=True), status_code=403)
        response = RedirectResponse("/", status_code=303)
        self.gate.set_cookie(response, session)
        return response

    async def logout(self, request: Request) -> Response:
        session, _form = await self.checked_form(request)
        self.gate.logout(session)
        response = HTMLResponse(self.env.get_template("login.html").render(failed=False, logged_out=True))
        self.gate.clear_cookie(response)
        return response

    async def checked_form(self, request: Request, *, files: int = 0) -> tuple[Session, Any]:
        """The session and the form of a POST whose CSRF token is the session's (else 403)."""
        session: Session | None = request.state.session
        form = await request.form(max_files=files, max_fields=64, max_part_size=MAX_PLAN_BYTES + 1)
        if session is None or not same(form.get("csrf") if isinstance(form.get("csrf"), str) else None, session.csrf):
            raise CsrfRefused()
        return session, form

    # -- pages --------------------------------------------------------------------------------

    def page_overview(self, request: Request) -> Response:
        model = self.model(request)
        head, now = self.state.head()
        data = views.overview(self.state, model, self.state.role(model), head, now)
        return self.render(request, "overview.html", title="Overview", **data)

    def page_proposals(self, request: Request) -> Response:
        model = self.model(request)
        head, now = self.state.head()
        data = views.overview(self.state, model, self.state.role(model), head, now)
        return self.render(request, "proposals.html", title="Proposals", proposals=data["proposals"])

    def page_proposal(self, request: Request) -> Response:
        pid = request.path_params["pid"]
        model = self.model(request)
        head, now = self.state.head()
        data = views.proposal(self.state, model, self.state.role(model), pid, head, now)
        if data is None:
            return self.problem(request, "No such proposal", f"there is no proposal {pid}", 404)
        return self.render(request, "proposal.html", title=f"Proposal {pid}", **data)

    def page_datasets(self, request: Request) -> Response:
        model = self.model(request)
        _head, now = self.state.head()
        return self.render(request, "datasets.html", title="Datasets", datasets=views.datasets(self.state, model, now))

    def page_dataset(self, request: Request) -> Response:
        name = request.path_params["name"]
        model = self.model(request)
        head, now = self.state.head()
        data = views.dataset(self.state, model, self.state.role(model), name, head, now)
        if data is None:
            return self.problem(request, "No such dataset", f"no dataset named {name!r} is registered", 404)
        return self.render(request, "dataset.html", title=f"Dataset {name}", **data)

    def page_rounds(self, request: Request) -> Response:
        model = self.model(request)
        head, _now = self.state.head()
        return self.render(request, "rounds.html", title="Rounds", proposals=views.rounds(self.state, model, head))

    def page_audit(self, request: Request) -> Response:
        model = self.model(request)
        names = self.state.names(model)
        a = self.audit
        return self.render(request, "audit.html", title="Audit", audit=a, rows=views.audit_rows(a.report, names),
                           governance=list(getattr(a.report, "governance", []) or []))

    async def run_replay(self, request: Request) -> Response:
        await self.checked_form(request)
        self.audit.start()
        return RedirectResponse("/audit", status_code=303)

    def page_members(self, request: Request) -> Response:
        model = self.model(request)
        head, _now = self.state.head()
        data = views.motions(self.state, model, self.state.role(model), head)
        return self.render(request, "members.html", title="Members", **data)

    def page_later(self, request: Request) -> Response:
        page = next(p for p in PAGES if p.path == request.url.path)
        return self.render(request, "later.html", title=page.title, page=page)

    # -- actions ------------------------------------------------------------------------------

    async def prepare(self, request: Request) -> Response:
        session, form = await self.checked_form(request, files=1)
        upload = form.get("plan")
        plan_bytes, plan_name = None, ""
        if upload is not None and not isinstance(upload, str):
            plan_bytes = await upload.read(MAX_PLAN_BYTES + 1)
            plan_name = str(upload.filename or "")
        kind = form.get("action")
        return await run_in_threadpool(self._prepare, request, session, str(kind or ""), form, plan_bytes, plan_name)

    def _prepare(self, request: Request, session: Session, kind: str, form: Any, plan_bytes: bytes | None,
                 plan_name: str) -> Response:
        model = self.model(request)
        role = self.state.role(model)
        if not role.can_act:
            return self.problem(request, "Read-only console", f"this console offers no actions: {role.read_only_because}",
                                403)
        try:
            action = actions.build(kind, form, plan_bytes, plan_name, self.state, model)
            me = self.state.me()
            assert me is not None  # can_act implies an identity
            with self.state.lock, self.state.store() as store:
                answer = preflight.ask(me, lambda g: action.call(g, store))
        except FedchainError as exc:
            return self.problem(request, "Cannot prepare this action", str(exc), 400)
        names = self.state.names(model)
        if not answer.ok:
            return self.render(request, "refused.html", status=409, title="The contracts would refuse this",
                               action=action, answer=answer)
        key = session.add_pending(action)
        contract_address = self.state.deployment.addresses.get(answer.contract, "")
        return self.render(request, "confirm.html", title="Confirm", action=action, answer=answer, key=key,
                           signing=actions.signing_words(answer, names), contract_address=contract_address,
                           signer=names.who(answer.signer))

    async def act(self, request: Request) -> Response:
        session, _form = await self.checked_form(request)
        action = session.take_pending(request.path_params["key"])
        if action is None:
            return self.problem(request, "Nothing to sign",
                                "this confirmation was already used or has expired; start again from the page", 404)
        return await run_in_threadpool(self._act, request, action)

    def _act(self, request: Request, action: actions.Action) -> Response:
        model = self.model(request)
        if not self.state.role(model).can_act:
            return self.problem(request, "Read-only console", "this console offers no actions", 403)
        me = self.state.me()
        assert me is not None
        try:
            with self.state.lock, self.state.store() as store:
                result = action.call(me, store)
        except ChainRevert as exc:
            return self.render(request, "result.html", status=409, title="Refused by the contract", action=action,
                               ok=False, error=exc.error, phrase=exc.phrase, message=str(exc), tx=None)
        except FedchainError as exc:
            return self.render(request, "result.html", status=400, title="Not sent", action=action, ok=False,
                               error=type(exc).__name__, phrase=str(exc), message=str(exc), tx=None)
        tx = getattr(result, "tx", result)
        self.state.remember_purposes(action.purposes)
        return self.render(request, "result.html", title="Done", action=action, ok=True, tx=tx,
                           value=getattr(result, "id", None), error="", phrase="", message="")

    # -- live ---------------------------------------------------------------------------------

    def pulse(self) -> dict[str, Any]:
        _model, events = self.state.snapshot()
        head, _now = self.state.head()
        return {"block": head, "events": events, "audit": self.audit.version}

    def pulse_json(self, request: Request) -> Response:
        return JSONResponse(self.pulse())

    async def events(self, request: Request) -> Response:
        if self.streams >= MAX_STREAMS:
            return PlainTextResponse("too many open event streams", status_code=429)

        async def stream():
            self.streams += 1
            try:
                yield "retry: 2000\n\n"
                last: dict | None = None
                quiet = 0.0
                while True:
                    try:
                        pulse = await run_in_threadpool(self.pulse)
                    except FedchainError as exc:
                        pulse = {"error": str(exc)}
                    if pulse != last:
                        yield f"event: pulse\ndata: {json.dumps(pulse)}\n\n"
                        last, quiet = pulse, 0.0
                    elif quiet >= 15:
                        yield ": still here\n\n"
                        quiet = 0.0
                    await asyncio.sleep(self.pulse_seconds)
                    quiet += self.pulse_seconds
            finally:
                self.streams -= 1

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"x-accel-buffering": "no"})


class CsrfRefused(Exception):
    """A POST without the session's CSRF token."""


def create_app(state: ConsoleState, *, port: int, host: str = "127.0.0.1", token: str | None = None,
               pulse_seconds: float = PULSE_SECONDS) -> Console:
    """The console for ``state``, answering as ``host:port``; ``token`` is the one-time login token."""
    return Console(state, port=port, host=host, token=token, pulse_seconds=pulse_seconds)


__all__ = ["Console", "MAX_BODY_BYTES", "PAGES", "Page", "create_app"]
