"""Named errors: the service layer's (each knows its HTTP status and contract code), the
jobs' and the runtimes', and the settings'."""

from __future__ import annotations

import click


class ConfigError(click.ClickException, ValueError):
    """The configuration cannot work; raised at start-up, never per request. The message
    starts with the setting's name (``DEVEX_...``). A click error too: ``flask run`` and
    ``flask devex ...`` show it as ``Error: <message>`` and exit 2, with no traceback;
    the other entry points print the same (``devex.startup``)."""

    exit_code = 2


class DevexError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.headers = headers or {}


class InvalidInput(DevexError):
    status = 400
    code = "invalid_input"


class Unauthorized(DevexError):
    status = 401
    code = "unauthorized"


class Forbidden(DevexError):
    status = 403
    code = "forbidden"


class NotFound(DevexError):
    status = 404
    code = "not_found"


class Conflict(DevexError):
    status = 409
    code = "conflict"


class QuotaExceeded(DevexError):
    status = 429
    code = "quota_exceeded"


class Unavailable(DevexError):
    status = 503
    code = "unavailable"


class TransitionRefused(Conflict):
    code = "invalid_state"
    current = None  # the status that refused the change

    def with_status(self, status) -> TransitionRefused:
        self.current = status
        return self


class LockBusy(Exception):
    """Another job holds the REPL's lock; the job is retried later."""


class LeaseLost(LockBusy):
    """This job's hold on the REPL's lock ended (not renewed in time, or taken over): it
    must stop acting and write nothing; RQ retries it, or reconcile resumes the REPL."""


class FilesNotSaved(Exception):
    """Saving a workspace back to storage failed; nothing was removed."""


class RuntimeFailure(Exception):
    """The runtime could not bring a REPL up; the message is for people. Final: retrying
    would fail the same way."""


class RuntimeUnavailable(Exception):
    """The runtime's API failed in a way that may pass (5xx, 429, timeout, connection):
    the job is retried."""
