"""A user's standing: personal tokens stop with the account's access (a GitHub re-check on
the same interval as sessions, an administrator's suspension), admin rights and allow-lists
stay with the GitHub id a login first resolved to, and GitHub tokens are kept only sealed.

GitHub is the fake one over real HTTP (tests/support/fake_github.py); the app is the Flask
test client, as a browser or as a script with a personal token."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from devex.infra import keys
from tests.conftest import Api
from tests.support.auth_helpers import (
    ADMIN,
    OTHER,
    OWNER,
    bearer,
    new_token,
    session_api,
)
from tests.support.fake_github import FakeGitHub
from tests.support.github_login import TIMEOUT, github_app
from tests.support.redis_contents import redis_contents

OCTOCAT = "4242"
JSON = {"Accept": "application/json"}


@pytest.fixture
def app(users_app):
    """Without a worker, with the three users: states are set in the store."""
    return users_app


def github_callback(app, fake: FakeGitHub, user: dict | None = None, headers=None):
    """A browser (a fresh test client) logs in through GitHub as ``user`` (default: the
    fake's current one); returns the client and the answer of the OAuth callback."""
    if user is not None:
        fake.user = {"name": "", "avatar_url": "", **user}
    client = app.test_client()
    authorize = client.get("/auth/github").headers["Location"]
    back = requests.get(authorize, allow_redirects=False, timeout=TIMEOUT).headers["Location"]
    parts = urlsplit(back)
    return client, client.get(f"{parts.path}?{parts.query}", headers=headers or {})


def login(app, fake: FakeGitHub, user: dict | None = None) -> Api:
    client, answer = github_callback(app, fake, user)
    assert answer.status_code == 302, answer.get_data(as_text=True)
    me = client.get("/auth/me")
    assert me.status_code == 200, (answer.headers.get("Location"), me.json)
    return Api(client, me.json["csrf_token"])


def make_token(api: Api) -> str:
    made = api.post("/api/tokens", json={"name": "ci"})
    assert made.status_code == 201, made.json
    return made.json["token"]


def with_token(app, token: str, path: str = "/api/repl/"):
    return app.test_client().get(path, headers=bearer(token))


def recheck_due(app, user_id: str = OCTOCAT) -> None:
    app.extensions["devex"].components.redis.hset(keys.user(user_id), "standing_checked_at", 0)


def user(app, user_id: str = OCTOCAT):
    return app.extensions["devex"].components.store.get_user(user_id)


def assert_suspended(resp, *, token: bool) -> None:
    assert resp.status_code == 401, resp.json
    assert resp.json["error"]["code"] == "account_suspended"
    if token:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


# -- item 1: personal tokens follow the account's GitHub standing ---------------------------


def test_a_personal_token_stops_once_github_revokes_the_owners_access(fake_github, data_dir):
    app = github_app(fake_github, data_dir)
    browser = login(app, fake_github)
    token = make_token(browser)
    assert with_token(app, token).status_code == 200
    fake_github.revoke_all()  # the user revokes Devex's authorization on GitHub
    recheck_due(app)
    assert_suspended(with_token(app, token), token=True)
    assert_suspended(with_token(app, token), token=True)  # and it stays so
    assert user(app).suspended == "github"
    assert browser.get("/api/repl/").status_code == 401  # the session is over as well
    # Authorising Devex again (and passing the login rules) lifts the suspension.
    login(app, fake_github)
    assert with_token(app, token).status_code == 200
    assert user(app).suspended == ""


def test_a_personal_token_stops_once_its_owner_leaves_the_allowed_org(fake_github, data_dir):
    fake_github.orgs = {"octocat": ["acme"]}
    app = github_app(fake_github, data_dir, DEVEX_GITHUB_ALLOWED_ORGS="acme")
    token = make_token(login(app, fake_github))
    fake_github.orgs = {"octocat": ["elsewhere"]}
    recheck_due(app)
    assert_suspended(with_token(app, token), token=True)
    _, refused = github_callback(app, fake_github, headers=JSON)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "not_allowed"
    assert_suspended(with_token(app, token), token=True)
    fake_github.orgs = {"octocat": ["acme"]}  # back in the org, and logged in again
    login(app, fake_github)
    assert with_token(app, token).status_code == 200


def test_the_recheck_costs_one_github_call_per_interval(fake_github, data_dir):
    app = github_app(fake_github, data_dir)
    token = make_token(login(app, fake_github))
    fake_github.api_calls.clear()
    for _ in range(5):
        assert with_token(app, token).status_code == 200
    assert fake_github.api_calls == []  # checked at login: nothing due yet
    recheck_due(app)
    for _ in range(3):
        assert with_token(app, token).status_code == 200
    assert fake_github.api_calls == [FakeGitHub.USER_PATH]


def test_github_being_down_suspends_nobody_and_the_check_is_retried_soon(fake_github, data_dir):
    app = github_app(fake_github, data_dir)
    token = make_token(login(app, fake_github))
    fake_github.broken[FakeGitHub.USER_PATH] = (502, "<html>Bad Gateway</html>", "text/html")
    recheck_due(app)
    assert with_token(app, token).status_code == 200
    every = app.extensions["devex_auth"].settings.github_recheck_seconds
    retry_from = float(user(app).standing_checked_at)
    assert 0 < retry_from <= time.time() - every + 60  # due again within a minute
    fake_github.broken.clear()
    fake_github.revoke_all()
    recheck_due(app)
    assert_suspended(with_token(app, token), token=True)


def test_a_token_whose_owner_has_no_usable_github_credential_is_suspended(fake_github, data_dir):
    """Fail closed: a credential that cannot be read (another DEVEX_SECRET_KEY, tampered,
    gone) cannot confirm anything."""
    app = github_app(fake_github, data_dir)
    token = make_token(login(app, fake_github))
    redis = app.extensions["devex"].components.redis
    redis.set(keys.github_credential(OCTOCAT), b"gAAAAA-not-a-fernet-token")
    recheck_due(app)
    assert_suspended(with_token(app, token), token=True)
    assert "log in again" in user(app).suspended_reason


# -- item 1: administrators suspend users -----------------------------------------------------


def test_an_administrator_suspends_a_user_and_every_token_of_theirs(app):
    owner = session_api(app, OWNER[0])
    token = new_token(app, OWNER[0])
    admin = session_api(app, ADMIN[0])
    done = admin.post(f"/api/admin/users/{OWNER[0]}/suspend", json={"reason": "left the team"})
    assert done.status_code == 200, done.json
    assert done.json == {"id": OWNER[0], "login": OWNER[1], "suspended": True,
                         "suspended_by": "admin", "suspended_reason": "left the team",
                         "suspended_at": done.json["suspended_at"]}
    assert_suspended(with_token(app, token), token=True)
    assert_suspended(owner.get("/api/repl/"), token=False)
    assert owner.get("/api/repl/").json["error"]["code"] == "unauthorized"  # session ended
    page = session_api(app, OWNER[0]).get("/")
    assert page.status_code == 302 and page.headers["Location"].startswith("/login")

    lifted = admin.post(f"/api/admin/users/{OWNER[0]}/resume")
    assert lifted.status_code == 200 and lifted.json["suspended"] is False
    assert with_token(app, token).status_code == 200


def test_only_administrators_suspend_and_never_themselves(app):
    other = session_api(app, OTHER[0])
    assert other.post(f"/api/admin/users/{OWNER[0]}/suspend").status_code == 403
    token = new_token(app, OWNER[0])
    assert app.test_client().post(f"/api/admin/users/{OTHER[0]}/suspend",
                                  headers=bearer(token)).status_code == 403
    admin = session_api(app, ADMIN[0])
    itself = admin.post(f"/api/admin/users/{ADMIN[0]}/suspend")
    assert itself.status_code == 409 and itself.json["error"]["code"] == "cannot_suspend_self"
    assert admin.post("/api/admin/users/nobody/suspend").status_code == 404
    no_csrf = admin.client.post(f"/api/admin/users/{OWNER[0]}/suspend")
    assert no_csrf.status_code == 403
    assert user(app, OWNER[0]).suspended == ""
    assert with_token(app, token).status_code == 200


def test_operators_suspend_and_resume_from_the_command_line(app):
    token = new_token(app, OWNER[0])
    cli = app.test_cli_runner()
    out = cli.invoke(args=["devex", "suspend", OWNER[1], "--reason", "incident 42"])
    assert out.exit_code == 0 and f"suspended {OWNER[1]} (id {OWNER[0]})" in out.output
    assert_suspended(with_token(app, token), token=True)
    assert user(app, OWNER[0]).suspended_reason == "incident 42"
    assert cli.invoke(args=["devex", "resume", OWNER[0]]).exit_code == 0
    assert with_token(app, token).status_code == 200
    assert cli.invoke(args=["devex", "suspend", "nobody"]).exit_code != 0


def test_a_suspended_user_cannot_log_in_again_through_github(fake_github, data_dir):
    app = github_app(fake_github, data_dir)
    token = make_token(login(app, fake_github))
    app.extensions["devex_auth"].accounts.suspend(OCTOCAT, "abuse")
    _, page = github_callback(app, fake_github)
    assert page.status_code == 302
    assert parse_qs(urlsplit(page.headers["Location"]).query) == {"error": ["suspended"]}
    _, refused = github_callback(app, fake_github, headers=JSON)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "suspended"
    assert_suspended(with_token(app, token), token=True)
    assert user(app).suspended == "admin"  # a GitHub login never lifts an admin's suspension


# -- item 3: admin rights and allow-lists stay with a GitHub id --------------------------------


def test_admin_rights_named_by_login_stay_with_the_first_github_id(fake_github, data_dir):
    app = github_app(fake_github, data_dir, DEVEX_ADMINS="OctoCat")
    first = login(app, fake_github)
    assert first.get("/auth/me").json["is_admin"] is True
    # The admin renames the account; another account takes the freed login.
    renamed = login(app, fake_github, {"id": 4242, "login": "octo-renamed"})
    assert renamed.get("/auth/me").json["is_admin"] is True
    taker = login(app, fake_github, {"id": 777, "login": "octocat"})
    assert taker.get("/auth/me").json["is_admin"] is False
    assert taker.get("/api/admin/repls").status_code == 403


def test_a_login_on_the_allow_list_admits_only_the_first_github_id(fake_github, data_dir):
    app = github_app(fake_github, data_dir, DEVEX_GITHUB_ALLOWED_LOGINS="octocat")
    login(app, fake_github)
    _, refused = github_callback(app, fake_github, {"id": 777, "login": "octocat"}, JSON)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "not_allowed"
    assert user(app, "777") is None
    login(app, fake_github, {"id": 4242, "login": "octo-renamed"})  # still the same person


def test_an_allowed_org_is_bound_to_its_github_id(fake_github, data_dir):
    fake_github.org_ids = {"acme": 100}
    fake_github.orgs = {"octocat": ["acme"], "mallory": ["acme"]}
    app = github_app(fake_github, data_dir, DEVEX_GITHUB_ALLOWED_ORGS="acme")
    login(app, fake_github)
    fake_github.org_ids["acme"] = 200  # acme renamed away; a new org took the name
    _, refused = github_callback(app, fake_github, {"id": 777, "login": "mallory"}, JSON)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "not_allowed"


def test_people_and_orgs_can_be_named_by_id(fake_github, data_dir):
    app = github_app(fake_github, data_dir, DEVEX_ADMINS="id:4242",
                     DEVEX_GITHUB_ALLOWED_LOGINS="id:4242", DEVEX_GITHUB_ALLOWED_ORGS="id:300")
    assert login(app, fake_github, {"id": 4242, "login": "anything"}).get(
        "/auth/me").json["is_admin"] is True
    fake_github.org_ids = {"team": 300}
    fake_github.orgs = {"someone": ["team"]}
    assert login(app, fake_github, {"id": 5, "login": "someone"}).get(
        "/auth/me").json["is_admin"] is False
    _, refused = github_callback(app, fake_github, {"id": 6, "login": "outsider"}, JSON)
    assert refused.status_code == 403


# -- item 10: GitHub tokens neither in sessions nor in embedded Redis's file -----------------


def test_github_tokens_are_kept_only_sealed(fake_github, data_dir):
    app = github_app(fake_github, data_dir)
    login(app, fake_github)
    (gh_token,) = fake_github.tokens
    redis = app.extensions["devex"].components.redis
    assert gh_token not in repr(redis_contents(redis, skip=()))
    assert redis.get(keys.github_credential(OCTOCAT))  # kept, sealed
    app.extensions["devex"].close()  # embedded mode's Redis keeps its append-only file
    persisted = b"".join(p.read_bytes() for p in (data_dir / "redis").rglob("appendonly*")
                         if p.is_file())
    assert b"session:" in persisted
    assert gh_token.encode() not in persisted


@pytest.mark.parametrize("bad", ["", "x" * 201, "tab\there"])
def test_a_suspension_reason_is_checked(app, bad):
    admin = session_api(app, ADMIN[0])
    resp = admin.post(f"/api/admin/users/{OWNER[0]}/suspend", json={"reason": bad})
    if bad:
        assert resp.status_code == 400, resp.json
        assert user(app, OWNER[0]).suspended == ""
    else:
        assert resp.status_code == 200 and resp.json["suspended_reason"]
