"""CORS: only the configured IDE frontend origins, with credentials and the CSRF header."""

from __future__ import annotations

import pytest

from tests.support.auth_helpers import OWNER, add_users, make_app, session_api

IDE = "https://ide.example.com"


@pytest.fixture
def app(data_dir):
    app = make_app(data_dir, DEVEX_CORS_ORIGINS=f"{IDE}, https://other-ide.example.com")
    add_users(app)
    return app


def preflight(client, origin, path="/api/repl/create"):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-csrf-token",
        },
    )


def test_preflight_from_the_ide_origin_allows_credentials_and_csrf_header(app):
    resp = preflight(app.test_client(), IDE)
    assert resp.status_code == 200
    assert resp.headers["Access-Control-Allow-Origin"] == IDE
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    allowed = resp.headers["Access-Control-Allow-Headers"].lower()
    assert "x-csrf-token" in allowed and "content-type" in allowed
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]


def test_other_origins_get_no_cors_headers(app):
    resp = preflight(app.test_client(), "https://evil.example.net")
    assert "Access-Control-Allow-Origin" not in resp.headers
    alice = session_api(app, OWNER[0])
    resp = alice.client.get("/api/repl/", headers={"Origin": "https://evil.example.net"})
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_credentialed_api_call_from_the_ide(app):
    alice = session_api(app, OWNER[0])
    resp = alice.client.get("/api/repl/", headers={"Origin": IDE})
    assert resp.status_code == 200
    assert resp.headers["Access-Control-Allow-Origin"] == IDE
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    me = alice.client.get("/auth/me", headers={"Origin": IDE})
    assert me.headers["Access-Control-Allow-Origin"] == IDE and me.json["csrf_token"]


def test_refusals_carry_cors_headers_so_the_ide_can_read_them(app):
    resp = app.test_client().post("/api/repl/create", json={}, headers={"Origin": IDE})
    assert resp.status_code == 401
    assert resp.headers["Access-Control-Allow-Origin"] == IDE


def test_no_cors_without_configured_origins(data_dir):
    app = make_app(data_dir)
    resp = preflight(app.test_client(), IDE)
    assert "Access-Control-Allow-Origin" not in resp.headers
