"""Degrading cleanly (issue 12, D4 and D7): while a real redis-server is stopped or frozen
(SIGSTOP), every page is a readable 503 answered within a bounded time, the API's answers
are JSON 503s, and the health endpoints keep their time limits -- also with S3 frozen, and
in gunicorn with fewer threads than hanging callers."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import redis
import requests

from devex import create_app
from tests.support.gunicorn_server import gunicorn
from tests.support.redis_server import running_redis
from tests.support.s3_gate import S3Gate
from tests.support.waiting import wait_for

# Generous against the bounds promised (2 s per Redis wait, 2 s per check): a request that
# hung on a frozen dependency (10 s socket timeouts, boto3's 150 s) would hit it.
CLIENT_TIMEOUT = 5
OUTAGE_TEXT = "cannot reach its state store"


@dataclass
class OwnRedis:
    """A redis-server this test may stop or freeze."""

    url: str
    pid: int

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        os.kill(self.pid, signal.SIGKILL)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    with running_redis() as url:
        client = redis.Redis.from_url(url)
        pid = int(client.info("server")["process_id"])
        client.close()
        server = OwnRedis(url, pid)
        try:
            yield server
        finally:
            try:
                server.thaw()  # a frozen server cannot be stopped politely
            except ProcessLookupError:
                pass


@pytest.fixture
def app(own_redis, data_dir):
    """Cluster-style: the test's redis-server, no worker (nothing here needs jobs done)."""
    app = create_app({"TESTING": True, "DEVEX_REDIS_URL": own_redis.url,
                      "DEVEX_DATA_DIR": str(data_dir), "DEVEX_SECRET_KEY": "degraded",
                      "DEVEX_AUTH": "local", "DEVEX_EMBEDDED_WORKER": "false"})
    yield app
    app.extensions["devex"].close()


def browser_login(site: str) -> tuple[requests.Session, str]:
    """A logged-in browser session and one REPL of its user."""
    browser = requests.Session()
    r = browser.post(site + "/auth/local", timeout=CLIENT_TIMEOUT)
    assert r.status_code == 200, r.text
    created = browser.post(site + "/api/repl/create", json={"name": "kept", "template": "bash"},
                           headers={"X-CSRF-Token": r.json()["csrf_token"]},
                           timeout=CLIENT_TIMEOUT)
    assert created.status_code == 202, created.text
    return browser, created.json()["repl"]["id"]


PAGE = {"Accept": "text/html,application/xhtml+xml"}
HTMX = {"HX-Request": "true", "Accept": "*/*"}


def requests_of(repl_id: str) -> list[tuple[str, dict, str]]:
    """(path, headers, what the answer must be) for the dashboard, its fragments, the
    login page and the API."""
    return [
        ("/", PAGE, "page"),
        (f"/repls/{repl_id}", PAGE, "page"),
        ("/login", PAGE, "page"),
        ("/tokens", PAGE, "page"),
        ("/repls/page", HTMX, "fragment"),
        (f"/repls/{repl_id}/row", HTMX, "fragment"),
        ("/api/repl/", {}, "json"),
        (f"/api/repl/{repl_id}", {}, "json"),
    ]


def assert_readable_503(resp: requests.Response, kind: str) -> None:
    assert resp.status_code == 503, (resp.url, resp.status_code, resp.text[:300])
    assert resp.headers["Retry-After"]
    if kind == "json":
        assert resp.json()["error"]["code"] == "unavailable"
        return
    assert resp.headers["Content-Type"].startswith("text/html")
    assert OUTAGE_TEXT in resp.text
    if kind == "page":
        assert "<title>Temporarily unavailable" in resp.text
        assert resp.headers["Content-Security-Policy"]  # still a page of ours
    else:  # htmx shows it above the list, in place of the fragment
        assert resp.headers["HX-Retarget"] == "#flash"


def get(session: requests.Session, site: str, path: str, headers: dict) -> requests.Response:
    return session.get(site + path, headers=headers, timeout=CLIENT_TIMEOUT,
                       allow_redirects=False)


def redis_noticed_down(site: str) -> bool:
    return requests.get(site + "/readyz", timeout=CLIENT_TIMEOUT).status_code == 503


def test_every_page_is_a_readable_503_while_redis_is_stopped(site, own_redis):
    browser, repl_id = browser_login(site)
    assert get(browser, site, "/", PAGE).status_code == 200

    own_redis.stop()

    # At once, before anything noticed: the session cannot be read -> 503, not a 500 page.
    assert_readable_503(get(browser, site, "/", PAGE), "page")
    wait_for(lambda: redis_noticed_down(site), 15, "/readyz to report Redis down")
    anonymous = requests.Session()
    for who in (browser, anonymous):
        for path, headers, kind in requests_of(repl_id):
            assert_readable_503(get(who, site, path, headers), kind)
    assert requests.get(site + "/healthz", timeout=CLIENT_TIMEOUT).status_code == 200


