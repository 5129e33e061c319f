"""A fake GitHub (Enterprise-style hosts) served over real HTTP on 127.0.0.1.

Web side: ``/login/oauth/authorize`` (redirects straight back with ``code`` and ``state``,
or with ``error=access_denied`` when ``deny`` is set) and ``/login/oauth/access_token``.
API side under ``/api/v3`` (as GitHub Enterprise Server): ``/user`` and ``/user/orgs``.
Tests change ``user``, ``orgs`` (and ``org_ids``), ``deny``, ``token_error``, ``revoked`` and
``broken`` as they go; ``broken`` makes a path answer something that is not GitHub's (a
proxy's 502 page, say).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

API_PREFIX = "/api/v3"
CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret"


@dataclass
class FakeGitHub:
    url: str = ""
    user: dict = field(
        default_factory=lambda: {
            "id": 4242,
            "login": "octocat",
            "name": "The Octocat",
            "avatar_url": "https://avatars.example/u/4242",
        }
    )
    orgs: dict[str, list[str]] = field(default_factory=dict)  # login -> org logins
    org_ids: dict[str, int] = field(default_factory=dict)  # org login -> id (made up if unset)
    deny: bool = False  # the user clicks "Cancel" on GitHub
    token_error: str | None = None  # the token endpoint answers this OAuth error
    revoked: set[str] = field(default_factory=set)
    codes: dict[str, dict] = field(default_factory=dict)
    tokens: dict[str, dict] = field(default_factory=dict)  # access token -> user
    authorize_requests: list[dict] = field(default_factory=list)
    api_calls: list[str] = field(default_factory=list)  # paths of API calls, in order
    # path -> (status, body, content type): answered instead of GitHub's own answer.
    broken: dict[str, tuple[int, str, str]] = field(default_factory=dict)

    TOKEN_PATH = "/login/oauth/access_token"
    USER_PATH = API_PREFIX + "/user"

    @property
    def api_url(self) -> str:
        return self.url + API_PREFIX

    def settings(self) -> dict[str, str]:
        """The app's settings pointing at this fake (GitHub Enterprise style)."""
        return {
            "DEVEX_AUTH": "github",
            "DEVEX_GITHUB_CLIENT_ID": CLIENT_ID,
            "DEVEX_GITHUB_CLIENT_SECRET": CLIENT_SECRET,
            "DEVEX_GITHUB_URL": self.url,
            "DEVEX_GITHUB_API_URL": self.api_url,
        }

    def revoke_all(self) -> None:
        self.revoked.update(self.tokens)

    def org_id(self, login: str) -> int:
        """An organisation's numeric id: as set in ``org_ids``, else a stable made-up one."""
        return self.org_ids.setdefault(login.lower(), 9000 + len(self.org_ids))

    # -- WSGI ------------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        request = Request(environ)
        path = request.path
        if path in self.broken:
            status, text, content_type = self.broken[path]
            response = Response(text, status=status, content_type=content_type)
        elif path == "/login/oauth/authorize":
            response = self._authorize(request)
        elif path == "/login/oauth/access_token" and request.method == "POST":
            response = self._access_token(request)
        elif path == API_PREFIX + "/user":
            response = self._api(request, lambda user: user)
        elif path == API_PREFIX + "/user/orgs":
            response = self._api(
                request,
                lambda user: [{"login": o, "id": self.org_id(o)}
                              for o in self.orgs.get(user["login"], [])],
            )
        else:
            response = _json({"message": "Not Found"}, 404)
        return response(environ, start_response)

    def _authorize(self, request: Request) -> Response:
        args = request.args
        self.authorize_requests.append(dict(args))
        if args.get("client_id") != CLIENT_ID:
            return _json({"error": "unknown client"}, 404)
        target = args["redirect_uri"]
        if self.deny:
            query = {
                "error": "access_denied",
                "error_description": "The user has denied your application access.",
                "state": args.get("state", ""),
            }
        else:
            code = secrets.token_hex(10)
            self.codes[code] = {
                "user": dict(self.user),
                "redirect_uri": target,
                "scope": args.get("scope", ""),
            }
            query = {"code": code, "state": args.get("state", "")}
        return Response(status=302, headers={"Location": f"{target}?{urlencode(query)}"})

    def _access_token(self, request: Request) -> Response:
        form = request.form
        if self.token_error:
            # GitHub answers token errors with 200 and an error body.
            return _json({"error": self.token_error, "error_description": "refused"}, 200)
        basic = request.authorization  # GitHub takes the client in the body or Basic auth
        client = (basic.username, basic.password) if basic else (None, None)
        if client == (None, None):
            client = (form.get("client_id"), form.get("client_secret"))
        if client != (CLIENT_ID, CLIENT_SECRET):
            return _json({"error": "incorrect_client_credentials"}, 200)
        grant = self.codes.pop(form.get("code", ""), None)
        if grant is None or grant["redirect_uri"] != form.get("redirect_uri"):
            return _json({"error": "bad_verification_code"}, 200)
        token = "gho_" + secrets.token_hex(16)
        self.tokens[token] = grant["user"]
        # Like GitHub: the granted scopes, comma-separated.
        scopes = ",".join(sorted(grant["scope"].replace(",", " ").split()))
        return _json({"access_token": token, "token_type": "bearer", "scope": scopes}, 200)

    def _api(self, request: Request, answer) -> Response:
        self.api_calls.append(request.path)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        user = self.tokens.get(token) if scheme.lower() in ("bearer", "token") else None
        if user is None or token in self.revoked:
            return _json({"message": "Bad credentials"}, 401)
        return _json(answer(user), 200)


def _json(data, status: int) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")


@contextmanager
def serve_fake_github() -> Iterator[FakeGitHub]:
    """Serve a fresh fake GitHub on a free loopback port while the block runs.
    (oauthlib insists on HTTPS: callers set OAUTHLIB_INSECURE_TRANSPORT for the fake.)"""
    fake = FakeGitHub()
    server = make_server("127.0.0.1", 0, fake, threaded=True)
    fake.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


@pytest.fixture
def fake_github(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    """A fresh fake GitHub for one test (a pytest plugin: see tests/conftest.py)."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the fake speaks plain HTTP
    with serve_fake_github() as fake:
        yield fake
