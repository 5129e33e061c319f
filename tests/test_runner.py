"""The runner as real processes: ``python -m runner serve`` / ``sync-down`` / ``sync-up``."""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from devex_shared import access_tokens
from devex_shared.storage.base import StorageError, SyncReport
from runner import cli
from runner.server import normalize_base_path
from tests.support.runner_process import REPO, Runner, clean_env
from tests.support.tampering import tamper

SECRET = "core-secret-for-tests"
OUTSIDE_TEXT = "TOP-SECRET-OUTSIDE-THE-WORKSPACE"

@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runner")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(OUTSIDE_TEXT)
    ws = root / "ws"
    (ws / "src" / "pkg").mkdir(parents=True)
    (ws / "main.py").write_text("print('héllo')\n", encoding="utf-8")
    (ws / "src" / "pkg" / "util.py").write_text("X = 1\n")
    (ws / "src" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    (ws / "big.bin").write_bytes(b"")
    os.truncate(ws / "big.bin", 5 * 1024 * 1024 + 1)  # sparse: cheap to create
    (ws / "link_out").symlink_to(outside, target_is_directory=True)
    (ws / "file_out").symlink_to(outside / "secret.txt")
    (ws / "link_in").symlink_to(ws / "main.py")
    return {"root": root, "ws": ws, "outside": outside}


@pytest.fixture(scope="module")
def open_runner(tree, tmp_path_factory):
    runner = Runner(tree["ws"], tmp_path_factory.mktemp("logs"))
    yield runner
    assert runner.stop() == 0, runner.log()


def test_normalize_base_path():
    assert normalize_base_path("") == "/"
    assert normalize_base_path("abc123") == "/abc123/"
    assert normalize_base_path("/abc123") == "/abc123/"
    assert normalize_base_path("//a//b/") == "/a/b/"
    for bad in ("/a/../b/", "/{x}/", "/a b/"):
        with pytest.raises(ValueError):
            normalize_base_path(bad)


def test_runner_imports_neither_flask_nor_redis():
    code = (
        "import sys, runner.cli, runner.server, runner.heartbeat, runner.workspace\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'redis', 'rq'))\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_healthz_and_ide_page_under_base_path(open_runner):
    resp = requests.get(open_runner.url + "healthz", timeout=5)
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}

    page = requests.get(open_runner.url, timeout=5)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "<title>Devex REPL</title>" in page.text
    assert "Content-Security-Policy" in page.headers

    redirect = requests.get(open_runner.url.rstrip("/"), timeout=5, allow_redirects=False)
    assert redirect.status_code == 308
    assert redirect.headers["Location"] == "/r1/"

    outside_base = requests.get(f"http://127.0.0.1:{open_runner.port}/healthz", timeout=5)
    assert outside_base.status_code == 404
    assert outside_base.json()["error"]["code"] == "not_found"


def test_lists_workspace_recursively_without_following_symlinks(open_runner):
    resp = requests.get(open_runner.url + "api/files", timeout=5)
    assert resp.status_code == 200
    files = resp.json()["files"]
    by_path = {f["path"]: f for f in files}
    assert [f["path"] for f in files] == sorted(by_path)
    assert set(by_path) == {
        "big.bin",
        "file_out",
        "link_in",
        "link_out",
        "main.py",
        "src/logo.png",
        "src/pkg/util.py",
    }
    assert by_path["src/pkg/util.py"]["type"] == "file"
    assert by_path["src/pkg/util.py"]["size"] == 6
    assert by_path["main.py"]["modified"].endswith("Z")
    for link in ("file_out", "link_in", "link_out"):
        assert by_path[link]["type"] == "symlink"
    assert "secret.txt" not in resp.text


def test_reads_text_and_binary_files(open_runner):
    text = requests.get(open_runner.url + "api/files/main.py", timeout=5).json()
    assert text == {
        "path": "main.py",
        "size": len("print('héllo')\n".encode()),
        "content": "print('héllo')\n",
        "encoding": "utf-8",
    }
    binary = requests.get(open_runner.url + "api/files/src/logo.png", timeout=5).json()
    assert binary["encoding"] == "base64"
    assert base64.b64decode(binary["content"]) == b"\x89PNG\r\n\x1a\n\x00\xff\xfe"
    assert binary["path"] == "src/logo.png"


def test_missing_file_is_404_and_large_file_is_413(open_runner):
    missing = requests.get(open_runner.url + "api/files/nope.txt", timeout=5)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    directory = requests.get(open_runner.url + "api/files/src", timeout=5)
    assert directory.status_code == 404
    big = requests.get(open_runner.url + "api/files/big.bin", timeout=5)
    assert big.status_code == 413
    assert big.json()["error"]["code"] == "too_large"


@pytest.mark.parametrize(
    "path",
    [
        "../outside/secret.txt",
        "%2e%2e/outside/secret.txt",
        "src/../../outside/secret.txt",
        "src/%2E%2E/%2E%2E/outside/secret.txt",
        "/{outside}/secret.txt",
        "%2F{outside_enc}%2Fsecret.txt",
        "link_out/secret.txt",
        "file_out",
        "link_in",
    ],
)
def test_paths_leaving_the_workspace_are_refused(open_runner, tree, path):
    outside = str(tree["outside"]).lstrip("/")
    path = path.format(outside=outside, outside_enc=outside.replace("/", "%2F"))
    status, body = open_runner.raw_get(f"/r1/api/files/{path}")
    assert status == 400, body
    assert body["error"]["code"] == "bad_path"
    assert OUTSIDE_TEXT not in json.dumps(body)


def json_error(resp: requests.Response) -> dict:
    """The runner's error shape, whatever went wrong: JSON, never a plain-text page."""
    assert resp.headers["Content-Type"].startswith("application/json"), resp.text[:200]
    return resp.json()["error"]


def test_long_paths_are_json_4xx(open_runner):
    name_too_long = requests.get(open_runner.url + "api/files/" + "x" * 300, timeout=5)
    assert name_too_long.status_code == 400
    assert json_error(name_too_long) == {"code": "bad_path", "message": "name too long"}
    # Longer than PATH_MAX (4096) in all, every part short.
    deep = "/".join(["d" * 200] * 25) + "/main.py"
    resp = requests.get(open_runner.url + "api/files/" + deep, timeout=5)
    assert 400 <= resp.status_code < 500 and json_error(resp)["code"] in ("bad_path", "not_found")


def test_os_errors_on_a_path_are_json_4xx_not_500(tmp_path):
    """Any OS error reading a requested path answers in the runner's error shape: here the
    workspace directory itself is gone from under the runner."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "main.py").write_text("x = 1\n")
    runner = Runner(ws, tmp_path)
    try:
        ws.rename(tmp_path / "moved-away")
        resp = requests.get(runner.url + "api/files/main.py", timeout=5)
        assert resp.status_code == 404, resp.text[:200]
        assert json_error(resp)["code"] == "not_found"
        assert str(tmp_path) not in resp.text  # no host path in the message
    finally:
        assert runner.stop() == 0, runner.log()
    assert "Traceback" not in runner.log()


def test_a_runner_without_its_key_says_so_loudly(tree, tmp_path):
    runner = Runner(tree["ws"], tmp_path)  # no RUNNER_KEY: started with --no-auth
    try:
        assert requests.get(runner.url + "api/files", timeout=5).status_code == 200
    finally:
        runner.stop()
    assert "WARNING runner: AUTH IS OFF (--no-auth)" in runner.log()


def test_api_requires_an_ide_token_for_this_repl(tree, tmp_path):
    key = access_tokens.repl_key(SECRET, "r1")
    runner = Runner(tree["ws"], tmp_path, RUNNER_REPL_ID="r1", RUNNER_KEY=key)
    try:
        url = runner.url + "api/files"
        valid = access_tokens.sign(key, "r1", access_tokens.IDE_SCOPE)
        other_key = access_tokens.repl_key(SECRET, "r2")
        other_repl = access_tokens.sign(other_key, "r2", access_tokens.IDE_SCOPE)
        other_id_same_key = access_tokens.sign(key, "r2", access_tokens.IDE_SCOPE)
        runner_scope = access_tokens.sign(key, "r1", access_tokens.RUNNER_SCOPE)
        tampered = tamper(valid)

        assert requests.get(runner.url + "healthz", timeout=5).status_code == 200
        refused = requests.get(url, timeout=5)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
        for bad in (other_repl, other_id_same_key, runner_scope, tampered, "garbage"):
            resp = requests.get(url, headers={"Authorization": f"Bearer {bad}"}, timeout=5)
            assert resp.status_code == 401, bad
        file_url = runner.url + "api/files/main.py"
        assert requests.get(file_url, params={"token": other_repl}, timeout=5).status_code == 401

        ok = requests.get(url, headers={"Authorization": f"Bearer {valid}"}, timeout=5)
        assert ok.status_code == 200
        assert "main.py" in {f["path"] for f in ok.json()["files"]}
        by_query = requests.get(file_url, params={"token": valid}, timeout=5)
        assert by_query.status_code == 200
        assert by_query.json()["content"] == "print('héllo')\n"
    finally:
        code = runner.stop()
    log = runner.log()
    assert code == 0, log
    assert "GET /r1/api/files/main.py" in log
    for secret in (valid, other_repl, key):
        assert secret not in log


class FakeCore:
    """A stand-in for the core's ``/api/runner/<id>/heartbeat`` on 127.0.0.1."""

    def __init__(self) -> None:
        self.beats: queue.Queue[tuple[str, str, dict]] = queue.Queue()
        self.calls = 0
        core = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                core.calls += 1
                # The first beat fails: the runner must shrug it off and keep beating.
                self.send_response(500 if core.calls == 1 else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                core.beats.put((self.path, self.headers.get("Authorization", ""), body))

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def next_beat(self, deadline: float) -> tuple[str, str, dict]:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "no heartbeat before the deadline"
        return self.beats.get(timeout=remaining)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def test_heartbeat_reports_activity_with_the_runner_token(tree, tmp_path):
    key = access_tokens.repl_key(SECRET, "r1")
    core = FakeCore()
    runner = Runner(
        tree["ws"],
        tmp_path,
        RUNNER_REPL_ID="r1",
        RUNNER_KEY=key,
        RUNNER_CORE_URL=core.url,
        RUNNER_HEARTBEAT_SECONDS="0.1",
    )
    token = None
    try:
        deadline = time.monotonic() + 30
        path, auth, body = core.next_beat(deadline)  # answered 500; the runner carries on
        assert path == "/api/runner/r1/heartbeat"
        scheme, _, token = auth.partition(" ")
        assert scheme == "Bearer"
        access_tokens.verify(key, "r1", access_tokens.RUNNER_SCOPE, token, 60)
        assert body in ({"active": False}, {"active": True})

        ide = access_tokens.sign(key, "r1", access_tokens.IDE_SCOPE)
        resp = requests.get(runner.url + "api/files", params={"token": ide}, timeout=5)
        assert resp.status_code == 200
        while not core.next_beat(deadline)[2]["active"]:
            pass  # beats already in flight before the request
        assert core.next_beat(deadline)[2] == {"active": False}  # nothing happened since
        assert requests.get(runner.url + "healthz", timeout=5).status_code == 200
    finally:
        code = runner.stop()
        core.close()
    log = runner.log()
    assert code == 0, log
    assert "heartbeat rejected by the core: HTTP 500" in log
    assert token and token not in log


# -- sync-down / sync-up ---------------------------------------------------------------------


class FakeStorage:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[tuple] = []

    def sync_down(self, prefix: str, directory: Path) -> SyncReport:
        self.calls.append(("down", prefix, directory))
        if self.fail:
            raise StorageError("bucket 'b' is not reachable")
        return SyncReport(downloaded=["a.txt", "b.txt"], deleted=["old.txt"], unchanged=3)

    def sync_up(self, directory: Path, prefix: str) -> SyncReport:
        self.calls.append(("up", directory, prefix))
        if self.fail:
            raise StorageError("bucket 'b' is not reachable")
        return SyncReport(uploaded=["a.txt"], skipped=[("fifo", "not a regular file")])


@pytest.fixture
def fake_storage(monkeypatch):
    storage = FakeStorage()
    seen_env: list = []

    def storage_from_env(environ):
        seen_env.append(environ)
        return storage

    module = types.ModuleType("devex_shared.storage")
    module.StorageError = StorageError
    module.storage_from_env = storage_from_env
    monkeypatch.setitem(sys.modules, "devex_shared.storage", module)
    storage.seen_env = seen_env
    return storage


def test_sync_down_prints_a_json_summary(fake_storage, tmp_path, capsys):
    dest = tmp_path / "new" / "ws"
    env = {"DEVEX_STORAGE": "s3", "DEVEX_S3_SECRET_ACCESS_KEY": "hunter2"}
    assert cli.main(["sync-down", "--prefix", "alice/r1", "--dest", str(dest)], env) == 0
    assert dest.is_dir()
    assert fake_storage.calls == [("down", "alice/r1/", dest)]
    assert fake_storage.seen_env == [env]
    out = capsys.readouterr()
    assert json.loads(out.out) == {
        "command": "sync-down",
        "prefix": "alice/r1/",
        "downloaded": 2,
        "uploaded": 0,
        "deleted": 1,
        "unchanged": 3,
        "skipped": [],
    }
    assert len(out.out.strip().splitlines()) == 1
    assert "hunter2" not in out.out + out.err


def test_sync_up_reports_skipped_entries(fake_storage, tmp_path, capsys):
    assert cli.main(["sync-up", "--src", str(tmp_path), "--prefix", "alice/r1/"], {}) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["uploaded"] == 1
    assert summary["skipped"] == [{"path": "fifo", "reason": "not a regular file"}]


def test_sync_fails_with_exit_1_and_a_readable_message(fake_storage, tmp_path, capsys):
    fake_storage.fail = True
    env = {"DEVEX_S3_SECRET_ACCESS_KEY": "hunter2"}
    assert cli.main(["sync-up", "--src", str(tmp_path), "--prefix", "alice/r1/"], env) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert "sync-up failed: bucket 'b' is not reachable" in out.err
    assert "hunter2" not in out.err
    fake_storage.fail = False
    missing = tmp_path / "missing"
    assert cli.main(["sync-up", "--src", str(missing), "--prefix", "alice/r1/"], {}) == 1
    assert "not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("prefix", ["/abs/", "a/../b/", "", "a//b/"])
def test_sync_rejects_bad_prefixes(fake_storage, tmp_path, prefix, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["sync-down", "--prefix", prefix, "--dest", str(tmp_path)], {})
    assert exc.value.code == 2
    assert fake_storage.calls == []


def test_sync_up_then_down_against_local_storage(tmp_path):
    env = clean_env(DEVEX_STORAGE="local", DEVEX_DATA_DIR=str(tmp_path / "data"))
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "main.py").write_text("print(1)\n")
    (src / "pkg" / "data.bin").write_bytes(b"\x00\x01\x02")

    def run(*args: str) -> dict:
        proc = subprocess.run(
            [sys.executable, "-m", "runner", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    up = run("sync-up", "--src", str(src), "--prefix", "alice/r1/")
    assert up["uploaded"] == 2
    dest = tmp_path / "dest"
    down = run("sync-down", "--prefix", "alice/r1/", "--dest", str(dest))
    assert down["downloaded"] == 2
    assert (dest / "main.py").read_text() == "print(1)\n"
    assert (dest / "pkg" / "data.bin").read_bytes() == b"\x00\x01\x02"

    (src / "main.py").unlink()
    again = run("sync-up", "--src", str(src), "--prefix", "alice/r1/")
    assert again["deleted"] == 1
    assert again["unchanged"] == 1


def test_sync_with_bad_storage_configuration_exits_1(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "sync-down", "--prefix", "a/r1/", "--dest", str(tmp_path)],
        cwd=REPO,
        env=clean_env(DEVEX_STORAGE="s3", DEVEX_S3_SECRET_ACCESS_KEY="hunter2"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "invalid storage configuration" in proc.stderr
    assert "DEVEX_S3_BUCKET" in proc.stderr
    assert "hunter2" not in proc.stderr
    assert "Traceback" not in proc.stderr
