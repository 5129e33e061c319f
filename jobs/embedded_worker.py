"""The in-process worker of embedded mode: an RQ ``SimpleWorker`` on a thread.

RQ's worker assumes the main thread (signal handlers, SIGALRM timeouts); here it runs
beside the development server, so those are replaced by thread-safe equivalents, due
retries are moved to the queue by this loop instead of RQ's forked scheduler process, and
the periodic jobs are enqueued by RQ's ``CronScheduler`` with the registrations of
``jobs/cron.py`` (the same as ``rq worker --with-scheduler`` runs), driven from this loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis
from rq import Queue, SimpleWorker
from rq.cron import CronScheduler
from rq.registry import ScheduledJobRegistry
from rq.timeouts import TimerDeathPenalty

from devex.infra.queue import JobQueue
from jobs import context
from jobs.cron import periodic_cron

log = logging.getLogger(__name__)


class ThreadWorker(SimpleWorker):
    """RQ's in-process worker, safe off the main thread (the tests run jobs with it too)."""

    death_penalty_class = TimerDeathPenalty  # RQ's default uses SIGALRM: main thread only

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
        # This thread is the only worker: one failed snapshot must not end it.
        try:
            fn(*args)
        except Exception:
            log.exception("embedded worker: %s failed; carrying on", getattr(fn, "__name__", fn))

    def _run(self) -> None:
        context.bind_thread(self.components)
        queue = self.jobs.queue
        worker = ThreadWorker([queue], connection=queue.connection)
        registry = ScheduledJobRegistry(queue=queue)
        cron = periodic_cron(queue.connection, self.components.settings,
                             logging_level="WARNING")
        pause = 1.0
        while not self._stop.is_set():
            self.jobs.wakeup.clear()
            try:
                self._round(queue, worker, registry, cron)
                pause = 1.0
            except redis.RedisError as exc:
                # Redis away (a real one beside the app): this thread is the only worker,
                # so it waits and tries again rather than end.
                log.warning("embedded worker: Redis failed (%s); trying again in %.0f s",
                            exc, pause)
                pause = min(pause * 2, 10.0)
            if self.after_each is not None:
                self._safely(self.after_each)
            # Woken at once by an enqueue; the timeout serves retries and periodic jobs.
            self.jobs.wakeup.wait(timeout=pause)

    @staticmethod
    def _round(queue: Queue, worker: ThreadWorker, registry: ScheduledJobRegistry,
               cron: CronScheduler) -> None:
        cron.enqueue_jobs()
        for job_id in registry.get_jobs_to_schedule():
            job = queue.fetch_job(job_id)
            registry.remove(job_id)
            if job is not None:
                queue.enqueue_job(job)
        if queue.count:
            worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
