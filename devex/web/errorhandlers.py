"""Every error leaves as the contract's ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging

from apiflask import APIFlask, HTTPError
from flask import current_app, g, render_template, request
from redis import RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException

from devex.errors import DevexError
from devex_shared.storage import StorageError

log = logging.getLogger(__name__)

CODES = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


def body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def _validation_message(detail: dict) -> str:
    # detail looks like {"json": {"name": ["Missing data for required field."]}}
    parts = []
    for _location, fields in (detail or {}).items():
        if isinstance(fields, dict):
            for field, msgs in fields.items():
                text = " ".join(msgs) if isinstance(msgs, list) else str(msgs)
                parts.append(f"{field}: {text}" if field != "_schema" else text)
        else:
            parts.append(" ".join(fields) if isinstance(fields, list) else str(fields))
    return "; ".join(parts) or "Invalid input."


def _wants_page() -> bool:
    """A person's browser on a page URL gets a page; API clients always get JSON."""
    if request.path.startswith(("/api/", "/auth/")):
        return False
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html"


STORE_DOWN = "The state store is unavailable; try again shortly."
PAGE_STORE_DOWN = ("Devex cannot reach its state store right now, so it cannot show or "
                   "change your REPLs. Running REPLs keep running; try again in a moment.")
RETRY_AFTER = {"Retry-After": "5"}


def outage_response():
    """503 while Redis is down, in the caller's terms: an error page for a browser, a flash
    message for an htmx fragment, JSON for API clients. Rendering asks Redis nothing: the
    pages' helpers are told there is no logged-in user to look up."""
    if "actor" not in g:
        g.actor = None  # else the templates' context would ask Redis who is asking
    if request.headers.get("HX-Request") == "true":
        flash = render_template("_flash.html", kind="error", message=PAGE_STORE_DOWN)
        return flash, 503, {**RETRY_AFTER, "HX-Retarget": "#flash", "HX-Reswap": "innerHTML"}
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    if best == "text/html" and not request.path.startswith("/api/"):
        return render_template("error.html", status=503, message=PAGE_STORE_DOWN), 503, \
            RETRY_AFTER
    return body("unavailable", STORE_DOWN), 503, RETRY_AFTER


def register(app: APIFlask) -> None:
    app.config["HTTP_ERROR_SCHEMA"] = {
        "properties": {
            "error": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                "required": ["code", "message"],
            }
        },
        "required": ["error"],
        "type": "object",
    }
    app.config["VALIDATION_ERROR_SCHEMA"] = app.config["HTTP_ERROR_SCHEMA"]

    @app.error_processor
    def http_error(error: HTTPError):
        status = error.status_code
        if status == 400 and error.detail:
            message = _validation_message(error.detail)
        elif status == 400:  # werkzeug refused the request itself (see werkzeug_error)
            message = error.message or "The request could not be understood."
        elif status == 413:
            message = f"The request body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes."
        else:
            message = error.message
        if _wants_page():
            page = render_template("error.html", status=status, message=message)
            return page, status, error.headers
        return body(CODES.get(status, "error"), message), status, error.headers

    @app.errorhandler(HTTPException)
    def werkzeug_error(error: HTTPException):
        # APIFlask's own handler keeps only the name ("Bad Request"); a 400 says what was
        # wrong instead (a truncated body, a malformed header), never a guess about JSON.
        headers = dict(error.get_headers())
        headers.pop("Content-Type", None)
        message = (error.description or error.name) if error.code == 400 else error.name
        return app.error_callback(HTTPError(error.code, message=message, headers=headers))

    @app.errorhandler(DevexError)
    def devex_error(error: DevexError):
        return body(error.code, error.message), error.status, error.headers

    @app.errorhandler(RedisError)
    def redis_down(error: RedisError):
        log.error("Redis unavailable: %s", error)
        ops = current_app.extensions.get("devex_ops")
        if isinstance(error, RedisConnectionError | RedisTimeoutError) and ops and ops.watch:
            ops.watch.trip(error)  # the next requests answer at once instead of waiting
        return outage_response()

    @app.errorhandler(StorageError)
    def storage_down(error: StorageError):
        log.error("Storage unavailable: %s", error)
        return body("unavailable", "Storage is unavailable; try again shortly."), 503
