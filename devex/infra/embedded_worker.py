"""The in-process worker of embedded mode: an RQ ``SimpleWorker`` on a thread.

RQ's worker assumes the main thread (signal handlers, SIGALRM timeouts); here it runs
beside the development server, so those are replaced by thread-safe equivalents, and due
retries are moved to the queue by this loop instead of RQ's forked scheduler process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from rq import SimpleWorker
from rq.registry import ScheduledJobRegistry
from rq.timeouts import TimerDeathPenalty

from devex.infra.queue import JobQueue

log = logging.getLogger(__name__)


class _ThreadWorker(SimpleWorker):
    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self):  # signals belong to the main thread
        pass


class EmbeddedWorker:
    def __init__(self, jobs: JobQueue, components, after_each: Callable[[], object] | None = None):
        self.jobs = jobs
        self.components = components
        self.after_each = after_each  # e.g. snapshot the in-process Redis
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="devex-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self.jobs.wakeup.set()
        self._thread.join(timeout)
        if self.after_each is not None:
            self.after_each()

    @staticmethod
    def _safely(fn, *args) -> None:
        # This thread is the only worker: one failed snapshot or enqueue must not end it.
        try:
            fn(*args)
        except Exception:
            log.exception("embedded worker: %s failed; carrying on", getattr(fn, "__name__", fn))

    def _run(self) -> None:
        from jobs import context

        context.bind_thread(self.components)
        queue = self.jobs.queue
        worker = _ThreadWorker([queue], connection=queue.connection)
        registry = ScheduledJobRegistry(queue=queue)
        interval = self.components.settings.periodic_interval
        next_periodic = time.monotonic() + interval
        while not self._stop.is_set():
            if time.monotonic() >= next_periodic:
                next_periodic = time.monotonic() + interval
                for name in ("jobs.periodic.reconcile", "jobs.periodic.cull_idle"):
                    self._safely(self.jobs.enqueue, name)
            self.jobs.wakeup.clear()
            for job_id in registry.get_jobs_to_schedule():
                job = queue.fetch_job(job_id)
                registry.remove(job_id)
                if job is not None:
                    queue.enqueue_job(job)
            if queue.count:
                worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
            if self.after_each is not None:
                self._safely(self.after_each)
            # Woken at once by an enqueue; the timeout only serves scheduled retries.
            self.jobs.wakeup.wait(timeout=1.0)
