"""Log lines of the long-running role processes: readable by default, JSON lines for collectors.

Every line carries the time (UTC, milliseconds), the level, the role and who
runs it, and — when the line is about one — the proposal and round::

    2026-11-02T10:11:12.345Z INFO  node DEV dev-1 (0x7099…79C8) p1 r2  committed QmX… (120 samples; train loss 0.2310, accuracy 0.912)

With ``--log-json`` each line is one JSON object instead (``time``, ``level``,
``role``, ``who``, ``dev``, ``proposal``, ``round``, ``msg`` and the event's own
fields such as ``loss``, ``accuracy``, ``cid``, ``attempt``, ``wait_s``), for
log collectors.

Code logs with the standard :mod:`logging` API; structured fields travel in
``extra={"fields": {...}}`` (see :func:`event`). Identities made from the
public dev keys are always shown as ``DEV <name> (<address>)`` so nobody
mistakes them for a real member's.

Messages quote what other parties chose (dataset and member names, revert
texts, a daemon's error): in readable lines every control character is
escaped (a newline shows as ``\\n``), so nobody can forge a log line; JSON
lines escape them by construction.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import IO, Any

__all__ = ["JsonFormatter", "TextFormatter", "event", "identity_label", "setup", "short_address"]

_ROOT = "fedchain"
_CONTEXT = ("proposal", "round")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def _one_line(text: str) -> str:
    """``text`` with every control character escaped (no forged second line)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def short_address(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}" if len(address) > 12 else address


def identity_label(name: str, address: str, dev: bool) -> str:
    """``DEV dev-1 (0x7099…79C8)`` for a dev identity, ``st-mary (0xAbC1…9f00)`` otherwise."""
    return f"{'DEV ' if dev else ''}{name} ({short_address(address)})"


def event(logger: logging.Logger, msg: str, *args: Any, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``msg % args`` with structured ``fields`` (``proposal=``, ``round=``, ``loss=`` …)."""
    logger.log(level, msg, *args, extra={"fields": fields})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class _Base(logging.Formatter):
    def __init__(self, role: str, who: str, dev: bool) -> None:
        super().__init__()
        self.role, self.who, self.dev = role, who, dev


class TextFormatter(_Base):
    """``TIME LEVEL role who pP rR  message`` (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        where = " ".join(f"{k[0]}{fields[k]}" for k in _CONTEXT if fields.get(k) is not None)
        head = f"{_timestamp(record)} {record.levelname:<5} {self.role} {_one_line(self.who)}"
        msg = _one_line(record.getMessage())
        line = f"{head} {where}  {msg}" if where else f"{head}  {msg}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(_Base):
    """One JSON object per line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "role": self.role,
            "who": self.who,
            "dev": self.dev,
        }
        fields = _fields(record)
        for key in _CONTEXT:
            if fields.get(key) is not None:
                doc[key] = fields.pop(key)
        doc["msg"] = record.getMessage()
        for key, value in fields.items():
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class _CurrentStderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record is emitted.

    A CLI command run inside a longer-lived process (a test runner, a notebook, a
    service embedding fedchain) must not keep writing to the stderr it found at set-up:
    that stream may since have been replaced and closed ("I/O operation on closed file")."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ / setStream assign it; always sys.stderr
        pass


def setup(
    *, role: str, who: str = "", dev: bool = False, json_lines: bool = False, level: int | str = logging.INFO,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send fedchain's loggers to ``stream`` (stderr) in the chosen format; returns the handler.

    Called again (a later identity label, another format) it replaces its earlier handler.
    """
    logger = logging.getLogger(_ROOT)
    for old in [h for h in logger.handlers if getattr(h, "_fedchain", False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(stream) if stream is not None else _CurrentStderr()
    handler.setFormatter((JsonFormatter if json_lines else TextFormatter)(role, who, dev))
    handler._fedchain = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level if isinstance(level, int) else level.upper())
    logger.propagate = False
    return handler
