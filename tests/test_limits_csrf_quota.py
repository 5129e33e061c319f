"""CSRF on cookie-authenticated changes, per-user quotas and rate limits: refused with the
contract's error (429 with Retry-After) and nothing created or changed."""

from __future__ import annotations

import pytest
import redis

from devex.infra import keys
from devex.models import Status
from tests.support.auth_helpers import (
    OTHER,
    OWNER,
    add_users,
    bearer,
    create_repl,
    make_app,
    new_token,
    queued,
    session_api,
    store,
)
from tests.support.redis_contents import redis_contents

CREATE = {"name": "x", "template": "python", "start": False}


# RQ's own bookkeeping, sessions, and the rate-limit counters (the tests that need them
# look at them on their own).
NOT_STATE = (b"rq:", keys.SESSION_PREFIX.encode(), keys.RATE_LIMIT_PREFIX.encode(), b"LIMITS:")


@pytest.fixture
def app(users_app):
    """Without a worker, with the three users: states are set in the store."""
    return users_app


def redis_state(app) -> dict:
    return redis_contents(app.extensions["devex"].components.redis, skip=NOT_STATE)


def test_redis_state_sees_a_changed_field(app):
    """The helper the tests below rely on: any change of contents shows, not only new keys."""
    repl_id = create_repl(app, OWNER[0], status=Status.STOPPED)
    r = app.extensions["devex"].components.redis
    before = redis_state(app)
    assert before == redis_state(app)  # reading changes nothing
    meta = next(k for k in before if before[k][0] == "hash" and repl_id.encode() in k)
    r.hset(meta, "name", "renamed")
    assert redis_state(app) != before
    r.hset(meta, "name", before[meta][1][b"name"])
    assert redis_state(app) == before
    zset = next(k for k, v in before.items() if v[0] == "zset")
    member, score = before[zset][1][0]
    r.zadd(zset, {member: score + 1})
    assert redis_state(app) != before


# -- CSRF ----------------------------------------------------------------------------------
@pytest.mark.parametrize("sent", [None, "", "wrong"])
def test_cookie_post_without_the_csrf_token_is_403_and_creates_nothing(app, sent):
    alice = session_api(app, OWNER[0])
    before, jobs = redis_state(app), queued(app)  # (start-up queues a reconcile)
    headers = {} if sent is None else {"X-CSRF-Token": sent}
    resp = alice.client.post("/api/repl/create", json=CREATE, headers=headers)
    assert resp.status_code == 403 and resp.json["error"]["code"] == "csrf_failed"
    assert redis_state(app) == before
    assert queued(app) == jobs


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("POST", "/api/repl/{id}/stop", Status.RUNNING),
        ("POST", "/api/repl/{id}/start", Status.STOPPED),
        ("DELETE", "/api/repl/{id}", Status.STOPPED),
        ("POST", "/api/repl/{id}/session", Status.RUNNING),
    ],
)
def test_cookie_changes_without_csrf_change_nothing(app, method, path, status):
    repl_id = create_repl(app, OWNER[0], status=status)
    alice = session_api(app, OWNER[0])
    jobs = queued(app)
    resp = alice.client.open(path.format(id=repl_id), method=method)
    assert resp.status_code == 403
    assert store(app).get(repl_id).status == status
    assert queued(app) == jobs


def test_dashboard_form_field_carries_the_csrf_token(app):
    repl_id = create_repl(app, OWNER[0], status=Status.RUNNING)
    alice = session_api(app, OWNER[0])
    resp = alice.client.post(f"/api/repl/{repl_id}/stop", data={"csrf_token": alice.csrf})
    assert resp.status_code == 202
    assert store(app).get(repl_id).status == Status.STOPPING


def test_csrf_token_of_another_session_does_not_work(app):
    alice = session_api(app, OWNER[0])
    bob = session_api(app, OTHER[0])
    resp = alice.client.post("/api/repl/create", json=CREATE, headers={"X-CSRF-Token": bob.csrf})
    assert resp.status_code == 403


def test_logout_needs_the_csrf_token_and_then_ends_the_session(app):
    alice = session_api(app, OWNER[0])
    assert alice.client.post("/auth/logout").status_code == 403
    assert alice.get("/auth/me").status_code == 200
    assert alice.post("/auth/logout").status_code == 200
    assert alice.get("/auth/me").status_code == 401


def test_me_hands_out_the_csrf_token_the_api_wants(app):
    alice = session_api(app, OWNER[0])
    csrf = alice.get("/auth/me").json["csrf_token"]
    resp = alice.client.post("/api/repl/create", json=CREATE, headers={"X-CSRF-Token": csrf})
    assert resp.status_code == 202


# -- quotas --------------------------------------------------------------------------------
def test_repl_quota_is_429_with_retry_after_and_creates_nothing(data_dir):
    app = make_app(data_dir, DEVEX_QUOTA_REPLS=1)
    add_users(app)
    alice = session_api(app, OWNER[0])
    assert alice.post("/api/repl/create", json={**CREATE, "name": "one"}).status_code == 202
    before, jobs = redis_state(app), queued(app)
    resp = alice.post("/api/repl/create", json={**CREATE, "name": "two"})
    assert resp.status_code == 429 and resp.json["error"]["code"] == "quota_exceeded"
    assert int(resp.headers["Retry-After"]) > 0
    assert "1" in resp.json["error"]["message"]
    assert redis_state(app) == before and queued(app) == jobs
    # Quotas are per user.
    assert session_api(app, OTHER[0]).post("/api/repl/create", json=CREATE).status_code == 202


