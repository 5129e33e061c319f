"""Access logs without the secrets of the login: query strings of ``/auth/*`` are dropped.

GitHub sends the browser back to ``/auth/github/authorized?code=…&state=…``: the code is a
one-time credential and the state ties the login to the browser, and neither belongs in a
log that many people read. The servers write access logs themselves (werkzeug's under the
``werkzeug`` logger, gunicorn's under ``gunicorn.access``), so a logging filter on those two
loggers rewrites the request line (and any other field quoting such a URL) before any
handler formats it. Other paths keep their query strings.
"""

from __future__ import annotations

import logging
import re

ACCESS_LOGGERS = ("werkzeug", "gunicorn.access")
_AUTH_QUERY = re.compile(r"(/auth/[^\s?#\"]*)\?[^\s\"]*")


def drop_auth_queries(text: str) -> str:
    return _AUTH_QUERY.sub(r"\1", text)


class DropAuthQueries(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = drop_auth_queries(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(drop_auth_queries(a) if isinstance(a, str) else a for a in args)
        elif isinstance(args, dict):  # gunicorn's atoms: change them in place (a dict subclass)
            for key, value in list(args.items()):
                if isinstance(value, str):
                    args[key] = drop_auth_queries(value)
            if str(args.get("U", "")).startswith("/auth/"):
                args["q"] = ""
        return True


def install() -> None:
    """Add the filter to the servers' access loggers (once per process)."""
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropAuthQueries) for f in logger.filters):
            logger.addFilter(DropAuthQueries())
