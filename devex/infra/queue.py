"""Enqueueing jobs by dotted path, so the web process never imports worker-only code."""

from __future__ import annotations

import threading

from redis import Redis
from rq import Queue, Retry
from rq.job import JobStatus

PENDING = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.DEFERRED})
JOB_TIMEOUT = 900  # seconds; a start waits for pods, a stop for uploads


class JobQueue:
    def __init__(self, connection: Redis, name: str, retry_intervals: tuple[int, ...]):
        self.queue = Queue(name, connection=connection)
        self.retry_intervals = retry_intervals
        self.wakeup = threading.Event()  # the embedded worker waits on this

    def enqueue(self, func: str, *args, job_id: str | None = None, **kwargs) -> str:
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
        )
        self.wakeup.set()
        return job.id

    def is_pending(self, job_id: str | None) -> bool:
        """True while the job waits, is scheduled for a retry, or runs."""
        if not job_id:
            return False
        job = self.queue.fetch_job(job_id)
        if job is None:
            return False
        return job.get_status(refresh=True) in PENDING
