"""Reads cost no writes, and what that must not weaken: sessions still expire, revoked tokens
are refused at once, the list comes a page at a time. Against a real redis-server, whose
``INFO commandstats`` counts every command the app sends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis

from devex.models import Desired, Repl, Status
from devex.web.auth import sessions
from tests.support.auth_helpers import (
    OTHER,
    OWNER,
    add_users,
    bearer,
    create_repl,
    make_app,
    new_token,
    session_api,
    store,
)

# Commands run inside Lua scripts are counted too, by their own names.
WRITES = {"set", "setex", "hset", "hmset", "del", "expire", "pexpire",
          "zadd", "lpush", "rpush", "incr", "hincrby"}


@pytest.fixture
def app(data_dir, redis_url):
    app = make_app(data_dir, DEVEX_REDIS_URL=redis_url)
    add_users(app)
    yield app
    app.extensions["devex"].close()


def writes(redis_url: str) -> int:
    stats = redis.Redis.from_url(redis_url).info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k.split("_", 1)[1] in WRITES)


def test_plain_reads_write_nothing_and_set_no_cookie(app, redis_url):
    repl_id = create_repl(app, OWNER[0])
    api = session_api(app, OWNER[0])
    token = new_token(app, OWNER[0])
    for headers in (None, bearer(token)):
        client = api.client if headers is None else app.test_client()
        client.get(f"/api/repl/{repl_id}", headers=headers)  # the first use may write
        before = writes(redis_url)
        for path in (f"/api/repl/{repl_id}", "/api/repl/", f"/api/repl/{repl_id}/events"):
            resp = client.get(path, headers=headers)
            assert resp.status_code == 200, resp.json
            assert "Set-Cookie" not in resp.headers
        assert writes(redis_url) == before, headers
    page = api.client.get("/")
    assert page.status_code == 200 and "Set-Cookie" not in page.headers


def test_a_used_session_slides_forward_once_per_interval(app, redis_url, monkeypatch):
    api = session_api(app, OWNER[0])
    conn = redis.Redis.from_url(redis_url)
    api.get("/api/repl/")  # stored with its refresh mark
    [key] = conn.keys("session:*")
    lifetime = int(app.permanent_session_lifetime.total_seconds())
    assert 0 < conn.ttl(key) <= lifetime  # it still expires
    conn.expire(key, 100)  # as if most of its lifetime were spent
    assert "Set-Cookie" not in api.get("/api/repl/").headers  # within the interval: nothing
    assert conn.ttl(key) <= 100
    later = sessions.time.time() + sessions.refresh_interval(app.extensions["devex"].settings)
    monkeypatch.setattr(sessions.time, "time", lambda: later + 1)
    refreshed = api.get("/api/repl/")
    assert refreshed.status_code == 200 and "Set-Cookie" in refreshed.headers
    assert conn.ttl(key) > lifetime - 60  # a whole lifetime again from this use
    conn.delete(key)  # expired: the browser's cookie opens nothing
    assert api.get("/api/repl/").status_code == 401


def test_last_used_is_written_at_most_once_a_minute_but_revocation_is_immediate(app):
    service = app.extensions["devex_auth"].api_tokens
    now = [datetime(2026, 11, 30, 12, 0, tzinfo=UTC)]
    service.clock = lambda: now[0]
    new = service.create(OWNER[0], "ci")

    def last_used() -> str | None:
        return {t.id: t for t in service.list(OWNER[0])}[new.token.id].last_used_at

    assert service.authenticate(new.plaintext) is not None
    assert last_used() == "2026-11-30T12:00:00.000000Z"
    now[0] += timedelta(seconds=30)
    assert service.authenticate(new.plaintext) is not None
    assert last_used() == "2026-11-30T12:00:00.000000Z"  # not written again within the minute
    now[0] += timedelta(seconds=60)
    assert service.authenticate(new.plaintext) is not None
    assert last_used() == "2026-11-30T12:01:30.000000Z"
    client = app.test_client()
    assert client.get("/api/repl/", headers=bearer(new.plaintext)).status_code == 200
    service.revoke(OWNER[0], new.token.id)
    assert client.get("/api/repl/", headers=bearer(new.plaintext)).status_code == 401


def round_trips(monkeypatch) -> list[int]:
    """Counts what the app sends to Redis: one send is one round trip (a pipeline or a
    script included)."""
    sent = [0]
    original = redis.connection.Connection.send_packed_command

    def counting(self, command, check_health=True):
        sent[0] += 1
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    return sent


def test_reading_one_repl_is_one_round_trip_by_session_and_by_token(app, monkeypatch):
    repl_id = create_repl(app, OWNER[0])
    api = session_api(app, OWNER[0])
    by_token = app.test_client()
    token = bearer(new_token(app, OWNER[0]))
    api.get(f"/api/repl/{repl_id}")  # the first read learns whose credential it is
    by_token.get(f"/api/repl/{repl_id}", headers=token)
    sent = round_trips(monkeypatch)
    for client, headers in ((api.client, None), (by_token, token)):
        sent[0] = 0
        resp = client.get(f"/api/repl/{repl_id}", headers=headers)
        assert resp.status_code == 200 and resp.json["id"] == repl_id
        assert sent[0] == 1, headers


def test_the_one_read_survives_a_flushed_script_cache_and_dropped_connections(app, redis_url):
    """The credential's script runs on a pooled connection without redis-py's command
    wrappers (devex.infra.redis_direct): it must still reload a script the server lost (a
    restart, SCRIPT FLUSH) and reconnect when its connections were cut."""
    repl_id = create_repl(app, OWNER[0])
    api = session_api(app, OWNER[0])
    by_token = app.test_client()
    token = bearer(new_token(app, OWNER[0]))
    admin = redis.Redis.from_url(redis_url)
    for cut in (admin.script_flush, lambda: admin.client_kill_filter(_type="normal",
                                                                    skipme=True)):
        cut()
        assert api.get(f"/api/repl/{repl_id}").json["id"] == repl_id
        resp = by_token.get(f"/api/repl/{repl_id}", headers=token)
        assert resp.status_code == 200 and resp.json["id"] == repl_id


def test_routing_the_request_early_changes_no_answer(app):
    """With a session, the request is routed while the session is read (to fetch the REPL
    in the same round trip) and Flask does not route it again: unknown paths, wrong
    methods and redirects answer as before, and views get their arguments."""
    repl_id = create_repl(app, OWNER[0])
    api = session_api(app, OWNER[0])
    assert api.get("/api/no-such-thing").status_code == 404
    wrong = api.client.get("/api/repl/create")
    assert wrong.status_code == 405
    assert set(wrong.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
    assert api.client.get("/api/repl").status_code == 308  # to /api/repl/
    assert api.get(f"/api/repl/{repl_id}").json["id"] == repl_id
    assert api.get(f"/api/repl/{repl_id}/events").status_code == 200


def test_a_remembered_owner_is_checked_against_the_credential_read_with_it(app):
    """The owner remembered for a credential only decides what is fetched along: a wrong
    one (here planted) is never believed, and logout, suspension and revocation still act
    on the very next request."""
    mine = create_repl(app, OWNER[0])
    theirs = create_repl(app, OTHER[0], "theirs")
    api = session_api(app, OWNER[0])
    token = new_token(app, OWNER[0])
    owners = app.extensions["devex_auth"].owners
    assert api.get(f"/api/repl/{mine}").status_code == 200
    for credential in owners.keys():
        owners.remember(credential, OTHER[0])  # as if the process had it wrong
    assert api.get(f"/api/repl/{theirs}").status_code == 404
    assert api.get(f"/api/repl/{mine}").json["id"] == mine
    by_token = app.test_client()
    assert by_token.get(f"/api/repl/{theirs}", headers=bearer(token)).status_code == 404
    assert by_token.get(f"/api/repl/{mine}", headers=bearer(token)).status_code == 200

    app.extensions["devex_auth"].accounts.suspend(OWNER[0], "test")
    assert by_token.get(f"/api/repl/{mine}", headers=bearer(token)).status_code == 401
    assert api.get(f"/api/repl/{mine}").status_code == 401


def test_after_logout_the_remembered_session_opens_nothing(app):
    repl_id = create_repl(app, OWNER[0])
    api = session_api(app, OWNER[0])
    cookie = api.client.get_cookie("session").value
    assert api.get(f"/api/repl/{repl_id}").status_code == 200
    assert api.post("/auth/logout").status_code in (200, 204)
    replay = app.test_client()
    replay.set_cookie("session", cookie)
    assert replay.get(f"/api/repl/{repl_id}").status_code == 401


def _many(app, count: int) -> list[str]:
    ids = []
    for i in range(count):
        repl = Repl(id=f"r{i:05d}", name=f"repl {i}", template="bash", owner_id=OWNER[0],
                    owner_login=OWNER[1], storage_prefix=f"{OWNER[1]}/r{i:05d}/",
                    status=Status.STOPPED, desired=Desired.STOPPED)
        store(app).create(repl)
        ids.append(repl.id)
    return ids


def test_the_list_comes_a_page_at_a_time(app):
    made = _many(app, 230)
    api = session_api(app, OWNER[0])
    seen, cursor, pages = [], None, 0
    while True:
        resp = api.get("/api/repl/", query_string={"limit": 100, "cursor": cursor or ""})
        assert resp.status_code == 200, resp.json
        assert resp.json["total"] == 230
        seen += [r["id"] for r in resp.json["repls"]]
        pages += 1
        cursor = resp.json["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == list(reversed(made))  # newest first, each exactly once
    first = api.get("/api/repl/").json
    assert len(first["repls"]) == 100 and first["next_cursor"]  # the default page
    for bad in ({"limit": 0}, {"limit": 201}, {"limit": "x"}, {"cursor": "bm9wZQ"},
                {"cursor": "%%%"}):
        resp = api.get("/api/repl/", query_string=bad)
        assert 400 <= resp.status_code < 500 and "error" in resp.json, bad


def test_a_repl_created_while_paging_is_neither_lost_nor_repeated(app):
    made = _many(app, 30)
    api = session_api(app, OWNER[0])
    first = api.get("/api/repl/", query_string={"limit": 10}).json
    newer = create_repl(app, OWNER[0], name="newer")  # lands before the cursor
    rest, cursor = [], first["next_cursor"]
    while cursor:
        page = api.get("/api/repl/", query_string={"limit": 10, "cursor": cursor}).json
        rest += [r["id"] for r in page["repls"]]
        cursor = page["next_cursor"]
    listed = [r["id"] for r in first["repls"]] + rest
    assert listed == list(reversed(made)) and newer not in listed


def test_the_dashboard_pages_with_show_more(app):
    made = _many(app, 60)
    api = session_api(app, OWNER[0])
    page = api.get("/").get_data(as_text=True)
    assert made[-1] in page and made[10] in page and made[9] not in page  # 50 a page
    assert "Show more" in page
    href = page.split('hx-get="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    more = api.get(href).get_data(as_text=True)
    assert made[0] in more and made[9] in more and made[10] not in more
    assert "Show more" not in more
    more_row = page.split('class="more-row"', 1)[1]
    plain = more_row.split('<a href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert "cursor=" in plain and made[0] in api.get(plain).get_data(as_text=True)


def test_fast_reads_send_what_the_documented_schema_would(app):
    """``GET /api/repl/<id>`` and the list skip the output schema's dump for speed: their
    bodies must still be exactly what the schema makes of the same REPLs."""
    from devex.web.schemas.repls import ReplList, ReplOut

    repl_id = create_repl(app, OWNER[0])
    api = session_api(app, OWNER[0])
    repl = store(app).get(repl_id)
    assert api.get(f"/api/repl/{repl_id}").json == ReplOut().dump(repl.public())
    listed = api.get("/api/repl/").json
    assert listed == ReplList().dump(
        {"repls": [repl.public()], "total": 1, "next_cursor": None})

