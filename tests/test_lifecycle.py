"""The whole REPL lifecycle through HTTP, in both wirings:
embedded (in-process Redis, worker thread, local storage) and cluster-style (redis-server,
a real ``rq worker`` process, S3 over HTTP from moto)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import requests
from rq import Worker

from devex import create_app
from tests.conftest import ROOT, login_local
from tests.support.ide_client import IdeClient
from tests.support.waiting import wait_for


def runner_get(session: dict, path: str) -> requests.Response:
    return requests.get(
        session["url"] + path, headers={"Authorization": f"Bearer {session['token']}"}, timeout=10
    )


def drive_lifecycle(app, api) -> None:
    storage = app.extensions["devex"].components.storage
    r = api.post("/api/repl/create", json={"name": "My first", "template": "python"})
    assert r.status_code == 202, r.json
    repl_id = r.json["repl"]["id"]
    assert r.json["job_id"]

    running = api.wait_status(repl_id, "running")
    assert requests.get(running["url"] + "healthz", timeout=10).status_code == 200

    session = api.post(f"/api/repl/{repl_id}/session").json
    listing = runner_get(session, "api/files").json()
    assert "main.py" in {f["path"] for f in listing["files"]}

    workspace = Path(app.extensions["devex"].settings.data_dir) / "workspaces" / repl_id
    with IdeClient(session["url"] + "ws", session["token"]) as ide:  # as a person would
        ide.welcome()
        assert ide.call("createFolder", {"path": "notes"})["success"]
        assert ide.call("updateContent", {"path": "notes/todo.txt", "content": "ship it\n"})[
            "success"]
        assert ide.call("delete", {"path": "README.md"})["success"]
        # Stopped right after the last edit: the final save must still carry it.
        assert api.post(f"/api/repl/{repl_id}/stop").status_code == 202
        assert ide.expect("stopping")["data"]["message"]
    stopped = api.wait_status(repl_id, "stopped")
    assert stopped["url"] is None
    prefix = f"local/{repl_id}/"
    keys = {o.key for o in storage.list(prefix)}
    assert keys == {prefix + "main.py", prefix + "notes/todo.txt"}  # deletion mirrored too
    assert storage.read(prefix + "notes/todo.txt") == b"ship it\n"
    assert not workspace.exists()

    assert api.post(f"/api/repl/{repl_id}/start").status_code == 202
    api.wait_status(repl_id, "running")
    session = api.post(f"/api/repl/{repl_id}/session").json
    back = runner_get(session, "api/files/notes/todo.txt").json()
    assert back["content"] == "ship it\n"

    assert api.delete(f"/api/repl/{repl_id}").status_code == 202
    api.wait_gone(repl_id)
    assert storage.list(prefix) == []
    assert api.get("/api/repl/").json["repls"] == []
    kinds = [e["kind"] for e in app.extensions["devex"].components.store.events(repl_id)]
    assert kinds == []  # the event log goes with the REPL


def test_lifecycle_embedded(app, api):
    drive_lifecycle(app, api)


@pytest.fixture
def cluster_env(redis_url, s3_settings, data_dir):
    return {
        "DEVEX_REDIS_URL": redis_url,
        "DEVEX_DATA_DIR": str(data_dir),
        "DEVEX_SECRET_KEY": "cluster-test-secret",
        "DEVEX_AUTH": "local",
        **s3_settings,
    }


@pytest.fixture
def rq_worker(cluster_env):
    env = {**os.environ, **cluster_env, "PYTHONPATH": str(ROOT)}
    rq = Path(sys.executable).parent / "rq"
    proc = subprocess.Popen(
        [str(rq), "worker", "-w", "jobs.worker.DevexWorker", "--url",
         cluster_env["DEVEX_REDIS_URL"], "--with-scheduler", "devex"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    conn = redis.Redis.from_url(cluster_env["DEVEX_REDIS_URL"])
    wait_for(lambda: Worker.all(connection=conn) or proc.poll() is not None, 30, "rq worker")
    assert proc.poll() is None, proc.stdout.read()
    yield proc
    proc.terminate()
    proc.wait(30)
    conn.close()


@pytest.fixture
def cluster_app(cluster_env):
    return create_app({"TESTING": True, **cluster_env})


def test_lifecycle_with_redis_rq_worker_and_s3(cluster_app, rq_worker):
    assert cluster_app.extensions["devex"].worker is None  # the rq worker does the jobs
    api = login_local(cluster_app.test_client())
    drive_lifecycle(cluster_app, api)
