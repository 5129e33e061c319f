"""The HTMX dashboard: server-rendered pages over the same service layer as the JSON API.

Every action is a plain form POST answered with a redirect, so the pages work without
JavaScript; when htmx sends the request (``HX-Request``) the same view answers with just the
partial to swap in. Errors of the service layer are shown in plain words, with the status the
API would use (404 for another user's REPL, 409, 429).
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from apiflask import APIBlueprint
from flask import Response, get_flashed_messages, redirect, render_template, request, url_for

from devex import dashboard_helpers as h
from devex.dashboard_helpers import STOP_POLLING, htmx
from devex.errors import DevexError, Forbidden, NotFound
from devex.models import Repl, Status
from devex.redirects import safe_next
from devex.security import auth_ext, check_csrf, csrf_token, current_actor, devex

bp = APIBlueprint("dashboard", __name__, enable_openapi=False)

PUBLIC_ENDPOINTS = frozenset({"dashboard.login"})


# -- request plumbing ------------------------------------------------------------------


@bp.before_request
def _authenticate():
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if current_actor() is None:
        target = url_for("dashboard.login", next=_return_to())
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


@bp.app_context_processor  # also for error pages rendered outside the blueprint
def _template_helpers():
    return {
        "actor": current_actor(),
        "has_tokens": auth_ext() is not None,
        "auth_mode": devex().settings.auth_mode,
        "csrf_token": csrf_token,
        "h": h,
        "template_of": devex().components.catalog.get,
        "templates": devex().components.catalog.all(),
    }


@bp.errorhandler(DevexError)
def _service_error(error: DevexError):
    """Errors in people's words: a flash above the list for htmx, an error page otherwise."""
    headers = dict(error.headers)
    if htmx():
        headers.update({"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"})
        body = render_template("_flash.html", kind="error", message=error.message)
        return body, error.status, headers
    page = render_template("error.html", status=error.status, message=error.message)
    return page, error.status, headers


def _back(default: str = "/"):
    return redirect(safe_next(request.form.get("next"), default), code=303)


# -- pages -----------------------------------------------------------------------------


@bp.get("/login")
def login():
    nxt = safe_next(request.args.get("next"))
    if current_actor() is not None:
        return redirect(nxt)
    # The OAuth callback sends people back here with ?error=<code>: only fixed texts are
    # shown (an unknown code gets a generic one), never what the query string says.
    error = h.login_error_message(request.args.get("error"))
    return render_template(
        "login.html", next=nxt, error=error, messages=get_flashed_messages(with_categories=True)
    )


DASHBOARD_PAGE = 50  # rows per page; "Show more" brings the next ones


def _page(actor):
    """A page of the actor's REPLs from ``?cursor=`` (a stale or odd cursor: the first)."""
    try:
        return devex().repls.page(actor, DASHBOARD_PAGE, request.args.get("cursor"))
    except DevexError:
        return devex().repls.page(actor, DASHBOARD_PAGE)


@bp.get("/")
def index():
    page = _page(current_actor())
    return render_template("repls.html", repls=page.repls, page=page, form=_blank_form(),
                           errors={})


@bp.get("/repls/page")
def more():
    """The next rows for htmx's "Show more": rows plus the next "Show more"."""
    page = _page(current_actor())
    return render_template("_rows_page.html", repls=page.repls, page=page)


@bp.post("/repls")
def create():
    actor = current_actor()
    form = {
        "name": request.form.get("name", ""),
        "template": request.form.get("template", ""),
        "start": request.form.get("start") is not None,
    }
    try:
        outcome = devex().repls.create(actor, form["name"], form["template"], form["start"])
    except DevexError as error:
        return _form_error(actor, form, error)
    if not htmx():
        return redirect(url_for("dashboard.index"), code=303)
    # The new row goes to the top of the table; a fresh form replaces the old one out of band.
    # The form rides in a <template>: after a <tr> the HTML parser is in table mode and would
    # tear a bare <form> apart.
    row = render_template("_row.html", repl=outcome.repl)
    fresh = render_template("_create_form.html", form=_blank_form(), errors={}, oob=True)
    return f"{row}<template>{fresh}</template>", 201


def _form_error(actor, form: dict, error: DevexError):
    field = {"invalid_name": "name", "name_taken": "name", "invalid_template": "template"}
    errors = {field.get(error.code, "form"): error.message}
    if htmx():
        body = render_template("_create_form.html", form=form, errors=errors, oob=False)
        headers = {**error.headers, "HX-Retarget": "#create-form", "HX-Reswap": "outerHTML"}
        return body, error.status, headers
    first = devex().repls.page(actor, DASHBOARD_PAGE)
    page = render_template("repls.html", repls=first.repls, page=first, form=form,
                           errors=errors)
    return page, error.status, error.headers


def _blank_form() -> dict:
    ids = devex().components.catalog.ids()
    return {"name": "", "template": "python" if "python" in ids else "", "start": True}


