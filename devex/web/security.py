"""Who is asking, and may they: session login, personal bearer tokens, CSRF.

Views call ``require_actor()``; it answers 401 for anonymous callers (or a bearer token
that is unknown, revoked or expired) and 403 for a cookie-authenticated change without
the CSRF token, before any state is touched. Bearer tokens count on ``/api/*`` only and
need no CSRF token: a browser never attaches an ``Authorization`` header by itself.
"""

from __future__ import annotations

import hmac
import secrets

from flask import current_app, g, request, session

from devex.errors import Forbidden, Unauthorized, Unavailable
from devex.services.api_tokens import hash_token
from devex.services.repls import Actor
from devex.web.auth import prefetch
from devex_shared.bearer import parse_bearer

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
SESSION = "session"
BEARER = "bearer"
SUSPENDED = {  # why a user (and every personal token of theirs) is refused
    "admin": "This account is suspended. Ask an administrator.",
    "github": "GitHub no longer confirms this account's access; log in again.",
}


def auth_ext():
    """Sessions, tokens and limits wired by ``devex.web.auth`` (None if not wired)."""
    return current_app.extensions.get("devex_auth")


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def login(user_id: str) -> None:
    # A fresh session at login: nothing from before it (e.g. a planted id) survives, and
    # with server-side sessions the id changes too (the old one is deleted from Redis).
    regenerate = getattr(current_app.session_interface, "regenerate", None)
    if regenerate is not None:
        session["rotating"] = True  # regenerate() leaves an empty session's id alone
        regenerate(session)
    session.clear()
    session["uid"] = user_id
    session.permanent = True
    csrf_token()
    g.pop("actor", None)
    g.pop("auth_method", None)


def logout() -> None:
    # Server-side sessions: an emptied session is deleted from Redis with its cookie.
    session.clear()
    g.pop("actor", None)
    g.pop("auth_method", None)


def _bearer(req) -> str | None:
    """The ``Authorization: Bearer`` value of an ``/api/*`` request, if any."""
    if not req.path.startswith("/api/"):
        return None
    # "" (a Bearer header without a token) is refused, never taken for no header.
    return parse_bearer(req.headers.get("Authorization"))


# Every authenticated request runs what follows: the request, g and the app are looked up
# once each and passed along (each proxy lookup costs about a microsecond).
def _wanted(req) -> list[str]:
    # A read of one REPL gets its record in the same round trip as the user's.
    return prefetch.repl_ids_read(req.view_args, req.method)


def _actor_for(user_id: str, app, req, ctx_g) -> Actor | None:
    ahead = prefetch.take(user_id)  # fetched with the credential (prefetch)
    if ahead is not None:
        user, seen = ahead.user, ahead.repls
    else:
        store = app.extensions["devex"].components.store
        user, seen = store.get_user_with_repls(user_id, _wanted(req))
    if user is None:
        return None
    # Standing (suspended, or a GitHub re-check due) from the record just read: no extra
    # round trip unless the re-check is due (devex.services.accounts).
    ext = app.extensions.get("devex_auth")
    accounts = ext.accounts if ext is not None else None
    if accounts is not None and not accounts.in_good_standing(user):
        ctx_g.refused_standing = user.suspended or "github"
        return None
    is_admin = accounts.is_admin(user) if accounts is not None else False
    return Actor(id=user.id, login=user.login, is_admin=is_admin, seen=seen)


def _token_reader(app, req):
    def read(token_hash: str) -> dict[str, str] | None:
        """A token's record, read with the records of the user it named last time."""
        ext = app.extensions["devex_auth"]
        guess = ext.owners.get(token_hash) if ext.owners is not None else None
        raw, found = app.extensions["devex"].components.store.read_with_user(
            ext.api_tokens.store.key(token_hash), "hash", guess, _wanted(req))
        if found is not None:
            prefetch.keep(prefetch.Prefetched(guess, *found))
        return raw or None

    return read


def current_actor() -> Actor | None:
    ctx_g = g._get_current_object()
    if "actor" in ctx_g:
        return ctx_g.actor
    app = current_app._get_current_object()
    req = request._get_current_object()
    actor = None
    method = None
    token = _bearer(req)
    if token is not None:
        # An explicit credential decides alone: a bad token never falls back to the cookie.
        ext = app.extensions.get("devex_auth")
        record = (ext.api_tokens.authenticate(token, _token_reader(app, req))
                  if ext is not None else None)
        if record is not None:
            actor = _actor_for(record.user_id, app, req, ctx_g)
            method = BEARER if actor is not None else None
            if actor is not None and ext.owners is not None:
                ext.owners.remember(hash_token(token), record.user_id)
        ctx_g.bearer_refused = actor is None
    else:
        if getattr(session, "store_down", False) and current_app.config[
            "SESSION_COOKIE_NAME"
        ] in request.cookies:
            raise Unavailable("Sessions are unavailable; try again shortly.")
        uid = session.get("uid")
        if uid:
            actor = _actor_for(uid, app, req, ctx_g)
            method = SESSION if actor is not None else None
            if actor is not None:
                remember = getattr(app.session_interface, "remember_owner", None)
                if remember is not None:
                    remember(session, uid)
            if ctx_g.get("refused_standing"):
                logout()  # a suspended user's session ends, server-side too
    ctx_g.actor = actor
    ctx_g.auth_method = method
    return actor


def check_csrf() -> None:
    if request.method in SAFE_METHODS or g.get("auth_method") == BEARER:
        return
    sent = request.headers.get(CSRF_HEADER) or request.form.get("csrf_token", "")
    expected = session.get("csrf", "")
    if not expected or not hmac.compare_digest(str(sent), str(expected)):
        raise Forbidden("Missing or wrong CSRF token.", code="csrf_failed")


def require_actor() -> Actor:
    actor = current_actor()
    if actor is None:
        if g.get("refused_standing"):
            raise Unauthorized(
                SUSPENDED.get(g.refused_standing, SUSPENDED["admin"]),
                code="account_suspended",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
                if g.get("bearer_refused") else None,
            )
        if g.get("bearer_refused"):
            raise Unauthorized(
                "The bearer token is unknown, revoked or expired.",
                code="invalid_token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        raise Unauthorized("Log in first.")
    check_csrf()
    return actor


def require_session_actor() -> Actor:
    """Like ``require_actor`` but refuses bearer tokens (e.g. to mint more tokens)."""
    actor = require_actor()
    if g.get("auth_method") != SESSION:
        raise Forbidden(
            "This needs a logged-in browser session, not a token.", code="session_required"
        )
    return actor


def require_admin() -> Actor:
    actor = require_actor()
    if not actor.is_admin:
        raise Forbidden("Only administrators may do this.", code="admin_only")
    return actor
