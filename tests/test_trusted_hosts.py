"""DNS rebinding: only the configured host names (by default 127.0.0.1 and localhost in
embedded mode, and the address the connection arrived on) are served; any other ``Host``
gets 400 before a view or any other hook runs."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from werkzeug.serving import make_server

from devex import create_app
from devex.config import ConfigError
from tests.support.auth_helpers import make_app, store


@contextmanager
def served(app, host: str = "127.0.0.1") -> Iterator[int]:
    server = make_server(host, 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


def raw(ip: str, port: int, method: str, path: str, host: str, body: bytes | None = None,
        headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One request over real HTTP to ``ip:port`` with exactly the ``Host`` header given
    (as a browser sends after a DNS rebinding: the attacker's name, our address)."""
    conn = http.client.HTTPConnection(ip, port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True)
        conn.putheader("Host", host)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body or b"")
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_a_rebound_name_cannot_log_in_locally_or_create_repls(data_dir):
    app = make_app(data_dir)  # embedded mode, local login
    with served(app) as port:
        status, headers, body = raw("127.0.0.1", port, "POST", "/auth/local",
                                    f"attacker.example:{port}")
        assert status == 400, body
        assert json.loads(body)["error"]["code"] == "invalid_host"
        assert "Set-Cookie" not in headers  # no session was made
        assert store(app).get_user("local") is None  # the view never ran
        status, _, _ = raw("127.0.0.1", port, "POST", "/api/repl/create",
                           f"attacker.example:{port}", b'{"name":"x","template":"bash"}',
                           {"Content-Type": "application/json"})
        assert status == 400
        for good in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
            status, headers, body = raw("127.0.0.1", port, "POST", "/auth/local", good)
            assert status == 200, (good, body)
            assert json.loads(body)["login"] == "local"


@pytest.mark.parametrize("method, path", [("OPTIONS", "/api/repl/"), ("GET", "/healthz"),
                                          ("GET", "/"), ("GET", "/static/style.css")])
def test_every_route_and_hook_refuses_an_unknown_host(client, method, path):
    resp = client.open(path, method=method, headers={"Host": "rebound.example"})
    assert resp.status_code == 400 and resp.json["error"]["code"] == "invalid_host"
    assert client.open(path, method=method).status_code in (200, 302)  # Host: localhost


def test_the_bound_address_is_served_too(data_dir):
    """Bound to another address than the defaults (127.0.0.2 is loopback on Linux, as a
    LAN address would be for `flask run --host`): requests naming it are served."""
    app = make_app(data_dir)
    with served(app, "127.0.0.2") as port:
        assert raw("127.0.0.2", port, "GET", "/healthz", f"127.0.0.2:{port}")[0] == 200
        assert raw("127.0.0.2", port, "GET", "/healthz", f"127.0.0.3:{port}")[0] == 400


def test_configured_hosts_replace_the_defaults(data_dir, redis_url):
    app = create_app({"TESTING": True, "DEVEX_DATA_DIR": data_dir, "DEVEX_SECRET_KEY": "s",
                      "DEVEX_REDIS_URL": redis_url, "DEVEX_EMBEDDED_WORKER": "false",
                      "DEVEX_ALLOWED_HOSTS": "devex.example.com,.apps.example.com",
                      "DEVEX_CORE_URL": "http://devex-web.devex.svc:8000"})
    client = app.test_client()
    for host in ("devex.example.com", "devex.example.com:8443", "ide.apps.example.com",
                 "devex-web.devex.svc:8000"):  # runners call the core by DEVEX_CORE_URL
        assert client.get("/healthz", headers={"Host": host}).status_code == 200, host
    for host in ("localhost", "example.com", "devex.example.com.evil.example"):
        assert client.get("/healthz", headers={"Host": host}).status_code == 400, host
    with served(app) as port:  # a probe to the pod's own address still gets an answer
        assert raw("127.0.0.1", port, "GET", "/healthz", f"127.0.0.1:{port}")[0] == 200


def test_a_cluster_without_allowed_hosts_serves_any_host_and_star_says_so(data_dir, redis_url):
    base = {"TESTING": True, "DEVEX_DATA_DIR": data_dir, "DEVEX_SECRET_KEY": "s",
            "DEVEX_REDIS_URL": redis_url, "DEVEX_EMBEDDED_WORKER": "false"}
    github = {"DEVEX_AUTH": "github", "DEVEX_GITHUB_CLIENT_ID": "i",
              "DEVEX_GITHUB_CLIENT_SECRET": "s"}
    unset = create_app({**base, **github}).test_client()
    assert unset.get("/healthz", headers={"Host": "devex.example.com"}).status_code == 200
    star = create_app({**base, "DEVEX_ALLOWED_HOSTS": "*"}).test_client()  # even local login
    assert star.get("/healthz", headers={"Host": "anything.example"}).status_code == 200
    local = create_app(base).test_client()  # local login on a real Redis: the defaults
    assert local.get("/healthz", headers={"Host": "anything.example"}).status_code == 400


@pytest.mark.parametrize("bad", ["https://devex.example.com", "devex.example.com:443",
                                 "devex.example.com/x", "exa mple.com"])
def test_allowed_hosts_must_be_host_names(data_dir, bad):
    with pytest.raises(ConfigError, match="DEVEX_ALLOWED_HOSTS"):
        make_app(data_dir, DEVEX_ALLOWED_HOSTS=bad)


def test_a_remembered_verdict_is_per_host_and_per_list(data_dir, redis_url):
    """Hosts found trusted are remembered per process: that never lets another name in,
    nor a name trusted by one app into another that does not list it."""
    base = {"TESTING": True, "DEVEX_DATA_DIR": data_dir, "DEVEX_SECRET_KEY": "s",
            "DEVEX_REDIS_URL": redis_url, "DEVEX_EMBEDDED_WORKER": "false"}
    wide = create_app({**base, "DEVEX_ALLOWED_HOSTS": "a.example,b.example"}).test_client()
    narrow = create_app({**base, "DEVEX_ALLOWED_HOSTS": "a.example"}).test_client()
    for _ in range(2):  # the second round answers from what the first remembered
        assert wide.get("/healthz", headers={"Host": "b.example"}).status_code == 200
        assert narrow.get("/healthz", headers={"Host": "b.example"}).status_code == 400
        assert wide.get("/healthz", headers={"Host": "c.example"}).status_code == 400
        assert narrow.get("/healthz", headers={"Host": "a.example"}).status_code == 200
