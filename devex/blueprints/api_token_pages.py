"""The dashboard's personal API token pages: list, create (the plaintext shown this once),
revoke. Like the JSON routes (``api_tokens``), they need a logged-in session."""

from __future__ import annotations

from flask import redirect, render_template, request, url_for

from devex.errors import DevexError, NotFound
from devex.services.api_tokens import ApiTokenService
from devex.web.htmx import htmx
from devex.web.pages import page_blueprint
from devex.web.security import auth_ext, current_actor

bp = page_blueprint("api_token_pages", __name__)


def _token_service() -> ApiTokenService:
    ext = auth_ext()
    if ext is None:
        raise NotFound("Personal tokens are not available here.")
    return ext.api_tokens


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
def index():
    return _tokens_page()


@bp.post("/tokens")
def create():
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
def revoke(token_id: str):
    _token_service().revoke(current_actor().id, token_id)
    if htmx():
        return ""  # the row swaps itself out
    return redirect(url_for("api_token_pages.index"), code=303)
