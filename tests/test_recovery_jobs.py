"""A worker killed mid-job (SIGKILL of the ``rq worker`` and of its job's process group) at
each step of create, start, stop and delete: reconcile, run as the periodic job would,
finds the dead job within one short interval (a 2 s lease here, not 15 minutes), enqueues
it again, and a new worker finishes the change. Afterwards every REPL's status matches
its runtime (runner alive exactly when running), nothing is orphaned, no REPL or saved
file is lost, and the events say what was repaired.

Real parts: redis-server, ``rq worker`` processes, runner processes, moto S3 over HTTP;
the workers reach S3 through a gate that holds a chosen request, so each kill happens at
a known step.
"""

from __future__ import annotations

import urllib.request

from tests.support.recovery import (
    ADA,
    kill_worker_and_job,
)
from tests.support.waiting import wait_for

RESUMED = "resume: Resumed the interrupted {} after its worker stopped."


def _files(where, prefix: str) -> dict[str, bytes]:
    storage = where.comps.storage
    return {o.key[len(prefix):]: storage.read(o.key) for o in storage.list(prefix)}


def _answers(url: str) -> bool:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_worker_killed_while_a_create_copies_the_starter_files(cluster):
    repl = cluster.service.create(ADA, "c", "python", start=True).repl
    copy = cluster.gate.hold("PUT", f"{repl.id}/README.md")
    first = cluster.worker()
    assert copy.arrived.wait(60), "the create job never copied the starter files"
    kill_worker_and_job(first)
    copy.release()

    cluster.worker()
    cluster.settle(repl.id, "running")

    assert RESUMED.format("create") in cluster.events(repl.id)
    assert set(_files(cluster, repl.storage_prefix)) == {"README.md", "main.py"}
    cluster.assert_nothing_orphaned()


def test_worker_killed_while_a_start_fetches_the_files(cluster):
    first = cluster.worker()
    repl = cluster.service.create(ADA, "s", "python", start=False).repl
    cluster.wait_status(repl.id, "stopped")
    fetch = cluster.gate.hold("GET", f"{repl.id}/main.py")
    cluster.service.start(ADA, repl.id)
    assert fetch.arrived.wait(60), "the start job never fetched the files"
    kill_worker_and_job(first)
    fetch.release()

    cluster.worker()
    cluster.settle(repl.id, "running")

    assert RESUMED.format("start") in cluster.events(repl.id)
    running = cluster.store.require(repl.id)
    assert _answers(running.url + "healthz")
    assert {p.name for p in cluster.workspace(repl.id).iterdir()} >= {"README.md", "main.py"}
    cluster.assert_nothing_orphaned()  # no half-fetched workspace left either


def test_worker_killed_after_the_runner_launched_adopts_that_runner(cluster):
    first = cluster.worker()
    repl = cluster.service.create(ADA, "a", "python", start=False).repl
    cluster.wait_status(repl.id, "stopped")
    cluster.runners_may_start.unlink()  # launched runners wait before they answer
    cluster.service.start(ADA, repl.id)
    wait_for(lambda: "Runner process launched" in cluster.events(repl.id), 60,
             "the start job to launch the runner")
    launched = cluster.runner_record(repl.id)
    kill_worker_and_job(first)  # the runner lives on: a session of its own
    cluster.runners_may_start.touch()
    wait_for(lambda: _answers(launched["url"] + "healthz"), 30, "the orphaned runner to answer")

    cluster.worker()
    cluster.settle(repl.id, "running")

    events = cluster.events(repl.id)
    assert RESUMED.format("start") in events
    assert "The runner was already up." in events  # adopted, not started twice
    assert cluster.runner_record(repl.id)["pid"] == launched["pid"]
    cluster.assert_nothing_orphaned()


def _stop_resumed_by_a_new_worker(cluster, repl, notes: bytes) -> None:
    """A new worker finishes the interrupted stop: the file saved, the workspace gone."""
    cluster.worker()
    cluster.settle(repl.id, "stopped")

    assert RESUMED.format("stop") in cluster.events(repl.id)
    assert _files(cluster, repl.storage_prefix)["notes.txt"] == notes
    assert not cluster.workspace(repl.id).exists()
    cluster.assert_nothing_orphaned()


def test_worker_killed_during_a_stop_before_the_upload(cluster):
    first = cluster.worker()
    repl = cluster.running_repl()
    (cluster.workspace(repl.id) / "notes.txt").write_text("saved before the kill?")
    upload = cluster.gate.hold("PUT", f"{repl.id}/notes.txt")  # the stop's last save
    cluster.service.stop(ADA, repl.id)
    assert upload.arrived.wait(60), "the stop never saved"
    kill_worker_and_job(first)
    upload.release()

    _stop_resumed_by_a_new_worker(cluster, repl, b"saved before the kill?")


def test_worker_killed_during_a_stop_after_the_upload(cluster):
    first = cluster.worker()
    repl = cluster.running_repl()
    (cluster.workspace(repl.id) / "notes.txt").write_text("uploaded, then killed")
    listing = f"/{cluster.bucket}"
    autosave_sync = cluster.gate.hold("GET", listing)  # autosave's last save lists first
    cluster.service.stop(ADA, repl.id)
    assert autosave_sync.arrived.wait(60), "the stop never saved"
    job_sync = cluster.gate.hold("GET", listing)  # then the stop's own final sync
    autosave_sync.release()
    assert job_sync.arrived.wait(60), "the stop job never ran its final sync"
    assert "notes.txt" in _files(cluster, repl.storage_prefix)  # the upload is done
    kill_worker_and_job(first)
    job_sync.release()

    _stop_resumed_by_a_new_worker(cluster, repl, b"uploaded, then killed")


def test_worker_killed_while_a_delete_removes_the_files(cluster):
    first = cluster.worker()
    repl = cluster.running_repl()
    removal = cluster.gate.hold("POST", f"/{cluster.bucket}")  # DeleteObjects
    cluster.service.delete(ADA, repl.id)
    assert removal.arrived.wait(60), "the delete never removed the files"
    kill_worker_and_job(first)
    removal.release()

    cluster.worker()
    runs = cluster.settle(repl.id, None)

    assert any(repl.id in run["resumed"] for run in runs)  # its events went with it
    assert _files(cluster, repl.storage_prefix) == {}
    assert cluster.store.list_all() == []
    cluster.assert_nothing_orphaned()
