"""GitHub login through real HTTP: the app served on loopback, a fake GitHub (Enterprise-style
hosts) on loopback, and a ``requests`` session as the browser."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import requests

from devex import create_app
from devex.config import ConfigError
from devex.infra import keys
from tests.support.fake_github import CLIENT_ID, CLIENT_SECRET, FakeGitHub
from tests.support.github_login import TIMEOUT, Live, github_app
from tests.support.ports import free_port


@pytest.fixture
def live_factory(fake_github, data_dir):
    servers = []

    def make(**extra):
        # The browser talks plain HTTP to 127.0.0.1, so it would not send a Secure cookie;
        # the Secure flag itself is checked in test_session_cookie_flags_in_github_mode.
        app = github_app(fake_github, data_dir, SESSION_COOKIE_SECURE=False, **extra)
        live = Live(app)
        servers.append(live)
        return live

    yield make
    for live in servers:
        live.close()


@pytest.fixture
def live(live_factory):
    return live_factory()


def test_whole_oauth_dance_session_api_and_logout(live, fake_github):
    before = live.get("/auth/me")
    assert before.status_code == 401
    authorize = live.start_login()
    parts = urlsplit(authorize)
    assert f"{parts.scheme}://{parts.netloc}" == fake_github.url  # the Enterprise host
    assert parts.path == "/login/oauth/authorize"
    query = parse_qs(parts.query)
    assert query["client_id"] == [CLIENT_ID]
    assert query["scope"] == ["read:user"]  # nothing more without an org allow-list
    assert query["redirect_uri"] == [live.url + "/auth/github/authorized"]
    assert query["state"][0]
    assert CLIENT_SECRET not in authorize
    sid_before = live.browser.cookies.get("session")

    callback = live.on_github(authorize)
    done = live.browser.get(callback, allow_redirects=False, timeout=TIMEOUT)
    assert done.status_code == 302
    assert urlsplit(done.headers["Location"]).path == "/auth/github/done"
    home = live.browser.get(live.url + "/auth/github/done", allow_redirects=False,
                            timeout=TIMEOUT)
    assert home.status_code == 302 and home.headers["Location"] == "/"  # no next: the list

    sid = live.browser.cookies.get("session")
    assert sid and sid != sid_before  # a new session id at login
    assert not live.redis.exists(keys.SESSION_PREFIX + sid_before)
    assert live.redis.exists(keys.SESSION_PREFIX + sid)

    me = live.get("/auth/me").json()
    assert me["id"] == "4242" and me["login"] == "octocat" and me["name"] == "The Octocat"
    assert me["avatar_url"] == "https://avatars.example/u/4242" and me["is_admin"] is False

    user = live.app.extensions["devex"].components.store.get_user("4242")
    assert user.login == "octocat" and user.first_login_at and user.last_login_at

    # The session keeps no GitHub token; the user's is kept server-side, sealed.
    (gh_token,) = fake_github.tokens
    assert gh_token.encode() not in live.redis.get(keys.SESSION_PREFIX + sid)
    sealed = live.redis.get(keys.github_credential("4242"))
    assert sealed and gh_token.encode() not in sealed
    assert gh_token not in sid

    created = live.post(
        "/api/repl/create",
        json={"name": "from github", "template": "python", "start": False},
        headers={"X-CSRF-Token": me["csrf_token"]},
    )
    assert created.status_code == 202, created.text
    repl = live.app.extensions["devex"].components.store.get(created.json()["repl"]["id"])
    assert repl.owner_id == "4242" and repl.storage_prefix.startswith("octocat/")
    assert [r["name"] for r in live.get("/api/repl/").json()["repls"]] == ["from github"]

    out = live.post("/auth/logout", headers={"X-CSRF-Token": me["csrf_token"]})
    assert out.status_code == 200
    assert not live.redis.exists(keys.SESSION_PREFIX + sid)  # gone server-side
    assert live.get("/auth/me").status_code == 401
    # Replaying the old cookie does not bring the session back.
    replay = requests.get(live.url + "/auth/me", cookies={"session": sid}, timeout=TIMEOUT)
    assert replay.status_code == 401


def test_second_login_updates_the_user(live, fake_github):
    assert live.login().status_code == 302
    first = live.app.extensions["devex"].components.store.get_user("4242")
    fake_github.user = {**fake_github.user, "login": "octo-renamed", "name": "Renamed"}
    second_browser = Live.__new__(Live)
    second_browser.__dict__.update(live.__dict__, browser=requests.Session())
    assert second_browser.login().status_code == 302
    user = live.app.extensions["devex"].components.store.get_user("4242")
    assert user.login == "octo-renamed" and user.name == "Renamed"
    assert user.first_login_at == first.first_login_at
    second_browser.browser.close()


def test_forged_state_is_refused(live, fake_github):
    live.start_login()  # the browser holds a real state ...
    other = requests.Session()  # ... an attacker gets their own code from GitHub
    attacker = Live.__new__(Live)
    attacker.__dict__.update(live.__dict__, browser=other)
    callback = attacker.on_github(attacker.start_login())
    forged = callback.replace("state=", "state=forged")
    r = live.browser.get(forged, allow_redirects=False, timeout=TIMEOUT)
    live.refused_to_login_page(r, "login_failed")
    assert live.get("/auth/me").status_code == 401
    assert live.app.extensions["devex"].components.store.get_user("4242") is None
    other.close()


def test_callback_without_a_started_login_is_refused(live, fake_github):
    """Login CSRF: a code+state made for someone else's browser is useless in mine."""
    attacker = Live.__new__(Live)
    attacker.__dict__.update(live.__dict__, browser=requests.Session())
    callback = attacker.on_github(attacker.start_login())
    r = live.browser.get(callback, allow_redirects=False, timeout=TIMEOUT)  # no state here
    live.refused_to_login_page(r, "login_failed")
    assert live.get("/auth/me").status_code == 401
    attacker.browser.close()


