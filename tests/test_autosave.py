"""Autosave: ``python -m runner autosave`` beside a real runner, against local storage and
moto S3 over HTTP; and through the whole app, a stop right after an edit, a killed runner,
and the REPL's events."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from devex_shared import access_tokens
from devex_shared.storage import StorageError, storage_from_env
from tests.conftest import ROOT
from tests.support.ide_client import IdeClient
from tests.support.ports import free_port
from tests.support.runner_process import Runner, clean_env
from tests.support.waiting import wait_for

KEY = access_tokens.repl_key("autosave-secret", "r1")
PREFIX = "alice/r1/"
INTERVAL = "0.5"


class Autosave:
    """``python -m runner autosave`` on a free port."""

    def __init__(self, src: Path, env: dict[str, str], logdir: Path, lock: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = logdir / f"autosave-{self.port}.log"
        args = [sys.executable, "-m", "runner", "autosave", "--src", str(src), "--prefix",
                PREFIX, "--interval", INTERVAL, "--listen", f"127.0.0.1:{self.port}"]
        if lock:
            args += ["--lock", str(lock)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, cwd=ROOT, env=clean_env(**env), stdout=log,
                                         stderr=subprocess.STDOUT)
        wait_for(self._up, 30, "autosave to listen")

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.log_path.read_text()
        try:
            return requests.get(self.url + "status", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def status(self) -> dict:
        return requests.get(self.url + "status", timeout=10).json()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


@pytest.fixture(params=["local", "s3"])
def storage_env(request, tmp_path) -> dict[str, str]:
    if request.param == "local":
        return {"DEVEX_STORAGE": "local", "DEVEX_DATA_DIR": str(tmp_path / "data")}
    return request.getfixturevalue("s3_settings")


@pytest.fixture
def pair(storage_env, tmp_path):
    """A runner and its autosave companion sharing one workspace, as in a pod."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "main.py").write_text("print(1)\n")
    (ws / "old.txt").write_text("to be deleted\n")
    lock = tmp_path / "state" / "sync.lock"
    saver = Autosave(ws, storage_env, tmp_path, lock)
    runner = Runner(ws, tmp_path, RUNNER_REPL_ID="r1", RUNNER_KEY=KEY,
                    RUNNER_AUTOSAVE_URL=saver.url)
    storage = storage_from_env(storage_env)
    yield runner, saver, storage, lock, ws
    runner.stop()
    saver.stop()


def stored(storage, name: str) -> bytes | None:
    keys = {o.key for o in storage.list(PREFIX)}
    if PREFIX + name not in keys:
        return None
    try:
        return storage.read(PREFIX + name)
    except StorageError:  # deleted by a save between the listing and the read
        return None


def ide_token() -> str:
    return access_tokens.sign(KEY, "r1", access_tokens.IDE_SCOPE)


def test_edits_reach_storage_without_a_stop(pair):
    runner, saver, storage, _, _ = pair
    wait_for(lambda: stored(storage, "old.txt"), 30, "the first save")
    with IdeClient(runner.url + "ws", ide_token()) as ide:
        ide.welcome()
        assert ide.call("updateContent", {"path": "main.py", "content": "print(2)\n"})["success"]
        assert ide.call("delete", {"path": "old.txt"})["success"]
        wait_for(lambda: stored(storage, "main.py") == b"print(2)\n", 30, "the autosave")
        wait_for(lambda: stored(storage, "old.txt") is None, 30, "the deletion mirrored")
        status = ide.expect(lambda f: f["event"] == "saveStatus"
                            and f["data"]["state"] == "saved")["data"]
        assert status["savedAt"] and status["error"] is None
    # A runner killed now loses nothing that was autosaved.
    runner.proc.send_signal(signal.SIGKILL)
    runner.proc.wait(30)
    assert stored(storage, "main.py") == b"print(2)\n"


