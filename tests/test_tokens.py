"""Personal API tokens: shown once, stored hashed, listed, revoked, expiring, usable as
``Authorization: Bearer`` on /api/* without a CSRF token, last use recorded."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from devex.infra import keys
from tests.support.auth_helpers import (
    OTHER,
    OWNER,
    add_users,
    bearer,
    expired_token,
    make_app,
    new_token,
    session_api,
    store,
)
from tests.support.redis_contents import redis_contents


@pytest.fixture
def app(users_app):
    """Without a worker, with the three users: states are set in the store."""
    return users_app


@pytest.fixture
def alice(app):
    return session_api(app, OWNER[0])


def test_token_is_shown_once_and_stored_only_as_its_hash(app, alice):
    resp = alice.post("/api/tokens", json={"name": "laptop"})
    assert resp.status_code == 201, resp.json
    plaintext = resp.json["token"]
    assert plaintext.startswith("dvx_") and len(plaintext) > 40
    assert resp.json["name"] == "laptop" and resp.json["expires_at"] is None

    listing = alice.get("/api/tokens").json["tokens"]
    assert [t["id"] for t in listing] == [resp.json["id"]]
    assert "token" not in listing[0] and listing[0]["last_used_at"] is None

    redis = app.extensions["devex"].components.redis
    digest = hashlib.sha256(plaintext.encode()).hexdigest()
    assert redis.exists(keys.api_token(digest))
    assert plaintext not in repr(redis_contents(redis, skip=()))  # only its digest is kept


def test_bearer_token_works_without_csrf_and_records_its_use(app, alice):
    plaintext = alice.post("/api/tokens", json={"name": "ide"}).json["token"]
    ide = app.test_client()  # no cookie at all
    created = ide.post(
        "/api/repl/create",
        json={"name": "from-token", "template": "python", "start": False},
        headers=bearer(plaintext),
    )
    assert created.status_code == 202, created.json
    listing = ide.get("/api/repl/", headers=bearer(plaintext)).json["repls"]
    assert [r["name"] for r in listing] == ["from-token"]
    assert store(app).get(created.json["repl"]["id"]).owner_id == OWNER[0]

    used = alice.get("/api/tokens").json["tokens"][0]["last_used_at"]
    assert used is not None
    assert datetime.strptime(used, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) <= datetime.now(
        UTC
    )


def test_revoked_token_stops_working_at_once(app, alice):
    made = alice.post("/api/tokens", json={"name": "ci"}).json
    assert app.test_client().get("/api/repl/", headers=bearer(made["token"])).status_code == 200
    assert alice.delete(f"/api/tokens/{made['id']}").status_code == 204
    resp = app.test_client().get("/api/repl/", headers=bearer(made["token"]))
    assert resp.status_code == 401 and resp.json["error"]["code"] == "invalid_token"
    assert alice.get("/api/tokens").json["tokens"] == []
    assert alice.delete(f"/api/tokens/{made['id']}").status_code == 404


def test_nobody_else_can_revoke_or_see_my_token(app, alice):
    made = alice.post("/api/tokens", json={"name": "mine"}).json
    bob = session_api(app, OTHER[0])
    assert bob.get("/api/tokens").json["tokens"] == []
    resp = bob.delete(f"/api/tokens/{made['id']}")
    assert resp.status_code == 404
    assert app.test_client().get("/api/repl/", headers=bearer(made["token"])).status_code == 200


def test_expired_token_is_refused_and_listed_as_expired(app, alice):
    plaintext = expired_token(app, OWNER[0])
    resp = app.test_client().get("/api/repl/", headers=bearer(plaintext))
    assert resp.status_code == 401
    (listed,) = alice.get("/api/tokens").json["tokens"]
    assert listed["expired"] is True and listed["last_used_at"] is None


def test_expiry_can_be_chosen_at_creation(alice):
    made = alice.post("/api/tokens", json={"name": "week", "expires_in_days": 7}).json
    expires = datetime.strptime(made["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert timedelta(days=6) < expires - datetime.now(UTC) <= timedelta(days=7)
    assert made["expired"] is False


@pytest.mark.parametrize(
    "body, code",
    [
        ({"name": ""}, "invalid_name"),
        ({"name": "   "}, "invalid_name"),
        ({"name": "x" * 65}, "invalid_name"),
        ({}, "invalid_input"),
        ({"name": "ok", "expires_in_days": 0}, "invalid_input"),
        ({"name": "ok", "expires_in_days": "soon"}, "invalid_input"),
    ],
)
def test_bad_token_requests_are_400_and_create_nothing(alice, body, code):
    resp = alice.post("/api/tokens", json=body)
    assert resp.status_code == 400 and resp.json["error"]["code"] == code
    assert alice.get("/api/tokens").json["tokens"] == []


def test_a_token_cannot_mint_more_tokens(app):
    plaintext = new_token(app, OWNER[0])
    resp = app.test_client().post("/api/tokens", json={"name": "x"}, headers=bearer(plaintext))
    assert resp.status_code == 403 and resp.json["error"]["code"] == "session_required"
    assert len(app.extensions["devex_auth"].api_tokens.list(OWNER[0])) == 1


def test_token_count_is_limited(data_dir):
    app = make_app(data_dir, DEVEX_API_TOKENS_PER_USER=2)
    add_users(app)
    alice = session_api(app, OWNER[0])
    for name in ("one", "two"):
        assert alice.post("/api/tokens", json={"name": name}).status_code == 201
    resp = alice.post("/api/tokens", json={"name": "three"})
    assert resp.status_code == 429 and resp.headers["Retry-After"]
    assert len(alice.get("/api/tokens").json["tokens"]) == 2


def test_tokens_need_a_login(app):
    client = app.test_client()
    assert client.get("/api/tokens").status_code == 401
    assert client.post("/api/tokens", json={"name": "x"}).status_code == 401


def test_bad_bearer_never_falls_back_to_the_cookie(app, alice):
    resp = alice.client.get("/api/repl/", headers=bearer("dvx_not-a-token"))
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert alice.get("/api/repl/").status_code == 200


def test_bearer_tokens_count_on_the_api_only(app):
    plaintext = new_token(app, OWNER[0])
    assert app.test_client().get("/auth/me", headers=bearer(plaintext)).status_code == 401
