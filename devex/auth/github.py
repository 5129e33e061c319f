"""GitHub OAuth2 login with flask-dance; GitHub Enterprise hosts come from settings."""

from __future__ import annotations

import hmac
import logging
import time

import requests
from apiflask import APIFlask
from flask import (
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
from flask_dance.contrib.github import make_github_blueprint
from oauthlib.oauth2 import InsecureTransportError, OAuth2Error, TokenExpiredError

from devex import security
from devex.config import Settings
from devex.dashboard_helpers import LOGIN_ERRORS
from devex.errorhandlers import body
from devex.models import User
from devex.redirects import safe_next

log = logging.getLogger(__name__)

TOKEN_KEY = "github_oauth_token"  # where flask-dance keeps the GitHub token (server-side)
STATE_KEY = "github_oauth_state"
NEXT_KEY = "login_next"  # the page to return to after the OAuth round trip
CHECKED_KEY = "gh_checked"  # epoch of the last successful check of the GitHub token


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


def init_github(app: APIFlask, settings: Settings) -> None:
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
    )
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
    app.register_blueprint(bp, url_prefix="/auth")
    app.before_request(_recheck_github_token)


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


def _github_profile(gh) -> tuple[str, dict | None]:
    """Fetch ``/user`` with the token ``gh`` holds: ("ok", user) | ("revoked"|"down", None)."""
    try:
        resp = gh.get("user", timeout=_settings().github_timeout)
    except TokenExpiredError:
        return "revoked", None
    except (requests.RequestException, OAuth2Error) as exc:
        log.error("GitHub /user failed: %s", exc)
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


def _allowed(gh, login: str) -> bool:
    s = _settings()
    if not (s.github_allowed_logins or s.github_allowed_orgs):
        return True
    if login.lower() in {x.lower() for x in s.github_allowed_logins}:
        return True
    if not s.github_allowed_orgs:
        return False
    try:
        resp = gh.get("user/orgs", params={"per_page": 100}, timeout=s.github_timeout)
        orgs = {o["login"].lower() for o in resp.json()} if resp.ok else set()
    except (requests.RequestException, OAuth2Error, ValueError, KeyError, TypeError) as exc:
        log.error("GitHub /user/orgs failed: %s", exc)
        orgs = set()
    return bool(orgs & {x.lower() for x in s.github_allowed_orgs})


def _on_authorized(blueprint, token=None):
    if not token or not token.get("access_token"):
        return _refusal(400, "login_failed", "GitHub did not hand out a token. Please try again.")
    outcome, info = _github_profile(blueprint.session)
    if outcome == "revoked":
        return _refusal(400, "login_failed", "GitHub refused the new token. Please try again.")
    if outcome != "ok":
        return _refusal(503, "unavailable", "GitHub cannot be reached right now; try again.")
    login_name = str(info["login"])
    if not _allowed(blueprint.session, login_name):
        log.info("GitHub user %s is not on the allow-list", login_name)
        return _refusal(
            403,
            "not_allowed",
            f"The GitHub account {login_name!r} may not use this Devex. "
            "Ask an administrator to be added.",
        )
    user = User(
        id=str(info["id"]),
        login=login_name,
        name=str(info.get("name") or ""),
        avatar_url=str(info.get("avatar_url") or ""),
    )
    security.devex().components.store.upsert_user(user)
    after = session.get(NEXT_KEY)
    security.login(user.id)  # a fresh session: carry over only where to go next
    session[CHECKED_KEY] = int(time.time())
    if after:
        session[NEXT_KEY] = after
    return None  # flask-dance now stores the token in the (server-side) session


def _recheck_github_token():
    """Now and then, check that the session's GitHub token still works (revoked tokens,
    expired ones, users dropped from the allow-list); if not, end the session and send
    browsers back to the login."""
    every = _settings().github_recheck_seconds
    if every <= 0 or "uid" not in session or security.bearer_token() is not None:
        return None
    if request.blueprint == "github" or request.endpoint in ("auth.logout_view", "static"):
        return None
    if time.time() - session.get(CHECKED_KEY, 0) < every:
        return None
    gh = current_app.blueprints["github"].session
    outcome, info = ("revoked", None) if TOKEN_KEY not in session else _github_profile(gh)
    if outcome == "ok" and _allowed(gh, str(info["login"])):
        session[CHECKED_KEY] = int(time.time())
        return None
    if outcome == "down":  # GitHub's outage is not the user's fault: try again later
        session[CHECKED_KEY] = int(time.time()) - every + 60
        return None
    log.info("GitHub token of user %s no longer works; session ended", session.get("uid"))
    security.logout()
    g.pop("actor", None)
    if request.method == "GET" and not request.path.startswith(("/api/", "/auth/")):
        return redirect(url_for("github.login"))
    return None  # the API answers 401 as for anyone not logged in
