"""Jobs are safe to run twice, retry transient failures, and never lose files on stop."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import redis

from devex import create_app
from devex.config import Settings
from devex.models import Desired, Repl, Status
from devex.timestamps import utcnow
from devex.wiring import build
from devex_shared.storage import StorageError
from jobs import context
from jobs import repl as repl_jobs
from jobs.embedded_worker import ThreadWorker
from tests.conftest import login_local
from tests.support.recovery import backdate


def make_repl(components, name="r", status=Status.CREATING, desired=Desired.STOPPED) -> Repl:
    now = utcnow()
    repl = Repl(id="abc123def456", name=name, template="python", owner_id="7", owner_login="ada",
                storage_prefix="ada/abc123def456/", status=status, desired=desired,
                created_at=now, updated_at=now)
    components.store.create(repl)
    return repl


@pytest.fixture
def components(redis_url, data_dir):
    settings = Settings.from_env({}, redis_url=redis_url, data_dir=data_dir,
                                 secret_key="s", job_retry_intervals=(0, 0),
                                 lock_wait=0)
    comps = build(settings)
    context.bind_thread(comps)
    yield comps
    context.bind_thread(None)
    comps.redis.close()


def test_create_job_run_twice_is_harmless(components):
    repl = make_repl(components)
    assert repl_jobs.create(repl.id) == "stopped"
    first = components.storage.list(repl.storage_prefix)
    assert {o.key.rsplit("/", 1)[-1] for o in first} == {"main.py", "README.md"}
    assert repl_jobs.create(repl.id) == "skipped"
    assert components.storage.list(repl.storage_prefix) == first
    assert components.store.require(repl.id).status == Status.STOPPED
    assert [e.kind for e in components.store.events(repl.id)] == ["files", "stopped"]


def test_job_for_a_deleted_repl_does_nothing(components):
    assert repl_jobs.start("000000000000") == "skipped"


def test_a_job_never_works_on_a_repl_another_job_holds(components):
    repl = make_repl(components)
    with components.store.lock(repl.id):
        assert repl_jobs.create(repl.id) == "failed"  # lock_wait=0, and not under RQ: final
    assert components.storage.list(repl.storage_prefix) == []
    failed = components.store.require(repl.id)
    assert failed.status == Status.FAILED and "locked by another job" in failed.error


class FlakyCopy:
    """Storage whose first server-side copy fails, as a transient S3 error would."""

    def __init__(self, storage, failures=1):
        self._storage = storage
        self.failures = failures

    def copy_prefix(self, src, dst):
        if self.failures:
            self.failures -= 1
            raise StorageError("simulated: connection reset")
        return self._storage.copy_prefix(src, dst)

    def __getattr__(self, name):
        return getattr(self._storage, name)



def test_job_that_fails_then_succeeds_on_retry(components):
    components.storage = FlakyCopy(components.storage)
    repl = make_repl(components)
    job_id = components.jobs.enqueue("jobs.repl.create", repl.id)
    ThreadWorker([components.jobs.queue], connection=components.redis).work(burst=True)
    job = components.jobs.queue.fetch_job(job_id)
    assert job.get_status() == "finished" and job.return_value() == "stopped"
    assert components.store.require(repl.id).status == Status.STOPPED
    kinds = [e.kind for e in components.store.events(repl.id)]
    assert kinds == ["retry", "files", "stopped"]


def test_job_that_keeps_failing_leaves_repl_failed_with_reason(components):
    components.storage = FlakyCopy(components.storage, failures=99)
    repl = make_repl(components)
    job_id = components.jobs.enqueue("jobs.repl.create", repl.id)
    ThreadWorker([components.jobs.queue], connection=components.redis).work(burst=True)
    failed = components.store.require(repl.id)
    assert failed.status == Status.FAILED
    assert failed.error == "Creating failed: simulated: connection reset"
    assert components.jobs.queue.fetch_job(job_id).return_value() == "failed"
    assert [e.kind for e in components.store.events(repl.id)] == ["retry", "retry", "failed"]


@contextmanager
def uploads_failing(app, repl_id):
    """Every upload to the REPL's prefix fails while inside: its folder becomes a file."""
    prefix_dir = app.extensions["devex"].settings.data_dir / "storage" / "local" / repl_id
    aside = prefix_dir.with_name(repl_id + ".aside")
    prefix_dir.rename(aside)
    prefix_dir.write_text("in the way")
    try:
        yield
    finally:
        prefix_dir.unlink()
        aside.rename(prefix_dir)




