"""What every dashboard page shares.

Each page family is a blueprint of its own (``devex.blueprints.dashboard``,
``api_token_pages``, ``admin_pages``) made by ``page_blueprint``: a visitor who is not
logged in is sent to the login page (and back afterwards), a change needs the form's CSRF
token before anything happens, and errors of the service layer are answered in plain words
with the status the API would use. ``init_pages`` gives every template, error pages
included, what they show with.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from apiflask import APIBlueprint, APIFlask
from flask import Response, redirect, render_template, request, url_for

from devex.errors import DevexError
from devex.extension import extension
from devex.web import actions, timefmt
from devex.web.htmx import htmx
from devex.web.redirects import safe_next
from devex.web.security import auth_ext, check_csrf, csrf_token, current_actor

LOGIN_PAGE = "dashboard.login"

# What templates call by name to show a REPL and a time.
TEMPLATE_GLOBALS = {
    "ACTION_LABELS": actions.ACTION_LABELS,
    "action_endpoint": actions.action_endpoint,
    "actions_for": actions.actions_for,
    "badge_tone": actions.badge_tone,
    "confirm_text": actions.confirm_text,
    "is_transitional": actions.is_transitional,
    "ago": timefmt.ago,
    "exact_time": timefmt.exact_time,
}


def page_blueprint(name: str, import_name: str, public: Iterable[str] = ()) -> APIBlueprint:
    """A blueprint of dashboard pages (kept out of the OpenAPI document). Its views need a
    login, except those named in ``public``."""
    bp = APIBlueprint(name, import_name, enable_openapi=False)
    open_endpoints = frozenset(f"{name}.{view}" for view in public)

    @bp.before_request
    def _authenticate():
        if request.endpoint in open_endpoints:
            return None
        return _require_login()

    bp.register_error_handler(DevexError, _service_error)
    return bp


def init_pages(app: APIFlask) -> None:
    app.jinja_env.globals.update(TEMPLATE_GLOBALS)
    app.context_processor(_template_context)  # also for error pages outside the blueprints


def _require_login():
    if current_actor() is None:
        target = url_for(LOGIN_PAGE, next=_return_to())
        if htmx():
            # htmx follows this header with a full page load instead of swapping the reply.
            return Response(status=401, headers={"HX-Redirect": target})
        return redirect(target)
    check_csrf()  # before anything changes: 403 for a POST without the form's token
    return None


def _return_to() -> str:
    """Where to come back to after logging in: the page asked for, for a plain GET. For an
    action (a POST-only URL) or an htmx partial, the page the person was on (htmx's
    ``HX-Current-URL``, else the Referer) if it is on this site, else the list."""
    hx = htmx()
    if request.method == "GET" and not hx:
        return safe_next(request.full_path.rstrip("?"))
    for page in (hx.current_url if hx.request else None, request.referrer):
        local = _local_path(page)
        if local is not None:
            return local
    return "/"


def _local_path(url: str | None) -> str | None:
    """The path (and query) of ``url`` if it is a page of this site, else None."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme or parts.netloc:
        if (parts.scheme, parts.netloc) != (request.scheme, request.host):
            return None
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    checked = safe_next(target, default="")
    return checked or None


def _template_context() -> dict:
    return {
        "actor": current_actor(),
        "has_tokens": auth_ext() is not None,
        "auth_mode": extension().settings.auth_mode,
        "csrf_token": csrf_token,
        "template_of": extension().components.catalog.get,
        "templates": extension().components.catalog.all(),
    }


def _service_error(error: DevexError):
    """Errors in people's words: a flash above the list for htmx, an error page otherwise."""
    headers = dict(error.headers)
    if htmx():
        headers.update({"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"})
        body = render_template("_flash.html", kind="error", message=error.message)
        return body, error.status, headers
    page = render_template("error.html", status=error.status, message=error.message)
    return page, error.status, headers