def test_running_quota_refuses_create_and_start(data_dir):
    app = make_app(data_dir, DEVEX_QUOTA_RUNNING=1)
    add_users(app)
    create_repl(app, OWNER[0], "busy", status=Status.RUNNING)
    idle = create_repl(app, OWNER[0], "idle", status=Status.STOPPED)
    alice = session_api(app, OWNER[0])
    before, jobs = redis_state(app), queued(app)

    resp = alice.post("/api/repl/create", json={**CREATE, "name": "new", "start": True})
    assert resp.status_code == 429 and resp.headers["Retry-After"]
    resp = alice.post(f"/api/repl/{idle}/start")
    assert resp.status_code == 429 and resp.json["error"]["code"] == "quota_exceeded"
    assert resp.headers["Retry-After"]
    assert redis_state(app) == before and queued(app) == jobs
    assert store(app).get(idle).status == Status.STOPPED


# -- rate limits ---------------------------------------------------------------------------
def test_create_is_rate_limited_per_user(data_dir):
    app = make_app(data_dir, DEVEX_RATE_LIMIT_CREATE="2/minute")
    add_users(app)
    alice = session_api(app, OWNER[0])
    for name in ("a", "b"):
        assert alice.post("/api/repl/create", json={**CREATE, "name": name}).status_code == 202
    before, jobs = redis_state(app), queued(app)
    resp = alice.post("/api/repl/create", json={**CREATE, "name": "c"})
    assert resp.status_code == 429, resp.json
    assert resp.json["error"]["code"] == "rate_limited"
    assert 0 < int(resp.headers["Retry-After"]) <= 61
    assert redis_state(app) == before and queued(app) == jobs
    # The same user's token shares the limit; another user has their own.
    token_resp = app.test_client().post(
        "/api/repl/create", json={**CREATE, "name": "d"}, headers=bearer(new_token(app, OWNER[0]))
    )
    assert token_resp.status_code == 429
    assert session_api(app, OTHER[0]).post("/api/repl/create", json=CREATE).status_code == 202


def test_dashboard_create_shares_the_api_rate_limit(data_dir):
    app = make_app(data_dir, DEVEX_RATE_LIMIT_CREATE="1/minute")
    add_users(app)
    alice = session_api(app, OWNER[0])
    assert alice.post("/api/repl/create", json={**CREATE, "name": "a"}).status_code == 202
    before = redis_state(app)
    resp = alice.client.post("/repls", data={"name": "b", "template": "bash",
                                             "csrf_token": alice.csrf})
    assert resp.status_code == 429
    assert "Too many requests" in resp.get_data(as_text=True)
    assert resp.headers["Retry-After"]
    assert redis_state(app) == before


def test_refused_calls_do_not_use_up_the_rate_limit(data_dir):
    app = make_app(data_dir, DEVEX_RATE_LIMIT_CREATE="1/minute")
    add_users(app)
    alice = session_api(app, OWNER[0])
    for _ in range(3):
        assert alice.client.post("/api/repl/create", json=CREATE).status_code == 403  # no CSRF
        assert app.test_client().post("/api/repl/create", json=CREATE).status_code == 401
    assert alice.post("/api/repl/create", json=CREATE).status_code == 202


def test_start_is_rate_limited(data_dir):
    app = make_app(data_dir, DEVEX_RATE_LIMIT_START="1/minute")
    add_users(app)
    first = create_repl(app, OWNER[0], "first")
    second = create_repl(app, OWNER[0], "second")
    alice = session_api(app, OWNER[0])
    assert alice.post(f"/api/repl/{first}/start").status_code == 202
    jobs = queued(app)
    resp = alice.post(f"/api/repl/{second}/start")
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) > 0
    assert store(app).get(second).status == Status.STOPPED and queued(app) == jobs


def test_rate_limits_live_in_redis_in_cluster_mode(redis_url, data_dir):
    app = make_app(data_dir, DEVEX_REDIS_URL=redis_url, DEVEX_RATE_LIMIT_CREATE="1/hour")
    add_users(app)
    alice = session_api(app, OWNER[0])
    assert alice.post("/api/repl/create", json=CREATE).status_code == 202
    resp = alice.post("/api/repl/create", json={**CREATE, "name": "y"})
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) > 60
    conn = redis.Redis.from_url(redis_url)
    assert conn.keys("*rateLimit*")
    # A second web process (same Redis) sees the same count.
    other_process = make_app(data_dir, DEVEX_REDIS_URL=redis_url, DEVEX_RATE_LIMIT_CREATE="1/hour")
    again = session_api(other_process, OWNER[0])
    assert again.post("/api/repl/create", json={**CREATE, "name": "z"}).status_code == 429
    conn.close()


def test_bad_rate_limit_setting_is_refused_at_start(data_dir):
    from devex.config import ConfigError

    with pytest.raises(ConfigError):
        make_app(data_dir, DEVEX_RATE_LIMIT_CREATE="lots")



# -- sessions when Redis is down -------------------------------------------------------------
def test_redis_outage_is_503_not_500_and_healthz_stays_up(data_dir):
    from tests.support.ports import free_port

    app = make_app(data_dir, DEVEX_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    client.set_cookie("session", "some-session-id")
    resp = client.get("/auth/me")
    assert resp.status_code == 503 and resp.json["error"]["code"] == "unavailable"
    resp = client.post("/api/repl/create", json=CREATE, headers={"X-CSRF-Token": "x"})
    assert resp.status_code == 503