def test_upload_failure_during_stop_keeps_files_and_a_later_stop_succeeds(app, api):
    """The REPL goes ``failed`` with the reason, the workspace stays, and nothing is lost."""
    ext = app.extensions["devex"]
    repl_id = api.create_running("keep")
    workspace = ext.settings.data_dir / "workspaces" / repl_id
    (workspace / "precious.txt").write_text("do not lose me")

    with uploads_failing(app, repl_id):
        api.post(f"/api/repl/{repl_id}/stop")
        failed = api.wait_status(repl_id, "failed")
    assert failed["error"].startswith("Stopping failed: files not saved")
    assert (workspace / "precious.txt").read_text() == "do not lose me"
    events = api.get(f"/api/repl/{repl_id}/events").json["events"]
    assert any("workspace is kept" in e["message"] for e in events)

    assert api.post(f"/api/repl/{repl_id}/stop").status_code == 202
    api.wait_status(repl_id, "stopped")
    storage = ext.components.storage
    assert storage.read(f"local/{repl_id}/precious.txt") == b"do not lose me"
    assert not workspace.exists()


@pytest.fixture
def app_without_autosave(data_dir):
    """Autosave far away, so that only the stop could save a file."""
    app = create_app({"TESTING": True, "DEVEX_DATA_DIR": data_dir,
                      "DEVEX_SECRET_KEY": "test-secret", "DEVEX_AUTOSAVE_SECONDS": 3600})
    yield app
    app.extensions["devex"].close()


def test_force_stop_discards_and_says_so(app_without_autosave):
    app = app_without_autosave
    api = login_local(app.test_client())
    ext = app.extensions["devex"]
    repl_id = api.post("/api/repl/create", json={"name": "f", "template": "bash"}).json[
        "repl"]["id"]
    api.wait_status(repl_id, "running")
    workspace = ext.settings.data_dir / "workspaces" / repl_id
    (workspace / "scratch.txt").write_text("x")
    assert api.post(f"/api/repl/{repl_id}/stop?force=true").status_code == 202
    api.wait_status(repl_id, "stopped")
    assert not workspace.exists()
    assert not any(o.key.endswith("scratch.txt")
                   for o in ext.components.storage.list(f"local/{repl_id}/"))
    messages = [e["message"] for e in api.get(f"/api/repl/{repl_id}/events").json["events"]]
    assert "Stopping without saving files." in messages


def test_store_refuses_disallowed_transition_atomically(components):
    repl = make_repl(components, status=Status.STOPPED)
    before = components.redis.hgetall(f"replMeta:{repl.id}")
    from devex.infra.store_errors import StatusRefused

    with pytest.raises(StatusRefused):
        components.store.transition(repl.id, Status.RUNNING, fields={"url": "http://x/"})
    assert components.redis.hgetall(f"replMeta:{repl.id}") == before


def test_listing_costs_one_round_trip_whatever_the_count(components):
    for i in range(30):
        now = utcnow()
        components.store.create(Repl(id=f"{i:012x}", name=f"n{i}", template="bash",
                                     owner_id="9", owner_login="bob",
                                     storage_prefix=f"bob/{i:012x}/", created_at=now,
                                     updated_at=now))
    components.store.list_for_user("9")  # the first call also loads the Lua script
    calls = []
    original = redis.Redis.execute_command

    def counting(self, *args, **kwargs):
        calls.append(args[0])
        return original(self, *args, **kwargs)

    redis.Redis.execute_command = counting
    try:
        repls = components.store.list_for_user("9")
    finally:
        redis.Redis.execute_command = original
    assert len(repls) == 30 and repls[0].name == "n29"  # newest first
    assert len(calls) == 1