def test_save_now_and_the_lock_shared_with_the_stop(pair):
    runner, saver, storage, lock, runner_ws = pair
    wait_for(lambda: saver.status()["state"] == "saved", 30, "the first save")
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as the stop's final sync-up holds it
        (runner_ws / "held.txt").write_text("waits for the lock")
        wait_for(lambda: saver.status()["state"] == "saving", 30, "a save waiting on the lock")
        assert stored(storage, "held.txt") is None
    finally:
        os.close(fd)
    wait_for(lambda: stored(storage, "held.txt") == b"waits for the lock", 30, "the save")
    with IdeClient(runner.url + "ws", ide_token()) as ide:
        ide.welcome()
        ide.call("updateContent", {"path": "now.txt", "content": "saved on request"})
        reply = ide.call("save", {})
        assert reply["success"] is True and reply["savedAt"]
        assert stored(storage, "now.txt") == b"saved on request"


def test_autosave_saves_once_more_on_sigterm(storage_env, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    saver = Autosave(ws, storage_env, tmp_path)
    storage = storage_from_env(storage_env)
    wait_for(lambda: saver.status()["state"] == "saved", 30, "the first save")
    (ws / "last-words.txt").write_text("evicted")
    assert saver.stop() == 0  # an eviction: SIGTERM, then the grace period
    assert stored(storage, "last-words.txt") == b"evicted"


def test_failing_storage_is_reported_to_the_ide_and_the_core(s3_settings, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    broken = {**s3_settings, "DEVEX_S3_BUCKET": "no-such-bucket-here"}
    saver = Autosave(ws, broken, tmp_path)
    runner = Runner(ws, tmp_path, RUNNER_REPL_ID="r1", RUNNER_KEY=KEY,
                    RUNNER_AUTOSAVE_URL=saver.url)
    try:
        with IdeClient(runner.url + "ws", ide_token()) as ide:
            ide.welcome()
            status = ide.expect(lambda f: f["event"] == "saveStatus"
                                and f["data"]["state"] == "error")["data"]
            assert status["error"]
            assert s3_settings["DEVEX_S3_SECRET_ACCESS_KEY"] not in str(status)
            reply = ide.call("save", {})
            assert reply["success"] is False and reply["error"]
    finally:
        runner.stop()
        saver.stop()


def test_sync_up_quiesces_the_runner_first(storage_env, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    runner = Runner(ws, tmp_path, base_path="/r1/", RUNNER_REPL_ID="r1", RUNNER_KEY=KEY)
    try:
        with IdeClient(runner.url + "ws", ide_token()) as ide:
            ide.welcome()
            ide.call("updateContent", {"path": "typed.txt", "content": "before the stop"})
            wrong = clean_env(**storage_env,
                              RUNNER_CONTROL_TOKEN=ide_token())
            refused = subprocess.run(
                [sys.executable, "-m", "runner", "sync-up", "--src", str(ws), "--prefix", PREFIX,
                 "--quiesce-url", runner.url + "_control/quiesce"],
                cwd=ROOT, env=wrong, capture_output=True, text=True, timeout=120)
            assert refused.returncode == 1  # saving beside a live editor could race it
            assert "refused to stop edits: HTTP 401" in refused.stderr
            assert stored(storage_from_env(storage_env), "typed.txt") is None
            env = clean_env(**storage_env,
                            RUNNER_CONTROL_TOKEN=access_tokens.sign(
                                KEY, "r1", access_tokens.CONTROL_SCOPE))
            done = subprocess.run(
                [sys.executable, "-m", "runner", "sync-up", "--src", str(ws), "--prefix", PREFIX,
                 "--lock", str(tmp_path / "sync.lock"),
                 "--quiesce-url", runner.url + "_control/quiesce"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            assert "runner quiesced" in done.stderr
            assert ide.expect("stopping")["data"]["message"]
            assert ide.wait_closed() == 1001
        assert stored(storage_from_env(storage_env), "typed.txt") == b"before the stop"
    finally:
        runner.stop()
    # A dead runner cannot edit: the save goes on without it.
    done = subprocess.run(
        [sys.executable, "-m", "runner", "sync-up", "--src", str(ws), "--prefix", PREFIX,
         "--quiesce-url", runner.url + "_control/quiesce"],
        cwd=ROOT, env=clean_env(**storage_env), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "saving anyway" in done.stderr


# -- through the app -------------------------------------------------------------------------
def _edit_through_the_ide(api, repl_id: str, path: str, content: str) -> None:
    with api.ide(repl_id) as ide:
        ide.welcome()
        reply = ide.call("updateContent", {"path": path, "content": content})
        assert reply == {"success": True, "path": path}


def test_a_stop_right_after_an_edit_loses_nothing(app, api):
    storage = app.extensions["devex"].components.storage
    repl_id = api.create_running("s", "python")
    _edit_through_the_ide(api, repl_id, "main.py", "print('typed just now')\n")
    assert api.post(f"/api/repl/{repl_id}/stop").status_code == 202
    api.wait_status(repl_id, "stopped")
    assert storage.read(f"local/{repl_id}/main.py") == b"print('typed just now')\n"


def test_a_lost_workspace_keeps_what_was_autosaved(app, api):
    """kill -9 of the runner and its companion, and the workspace gone with them (a node
    lost): the REPL comes back with every autosaved edit."""
    ext = app.extensions["devex"]
    storage = ext.components.storage
    repl_id = api.create_running("k", "bash")
    with api.ide(repl_id) as ide:
        ide.welcome()
        ide.call("updateContent", {"path": "main.sh", "content": "echo autosaved\n"})
        saved = ide.call("save", {})
        assert saved["success"] is True, saved
    assert storage.read(f"local/{repl_id}/main.sh") == b"echo autosaved\n"
    record = ext.settings.data_dir / "runners" / f"{repl_id}.json"
    pids = json.loads(record.read_text())
    # User code runs in the runner: it holds no storage setting; its companion does.
    runner_env = Path(f"/proc/{pids['pid']}/environ").read_bytes()
    assert b"DEVEX_" not in runner_env
    assert b"DEVEX_STORAGE=local" in Path(f"/proc/{pids['autosave_pid']}/environ").read_bytes()
    for pid in (pids["pid"], pids["autosave_pid"]):
        os.killpg(pid, signal.SIGKILL)
    shutil.rmtree(ext.settings.data_dir / "workspaces" / repl_id)
    assert api.post(f"/api/repl/{repl_id}/stop").status_code == 202
    api.wait_status(repl_id, "stopped")
    assert api.post(f"/api/repl/{repl_id}/start").status_code == 202
    api.wait_status(repl_id, "running")
    with api.ide(repl_id) as ide:
        ide.welcome()
        assert ide.call("fetchContent", {"path": "main.sh"})["content"] == "echo autosaved\n"


def test_heartbeats_put_autosave_trouble_in_the_events(app, api):
    ext = app.extensions["devex"]
    repl_id = api.create_running("h", "bash")
    key = access_tokens.repl_key("test-secret", repl_id)
    token = access_tokens.sign(key, repl_id, access_tokens.RUNNER_SCOPE)
    client = app.test_client()

    def beat(autosave):
        r = client.post(f"/api/runner/{repl_id}/heartbeat", json={"active": True,
                                                                    "autosave": autosave},
                        headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.json

    def autosave_events():
        return [e.message for e in ext.components.store.events(repl_id) if e.kind == "autosave"]

    beat({"state": "saved", "savedAt": "2026-11-30T12:00:00Z", "error": None})
    beat({"state": "saved", "savedAt": "2026-11-30T12:00:30Z", "error": None})
    beat({"state": "error", "savedAt": None, "error": "AccessDenied on PutObject"})
    beat({"state": "error", "savedAt": None, "error": "AccessDenied on PutObject"})
    beat({"state": "saving", "savedAt": None, "error": None})
    beat({"state": "saved", "savedAt": "2026-11-30T12:02:00Z", "error": None})
    assert autosave_events() == [
        "Autosave is on: changed files are saved every 30 s.",
        "Autosave failed: AccessDenied on PutObject",
        "Autosave works again: files saved.",
    ]
    bad = client.post(f"/api/runner/{repl_id}/heartbeat", json={"autosave": {"state": "odd"}},
                      headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code in (400, 422)
