"""Periodic jobs: reconcile finds vanished runners and orphans; cull_idle stops idle REPLs."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace

import pytest

from jobs import context, periodic


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

    assert periodic.reconcile() == {"orphans": [], "vanished": [repl_id]}
    failed = api.repl(repl_id).json
    assert failed["status"] == "failed" and "stopped unexpectedly" in failed["error"]
    assert api.post(f"/api/repl/{repl_id}/start").status_code == 202
    api.wait_status(repl_id, "running")


def test_reconcile_removes_runtime_objects_without_a_repl(app, bound):
    orphan = bound.settings.data_dir / "workspaces" / "0123456789ab"
    orphan.mkdir(parents=True)
    (orphan / "f.txt").write_text("x")
    assert periodic.reconcile()["orphans"] == ["0123456789ab"]
    assert not orphan.exists()


def test_cull_idle_stops_idle_repls_saving_files(app, api, bound):
    repl_id = api.post("/api/repl/create", json={"name": "i", "template": "bash"}).json[
        "repl"]["id"]
    api.wait_status(repl_id, "running")
    workspace = bound.settings.data_dir / "workspaces" / repl_id
    (workspace / "work.txt").write_text("kept")
    bound.settings = replace(bound.settings, idle_timeout=3600)
    assert periodic.cull_idle() == []  # just started: not idle
    bound.settings = replace(bound.settings, idle_timeout=-1)
    assert periodic.cull_idle() == [repl_id]
    api.wait_status(repl_id, "stopped")
    assert bound.storage.read(f"local/{repl_id}/work.txt") == b"kept"
    kinds = [e["kind"] for e in api.get(f"/api/repl/{repl_id}/events").json["events"]]
    assert "idle" in kinds
