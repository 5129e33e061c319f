"""The HTMX dashboard's REPL pages (and its login page): server-rendered pages over the same
service layer as the JSON API.

Every action is a plain form POST answered with a redirect, so the pages work without
JavaScript; when htmx sends the request (``HX-Request``) the same view answers with just the
partial to swap in. Errors of the service layer are shown in plain words, with the status the
API would use (404 for another user's REPL, 409, 429): see ``devex.web.pages``. The token
and admin pages are ``api_token_pages`` and ``admin_pages``.
"""

from __future__ import annotations

from urllib.parse import urlencode

from flask import get_flashed_messages, redirect, render_template, request, url_for

from devex.errors import DevexError, NotFound
from devex.extension import extension
from devex.models import Repl
from devex.web.actions import confirm_text, is_transitional
from devex.web.htmx import STOP_POLLING, htmx
from devex.web.login_errors import login_error_message
from devex.web.pages import page_blueprint
from devex.web.redirects import safe_next
from devex.web.security import current_actor

bp = page_blueprint("dashboard", __name__, public={"login"})


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
    error = login_error_message(request.args.get("error"))
    return render_template(
        "login.html", next=nxt, error=error, messages=get_flashed_messages(with_categories=True)
    )


DASHBOARD_PAGE = 50  # rows per page; "Show more" brings the next ones


def _page(actor):
    """A page of the actor's REPLs from ``?cursor=`` (a stale or odd cursor: the first)."""
    try:
        return extension().repls.page(actor, DASHBOARD_PAGE, request.args.get("cursor"))
    except DevexError:
        return extension().repls.page(actor, DASHBOARD_PAGE)


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
        outcome = extension().repls.create(actor, form["name"], form["template"], form["start"])
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
    first = extension().repls.page(actor, DASHBOARD_PAGE)
    page = render_template("repls.html", repls=first.repls, page=first, form=form,
                           errors=errors)
    return page, error.status, error.headers


def _blank_form() -> dict:
    ids = extension().components.catalog.ids()
    return {"name": "", "template": "python" if "python" in ids else "", "start": True}


@bp.get("/repls/<repl_id>")
def detail(repl_id: str):
    actor = current_actor()
    hx = htmx()
    polling = bool(hx) and hx.target == "repl-detail"
    try:
        repl = extension().repls.get(actor, repl_id)
        events = extension().repls.events(actor, repl_id)
    except NotFound:
        if polling:
            # Deleted while the page watched it: back to the list (and stop polling).
            return "", STOP_POLLING, {"HX-Redirect": url_for("dashboard.index")}
        raise
    if polling:
        status = 200 if is_transitional(repl) else STOP_POLLING
        return render_template("_detail.html", repl=repl, events=events), status
    return render_template("repl_detail.html", repl=repl, events=events)


@bp.get("/repls/<repl_id>/row")
def row(repl_id: str):
    """The row partial that transitional rows poll; 286 stops the polling once it is final."""
    try:
        repl = extension().repls.get(current_actor(), repl_id)
    except NotFound:
        if htmx():
            # Gone (deleted while we watched): remove the row, and polling ends with it.
            return "", 404, {"HX-Reswap": "delete"}
        raise
    status = 200 if is_transitional(repl) else STOP_POLLING
    return render_template("_row.html", repl=repl), status


# -- actions ---------------------------------------------------------------------------


def _after_action(repl: Repl):
    if htmx():
        return render_template("_row.html", repl=repl)
    return _back()


@bp.post("/repls/<repl_id>/start")
def start(repl_id: str):
    return _after_action(extension().repls.start(current_actor(), repl_id).repl)


@bp.post("/repls/<repl_id>/stop")
def stop(repl_id: str):
    return _after_action(extension().repls.stop(current_actor(), repl_id).repl)


@bp.post("/repls/<repl_id>/force-stop")
def force_stop(repl_id: str):
    return _after_action(extension().repls.stop(current_actor(), repl_id, force=True).repl)


@bp.post("/repls/<repl_id>/delete")
def delete(repl_id: str):
    repl = extension().repls.delete(current_actor(), repl_id).repl
    if htmx():
        return render_template("_row.html", repl=repl)
    nxt = safe_next(request.form.get("next"))
    # The detail page of a deleted REPL is about to be a 404: go back to the list instead.
    return redirect("/" if nxt.startswith(f"/repls/{repl_id}") else nxt, code=303)


@bp.get("/repls/<repl_id>/delete")
@bp.get("/repls/<repl_id>/force-stop")
def confirm(repl_id: str):
    """Without JavaScript there is no hx-confirm: this page asks instead."""
    repl = extension().repls.get(current_actor(), repl_id)
    action = request.path.rsplit("/", 1)[1]
    return render_template(
        "confirm.html",
        repl=repl,
        action=action,
        question=confirm_text(action, repl),
        next=safe_next(request.args.get("next")),
    )


@bp.post("/repls/<repl_id>/open")
def open_repl(repl_id: str):
    """Opens the IDE: a short-lived token for this REPL's runner, handed over in the URL's
    fragment, which browsers never send to a server (so no proxy or access log sees it);
    the runner's page keeps it for the tab and removes it from the address bar."""
    session = extension().repls.ide_session(current_actor(), repl_id)
    return redirect(f"{session['url']}#{urlencode({'token': session['token']})}", code=303)
