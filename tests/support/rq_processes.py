"""Real ``rq worker -w jobs.worker.DevexWorker --with-scheduler`` processes for tests, and
what they leave in Redis: the scheduler lock's holder, the runs of the periodic jobs. The
``start_worker`` fixture reaches every test module as a pytest plugin (``tests/conftest.py``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue, Retry
from rq.cron import get_cron_job_ids
from rq.job import Job, JobStatus
from rq.scheduler import RQScheduler

from tests.conftest import ROOT
from tests.support.waiting import wait_for

QUEUE = "devex"
# What the workers must run on their own, named here rather than read from jobs/cron.py.
PERIODIC_JOBS = ("jobs.periodic.reconcile", "jobs.periodic.cull_idle")


def worker_env(redis_url: str, data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a worker in the redis-server wiring (local storage and runtime)."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DEVEX_REDIS_URL": redis_url,
        "DEVEX_DATA_DIR": str(data_dir),
        "DEVEX_SECRET_KEY": "scheduling-test-secret",
        "DEVEX_AUTH": "local",
        **settings,
    }


class WorkerProcess:
    """One ``rq worker`` in its own session (a SIGKILL of the group takes its scheduler
    process too), its output in a file the test prints when it ends."""

    def __init__(self, env: dict[str, str], log: Path, *options: str):
        rq = Path(sys.executable).parent / "rq"
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(rq), "worker", "-w", "jobs.worker.DevexWorker", "--with-scheduler",
                 "--url", env["DEVEX_REDIS_URL"], *options, QUEUE],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL of the worker and its scheduler process at once (a node lost)."""
        os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(10)
        print(f"--- {self.log.name} ---\n{self.log.read_text(errors='replace')[-6000:]}")


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts workers (``start_worker(env, *options)``); stops every one after the test, so
    none takes jobs from a later test's queue."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], *options: str) -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path / f"worker-{len(started)}.log", *options)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def pid_alive(pid: int) -> bool:
    """Running, not a zombie its parent has yet to reap."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def scheduler_pid(conn: redis.Redis) -> int | None:
    """The pid of the scheduler process holding the queue's scheduler lock, if it runs."""
    name = conn.get(RQScheduler.get_locking_key(QUEUE))
    if name is None:
        return None
    pid = conn.hget(f"rq:scheduler:{name.decode()}", "pid")
    return int(pid) if pid and pid_alive(int(pid)) else None


def periodic_runs(conn: redis.Redis, name: str) -> dict[str, str]:
    """Job id -> status of the runs the cron enqueued for ``name`` (a dotted path)."""
    ids = get_cron_job_ids(name, conn)
    return {job.id: job.get_status(refresh=False) for job in Job.fetch_many(ids, conn) if job}


def await_periodic_runs(conn: redis.Redis, after: dict[str, set[str]] | None = None,
                        count: int = 1, timeout: float = 60) -> dict[str, set[str]]:
    """Waits until each periodic job has ``count`` finished runs besides those in ``after``;
    returns every run seen, to pass as ``after`` next time."""
    after = after or {}
    seen = {}
    for name in PERIODIC_JOBS:
        def finished(name=name):
            runs = periodic_runs(conn, name)
            new = [i for i, s in runs.items() if s == JobStatus.FINISHED and i not in
                   after.get(name, set())]
            return runs if len(new) >= count else None

        seen[name] = set(wait_for(finished, timeout, f"{count} new finished run(s) of {name}"))
    return seen


def assert_retry_delays_fire(conn: redis.Redis, key: str, delay: int = 1) -> None:
    """A job whose first attempt fails is retried after ``delay`` s and completes: proof
    that a scheduler moves due retries to the queue."""
    job = Queue(QUEUE, connection=conn).enqueue(
        "tests.support.probe_jobs.fail_first", key, retry=Retry(max=1, interval=delay))
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, 60,
             f"the retried job {key} to finish")
    assert job.return_value() == 2  # failed once, then done on its retry
