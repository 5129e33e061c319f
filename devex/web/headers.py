"""Security headers on every response; the dashboard's pages may not be framed.

Pages (``text/html``: the dashboard and error pages) get ``X-Frame-Options: DENY`` and a
Content-Security-Policy with ``frame-ancestors 'none'`` (no clickjacking of the Stop and
Delete buttons), scripts, styles and everything else from this origin only (htmx and
``dashboard.js`` are vendored files; no inline script or style), and no ``<base>``
or plugins. Every response gets ``nosniff``.
"""

from __future__ import annotations

from apiflask import APIFlask
from flask import Response

PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.mimetype == "text/html":
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def init_headers(app: APIFlask) -> None:
    app.after_request(_security_headers)
