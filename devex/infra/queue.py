"""Enqueueing jobs by dotted path, so the web process never imports worker-only code, and
what RQ knows of a job's life (reconcile and the REPL lock ask it)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from redis import Redis
from redis.client import Pipeline
from rq import Queue, Retry
from rq.job import JobStatus
from rq.registry import clean_registries

PENDING = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.DEFERRED})
# A worker will take the job (again): waiting in the queue, for a retry, or for another job.
WAITING = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED})
JOB_TIMEOUT = 900  # seconds; a start waits for pods, a stop for uploads


class JobQueue:
    def __init__(self, connection: Redis, name: str, retry_intervals: tuple[int, ...]):
        self.queue = Queue(name, connection=connection)
        self.retry_intervals = retry_intervals
        self.wakeup = threading.Event()  # the embedded worker waits on this

    def enqueue(self, func: str, *args, job_id: str | None = None,
                pipeline: Pipeline | None = None, **kwargs) -> str:
        """Enqueue ``func``; with ``pipeline`` the enqueue joins that transaction (call
        ``notify`` once it has run)."""
        retry = None
        if self.retry_intervals:
            intervals = list(self.retry_intervals)
            retry = Retry(max=len(intervals), interval=intervals if any(intervals) else 0)
        job = self.queue.enqueue(
            func,
            *args,
            **kwargs,
            job_id=job_id,
            retry=retry,
            job_timeout=JOB_TIMEOUT,
            result_ttl=3600,
            pipeline=pipeline,
        )
        if pipeline is None:
            self.notify()
        return job.id

    def notify(self) -> None:
        """Wake the embedded worker: a job was enqueued."""
        self.wakeup.set()

    def is_pending(self, job_id: str | None) -> bool:
        """True while the job waits, is scheduled for a retry, or runs."""
        status = self._status(job_id)
        return status in PENDING

    def is_dead(self, job_id: str | None) -> bool:
        """True when the job is provably not running: RQ no longer has it, or says it is
        anything but started (finished, failed, stopped, or queued again for a retry --
        then the run that was under way has ended). False for "" (no job to ask about)."""
        if not job_id:
            return False
        job = self.queue.fetch_job(job_id)
        return job is None or job.get_status(refresh=True) != JobStatus.STARTED

    def may_still_run(self, job_id: str | None, grace: float) -> bool:
        """True when a worker will still take the job (queued, scheduled, deferred), or it
        started less than ``grace`` seconds ago (a job about to take its REPL's lock). A
        job started longer ago that holds no lock has died with its worker."""
        if not job_id:
            return False
        job = self.queue.fetch_job(job_id)
        if job is None:
            return False
        status = job.get_status(refresh=True)
        if status in WAITING:
            return True
        if status != JobStatus.STARTED:
            return False
        started = job.started_at
        if started is None:
            return True
        if started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        return (datetime.now(UTC) - started).total_seconds() < grace

    def clean_registries(self) -> None:
        """RQ's own cleanup: started jobs whose worker stopped sending heartbeats are
        failed or retried, expired entries dropped."""
        clean_registries(self.queue)

    def _status(self, job_id: str | None):
        if not job_id:
            return None
        job = self.queue.fetch_job(job_id)
        return None if job is None else job.get_status(refresh=True)
