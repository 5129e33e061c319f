"""Who is asking, and may they: session login, CSRF on cookie-authenticated changes.

Views call ``require_actor()``; it answers 401 for anonymous callers and 403 for a
cookie-authenticated change without the CSRF token, before any state is touched.
"""

from __future__ import annotations

import hmac
import secrets

from flask import current_app, g, request, session

from devex.errors import DevexError
from devex.services.repls import Actor

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"


class Unauthorized(DevexError):
    status = 401
    code = "unauthorized"


class Forbidden(DevexError):
    status = 403
    code = "forbidden"


def devex():
    """The app's clients and services (``app.extensions['devex']``)."""
    return current_app.extensions["devex"]


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def login(user_id: str) -> None:
    # A fresh session at login: nothing from before it (e.g. a planted id) survives.
    session.clear()
    session["uid"] = user_id
    session.permanent = True
    csrf_token()


def logout() -> None:
    session.clear()


def current_actor() -> Actor | None:
    if "actor" in g:
        return g.actor
    actor = None
    uid = session.get("uid")
    if uid:
        user = devex().components.store.get_user(uid)
        if user is not None:
            admins = {a.lower() for a in devex().settings.admins}
            actor = Actor(id=user.id, login=user.login, is_admin=user.login.lower() in admins)
    g.actor = actor
    return actor


def check_csrf() -> None:
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER) or request.form.get("csrf_token", "")
    expected = session.get("csrf", "")
    if not expected or not hmac.compare_digest(str(sent), str(expected)):
        raise Forbidden("Missing or wrong CSRF token.", code="csrf_failed")


def require_actor() -> Actor:
    actor = current_actor()
    if actor is None:
        raise Unauthorized("Log in first.")
    check_csrf()
    return actor
