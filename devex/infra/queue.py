"""Enqueueing jobs by dotted path, so the web process never imports worker-only code."""

from __future__ import annotations

import threading

from redis import Redis
from rq import Queue, Retry

JOB_TIMEOUT = 900  # seconds; a start waits for pods, a stop for uploads


class JobQueue:
    def __init__(self, connection: Redis, name: str, retry_intervals: tuple[int, ...]):
        self.queue = Queue(name, connection=connection)
        self.retry_intervals = retry_intervals
        self.wakeup = threading.Event()  # the embedded worker waits on this

    def enqueue(self, func: str, *args, **kwargs) -> str:
        retry = None
        if self.retry_intervals:
            intervals = list(self.retry_intervals)
            retry = Retry(max=len(intervals), interval=intervals if any(intervals) else 0)
        job = self.queue.enqueue(
            func, *args, **kwargs, retry=retry, job_timeout=JOB_TIMEOUT, result_ttl=3600
        )
        self.wakeup.set()
        return job.id
