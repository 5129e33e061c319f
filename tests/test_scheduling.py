"""The periodic jobs run on RQ's own scheduling in every wiring, once at a time, and come
back after their scheduler process is killed: real redis-server, real ``rq worker``
processes, real SIGKILL."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime

import redis
from rq.cron import CronScheduler, get_cron_job_history_key
from rq.scheduler import RQScheduler

from devex import create_app
from devex.config import Settings
from jobs.cron import periodic_cron
from tests.support.rq_processes import (
    QUEUE,
    assert_retry_delays_fire,
    await_periodic_runs,
    parent_pid,
    scheduler_pid,
    worker_env,
)
from tests.support.waiting import wait_for

INTERVAL = "2"  # DEVEX_PERIODIC_INTERVAL, seconds


def test_embedded_worker_runs_the_periodic_jobs_on_rq_cron(data_dir):
    app = create_app({"TESTING": True, "DEVEX_DATA_DIR": data_dir,
                      "DEVEX_SECRET_KEY": "test-secret", "DEVEX_PERIODIC_INTERVAL": 1})
    try:
        conn = app.extensions["devex"].components.redis
        await_periodic_runs(conn, count=2, timeout=30)  # again and again, not just once
    finally:
        app.extensions["devex"].close()


def test_reconcile_and_cull_idle_run_on_their_own_with_redis_server_and_rq_worker(
        redis_url, data_dir, start_worker):
    """The README's cluster recipe without Kubernetes: nothing but redis-server and
    ``rq worker --with-scheduler``; no CronJob, no `rq enqueue`."""
    worker = start_worker(worker_env(redis_url, data_dir, DEVEX_PERIODIC_INTERVAL=INTERVAL))
    conn = redis.Redis.from_url(redis_url)
    await_periodic_runs(conn, count=2, timeout=60)
    crons = CronScheduler.all(conn)
    assert [parent_pid(c.pid) for c in crons] == [worker.pid]  # its scheduler process
    assert worker.alive()


def test_one_scheduler_enqueues_and_scheduling_resumes_after_sigkill(
        redis_url, data_dir, start_worker):
    env = worker_env(redis_url, data_dir, DEVEX_PERIODIC_INTERVAL=INTERVAL)
    workers = [start_worker(env), start_worker(env)]
    conn = redis.Redis.from_url(redis_url)
    seen = await_periodic_runs(conn)
    holder_pid = wait_for(lambda: scheduler_pid(conn), 30, "the scheduler lock's holder")
    # Two workers, one enqueuer of the periodic jobs: the holder of RQ's scheduler lock.
    assert [c.pid for c in CronScheduler.all(conn)] == [holder_pid]

    # The scheduler process alone is killed: its worker starts another within seconds (or,
    # if the lock's short lease lapses first, the other worker's scheduler takes it).
    os.kill(holder_pid, signal.SIGKILL)
    restarted = wait_for(lambda: (p := scheduler_pid(conn)) != holder_pid and p, 60,
                         "a new scheduler process")
    holder = next(w for w in workers if w.pid == parent_pid(restarted))
    other = next(w for w in workers if w is not holder)
    assert other.alive() and holder.alive()
    assert_retry_delays_fire(conn, "after-scheduler-kill")
    seen = await_periodic_runs(conn, after=seen)

    # The whole worker is killed: once its lock's lease (10 s, jobs/scheduler.py) lapses,
    # the other worker's scheduler takes the lock, the retries and the periodic jobs over.
    holder.kill()
    lock = conn.ttl(RQScheduler.get_locking_key(QUEUE))
    assert 0 < lock <= 10, lock  # not rq's own 61 s
    taken = wait_for(lambda: (p := scheduler_pid(conn)) and parent_pid(p) == other.pid and p,
                     120, "the other worker's scheduler to take over")
    assert_retry_delays_fire(conn, "after-worker-kill")
    await_periodic_runs(conn, after=seen)
    assert [c.pid for c in CronScheduler.all(conn) if c.pid == taken] == [taken]
    assert other.alive()


def test_a_new_scheduler_carries_on_the_schedule_on_record(redis_url):
    """After a restart or a takeover the next run is one interval after the last one in
    RQ's cron history -- not at once (a run each restart), not a full interval late."""
    conn = redis.Redis.from_url(redis_url)
    settings = Settings(redis_url=redis_url, periodic_interval=600)
    reconcile, cull = periodic_cron(conn, settings).get_jobs()
    assert not reconcile.should_run() and not cull.should_run()  # nothing on record: wait

    recent, long_ago = int(time.time()) - 30, int(time.time()) - 3600  # whole seconds: exact
    conn.zadd(get_cron_job_history_key(reconcile.name), {"a-recent-run": recent})
    conn.zadd(get_cron_job_history_key(cull.name), {"an-old-run": long_ago})
    reconcile, cull = periodic_cron(conn, settings).get_jobs()
    assert reconcile.next_enqueue_time == datetime.fromtimestamp(recent + 600, UTC)
    assert not reconcile.should_run()
    assert cull.should_run()  # overdue: at once