@bp.get("/repls/<repl_id>")
def detail(repl_id: str):
    actor = current_actor()
    hx = htmx()
    polling = bool(hx) and hx.target == "repl-detail"
    try:
        repl = devex().repls.get(actor, repl_id)
        events = devex().repls.events(actor, repl_id)
    except NotFound:
        if polling:
            # Deleted while the page watched it: back to the list (and stop polling).
            return "", STOP_POLLING, {"HX-Redirect": url_for("dashboard.index")}
        raise
    if polling:
        status = 200 if h.is_transitional(repl) else STOP_POLLING
        return render_template("_detail.html", repl=repl, events=events), status
    return render_template("repl_detail.html", repl=repl, events=events)


@bp.get("/repls/<repl_id>/row")
def row(repl_id: str):
    """The row partial that transitional rows poll; 286 stops the polling once it is final."""
    try:
        repl = devex().repls.get(current_actor(), repl_id)
    except NotFound:
        if htmx():
            # Gone (deleted while we watched): remove the row, and polling ends with it.
            return "", 404, {"HX-Reswap": "delete"}
        raise
    status = 200 if h.is_transitional(repl) else STOP_POLLING
    return render_template("_row.html", repl=repl), status


# -- actions ---------------------------------------------------------------------------


def _after_action(repl: Repl):
    if htmx():
        return render_template("_row.html", repl=repl)
    return _back()


@bp.post("/repls/<repl_id>/start")
def start(repl_id: str):
    return _after_action(devex().repls.start(current_actor(), repl_id).repl)


@bp.post("/repls/<repl_id>/stop")
def stop(repl_id: str):
    return _after_action(devex().repls.stop(current_actor(), repl_id).repl)


@bp.post("/repls/<repl_id>/force-stop")
def force_stop(repl_id: str):
    return _after_action(devex().repls.stop(current_actor(), repl_id, force=True).repl)


@bp.post("/repls/<repl_id>/delete")
def delete(repl_id: str):
    repl = devex().repls.delete(current_actor(), repl_id).repl
    if htmx():
        return render_template("_row.html", repl=repl)
    nxt = safe_next(request.form.get("next"))
    # The detail page of a deleted REPL is about to be a 404: go back to the list instead.
    return redirect("/" if nxt.startswith(f"/repls/{repl_id}") else nxt, code=303)


@bp.get("/repls/<repl_id>/delete")
@bp.get("/repls/<repl_id>/force-stop")
def confirm(repl_id: str):
    """Without JavaScript there is no hx-confirm: this page asks instead."""
    repl = devex().repls.get(current_actor(), repl_id)
    action = request.path.rsplit("/", 1)[1]
    return render_template(
        "confirm.html",
        repl=repl,
        action=action,
        question=h.confirm_text(action, repl),
        next=safe_next(request.args.get("next")),
    )


@bp.post("/repls/<repl_id>/open")
def open_repl(repl_id: str):
    """Opens the IDE: a short-lived token for this REPL's runner, handed over in the URL's
    fragment, which browsers never send to a server (so no proxy or access log sees it);
    the runner's page keeps it for the tab and removes it from the address bar."""
    session = devex().repls.ide_session(current_actor(), repl_id)
    return redirect(f"{session['url']}#{urlencode({'token': session['token']})}", code=303)


# -- personal tokens ---------------------------------------------------------------------


def _token_service():
    ext = auth_ext()
    if ext is None:
        raise NotFound("Personal tokens are not available here.")
    return ext.tokens


def _tokens_page(new=None, form_name: str = "", error: str | None = None, status: int = 200):
    svc = _token_service()
    page = render_template(
        "tokens.html",
        tokens=svc.list(current_actor().id),
        now=svc.clock(),
        new=new,
        form_name=form_name,
        error=error,
    )
    return page, status


@bp.get("/tokens")
def tokens():
    return _tokens_page()


@bp.post("/tokens")
def create_token():
    """Answers the page itself (no redirect): the plaintext is shown this once, never kept."""
    svc = _token_service()
    name = request.form.get("name", "")
    try:
        new = svc.create(current_actor().id, name)
    except DevexError as error:
        page, _ = _tokens_page(form_name=name, error=error.message)
        return page, error.status, error.headers
    page, _ = _tokens_page(new=new)
    return page, 201, {"Cache-Control": "no-store"}


@bp.post("/tokens/<token_id>/revoke")
def revoke_token(token_id: str):
    _token_service().revoke(current_actor().id, token_id)
    if htmx():
        return ""  # the row swaps itself out
    return redirect(url_for("dashboard.tokens"), code=303)


# -- administrators ----------------------------------------------------------------------

LIVE = (Status.STARTING, Status.RUNNING, Status.STOPPING)


@bp.get("/admin")
def admin():
    actor = current_actor()
    if not actor.is_admin:
        raise Forbidden("Only administrators may see this page.", code="admin_only")
    live = [r for r in devex().repls.list_all(actor) if r.status in LIVE]
    return render_template("admin.html", repls=live)