def test_workspace_left_by_failed_stop_is_reused_not_overwritten(app, api):
    ext = app.extensions["devex"]
    repl_id = api.create_running("w")
    workspace = ext.settings.data_dir / "workspaces" / repl_id
    (workspace / "main.py").write_text("print('edited')\n")
    with uploads_failing(app, repl_id):
        api.post(f"/api/repl/{repl_id}/stop")
        api.wait_status(repl_id, "failed")
    api.post(f"/api/repl/{repl_id}/start")  # retry from failed: reuse the kept workspace
    api.wait_status(repl_id, "running")
    assert (workspace / "main.py").read_text() == "print('edited')\n"


def test_a_create_whose_start_fails_ends_failed_with_the_reason(app, api, monkeypatch):
    """The default create (start: true) must not leave the REPL stuck in "starting"."""
    from devex.errors import RuntimeFailure

    runtime = app.extensions["devex"].components.runtime

    def broken_start(repl, template, progress):
        raise RuntimeFailure("the image could not be pulled")

    monkeypatch.setattr(runtime, "start", broken_start)
    repl_id = api.post("/api/repl/create", json={"name": "nope", "template": "bash"}).json[
        "repl"]["id"]
    failed = api.wait_status(repl_id, "failed")
    assert failed["error"] == "Starting failed: the image could not be pulled"
    assert failed["url"] is None


def test_an_unexpected_error_fails_the_repl_instead_of_leaving_it_stuck(components,
                                                                        monkeypatch):
    repl = make_repl(components, status=Status.STARTING, desired=Desired.RUNNING)

    def bug(*args, **kwargs):
        raise KeyError("repl_id")

    monkeypatch.setattr(components.runtime, "start", bug)
    with pytest.raises(KeyError):  # RQ still records the crash for the operator
        repl_jobs.start(repl.id)
    failed = components.store.require(repl.id)
    assert failed.status == Status.FAILED
    assert failed.error == "Starting failed: unexpected KeyError (details in the worker log)"


def test_files_a_stop_cannot_save_are_named_in_the_events(app, api):
    repl_id = api.create_running("links")
    workspace = app.extensions["devex"].settings.data_dir / "workspaces" / repl_id
    (workspace / "escape").symlink_to("/etc/hostname")
    api.post(f"/api/repl/{repl_id}/stop")
    api.wait_status(repl_id, "stopped")
    messages = [e["message"] for e in api.get(f"/api/repl/{repl_id}/events").json["events"]]
    assert "Not saved: escape (symbolic link: not uploaded (it could point outside the " \
        "workspace))" in messages


def test_late_activity_never_resurrects_a_deleted_repl(components):
    repl = make_repl(components, status=Status.STOPPED)
    assert components.store.touch_activity(repl.id) is False  # not running: nothing written
    components.store.delete(repl)
    assert components.store.touch_activity(repl.id) is False
    components.store.add_event(repl.id, "late", "after the delete")
    assert components.redis.exists(f"replMeta:{repl.id}", f"replEvents:{repl.id}") == 0


# -- races between a person and a running job ----------------------------------------------
def service(components):
    from devex.services.repls import Actor, ReplService

    return ReplService(components), Actor(id="7", login="ada")


def copy_then(components, monkeypatch, action):
    """The person acts while the create job copies the starter files."""
    original = components.storage.copy_prefix

    def copy_and_act(src, dst):
        count = original(src, dst)
        action()
        return count

    monkeypatch.setattr(components.storage, "copy_prefix", copy_and_act)


def test_start_clicked_while_files_are_copied_is_not_lost(components, monkeypatch):
    svc, ada = service(components)
    repl = svc.create(ada, "late start", "bash", start=False).repl
    copy_then(components, monkeypatch, lambda: svc.start(ada, repl.id))
    assert repl_jobs.create(repl.id) == "starting"
    assert components.store.require(repl.id).status == Status.STARTING
    assert components.jobs.queue.job_ids[-1] == components.store.get_field(repl.id, "job_id")


