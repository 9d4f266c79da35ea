"""Line numbers of keys in TOML and JSON documents, for error messages.

``tomllib`` and ``json`` give values but not positions, so a validator that
finds five problems could only name fields, not lines. These two small
scanners map every key path of an *already decoded* document (the decoder
has accepted its syntax) to the line the key is written on:

* TOML: ``[table]`` headers and ``key = value`` lines (dotted and quoted keys
  too); keys inside inline tables, and array items, fall back to the line of
  the key that holds them;
* JSON: every object key and every array item.

A path is a tuple of keys and list indices, e.g. ``("model", "hidden", 1)``.
:func:`line_of` returns the line of a path or of its nearest written
ancestor (a missing key: the table it belongs in; the top level: line 1).
"""

from __future__ import annotations

import json
import re
from typing import Sequence

__all__ = ["KeyPath", "toml_key_lines", "json_key_lines", "line_of", "too_deep"]

KeyPath = tuple  # tuple[str | int, ...]

_HEADER = re.compile(r"\s*\[\[?\s*(?P<key>[^\]\[]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"\s*(?P<key>(?:[A-Za-z0-9_-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*')"
                  r"(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*'))*)\s*=")
_KEY_PART = re.compile(r"\s*([A-Za-z0-9_-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*')\s*\.?")


def _split_key(key: str) -> tuple[str, ...]:
    parts = []
    for m in _KEY_PART.finditer(key):
        p = m.group(1)
        if p.startswith('"'):
            p = json.loads(p)
        elif p.startswith("'"):
            p = p[1:-1]
        parts.append(p)
    return tuple(parts)


def _scan(s: str, depth: int, ml: str | None) -> tuple[int, str | None]:
    """Bracket depth and open multi-line string after reading ``s`` (one line)."""
    i, n = 0, len(s)
    while i < n:
        if ml is not None:  # inside a multi-line string
            end = s.find(ml, i)
            if end < 0:
                return depth, ml
            i, ml = end + 3, None
            continue
        c = s[i]
        if c == "#":
            break
        if s.startswith('"""', i) or s.startswith("'''", i):
            ml = s[i : i + 3]
            i += 3
            continue
        if c == '"':
            i += 1
            while i < n and s[i] != '"':
                i += 2 if s[i] == "\\" else 1
        elif c == "'":
            end = s.find("'", i + 1)
            i = n if end < 0 else end
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(depth - 1, 0)
        i += 1
    return depth, ml


def toml_key_lines(text: str) -> dict[KeyPath, int]:
    """``{key path: line}`` for the tables and keys written in a TOML text."""
    lines: dict[KeyPath, int] = {}
    prefix: tuple[str, ...] = ()
    depth, ml = 0, None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if depth == 0 and ml is None:
            m = _HEADER.match(line)
            if m and not _KEY.match(line):
                prefix = _split_key(m.group("key"))
                lines.setdefault(prefix, lineno)
                continue
            m = _KEY.match(line)
            if m:
                lines.setdefault(prefix + _split_key(m.group("key")), lineno)
                depth, ml = _scan(line[m.end():], depth, ml)
                continue
        depth, ml = _scan(line, depth, ml)
    return lines


def json_key_lines(text: str) -> dict[KeyPath, int]:
    """``{key path: line}`` for every object key and array item of a JSON text."""
    lines: dict[KeyPath, int] = {}
    decoder = json.JSONDecoder()
    ws = re.compile(r"[ \t\n\r]*")

    def line_at(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def skip(pos: int) -> int:
        return ws.match(text, pos).end()  # type: ignore[union-attr]

    def value(pos: int, path: KeyPath) -> int:
        pos = skip(pos)
        c = text[pos]
        if c == "{":
            pos = skip(pos + 1)
            if text[pos] == "}":
                return pos + 1
            while True:
                key_pos = pos
                key, pos = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
                lines.setdefault(path + (key,), line_at(key_pos))
                pos = skip(pos) + 1  # the ':'
                pos = skip(value(pos, path + (key,)))
                if text[pos] == "}":
                    return pos + 1
                pos = skip(pos + 1)  # the ','
        if c == "[":
            pos = skip(pos + 1)
            if text[pos] == "]":
                return pos + 1
            i = 0
            while True:
                lines.setdefault(path + (i,), line_at(pos))
                pos = skip(value(pos, path + (i,)))
                if text[pos] == "]":
                    return pos + 1
                pos = skip(pos + 1)
                i += 1
        _v, end = decoder.raw_decode(text, pos)
        return end

    try:
        value(0, ())
    except (ValueError, IndexError):  # not JSON after all: no positions, never an error
        return lines
    return lines


def too_deep(text: str, limit: int, *, comments: bool) -> int | None:
    """The line where bracket nesting first exceeds ``limit``, else None.

    Run *before* a decoder: ``json`` and ``tomllib`` recurse once per level, and
    a process whose recursion limit was raised (py-evm raises it to 100,000)
    overflows the C stack on a document of a few hundred thousand ``[`` --
    a crash, not an exception. Quoted strings are skipped (``\\"`` escapes
    too); with ``comments`` (TOML) so is ``#`` to the end of the line.
    """
    depth, line, quote, i, n = 0, 1, "", 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        if quote:
            if c == "\\" and quote == '"':
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "#" and comments:
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif c in "[{":
            depth += 1
            if depth > limit:
                return line
        elif c in "]}":
            depth -= 1
        i += 1
    return None


def line_of(lines: dict[KeyPath, int], path: Sequence[str | int]) -> int:
    """The line of ``path`` or of its nearest ancestor that is written down (1 at the top)."""
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return 1
