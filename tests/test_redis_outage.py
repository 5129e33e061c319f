"""A Redis outage under a real ``rq worker --with-scheduler``: redis-server SIGKILLed in
the middle of a job, down for 30 s while a retry falls due, then started again on the same
port with its append-only file. The worker must still be running (the recipe without
Kubernetes has no supervisor to restart it), its scheduler must move the due retry, and
the periodic jobs must run again."""

from __future__ import annotations

import shutil
import time

import redis
from rq import Queue, Retry, Worker
from rq.job import JobStatus

from tests.support.rq_processes import (
    QUEUE,
    assert_retry_delays_fire,
    await_periodic_runs,
    scheduler_pid,
    worker_env,
)
from tests.support.waiting import wait_for

OUTAGE = 30  # seconds Redis stays away
RETRY_DELAY = 10  # falls due while Redis is away


def test_worker_scheduler_and_cron_outlive_a_redis_outage(
        restartable_redis, data_dir, tmp_path, start_worker):
    server = restartable_redis
    worker = start_worker(
        worker_env(server.url, data_dir, DEVEX_PERIODIC_INTERVAL="2"),
        # Heartbeats every second while a job runs: the outage hits them for sure.
        "--job-monitoring-interval", "1")
    conn = redis.Redis.from_url(server.url)
    seen = await_periodic_runs(conn)
    queue = Queue(QUEUE, connection=conn)

    flaky = queue.enqueue("tests.support.probe_jobs.fail_first", "outage",
                          retry=Retry(max=1, interval=RETRY_DELAY))
    wait_for(lambda: flaky.get_status(refresh=True) == JobStatus.SCHEDULED, 30,
             "the first attempt to fail and its retry to be scheduled")
    flag = tmp_path / "go"
    busy = queue.enqueue("tests.support.probe_jobs.wait_for_file", str(flag))
    wait_for(lambda: busy.get_status(refresh=True) == JobStatus.STARTED, 30, "the busy job")
    conn.close()

    server.kill()  # no goodbye: clients find out when they next write
    back_at = time.monotonic() + OUTAGE
    wait_for(lambda: time.monotonic() >= back_at, OUTAGE + 5, "the outage to last")
    assert worker.alive(), "the worker quit during the outage"
    server.start()

    conn = redis.Redis.from_url(server.url)
    flag.touch()  # the job running through the outage may end now
    wait_for(lambda: busy.get_status(refresh=True) == JobStatus.FINISHED, 60,
             "the job that ran through the outage to finish")
    wait_for(lambda: flaky.get_status(refresh=True) == JobStatus.FINISHED, 60,
             "the retry that fell due during the outage to run")
    assert flaky.return_value() == 2
    assert_retry_delays_fire(conn, "after-outage")
    await_periodic_runs(conn, after=seen)
    assert worker.alive()
    assert scheduler_pid(conn)  # the scheduler process holds the lock and runs


def test_worker_registers_again_with_a_redis_that_lost_its_data(
        restartable_redis, data_dir, start_worker):
    """Redis back empty (no persistence, a lost volume): the live worker must be listed
    again -- or anything judging workers by RQ's registry takes it for dead -- and its
    scheduler must take the lock again and carry on."""
    server = restartable_redis
    worker = start_worker(worker_env(server.url, data_dir, DEVEX_PERIODIC_INTERVAL="2"))
    conn = redis.Redis.from_url(server.url)
    await_periodic_runs(conn)
    assert Worker.count(connection=conn) == 1
    conn.close()

    server.kill()
    shutil.rmtree(server.dir)
    server.dir.mkdir()
    server.start()

    conn = redis.Redis.from_url(server.url)
    wait_for(lambda: [w.pid for w in Worker.all(connection=conn)] == [worker.pid], 60,
             "the worker to register again")
    assert_retry_delays_fire(conn, "after-data-loss")
    await_periodic_runs(conn)
    assert worker.alive()