def test_stop_clicked_while_files_are_copied_is_not_lost(components, monkeypatch):
    svc, ada = service(components)
    repl = svc.create(ada, "late stop", "bash", start=True).repl
    copy_then(components, monkeypatch, lambda: svc.stop(ada, repl.id))
    assert repl_jobs.create(repl.id) == "stopped"
    assert components.store.require(repl.id).status == Status.STOPPED


def test_force_stop_asked_during_a_failing_save_takes_effect(components, monkeypatch):
    from devex.errors import FilesNotSaved

    svc, ada = service(components)
    repl = make_repl(components, status=Status.STOPPED)
    for target in (Status.STARTING, Status.RUNNING, Status.STOPPING):
        components.store.transition(repl.id, target)
    calls = []

    def stop(r, progress, *, save=True):
        calls.append(save)
        if save:
            svc.stop(type(ada)(id=repl.owner_id, login="ada"), repl.id, force=True)
            raise FilesNotSaved("files not saved: storage unreachable")

    monkeypatch.setattr(components.runtime, "stop", stop)
    assert repl_jobs.stop(repl.id) == "stopped"
    assert calls == [True, False]
    messages = [e.message for e in components.store.events(repl.id)]
    assert "Stopped; files were not saved." in messages


def test_a_late_force_job_never_discards_a_later_ordinary_stop(components, monkeypatch):
    repl = make_repl(components, status=Status.STOPPED)
    for target in (Status.STARTING, Status.RUNNING, Status.STOPPING):
        components.store.transition(repl.id, target)
    components.store.set_fields(repl.id, stop_force="")  # an ordinary stop is under way
    saves = []
    monkeypatch.setattr(components.runtime, "stop",
                        lambda r, progress, *, save=True: saves.append(save))
    # A force stop's job as older versions queued it (with force=True), run by a worker.
    job = components.jobs.queue.enqueue("jobs.repl.stop", repl.id, force=True)
    ThreadWorker([components.jobs.queue], connection=components.redis).work(burst=True)
    assert job.return_value(refresh=True) == "stopped"
    assert saves == [True]


def test_reconcile_does_not_duplicate_a_job_that_only_waits(components):
    from jobs import periodic

    svc, ada = service(components)
    repl = svc.create(ada, "queued", "bash", start=False).repl  # its job waits in the queue
    backdate(components.redis, repl.id)  # quiet for long: only its job's state counts
    assert periodic.reconcile()["resumed"] == []
    assert len(components.jobs.queue.job_ids) == 1
    components.jobs.queue.empty()  # now the job is really lost
    assert periodic.reconcile()["resumed"] == [repl.id]


def test_retrying_a_failed_create_copies_the_files_before_starting(components, monkeypatch):
    from devex.infra.runtime.base import StartResult

    components.storage = FlakyCopy(components.storage, failures=99)
    svc, ada = service(components)
    repl = svc.create(ada, "retry me", "python", start=True).repl
    components.jobs.queue.empty()
    assert repl_jobs.create(repl.id) == "failed"
    assert components.storage.list(repl.storage_prefix) == []
    components.storage.failures = 0
    monkeypatch.setattr(components.runtime, "start",
                        lambda r, t, p: StartResult(url="http://127.0.0.1:9/"))
    assert svc.start(ada, repl.id).accepted
    assert repl_jobs.start(repl.id) == "running"
    names = {o.key.rsplit("/", 1)[-1] for o in components.storage.list(repl.storage_prefix)}
    assert names == {"main.py", "README.md"}


def test_a_repl_whose_delete_failed_cannot_be_started_again(components):
    from devex.errors import TransitionRefused

    svc, ada = service(components)
    repl = make_repl(components, status=Status.STOPPED)
    components.store.transition(repl.id, Status.DELETING, fields={"desired": "deleted"})
    components.store.transition(repl.id, Status.FAILED, fields={"error": "Deleting failed"})
    with pytest.raises(TransitionRefused, match="delete it again"):
        svc.start(type(ada)(id=repl.owner_id, login="ada"), repl.id)
