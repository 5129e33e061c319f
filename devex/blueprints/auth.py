"""Login, logout and who-am-I. GitHub OAuth (``/auth/github``, ``/auth/github/authorized``)
is flask-dance's blueprint, wired in ``devex.web.auth``; the single local user exists only
while ``DEVEX_AUTH=local``. Logging out deletes the server-side session."""

from __future__ import annotations

import ipaddress

from apiflask import APIBlueprint
from flask import redirect, request, url_for

from devex.errors import Forbidden, NotFound, Unauthorized
from devex.extension import extension
from devex.models import User
from devex.web.redirects import safe_next
from devex.web.schemas.auth import MeOut
from devex.web.schemas.common import OkOut
from devex.web.security import (
    auth_ext,
    check_csrf,
    csrf_token,
    current_actor,
    login,
    logout,
)

bp = APIBlueprint("auth", __name__, url_prefix="/auth", tag="Authentication")

LOCAL_USER = User(id="local", login="local", name="Local user")


@bp.post("/local")
@bp.output(MeOut)
@bp.doc(
    summary="Log in as the single local user (DEVEX_AUTH=local only)",
    responses={404: "Not in local mode", 403: "The local user is suspended"},
)
def local_login():
    # The single local user is for the person at this machine: loopback callers only.
    if extension().settings.auth_mode != "local" or not _loopback(request.remote_addr):
        raise NotFound("Local login is disabled.")
    user = extension().components.store.upsert_user(LOCAL_USER)
    accounts = auth_ext().accounts
    if user.suspended:
        raise Forbidden("This account is suspended.", code="account_suspended")
    accounts.record_login(user.id, user.login)  # binds DEVEX_ADMINS names equal to "local"
    login(user.id)
    if _from_form():
        return redirect(safe_next(request.form.get("next") or request.args.get("next")))
    return _me()


@bp.post("/logout")
@bp.output(OkOut)
@bp.doc(summary="End the session", responses={403: "CSRF token missing or wrong"})
def logout_view():
    if current_actor() is not None:
        check_csrf()
    logout()
    if _from_form():
        return redirect(safe_next(request.form.get("next"), default=url_for("dashboard.login")))
    return {"ok": True}


def _loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address(address or "").is_loopback
    except ValueError:
        return False


def _from_form() -> bool:
    """A plain HTML form post (the dashboard without JavaScript) wants a redirect."""
    return request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data")


@bp.get("/me")
@bp.output(MeOut)
@bp.doc(summary="The logged-in user", responses={401: "Not logged in"})
def me():
    if current_actor() is None:
        raise Unauthorized("Log in first.")
    return _me()


def _me() -> dict:
    actor = current_actor()
    user = extension().components.store.get_user(actor.id)
    return {
        "id": user.id,
        "login": user.login,
        "name": user.name or user.login,
        "avatar_url": user.avatar_url,
        "is_admin": actor.is_admin,
        "csrf_token": csrf_token(),
    }
