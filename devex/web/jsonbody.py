"""Reading JSON request bodies: bounded, and every failure a 400 in the error contract.

APIFlask parses bodies with webargs, which calls ``json.loads`` on the raw bytes: ~30,000
nested ``[`` make the decoder recurse until ``RecursionError`` (a 500 with a traceback in
the log), and webargs' own refusal reads "Invalid JSON body." whatever went wrong. The
loader here replaces webargs' ``json`` location: the nesting depth is checked by a flat
scan first (no recursion, linear in the body, which ``MAX_CONTENT_LENGTH`` already bounds),
then the text is decoded; anything it cannot take is ``InvalidInput`` (400,
``invalid_json``), and a chunked body longer than ``MAX_CONTENT_LENGTH`` is a 413 (werkzeug
would hand over its first 64 KiB as if that were all). Bodies are parsed inside the view's
decorator, so after the blueprints' ``before_request`` hooks have authenticated the caller.
"""

from __future__ import annotations

import json
import re

from flask import Request
from marshmallow import missing
from webargs.core import Parser, is_json
from werkzeug.exceptions import RequestEntityTooLarge

from devex.errors import InvalidInput

MAX_DEPTH = 32  # the contract's bodies nest 2 levels; 32 leaves room for any client
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


class InvalidJson(InvalidInput):
    code = "invalid_json"


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in ``text`` (brackets inside strings don't count)."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(_STRINGS.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_body(raw: bytes) -> object:
    """The JSON value of a request body, or ``InvalidJson``; empty bodies are ``missing``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJson("The request body must be JSON in UTF-8.") from None
    if not text.strip():
        return missing
    if nesting_depth(text) > MAX_DEPTH:
        raise InvalidJson(f"The JSON body nests deeper than {MAX_DEPTH} levels.")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidJson(f"The request body must be valid JSON ({_reason(exc)}).") from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    return "too deeply nested" if isinstance(exc, RecursionError) else "not JSON"


def load_json(request: Request, schema) -> object:
    """webargs location loader for ``json`` (APIFlask's ``@input`` bodies)."""
    if not is_json(request.mimetype):
        return missing
    raw = request.get_data(cache=True)
    if _cut_short(request, raw):
        raise RequestEntityTooLarge()
    return parse_body(raw)


def _cut_short(request: Request, raw: bytes) -> bool:
    """A chunked body (no Content-Length) is read up to ``MAX_CONTENT_LENGTH`` and the
    rest silently left unread by werkzeug: parsing that prefix would call a too-large body
    bad JSON. One more byte from the server's stream tells."""
    limit = request.max_content_length
    if request.content_length is not None or limit is None or len(raw) < limit:
        return False
    return bool(request.environ["wsgi.input"].read(1))


def install(parser: Parser) -> None:
    """Make ``parser`` (APIFlask's webargs parser) read JSON bodies with ``load_json``.
    webargs keeps its location loaders per class, so this applies process-wide; it is the
    same function every time, so installing twice changes nothing."""
    parser.location_loader("json")(load_json)