def test_pages_answer_in_bounded_time_while_redis_is_frozen_and_recover(site, own_redis):
    browser, repl_id = browser_login(site)
    assert get(browser, site, "/", PAGE).status_code == 200

    own_redis.freeze()  # accepts connections, never answers: every read would wait

    # Before the watch noticed, a request waits at most DEVEX_WEB_REDIS_TIMEOUT (2 s).
    assert_readable_503(get(browser, site, f"/repls/{repl_id}", PAGE), "page")
    assert_readable_503(get(browser, site, "/api/repl/", {}), "json")
    wait_for(lambda: redis_noticed_down(site), 15, "/readyz to report Redis down")
    # Then at once, however many ask together.
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda item: (get(browser, site, item[0], item[1]), item[2]),
                                requests_of(repl_id) * 3))
    for resp, kind in answers:
        assert_readable_503(resp, kind)
    assert requests.get(site + "/healthz", timeout=CLIENT_TIMEOUT).status_code == 200

    own_redis.thaw()

    wait_for(lambda: get(browser, site, "/", PAGE).status_code == 200, 15, "the dashboard back")
    page = get(browser, site, "/", PAGE)
    assert "kept" in page.text  # same session, same REPLs: nothing was lost
    assert requests.get(site + "/readyz", timeout=CLIENT_TIMEOUT).json() == {"redis": "ok"}


# -- D7: health endpoints with hard time limits, in gunicorn --------------------------------


@pytest.fixture
def s3_gate(moto_server) -> Iterator[S3Gate]:
    gate = S3Gate(moto_server)
    yield gate
    gate.close()


def test_health_endpoints_keep_their_time_limits_with_redis_and_s3_frozen(
        tmp_path, own_redis, s3_settings, s3_gate):
    """One gunicorn worker with two threads: ten callers at once would hold every thread if
    any of them waited on a frozen dependency, and /healthz behind them would time out.
    The admin checks' limit is set to 2 s here so that two callers held by it still leave
    /healthz inside the client's 5 s."""
    bucket = s3_settings["DEVEX_S3_BUCKET"]
    settings = {**s3_settings, "DEVEX_S3_ENDPOINT_URL": s3_gate.url,
                "DEVEX_REDIS_URL": own_redis.url, "DEVEX_DATA_DIR": str(tmp_path / "data"),
                "DEVEX_SECRET_KEY": "health-limits", "DEVEX_AUTH": "local",
                "DEVEX_ADMINS": "local", "DEVEX_EMBEDDED_WORKER": "false",
                "DEVEX_HEALTH_TIMEOUT": "2"}
    with gunicorn(tmp_path, settings, "--workers", "1", "--threads", "2") as web:
        admin = requests.Session()
        assert admin.post(web.url + "/auth/local", timeout=CLIENT_TIMEOUT).status_code == 200
        all_ok = {"redis": "ok", "storage": "ok", "runtime": "ok"}
        wait_for(lambda: admin.get(web.url + "/api/admin/health", timeout=CLIENT_TIMEOUT)
                 .json() == all_ok, 30, "every check to pass (the S3 client warm)")

        # S3 frozen: its check (HeadBucket) never gets an answer.
        held = s3_gate.hold("HEAD", f"/{bucket}")
        with ThreadPoolExecutor(12) as pool:
            checks = [pool.submit(admin.get, web.url + "/api/admin/health",
                                  timeout=CLIENT_TIMEOUT) for _ in range(6)]
            probes = [pool.submit(web.get, path) for path in ["/readyz"] * 5 + ["/healthz"]]
            for done in checks:
                report = done.result()
                assert report.status_code == 503
                assert report.json()["redis"] == "ok" and report.json()["runtime"] == "ok"
                assert report.json()["storage"].startswith("error: no answer within")
            assert [p.result().status_code for p in probes] == [200] * 6
        assert held.arrived.is_set()
        # Every call waited on the one check under way: no second HeadBucket was sent (it
        # would have passed the gate and answered "ok").
        again = admin.get(web.url + "/api/admin/health", timeout=CLIENT_TIMEOUT).json()
        assert again["storage"].startswith("error: no answer within")
        held.release()
        wait_for(lambda: admin.get(web.url + "/api/admin/health", timeout=CLIENT_TIMEOUT)
                 .json()["storage"] == "ok", 15, "the storage check to pass again")

        # Redis frozen: /readyz reports it within its 2 s, /healthz never notices.
        own_redis.freeze()
        with ThreadPoolExecutor(12) as pool:
            ready = [pool.submit(web.get, "/readyz") for _ in range(10)]
            alive = pool.submit(web.get, "/healthz")
            assert {r.result().status_code for r in ready} <= {200, 503}
            assert alive.result().status_code == 200
        wait_for(lambda: web.get("/readyz").status_code == 503, 15, "/readyz to say 503")
        assert web.get("/readyz").json() == {"redis": "unavailable"}
        assert web.get("/healthz").status_code == 200
        assert admin.get(web.url + "/api/admin/health", timeout=CLIENT_TIMEOUT).status_code == 503
        metrics = web.get("/metrics")
        assert metrics.status_code == 200 and "devex_redis_up 0.0" in metrics.text

        own_redis.thaw()
        wait_for(lambda: web.get("/readyz").status_code == 200, 15, "/readyz to say 200")
