"""The REPL lock is a short lease naming its job: a job that is provably gone loses it at
once to the next job (no waiting out the lease), a live one keeps it however long it
works, and a holder that cannot renew stops acting before anyone else may start."""

from __future__ import annotations

import logging

import pytest
import redis
from rq.job import Job, JobStatus

from devex.config import Settings
from devex.errors import LeaseLost, LockBusy
from devex.infra import keys
from devex.infra.redis_store import ReplStore
from devex.models import Repl, Status
from devex.timestamps import utcnow
from devex.wiring import build
from jobs import context, locking, periodic
from jobs import repl as repl_jobs
from tests.support.recovery import (
    ADA,
    backdate,
    kill_job,
)
from tests.support.waiting import wait_for

TOOK_OVER = "recovered: Took over from an interrupted job"


def _stop_held_at_its_last_save(where, repl: Repl):
    """Ask for a stop and wait until its job is held in the last save's upload."""
    (where.workspace(repl.id) / "notes.txt").write_text("mine")
    upload = where.gate.hold("PUT", f"{repl.id}/notes.txt")
    job_id = where.service.stop(ADA, repl.id).job_id
    assert upload.arrived.wait(60), "the stop never saved"
    assert where.store.lock_holder(repl.id) == job_id
    return upload, job_id


def _finished(where, job_id: str) -> Job:
    job = Job.fetch(job_id, connection=where.comps.redis)
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, 60, f"{job_id} done")
    return job


def test_a_retried_job_takes_over_the_lock_of_its_killed_run_at_once(cluster):
    worker = cluster.worker(DEVEX_LOCK_LEASE="600")  # waiting the lease out: 10 minutes
    repl = cluster.running_repl()
    upload, job_id = _stop_held_at_its_last_save(cluster, repl)

    kill_job(worker.pid)  # the horse dies; its worker lives and RQ retries the job
    upload.release()

    cluster.wait_status(repl.id, "stopped", timeout=120)
    assert _finished(cluster, job_id).return_value() == "stopped"  # the retry, same job
    assert TOOK_OVER in cluster.events(repl.id)
    assert cluster.comps.storage.read(f"{repl.storage_prefix}notes.txt") == b"mine"
    cluster.assert_nothing_orphaned()


def test_the_lock_of_a_job_rq_calls_failed_goes_to_the_next_job_at_once(cluster):
    worker = cluster.worker(DEVEX_LOCK_LEASE="600")
    repl = cluster.running_repl()
    cluster.comps.jobs.retry_intervals = ()  # the stop job is enqueued without retries
    upload, job_id = _stop_held_at_its_last_save(cluster, repl)
    with pytest.raises(LockBusy):  # alive: another job may not take it
        with locking.hold(cluster.comps, repl.id, "another-job", wait=0):
            pass

    kill_job(worker.pid)  # no retries: RQ marks the job failed
    upload.release()
    job = Job.fetch(job_id, connection=cluster.comps.redis)
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.FAILED, 60, "the job failed")

    with locking.hold(cluster.comps, repl.id, "another-job", wait=0) as lease:
        assert lease.holder == "another-job"  # its 600 s lease did not have to lapse
    assert TOOK_OVER in cluster.events(repl.id)
    cluster.settle(repl.id, "stopped")  # and reconcile sees the stop through
    assert cluster.comps.storage.read(f"{repl.storage_prefix}notes.txt") == b"mine"
    cluster.assert_nothing_orphaned()


def _await_renewals(conn: redis.Redis, key: str, count: int) -> None:
    seen = {"renewals": 0, "ttl": conn.pttl(key)}

    def renewed() -> bool:
        ttl = conn.pttl(key)
        if ttl > seen["ttl"]:
            seen["renewals"] += 1
        seen["ttl"] = ttl
        return seen["renewals"] >= count

    wait_for(renewed, 30, f"{count} renewals of {key}")


def test_a_live_job_keeps_its_lock_past_its_lease_and_nobody_takes_it(cluster):
    cluster.worker(DEVEX_LOCK_LEASE="1")  # renewed every 0.2 s
    repl = cluster.running_repl()
    upload, job_id = _stop_held_at_its_last_save(cluster, repl)

    _await_renewals(cluster.comps.redis, keys.repl_lock(repl.id), 8)  # longer than 1 s
    assert cluster.store.lock_holder(repl.id) == job_id
    with pytest.raises(LockBusy):
        with locking.hold(cluster.comps, repl.id, "another-job", wait=0):
            pass
    backdate(cluster.comps.redis, repl.id)  # however quiet the REPL looks
    assert periodic.reconcile()["resumed"] == []  # its job is alive: nothing to resume

    upload.release()
    cluster.wait_status(repl.id, "stopped")
    assert _finished(cluster, job_id).return_value() == "stopped"
    events = cluster.events(repl.id)
    assert "Took over" not in events and "Resumed" not in events


def test_a_holder_that_cannot_renew_gives_up_before_another_can_take_the_lock(
        restartable_redis):
    url = restartable_redis.url
    first = ReplStore(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1))
    holding = first.lock("0123456789ab", 1.0, holder="job-1")
    held = holding.__enter__()
    held.check()

    restartable_redis.kill()  # no renewal gets through
    wait_for(lambda: held.lost, 10, "the holder to give up")
    with pytest.raises(LeaseLost):
        held.check()
    restartable_redis.start()  # back with its data: the lock lapses there on its own

    second = ReplStore(redis.Redis.from_url(url))
    with second.lock("0123456789ab", 1.0, wait=10, holder="job-2"):
        assert held.lost  # the first had stopped before the second could begin
        holding.__exit__(None, None, None)  # the first's release frees nothing of ours
        assert second.lock_holder("0123456789ab") == "job-2"
    assert second.lock_holder("0123456789ab") is None


def test_a_job_that_lost_its_lock_stops_at_its_next_step_and_writes_nothing(
        redis_url, data_dir, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="devex.infra.lease")
    comps = build(Settings.from_env({}, redis_url=redis_url, data_dir=data_dir,
                                    secret_key="s", lock_lease=0.5, lock_wait=0))
    context.bind_thread(comps)
    try:
        now = utcnow()
        repl = Repl(id="abc123def456", name="r", template="python", owner_id="7",
                    owner_login="ada", storage_prefix="ada/abc123def456/",
                    status=Status.STOPPED, created_at=now, updated_at=now)
        comps.store.create(repl)
        for target in (Status.STARTING, Status.RUNNING, Status.STOPPING):
            comps.store.transition(repl.id, target)
        lock = keys.repl_lock(repl.id)

        def stop(r, progress, *, save=True):
            # Another job has the lock now (this one was frozen past its lease, say).
            comps.redis.set(lock, "another-job|x", px=60_000)
            wait_for(lambda: "lost" in caplog.text, 10, "the renewal to notice")
            progress("files", "Saved files: 1 uploaded.")  # this job's next step

        monkeypatch.setattr(comps.runtime, "stop", stop)
        with pytest.raises(LeaseLost):
            repl_jobs.stop(repl.id)

        assert comps.store.require(repl.id).status == Status.STOPPING  # not stopped, not failed
        assert [e.kind for e in comps.store.events(repl.id)] == []
        assert comps.redis.get(lock) == b"another-job|x"  # the other job's lock untouched
    finally:
        context.bind_thread(None)
        comps.redis.close()