def test_callback_missing_state_is_refused(live):
    live.start_login()
    r = live.get("/auth/github/authorized?code=abc", headers={"Accept": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "login_failed"
    assert live.get("/auth/me").status_code == 401


JSON = {"Accept": "application/json"}


def test_denied_on_github_shows_a_readable_page(live, fake_github):
    fake_github.deny = True
    page = live.refused_to_login_page(live.login(), "login_denied")
    assert "cancelled" in page
    assert live.get("/auth/me").status_code == 401
    r = live.login(headers=JSON)  # a JSON caller gets the contract's error
    assert r.status_code == 400 and r.json()["error"]["code"] == "login_denied"


def test_token_endpoint_failure_is_readable_not_500(live, fake_github):
    fake_github.token_error = "bad_verification_code"
    page = live.refused_to_login_page(live.login(), "login_failed")
    assert "try again" in page.lower()
    assert live.get("/auth/me").status_code == 401
    assert live.app.extensions["devex"].components.store.get_user("4242") is None
    r = live.login(headers=JSON)
    assert r.status_code == 400 and r.json()["error"]["code"] == "login_failed"


def test_login_allow_list_refuses_others(live_factory, fake_github):
    live = live_factory(DEVEX_GITHUB_ALLOWED_LOGINS="someone-else")
    live.refused_to_login_page(live.login(), "not_allowed")
    assert live.get("/auth/me").status_code == 401
    assert live.app.extensions["devex"].components.store.get_user("4242") is None
    r = live.login(headers=JSON)
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_allowed"
    assert "octocat" in r.json()["error"]["message"]  # the caller's own login, in JSON only


def test_org_allow_list_asks_for_read_org_and_checks_membership(live_factory, fake_github):
    live = live_factory(DEVEX_GITHUB_ALLOWED_ORGS="acme")
    authorize = live.start_login()
    assert sorted(parse_qs(urlsplit(authorize).query)["scope"][0].split()) == [
        "read:org",
        "read:user",
    ]
    fake_github.orgs = {"octocat": ["other-org"]}
    r = live.browser.get(live.on_github(authorize), allow_redirects=False, timeout=TIMEOUT)
    live.refused_to_login_page(r, "not_allowed")
    assert live.get("/auth/me").status_code == 401
    fake_github.orgs = {"octocat": ["ACME"]}
    assert live.login().status_code == 302
    assert live.get("/auth/me").json()["login"] == "octocat"


# -- GitHub down or answering nonsense: a readable refusal, never a 500 -----------------------


def closed_url() -> str:
    """A loopback URL nothing listens on: connecting is refused at once."""
    return f"http://127.0.0.1:{free_port()}"


def callback_for(live: Live) -> str:
    """Start a login and come back as GitHub would with a code (whatever GitHub's state)."""
    parts = urlsplit(live.start_login())
    state = parse_qs(parts.query)["state"][0]
    return f"/auth/github/authorized?code=some-code&state={state}"


def assert_not_logged_in(live: Live) -> None:
    assert live.get("/auth/me").status_code == 401
    assert live.app.extensions["devex"].components.store.get_user("4242") is None


def test_token_endpoint_unreachable_is_readable_not_500(live_factory):
    live = live_factory(DEVEX_GITHUB_URL=closed_url())
    live.refused_to_login_page(live.get(callback_for(live)), "unavailable")
    r = live.get(callback_for(live), headers=JSON)
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    assert_not_logged_in(live)


def test_user_endpoint_unreachable_is_readable_not_500(live_factory, fake_github):
    live = live_factory(DEVEX_GITHUB_API_URL=closed_url() + "/api/v3")
    live.refused_to_login_page(live.login(), "unavailable")
    r = live.login(headers=JSON)
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    assert_not_logged_in(live)


BAD_ANSWERS = [
    pytest.param(502, "<html><body><h1>502 Bad Gateway</h1></body></html>", id="502-html"),
    pytest.param(500, '{"message": "Server Error"}', id="500-json"),
    pytest.param(503, "", id="503-empty"),
    pytest.param(200, "<!doctype html><title>Sign in to the proxy</title>", id="200-html"),
]


@pytest.mark.parametrize(("status", "text"), BAD_ANSWERS)
@pytest.mark.parametrize("where", [FakeGitHub.TOKEN_PATH, FakeGitHub.USER_PATH])
def test_github_answering_nonsense_is_readable_not_500(live, fake_github, where, status, text):
    content_type = "application/json" if text.startswith("{") else "text/html"
    fake_github.broken[where] = (status, text, content_type)
    live.refused_to_login_page(live.login(), "unavailable")
    r = live.login(headers=JSON)
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    assert_not_logged_in(live)
    fake_github.broken.clear()  # once GitHub is back, logging in works
    assert live.login().status_code == 302 and live.get("/auth/me").status_code == 200


def test_admins_are_configured_by_login(live_factory):
    live = live_factory(DEVEX_ADMINS="OctoCat")
    live.login()
    assert live.get("/auth/me").json()["is_admin"] is True
    assert live.get("/api/admin/repls").status_code == 200


def test_local_login_is_404_in_github_mode(live):
    assert live.post("/auth/local").status_code == 404


# -- the Flask test client for the app, real HTTP to the fake GitHub -------------------------
def dance(client) -> None:
    authorize = client.get("/auth/github").headers["Location"]
    back = requests.get(authorize, allow_redirects=False, timeout=TIMEOUT).headers["Location"]
    parts = urlsplit(back)
    r = client.get(f"{parts.path}?{parts.query}")
    assert r.status_code == 302, r.get_data(as_text=True)


@pytest.fixture
def gh_app(fake_github, data_dir):
    return github_app(fake_github, data_dir)


def test_session_cookie_flags_in_github_mode(gh_app):
    client = gh_app.test_client()
    dance(client)
    # As the login set it (a plain read sets no cookie).
    cookie = client.get_cookie("session")
    assert cookie.secure and cookie.http_only and cookie.same_site == "Lax"
    assert "Set-Cookie" not in client.get("/auth/me").headers


def recheck_due(app, user_id: str = "4242") -> None:
    """Make the user's periodic GitHub re-check due now."""
    app.extensions["devex"].components.redis.hset(keys.user(user_id), "standing_checked_at", 0)


def checked_at(app, user_id: str = "4242") -> float:
    return float(app.extensions["devex"].components.store.get_user(user_id).standing_checked_at)


def test_revoked_github_token_sends_the_user_back_to_login(gh_app, fake_github):
    client = gh_app.test_client()
    dance(client)
    assert client.get("/auth/me").status_code == 200
    recheck_due(gh_app)
    assert client.get("/auth/me").status_code == 200  # token still good: session stays
    assert checked_at(gh_app) > 0
    recheck_due(gh_app)
    fake_github.revoke_all()
    page = client.get("/")
    assert page.status_code == 302 and page.headers["Location"].endswith("/auth/github")
    assert client.get("/auth/me").status_code == 401
    with client.session_transaction() as s:
        assert "uid" not in s and "github_oauth_token" not in s


def test_revoked_github_token_ends_api_sessions_with_401(gh_app, fake_github):
    client = gh_app.test_client()
    dance(client)
    recheck_due(gh_app)
    fake_github.revoke_all()
    resp = client.get("/api/repl/")
    assert resp.status_code == 401 and resp.json["error"]["code"] == "account_suspended"
    assert client.get("/api/repl/").json["error"]["code"] == "unauthorized"  # session ended


def test_expired_github_token_sends_the_user_back_to_login(gh_app, fake_github):
    client = gh_app.test_client()
    dance(client)
    (gh_token,) = fake_github.tokens
    gh_app.extensions["devex_github"].remember("4242", {"access_token": gh_token,
                                                        "expires_at": 1000})
    recheck_due(gh_app)
    page = client.get("/")
    assert page.status_code == 302 and page.headers["Location"].endswith("/auth/github")
    assert client.get("/auth/me").status_code == 401


def test_sessions_live_in_the_real_redis_in_cluster_mode(fake_github, data_dir, redis_url):
    app = github_app(fake_github, data_dir, DEVEX_REDIS_URL=redis_url)
    client = app.test_client()
    dance(client)
    conn = redis.Redis.from_url(redis_url)
    (key,) = conn.keys(keys.SESSION_PREFIX + "*")
    assert conn.ttl(key) > 0  # expires with the session lifetime
    me = client.get("/auth/me").json
    client.post("/auth/logout", headers={"X-CSRF-Token": me["csrf_token"]})
    assert conn.keys(keys.SESSION_PREFIX + "*") == []
    conn.close()


@pytest.mark.parametrize(
    "missing",
    ["DEVEX_SECRET_KEY", "DEVEX_GITHUB_CLIENT_SECRET", "DEVEX_GITHUB_CLIENT_ID"],
)
def test_github_mode_refuses_to_start_without_credentials(fake_github, data_dir, missing):
    config = {
        "TESTING": True,
        **fake_github.settings(),
        "DEVEX_SECRET_KEY": "s",
        "DEVEX_DATA_DIR": data_dir,
    }
    config.pop(missing)
    with pytest.raises(ConfigError):
        create_app(config)


def test_login_returns_to_the_page_asked_for_and_only_a_local_one(gh_app):
    for asked, expected in (("/repls/abc123", "/repls/abc123"), ("//evil.example/", "/")):
        client = gh_app.test_client()
        authorize = client.get(f"/auth/github?next={asked}").headers["Location"]
        back = requests.get(authorize, allow_redirects=False, timeout=TIMEOUT).headers["Location"]
        parts = urlsplit(back)
        done = client.get(f"{parts.path}?{parts.query}")
        assert done.status_code == 302
        final = client.get(urlsplit(done.headers["Location"]).path)
        assert final.status_code == 302 and final.headers["Location"] == expected
        assert client.get("/auth/me").status_code == 200
