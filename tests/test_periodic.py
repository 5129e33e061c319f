"""Periodic jobs: reconcile finds vanished runners and orphans; cull_idle stops idle REPLs."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace

import pytest

from jobs import context, periodic
from tests.support.recovery import backdate


@pytest.fixture
def bound(app):
    context.bind_thread(app.extensions["devex"].components)
    yield app.extensions["devex"].components
    context.bind_thread(None)


def test_reconcile_marks_a_vanished_runner_failed_and_start_recovers(app, api, bound):
    repl_id = api.post("/api/repl/create", json={"name": "v", "template": "bash"}).json[
        "repl"]["id"]
    api.wait_status(repl_id, "running")
    record = json.loads((bound.settings.data_dir / "runners" / f"{repl_id}.json").read_text())
    os.killpg(record["pid"], signal.SIGKILL)  # the runner crashes
    os.waitpid(record["pid"], 0)

    assert periodic.reconcile() == {"orphans": [], "quarantined": [], "vanished": [repl_id],
                                    "stray": [], "resumed": []}
    failed = api.repl(repl_id).json
    assert failed["status"] == "failed" and "stopped unexpectedly" in failed["error"]
    assert api.post(f"/api/repl/{repl_id}/start").status_code == 202
    api.wait_status(repl_id, "running")


def test_reconcile_resumes_a_repl_stuck_mid_change(app, api, bound):
    """A start whose job was lost (worker killed): reconcile enqueues it again once the
    REPL has not moved for a while, and it completes."""
    bound_worker = app.extensions["devex"].worker
    bound_worker.stop()
    repl_id = api.post("/api/repl/create", json={"name": "stuck", "template": "bash",
                                                 "start": False}).json["repl"]["id"]
    bound.jobs.queue.empty()  # the create job is lost
    assert periodic.reconcile()["resumed"] == []  # too recent to call stuck
    backdate(bound.redis, repl_id)  # quiet for longer than the grace (one lock lease)
    assert periodic.reconcile()["resumed"] == [repl_id]
    assert [j.func_name for j in bound.jobs.queue.jobs] == ["jobs.repl.create"]
    from jobs import repl as repl_jobs

    assert repl_jobs.create(repl_id) == "stopped"
    assert "resume" in [e.kind for e in bound.store.events(repl_id)]


def test_reconcile_quarantines_runtime_objects_without_a_repl(app, bound):
    orphan = bound.settings.data_dir / "workspaces" / "0123456789ab"
    orphan.mkdir(parents=True)
    (orphan / "f.txt").write_text("x")
    found = periodic.reconcile()
    assert found["orphans"] == found["quarantined"] == ["0123456789ab"]
    assert not orphan.exists()
    saved = [o.key for o in bound.storage.list("_orphans/0123456789ab/")]
    assert len(saved) == 1 and saved[0].endswith("/f.txt")  # maybe someone's unsaved work
    assert bound.storage.read(saved[0]) == b"x"


def test_cull_idle_stops_idle_repls_saving_files(app, api, bound):
    repl_id = api.post("/api/repl/create", json={"name": "i", "template": "bash"}).json[
        "repl"]["id"]
    api.wait_status(repl_id, "running")
    workspace = bound.settings.data_dir / "workspaces" / repl_id
    (workspace / "work.txt").write_text("kept")
    bound.settings = replace(bound.settings, idle_timeout=-1)
    assert periodic.cull_idle() == []  # runners report nowhere: silence proves nothing
    bound.settings = replace(bound.settings, idle_timeout=3600, core_url="http://127.0.0.1:9/")
    assert periodic.cull_idle() == []  # just started: not idle
    bound.settings = replace(bound.settings, idle_timeout=-1)
    assert periodic.cull_idle() == [repl_id]
    api.wait_status(repl_id, "stopped")
    assert bound.storage.read(f"local/{repl_id}/work.txt") == b"kept"
    kinds = [e["kind"] for e in api.get(f"/api/repl/{repl_id}/events").json["events"]]
    assert "idle" in kinds


def test_runner_heartbeats_record_activity(data_dir):
    """A real runner reports to a real core over HTTP; activity moves last_activity_at."""
    import threading

    import requests
    from werkzeug.serving import make_server

    from devex import create_app
    from tests.conftest import login_local
    from tests.support.ports import free_port
    from tests.support.waiting import wait_for

    port = free_port()
    app = create_app({"TESTING": True, "DEVEX_DATA_DIR": data_dir, "DEVEX_SECRET_KEY": "hb",
                      "DEVEX_CORE_URL": f"http://127.0.0.1:{port}",
                      "DEVEX_HEARTBEAT_SECONDS": "0.2"})
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = login_local(app.test_client())
        repl_id = api.post("/api/repl/create", json={"name": "hb", "template": "bash"}).json[
            "repl"]["id"]
        started = api.wait_status(repl_id, "running")["last_activity_at"]
        assert started  # starting counts as activity
        session = api.post(f"/api/repl/{repl_id}/session").json
        opened = api.repl(repl_id).json["last_activity_at"]
        requests.get(session["url"] + "api/files", timeout=10,
                     headers={"Authorization": f"Bearer {session['token']}"})
        wait_for(lambda: api.repl(repl_id).json["last_activity_at"] > opened, 30,
                 "a heartbeat reporting the file listing")
        api.post(f"/api/repl/{repl_id}/stop")
        api.wait_status(repl_id, "stopped")
    finally:
        server.shutdown()
        app.extensions["devex"].close()
