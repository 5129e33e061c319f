"""Request bodies: the caller is authenticated before the body is read, JSON nesting is
bounded, and whatever the parser cannot take is a 400 in the error contract that says
what was wrong (never a 500, never "must be valid JSON" for something else)."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading

import pytest
from werkzeug.serving import make_server

from devex.models import Status
from devex.web.jsonbody import nesting_depth
from devex_shared import access_tokens
from tests.support.auth_helpers import (
    OWNER,
    create_repl,
    session_api,
    store,
)

DEEP = "[" * 30_000  # what the probe sent: RecursionError in json.loads


@pytest.fixture
def app(users_app):
    """Without a worker, with the three users: states are set in the store."""
    return users_app


def runner_token(repl_id: str) -> str:
    key = access_tokens.repl_key("test-secret", repl_id)
    return access_tokens.sign(key, repl_id, access_tokens.RUNNER_SCOPE)


def post_json(client, path: str, text: str, headers=None):
    return client.post(path, data=text, content_type="application/json", headers=headers or {})


def test_deep_nesting_without_a_runner_token_is_refused_before_parsing(app, caplog):
    repl_id = create_repl(app, OWNER[0], status=Status.RUNNING)
    with caplog.at_level(logging.ERROR):
        resp = post_json(app.test_client(), f"/api/runner/{repl_id}/heartbeat", DEEP)
    assert resp.status_code == 401 and resp.json["error"]["code"] == "unauthorized"
    assert caplog.records == []  # no traceback logged for it either


def test_deep_nesting_from_an_authenticated_caller_is_a_400(app):
    repl_id = create_repl(app, OWNER[0], status=Status.RUNNING)
    auth = {"Authorization": f"Bearer {runner_token(repl_id)}"}
    resp = post_json(app.test_client(), f"/api/runner/{repl_id}/heartbeat", DEEP, auth)
    assert resp.status_code == 400 and resp.json["error"]["code"] == "invalid_json"
    assert "deeper than 32 levels" in resp.json["error"]["message"]
    owner = session_api(app, OWNER[0])
    created = owner.client.post("/api/repl/create", data=DEEP, content_type="application/json",
                                headers={"X-CSRF-Token": owner.csrf})
    assert created.status_code == 400 and created.json["error"]["code"] == "invalid_json"
    assert store(app).get(repl_id).last_activity_at is None


def test_the_nesting_bound_leaves_room_for_real_bodies(app):
    owner = session_api(app, OWNER[0])
    extra = "[" * 31 + "]" * 31  # with the object around them: 32 levels, the most allowed
    ok = owner.client.post(
        "/api/repl/create",
        data=f'{{"name": "deep [[[ in a string", "template": "bash", "start": false, '
             f'"extra": {extra}}}',
        content_type="application/json", headers={"X-CSRF-Token": owner.csrf})
    assert ok.status_code == 400 and ok.json["error"]["code"] == "invalid_name"  # parsed
    fine = owner.post("/api/repl/create", json={"name": "fine", "template": "bash",
                                                "start": False, "x": [[[[{"a": [1]}]]]]})
    assert fine.status_code == 202, fine.json


@pytest.mark.parametrize("text, depth", [("[]", 1), ('{"a": [{"b": "]]]]"}]}', 3),
                                         ('"[[[[["', 0), ('["\\"[[["]', 1), ("1", 0)])
def test_nesting_depth_ignores_brackets_in_strings(text, depth):
    assert nesting_depth(text) == depth


@pytest.mark.parametrize(
    "body, content_type, words",
    [
        (b"{bad", "application/json", "valid JSON"),
        (b'{"name": "x", "template": }', "application/json", "line 1"),
        (b"\xff\xfe{}", "application/json", "UTF-8"),
        (b'{"name": "x"} trailing', "application/json", "valid JSON"),
        (b"[" * 33 + b"]" * 33, "application/json", "deeper"),
    ],
)
def test_unparseable_bodies_are_400_in_the_contract(app, body, content_type, words):
    owner = session_api(app, OWNER[0])
    resp = owner.client.post("/api/repl/create", data=body, content_type=content_type,
                             headers={"X-CSRF-Token": owner.csrf})
    assert resp.status_code == 400 and resp.json["error"]["code"] == "invalid_json"
    assert words in resp.json["error"]["message"]
    assert owner.get("/api/repl/").json["repls"] == []


# -- over real HTTP: what werkzeug itself refuses is labelled as what it is ------------------


@pytest.fixture
def served(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    thread.join(10)
    server.server_close()


def _cookie_and_csrf(app) -> dict[str, str]:
    owner = session_api(app, OWNER[0])
    sid = owner.client.get_cookie("session").value
    return {"Cookie": f"session={sid}", "X-CSRF-Token": owner.csrf}


def test_a_body_shorter_than_its_content_length_is_not_called_bad_json(app, served):
    """The client promises 500 bytes and hangs up after 20: werkzeug sees a truncated
    body. The 400 says so, not that the JSON was bad."""
    with socket.create_connection(("127.0.0.1", served), timeout=10) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in _cookie_and_csrf(app).items())
        sock.sendall((f"POST /api/repl/create HTTP/1.1\r\nHost: 127.0.0.1:{served}\r\n"
                      f"Content-Type: application/json\r\nContent-Length: 500\r\n{head}\r\n"
                      '{"name": "x", "templ').encode())
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 400 " in status_line, answer[:300]
    error = json.loads(rest.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "invalid_input" and "JSON" not in error["message"]


def test_chunked_bodies_are_read_and_bounded(app, served):
    headers = {**_cookie_and_csrf(app), "Content-Type": "application/json"}

    def chunked(body: bytes):
        conn = http.client.HTTPConnection("127.0.0.1", served, timeout=10)
        try:
            conn.request("POST", "/api/repl/create", body=iter([body]), headers=headers,
                         encode_chunked=True)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    status, body = chunked(b'{"name": "chunked", "template": "bash", "start": false}')
    assert status == 202, body
    status, body = chunked(b'{"name": "' + b"x" * 70_000 + b'", "template": "bash"}')
    assert status == 413 and body["error"]["code"] == "too_large", body
