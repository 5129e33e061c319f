"""GitHub OAuth2 login with flask-dance; GitHub Enterprise hosts come from settings."""

from __future__ import annotations

import hmac
import json
import logging
import time

import requests
from apiflask import APIFlask
from flask import (
    Blueprint,
    current_app,
    g,
    make_response,
    redirect,
    request,
    session,
    url_for,
)
from flask_dance.consumer import oauth_authorized, oauth_error
from flask_dance.consumer.requests import OAuth2Session
from flask_dance.consumer.storage import NullStorage
from flask_dance.contrib.github import make_github_blueprint
from oauthlib.oauth2 import InsecureTransportError, OAuth2Error

from devex.config import Settings
from devex.extension import extension
from devex.models import User
from devex.secretbox import SecretBox
from devex.services.accounts import DOWN, OK, REFUSED, Accounts, Verdict
from devex.web import security
from devex.web.errorhandlers import body
from devex.web.login_errors import LOGIN_ERRORS
from devex.web.redirects import safe_next
from devex_shared.redact import redact

log = logging.getLogger(__name__)

STATE_KEY = "github_oauth_state"
NEXT_KEY = "login_next"  # the page to return to after the OAuth round trip


class _GitHubSession(OAuth2Session):
    """GitHub answers the granted scopes comma-separated (and may grant more than asked,
    e.g. scopes granted earlier); oauthlib calls that a scope change and raises. The
    scopes we need are checked by using them, so the token is accepted."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_compliance_hook("access_token_response", _token_answer_is_usable)

    def fetch_token(self, *args, **kwargs):
        kwargs.setdefault("timeout", current_app.extensions["devex_auth"].settings.github_timeout)
        try:
            return super().fetch_token(*args, **kwargs)
        except Warning as changed:
            token = getattr(changed, "token", None)
            if token is None:
                raise
            self.token = dict(token)
            self._client.populate_token_attributes(self.token)
            return self.token


class GitHubUnusable(requests.RequestException):
    """GitHub answered, but with an error of its own (5xx) or a web page (a proxy's)."""


def _token_answer_is_usable(response: requests.Response) -> requests.Response:
    """GitHub's token endpoint answers OAuth errors with 200 and a JSON (or form) body; a
    5xx or an HTML page is GitHub, or a proxy before it, not answering: as if unreachable
    (otherwise oauthlib would call it a refused login)."""
    if response.status_code >= 500:
        raise GitHubUnusable(f"the token endpoint answered {response.status_code}")
    if "html" in response.headers.get("Content-Type", "").lower():
        raise GitHubUnusable("the token endpoint answered a web page, not a token")
    return response


def init_github(app: APIFlask, settings: Settings, accounts: Accounts) -> Blueprint:
    """Wires the GitHub standing checks; returns flask-dance's login blueprint (under
    ``/auth``) for the app factory to register with the others."""
    web = settings.github_url.rstrip("/")
    scope = ["read:user", "read:org"] if settings.github_allowed_orgs else ["read:user"]
    bp = make_github_blueprint(
        client_id=settings.github_client_id,
        client_secret=settings.github_client_secret,
        scope=scope,
        redirect_url="/auth/github/done",
        login_url="/github",
        authorized_url="/github/authorized",
        session_class=_GitHubSession,
        storage=NullStorage(),  # the GitHub token is kept sealed per user, never in sessions
    )
    bp.enable_openapi = False  # browser redirects, not JSON; APIFlask asks every blueprint
    bp.url_prefix = "/auth"
    # GitHub Enterprise Server: both hosts come from the settings.
    bp.base_url = settings.github_api_url.rstrip("/") + "/"
    bp.authorization_url = f"{web}/login/oauth/authorize"
    bp.token_url = f"{web}/login/oauth/access_token"

    @bp.before_request
    def _remember_next():
        # Where to go after the round trip to GitHub (a local path only).
        if request.endpoint == "github.login":
            session[NEXT_KEY] = safe_next(request.args.get("next"))

    @bp.route("/github/done")
    def done():
        return redirect(safe_next(session.pop(NEXT_KEY, None)))

    @bp.before_request
    def _check_state():
        if request.endpoint != "github.authorized" or request.args.get("error"):
            return None
        # flask-dance would silently restart the login on a missing state and raise (500)
        # on a forged one: both get a readable refusal here, before any token is fetched.
        expected = session.get(STATE_KEY)
        sent = request.args.get("state", "")
        if not expected or not hmac.compare_digest(str(sent), str(expected)):
            session.pop(STATE_KEY, None)
            log.warning("GitHub callback refused: missing or forged state")
            return _refusal(
                400,
                "login_failed",
                "This login link is stale or was not started here. Please log in again.",
            )
        return None

    bp.register_error_handler(OAuth2Error, _oauth_failed)
    bp.register_error_handler(requests.RequestException, _github_unreachable)
    oauth_authorized.connect(_on_authorized, sender=bp)
    oauth_error.connect(_on_oauth_error, sender=bp)
    standing = GitHubStanding(settings, accounts, SecretBox(settings.secret_key, "github-token"))
    app.extensions["devex_github"] = standing
    accounts.checker = standing
    app.before_request(_back_to_github_login)
    return bp


def _refusal(status: int, code: str, message: str):
    """A readable refusal: browsers go back to the login page, which shows the fixed text
    for ``code``; JSON callers get the contract's JSON with ``status``."""
    if code not in LOGIN_ERRORS:  # the login page knows only these
        raise ValueError(f"unknown login error code {code!r}")
    # A Response object (not a tuple): flask-dance passes on only those from its signals.
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    if best == "application/json":
        return make_response(body(code, message), status)
    return redirect(url_for("dashboard.login", error=code))


def _oauth_failed(error: OAuth2Error):
    if isinstance(error, InsecureTransportError):
        log.error(
            "GitHub login needs HTTPS URLs; behind a TLS proxy the app must see the original "
            "scheme (X-Forwarded-Proto): %s",
            error,
        )
    else:
        log.warning("GitHub login failed: %s", error)
    return _refusal(400, "login_failed", "GitHub did not confirm the login. Please try again.")


def _github_unreachable(error: requests.RequestException):
    log.error("GitHub unreachable during login: %s", error)
    return _refusal(503, "unavailable", "GitHub cannot be reached right now; try again shortly.")


def _on_oauth_error(blueprint, error=None, error_description=None, error_uri=None, **_):
    if error == "access_denied":
        return _refusal(400, "login_denied", "The login was cancelled on GitHub.")
    log.warning("GitHub login error: %s (%s)", error, error_description)
    return _refusal(400, "login_failed", "GitHub did not confirm the login. Please try again.")


def _settings() -> Settings:
    return current_app.extensions["devex_auth"].settings


def _standing() -> GitHubStanding:
    return current_app.extensions["devex_github"]


# -- talking to GitHub's API with a user's token (at login and at every re-check) -------------


def fetch_user(settings: Settings, access_token: str) -> tuple[str, dict | None]:
    """``GET /user`` with ``access_token``: ("ok", user) | ("revoked" | "down", None)."""
    try:
        resp = _api(settings, access_token, "user")
    except requests.RequestException as exc:
        log.error("GitHub /user failed: %s", redact(exc))
        return "down", None
    if resp.status_code in (401, 403):
        return "revoked", None
    if not resp.ok:
        log.error("GitHub /user answered %s", resp.status_code)
        return "down", None
    try:
        user = resp.json()
        user["id"], user["login"]  # noqa: B018 - both must be present
    except (ValueError, KeyError, TypeError):
        log.error("GitHub /user answered something that is not a user")
        return "down", None
    return "ok", user


def fetch_orgs(settings: Settings, access_token: str) -> list[tuple[str, str]] | None:
    """The user's organisations as (login, id); None when GitHub could not say."""
    try:
        resp = _api(settings, access_token, "user/orgs", params={"per_page": 100})
        orgs = [(str(o["login"]), str(o["id"])) for o in resp.json()] if resp.ok else None
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        log.error("GitHub /user/orgs failed: %s", redact(exc))
        return None
    if orgs is None:
        log.error("GitHub /user/orgs answered %s", resp.status_code)
    return orgs


def _api(settings: Settings, access_token: str, path: str, **kw) -> requests.Response:
    url = settings.github_api_url.rstrip("/") + "/" + path
    headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/vnd.github+json"}
    return requests.get(url, headers=headers, timeout=settings.github_timeout,
                        allow_redirects=False, **kw)


class GitHubStanding:
    """Keeps each user's GitHub credential server-side, sealed with a key derived from
    ``DEVEX_SECRET_KEY`` (only the access token and its expiry), and checks with it that
    the user still passes the login rules (``Accounts.checker``)."""

    def __init__(self, settings: Settings, accounts: Accounts, box: SecretBox):
        self.settings = settings
        self.accounts = accounts
        self.box = box

    def remember(self, user_id: str, token: dict) -> None:
        kept = {"access_token": token["access_token"], "expires_at": token.get("expires_at")}
        self.accounts.store.save_credential(user_id, self.box.seal(json.dumps(kept).encode()))

    def credential(self, user_id: str) -> dict | None:
        raw = self.box.open(self.accounts.store.credential(user_id))
        try:
            kept = json.loads(raw) if raw else None
            return kept if kept and kept.get("access_token") else None
        except (ValueError, AttributeError):
            return None

    def __call__(self, user: User) -> Verdict:
        kept = self.credential(user.id)
        if kept is None:
            return Verdict(REFUSED, "no usable GitHub credential on file; log in again")
        expires = kept.get("expires_at")
        if isinstance(expires, int | float) and expires <= time.time():
            return Verdict(REFUSED, "the GitHub token expired; log in again")
        outcome, info = fetch_user(self.settings, kept["access_token"])
        if outcome == "down":
            return Verdict(DOWN)
        if outcome != "ok":
            return Verdict(REFUSED, "GitHub no longer accepts the token (revoked?)")
        if str(info["id"]) != user.id:
            return Verdict(REFUSED, "the GitHub token belongs to another account")
        login = str(info["login"])
        verdict = self.accounts.login_rules(
            user.id, login, lambda: fetch_orgs(self.settings, kept["access_token"])
        )
        if verdict.outcome == OK:
            self.accounts.hold_names(user.id, login)
        return verdict


def _on_authorized(blueprint, token=None):
    if not token or not token.get("access_token"):
        return _refusal(400, "login_failed", "GitHub did not hand out a token. Please try again.")
    settings = _settings()
    outcome, info = fetch_user(settings, token["access_token"])
    if outcome == "revoked":
        return _refusal(400, "login_failed", "GitHub refused the new token. Please try again.")
    if outcome != "ok":
        return _refusal(503, "unavailable", "GitHub cannot be reached right now; try again.")
    user_id, login_name = str(info["id"]), str(info["login"])
    accounts = _standing().accounts
    known = extension().components.store.get_user(user_id)
    if known is not None and known.suspended == "admin":
        log.info("GitHub user %s (%s) is suspended", login_name, user_id)
        return _refusal(403, "suspended", "This account is suspended. Ask an administrator.")
    verdict = accounts.login_rules(
        user_id, login_name, lambda: fetch_orgs(settings, token["access_token"])
    )
    if verdict.outcome == DOWN:
        return _refusal(503, "unavailable", "GitHub cannot be reached right now; try again.")
    if verdict.outcome != OK:
        log.info("GitHub user %s (%s) is not on the allow-list", login_name, user_id)
        return _refusal(
            403,
            "not_allowed",
            f"The GitHub account {login_name!r} may not use this Devex. "
            "Ask an administrator to be added.",
        )
    user = User(
        id=user_id,
        login=login_name,
        name=str(info.get("name") or ""),
        avatar_url=str(info.get("avatar_url") or ""),
    )
    extension().components.store.upsert_user(user)
    _standing().remember(user.id, token)
    accounts.record_login(user.id, login_name)
    after = session.get(NEXT_KEY)
    security.login(user.id)  # a fresh session: carry over only where to go next
    if after:
        session[NEXT_KEY] = after
    return None  # the session keeps no GitHub token (the blueprint's storage is NullStorage)


def _back_to_github_login():
    """A browser whose user was just suspended by a failed GitHub re-check goes straight
    back to GitHub's login (which lifts the suspension if the user passes the rules)."""
    if request.method != "GET" or "uid" not in session:
        return None
    if request.path.startswith(("/api/", "/auth/", "/static/")):
        return None
    if security.current_actor() is None and g.get("refused_standing") == "github":
        return redirect(url_for("github.login"))
    return None
