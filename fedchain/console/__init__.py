"""The governance console: fedchain in the browser for the people who vote.

``fedchain console`` serves a local web application from the member's own
fedchain: read a proposal in plain words, see which datasets it would touch and
under which policy, vote, finalize, edit a dataset's policy, follow rounds live
and re-run the audit replay. It adds no chain logic: reads come from the read
model and the use cases, and every action is a use case call that the
contracts are first asked about by dry run (:mod:`fedchain.usecases.preflight`).

Modules: :mod:`~fedchain.console.app` (routes, rendering, the three-step
actions, live events), :mod:`~fedchain.console.views` (what each page shows),
:mod:`~fedchain.console.actions` (the action catalogue),
:mod:`~fedchain.console.security` (who could abuse the console, and what stops
each), :mod:`~fedchain.console.state` (connection, identity, names, caches),
:mod:`~fedchain.console.audit` (the background replay),
:mod:`~fedchain.console.chart` (inline SVG), :mod:`~fedchain.console.server`
(uvicorn, the login link).
"""

from fedchain.console.app import PAGES, Console, create_app
from fedchain.console.server import serve
from fedchain.console.state import ConsoleState

__all__ = ["PAGES", "Console", "ConsoleState", "create_app", "serve"]
