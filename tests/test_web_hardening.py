"""The smaller decisions of the security review: no OAuth code or state in access logs
(werkzeug's and gunicorn's), pages that may not be framed and carry a CSP, and personal
tokens managed from a browser session only."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect

from tests.conftest import ROOT
from tests.support.auth_helpers import (
    OWNER,
    bearer,
    new_token,
    session_api,
)
from tests.support.browser import create, sign_in
from tests.support.github_login import Live, github_app
from tests.support.ports import free_port
from tests.support.waiting import wait_for


@pytest.fixture
def app(users_app):
    """Without a worker, with the three users: states are set in the store."""
    return users_app


# -- OAuth code and state stay out of access logs ---------------------------------------------


def test_werkzeug_access_log_has_no_oauth_code_or_state(fake_github, data_dir, caplog):
    live = Live(github_app(fake_github, data_dir, SESSION_COOKIE_SECURE=False))
    try:
        with caplog.at_level(logging.INFO, logger="werkzeug"):
            assert live.login().status_code == 302
            assert live.get("/login?next=/repls/keep-me").status_code == 302
        assert live.get("/auth/me").status_code == 200
    finally:
        live.close()
    (code_request,) = fake_github.authorize_requests
    # The app's request lines (the fake GitHub logs its own under the same logger).
    ours = [m for m in (r.getMessage() for r in caplog.records if r.name == "werkzeug")
            if "GET /auth/" in m or "GET /login?" in m]
    callback = [m for m in ours if "/auth/github/authorized" in m]
    assert callback, ours  # the callback was logged ...
    for line in callback:  # ... without its query string
        assert "code=" not in line and code_request["state"] not in line, line
    assert any("/login?next=/repls/keep-me" in m for m in ours)  # other queries stay


def test_gunicorn_access_log_has_no_oauth_code_or_state(tmp_path):
    """Production's server, its own access log: the app's filter applies there too."""
    port = free_port()
    access = tmp_path / "access.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVEX_")}
    env.update(DEVEX_DATA_DIR=str(tmp_path / "data"), DEVEX_EMBEDDED_WORKER="false",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    gunicorn = Path(sys.executable).with_name("gunicorn")
    proc = subprocess.Popen(
        [str(gunicorn), "wsgi:app", "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "--access-logfile", str(access)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return requests.get(url + "/healthz", timeout=2).status_code == 200
            except requests.RequestException:  # not listening yet, or still loading the app
                return proc.poll() is not None  # exited: the assertion below says so
        wait_for(up, 60, "gunicorn to serve")
        assert proc.poll() is None, "gunicorn exited"
        requests.get(url + "/auth/github/authorized?code=SECRET-CODE&state=SECRET-STATE",
                     timeout=10)
        requests.get(url + "/login?next=/repls/keep-me", timeout=10, allow_redirects=False)
        def logged() -> str:
            text = access.read_text()
            return text if "keep-me" in text else ""

        log = wait_for(logged, 30, "both requests in the access log")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert "/auth/github/authorized" in log
    assert "SECRET-CODE" not in log and "SECRET-STATE" not in log
    assert "/login?next=/repls/keep-me" in log


# -- pages may not be framed; every page carries the CSP ---------------------------------------


@pytest.mark.parametrize("path", ["/", "/login", "/tokens", "/no-such-page"])
def test_pages_refuse_framing_and_carry_a_csp(app, path):
    browser = session_api(app, OWNER[0])
    resp = browser.get(path, headers={"Accept": "text/html"})
    assert resp.mimetype == "text/html", path
    assert resp.headers["X-Frame-Options"] == "DENY"
    csp = resp.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_api_answers_are_not_sniffed(app):
    resp = session_api(app, OWNER[0]).get("/api/repl/")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "X-Frame-Options" not in resp.headers  # JSON is not a page


@pytest.mark.browser
def test_the_dashboard_works_under_its_csp(page):
    """The policy the server sends is the one the pages keep to: a browser reports no
    violation while signing in, creating a REPL through htmx and reading the list."""
    page.add_init_script(
        "window.__csp = []; document.addEventListener('securitypolicyviolation', "
        "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    sign_in(page)
    create(page, "under-csp", start=False)
    expect(page.get_by_text("under-csp")).to_be_visible()
    page.goto("/tokens")
    expect(page).to_have_title("Personal tokens · Devex")
    assert page.evaluate("window.__csp") == []
    framed = page.request.get("/")
    assert framed.headers["content-security-policy"] == (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'")


# -- personal tokens are managed from a session only --------------------------------------------


def test_a_token_can_neither_list_nor_revoke_tokens(app):
    owner = session_api(app, OWNER[0])
    kept = owner.post("/api/tokens", json={"name": "kept"}).json
    leaked = new_token(app, OWNER[0])
    as_token = app.test_client()
    listing = as_token.get("/api/tokens", headers=bearer(leaked))
    assert listing.status_code == 403 and listing.json["error"]["code"] == "session_required"
    revoke = as_token.delete(f"/api/tokens/{kept['id']}", headers=bearer(leaked))
    assert revoke.status_code == 403 and revoke.json["error"]["code"] == "session_required"
    assert as_token.get("/api/repl/", headers=bearer(kept["token"])).status_code == 200
    assert len(owner.get("/api/tokens").json["tokens"]) == 2
    assert owner.delete(f"/api/tokens/{kept['id']}").status_code == 204  # the owner can
