"""Who may do what: every REPL route x every kind of caller, with the status each cell
must answer, and proof that refused calls change nothing."""

from __future__ import annotations

import pytest

from devex.models import Status
from tests.support.auth_helpers import (
    ADMIN,
    OTHER,
    OWNER,
    bearer,
    create_repl,
    expired_token,
    new_token,
    queued,
    revoked_token,
    session_api,
    store,
)

# route -> (method, path, the REPL's status before, status answered on success)
ROUTES = {
    "get": ("GET", "/api/repl/{id}", Status.STOPPED, 200),
    "events": ("GET", "/api/repl/{id}/events", Status.STOPPED, 200),
    "start": ("POST", "/api/repl/{id}/start", Status.STOPPED, 202),
    "stop": ("POST", "/api/repl/{id}/stop", Status.RUNNING, 202),
    "delete": ("DELETE", "/api/repl/{id}", Status.STOPPED, 202),
    "session": ("POST", "/api/repl/{id}/session", Status.RUNNING, 200),
}

# Callers, and what they get on a REPL route. Admins may read and stop anyone's REPL,
# but neither start, delete nor enter someone else's (those answer 404 as for others).
OK = "ok"
ADMIN_MAY = {"get", "events", "stop"}
CALLERS = {
    "owner": OK,
    "bearer": OK,  # the owner's personal token, no CSRF header
    "admin": OK,
    "other": 404,  # another user's REPL looks exactly like a missing one
    "other_bearer": 404,
    "anonymous": 401,
    "revoked_token": 401,
    "expired_token": 401,
}


@pytest.fixture
def app(users_app):
    """Without a worker, with the three users: states are set in the store."""
    return users_app


def call(app, caller: str, method: str, path: str, json=None):
    """Send the request as ``caller`` would: browsers with the CSRF header, tokens without."""
    if caller in ("owner", "other", "admin"):
        uid = {"owner": OWNER, "other": OTHER, "admin": ADMIN}[caller][0]
        api = session_api(app, uid)
        return api.client.open(path, method=method, json=json, headers={"X-CSRF-Token": api.csrf})
    client = app.test_client()
    headers = {}
    if caller == "bearer":
        headers = bearer(new_token(app, OWNER[0]))
    elif caller == "other_bearer":
        headers = bearer(new_token(app, OTHER[0]))
    elif caller == "revoked_token":
        headers = bearer(revoked_token(app, OWNER[0]))
    elif caller == "expired_token":
        headers = bearer(expired_token(app, OWNER[0]))
    return client.open(path, method=method, json=json, headers=headers)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", ROUTES)
def test_repl_route_access(app, route, caller):
    method, template, status_before, success = ROUTES[route]
    repl_id = create_repl(app, OWNER[0], status=status_before)
    before = store(app).get(repl_id)
    jobs_before = queued(app)

    resp = call(app, caller, method, template.format(id=repl_id))

    expected = success if CALLERS[caller] == OK else CALLERS[caller]
    if caller == "admin" and route not in ADMIN_MAY:
        expected = 404
    assert resp.status_code == expected, (route, caller, resp.get_json())
    if expected >= 400:
        body = resp.get_json()
        assert set(body["error"]) == {"code", "message"}
        after = store(app).get(repl_id)
        assert (after.status, after.desired, after.url) == (
            before.status,
            before.desired,
            before.url,
        )
        assert queued(app) == jobs_before
    elif route == "get":
        assert resp.json["id"] == repl_id


def test_another_users_repl_answers_exactly_like_a_missing_one(app):
    repl_id = create_repl(app, OWNER[0])
    bob = session_api(app, OTHER[0])
    theirs = bob.get(f"/api/repl/{repl_id}")
    missing = bob.get("/api/repl/0123456789ab")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.get_json() == missing.get_json()


@pytest.mark.parametrize(
    "caller, expected",
    [
        ("owner", 200),
        ("bearer", 200),
        ("admin", 200),
        ("other", 200),
        ("other_bearer", 200),
        ("anonymous", 401),
        ("revoked_token", 401),
        ("expired_token", 401),
    ],
)
def test_listing_shows_only_your_own_repls(app, caller, expected):
    repl_id = create_repl(app, OWNER[0])
    resp = call(app, caller, "GET", "/api/repl/")
    assert resp.status_code == expected
    if expected == 200:
        ids = {r["id"] for r in resp.json["repls"]}
        assert (repl_id in ids) == (caller in ("owner", "bearer"))


@pytest.mark.parametrize(
    "caller, expected",
    [
        ("owner", 202),
        ("bearer", 202),
        ("admin", 202),
        ("other", 202),
        ("anonymous", 401),
        ("revoked_token", 401),
        ("expired_token", 401),
    ],
)
def test_create_access(app, caller, expected):
    resp = call(
        app,
        caller,
        "POST",
        "/api/repl/create",
        json={"name": "new", "template": "python", "start": False},
    )
    assert resp.status_code == expected, resp.get_json()
    if expected != 202:
        assert store(app).list_all() == []


@pytest.mark.parametrize(
    "caller, expected",
    [
        ("admin", 200),
        ("owner", 403),
        ("bearer", 403),
        ("other", 403),
        ("anonymous", 401),
        ("revoked_token", 401),
        ("expired_token", 401),
    ],
)
def test_admin_listing_access(app, caller, expected):
    alice = create_repl(app, OWNER[0], "a")
    bob = create_repl(app, OTHER[0], "b", status=Status.RUNNING)
    resp = call(app, caller, "GET", "/api/admin/repls")
    assert resp.status_code == expected, resp.get_json()
    if expected == 200:
        rows = {r["id"]: r for r in resp.json["repls"]}
        assert rows[alice]["owner_login"] == OWNER[1] and rows[alice]["owner_id"] == OWNER[0]
        assert rows[bob]["owner_login"] == OTHER[1]
        running = call(app, caller, "GET", "/api/admin/repls?status=running").json["repls"]
        assert [r["id"] for r in running] == [bob]


def test_admin_token_can_stop_anyones_repl(app):
    repl_id = create_repl(app, OTHER[0], status=Status.RUNNING)
    resp = app.test_client().post(
        f"/api/repl/{repl_id}/stop", headers=bearer(new_token(app, ADMIN[0]))
    )
    assert resp.status_code == 202
    assert store(app).get(repl_id).status == Status.STOPPING
    assert queued(app)[-1] == "jobs.repl.stop"
    assert store(app).events(repl_id)[-1].actor == ADMIN[1]


@pytest.mark.parametrize("caller", CALLERS)
def test_runner_endpoints_refuse_user_credentials(app, caller):
    """Session cookies and personal tokens are not runner tokens."""
    repl_id = create_repl(app, OWNER[0], status=Status.RUNNING)
    for path in (f"/api/runner/{repl_id}/heartbeat", f"/api/runner/{repl_id}/idle"):
        resp = call(app, caller, "POST", path, json={"active": True})
        assert resp.status_code == 401, (path, resp.get_json())
    assert store(app).get(repl_id).status == Status.RUNNING
