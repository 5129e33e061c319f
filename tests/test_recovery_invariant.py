"""Reconcile keeps "runner alive <=> running" for every status, quarantines runtime objects
whose REPL record is gone (files first), and a create is recorded together with its job
or not at all -- even when the web process is SIGKILLed in the middle."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from dataclasses import replace

import pytest

from devex.config import Settings
from devex.errors import Conflict
from devex.infra import keys
from devex.models import Desired, Repl, Status
from devex.services.repls import ReplService
from devex.timestamps import utcnow
from devex.wiring import build
from jobs import context, periodic
from tests.conftest import ROOT
from tests.support.recovery import ADA
from tests.support.waiting import wait_for


@pytest.mark.parametrize(("status", "error"), [
    ("stopped", None),  # a start whose record was lost: Redis restored from an older state
    ("failed", "Starting failed: unexpected KeyError (details in the worker log)"),
])
def test_a_runner_up_while_its_repl_is_not_running_is_stopped_files_saved(
        cluster, status, error):
    cluster.worker()
    repl = cluster.running_repl()
    (cluster.workspace(repl.id) / "notes.txt").write_text("typed before the mix-up")
    conn = cluster.comps.redis
    conn.hset(keys.repl_meta(repl.id), mapping={"status": status, "error": error or "",
                                               "url": ""})
    conn.zrem(keys.RUNNING_INDEX, repl.id)

    runs = cluster.settle(repl.id, status)

    assert any(run["stray"] == [repl.id] for run in runs)
    assert cluster.comps.storage.read(f"{repl.storage_prefix}notes.txt") == \
        b"typed before the mix-up"
    events = cluster.events(repl.id)
    assert (f"repair: Stopped a runner that was still up although the REPL is {status}; "
            "its files were saved first.") in events
    assert cluster.store.require(repl.id).error == error  # its status and reason stay
    cluster.assert_nothing_orphaned()


def test_runtime_objects_whose_record_is_gone_are_saved_then_removed(cluster, caplog):
    cluster.worker()
    repl = cluster.running_repl()
    (cluster.workspace(repl.id) / "notes.txt").write_text("nobody's now, but kept")
    cluster.store.delete(repl)  # Redis lost the record (restored from an old backup, say)

    with caplog.at_level(logging.WARNING, logger="jobs.periodic"):
        found = periodic.reconcile()

    assert found["orphans"] == found["quarantined"] == [repl.id]
    assert f"orphan runtime objects of REPL {repl.id}" in caplog.text
    saved = [o.key for o in cluster.comps.storage.list(f"_orphans/{repl.id}/")]
    notes = [k for k in saved if k.endswith("/notes.txt")]
    assert len(notes) == 1 and notes[0].count("/") == 3  # _orphans/{id}/{UTC time}/notes.txt
    assert cluster.comps.storage.read(notes[0]) == b"nobody's now, but kept"
    assert cluster.managed() == set()  # runner stopped, workspace removed
    assert not cluster.comps.runtime.is_running(repl)
    assert periodic.reconcile()["orphans"] == []


def test_a_repl_created_while_reconcile_runs_is_never_taken_for_an_orphan(
        redis_url, data_dir, monkeypatch):
    comps = build(Settings.from_env({}, redis_url=redis_url, data_dir=data_dir,
                                    secret_key="s"))
    context.bind_thread(comps)
    try:
        now = utcnow()
        late = Repl(id="0123456789ab", name="late", template="python", owner_id="7",
                    owner_login="ada", storage_prefix="ada/0123456789ab/",
                    status=Status.STARTING, desired=Desired.RUNNING,
                    created_at=now, updated_at=now)
        workspace = data_dir / "workspaces" / late.id
        listing = comps.runtime.list_managed

        def created_and_started_meanwhile():
            # Another request records a REPL and its start makes its workspace, while
            # reconcile looks: first the record, then the runtime objects, as always.
            comps.store.create(late)
            workspace.mkdir(parents=True)
            (workspace / "main.py").write_text("print('mine')\n")
            return listing()

        monkeypatch.setattr(comps.runtime, "list_managed", created_and_started_meanwhile)
        found = periodic.reconcile()

        assert found["orphans"] == [] and found["quarantined"] == []
        assert (workspace / "main.py").read_text() == "print('mine')\n"
    finally:
        context.bind_thread(None)
        comps.redis.close()


@pytest.fixture
def web(redis_url, data_dir):
    """What a web process uses, with its settings."""
    comps = build(Settings.from_env({}, redis_url=redis_url, data_dir=data_dir,
                                    secret_key="s", lock_lease=1.0))
    context.bind_thread(comps)
    yield comps
    context.bind_thread(None)
    comps.redis.close()


CREATE_THEN_DIE = """
import signal, sys
from pathlib import Path
from devex.config import Settings
from devex.services.repls import Actor, ReplService
from devex.wiring import build

comps = build(Settings.from_env({}, redis_url=sys.argv[1], data_dir=Path(sys.argv[2]),
                                secret_key="s"))
enqueue = comps.jobs.enqueue

def enqueue_then_hang(*args, **kwargs):
    job_id = enqueue(*args, **kwargs)  # queued in the create's transaction, not yet run
    Path(sys.argv[3]).touch()
    signal.pause()  # SIGKILLed here, between the record and the job

comps.jobs.enqueue = enqueue_then_hang
ReplService(comps).create(Actor(id="7", login="ada"), "atomic", "python", start=True)
"""


def test_a_web_process_killed_mid_create_leaves_no_repl_without_a_job(web, tmp_path):
    marker = tmp_path / "enqueued"
    proc = subprocess.Popen([sys.executable, "-c", CREATE_THEN_DIE, web.settings.redis_url,
                             str(web.settings.data_dir), str(marker)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for(lambda: marker.exists() or proc.poll() is not None, 30, "the create")
        assert proc.poll() is None, "the create process ended on its own"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)

    assert web.store.list_for_user("7") == []  # nothing half-made
    assert web.jobs.queue.count == 0
    # The client's retry succeeds: no 409 name_taken for a REPL nobody works on.
    outcome = ReplService(web).create(ADA, "atomic", "python", start=True)
    assert web.jobs.queue.job_ids == [outcome.job_id]
    assert web.store.get_field(outcome.repl.id, "job_id") == outcome.job_id
    assert [e.kind for e in web.store.events(outcome.repl.id)] == ["created"]


def test_a_refused_create_enqueues_nothing(web):
    service = ReplService(web)
    service.create(ADA, "twice", "python", start=False)
    with pytest.raises(Conflict):
        service.create(ADA, "Twice", "python", start=False)
    web.settings = replace(web.settings, quota_repls=1)
    with pytest.raises(Exception, match="limit of 1 REPLs"):
        service.create(ADA, "third", "python", start=False)
    assert web.jobs.queue.count == 1


def test_a_creating_repl_without_a_job_is_resumed_within_one_interval(web):
    now = utcnow()
    orphaned = Repl(id="0123456789ab", name="old", template="python", owner_id="7",
                    owner_login="ada", storage_prefix="ada/0123456789ab/",
                    created_at=now, updated_at=now)
    web.store.create(orphaned)  # as older versions recorded it, before enqueueing its job

    # Within the grace (one lease, 1 s here) it may be a create whose job is on its way.
    wait_for(lambda: periodic.reconcile()["resumed"] == [orphaned.id], 10,
             "reconcile to resume the create")
    assert web.jobs.queue.fetch_job(web.store.get_field(orphaned.id, "job_id")).func_name \
        == "jobs.repl.create"
    assert periodic.reconcile()["resumed"] == []  # its job now waits: not twice
