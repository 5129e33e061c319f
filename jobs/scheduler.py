"""RQ's scheduler process (``rq worker --with-scheduler``), made to outlive Redis outages,
and the driver of the periodic jobs.

rq 2.12's ``RQScheduler.work()`` lets any Redis error end the process (``rq.scheduler.run``
logs it and re-raises), and the worker looks for a dead scheduler only at its maintenance,
every 10 minutes: after an outage, retries with delays (``Retry(interval=...)`` puts them
in the ScheduledJobRegistry; only a scheduler moves them to the queue) silently stopped.
This one waits for Redis and carries on; ``jobs.worker.DevexWorker`` restarts it within
seconds if it is killed.

While it holds RQ's scheduler lock of the queue -- one holder per queue across all
workers -- it also enqueues the periodic jobs with RQ's ``CronScheduler``
(``jobs/cron.py``). rq gives that lock a lease of 61 s, renewed every second; this one
cuts it to ``LOCK_LEASE`` after each renewal, so when the holder's worker is killed another
worker's scheduler takes over within ``LOCK_LEASE`` plus its worker's check
(``jobs.worker.SCHEDULER_CHECK``), not after a minute: reconcile keeps its 30 s rhythm.
"""

from __future__ import annotations

import contextlib
import time

import redis
from rq.cron import CronScheduler
from rq.exceptions import SchedulerNotFound
from rq.scheduler import RQScheduler

from devex.config import Settings
from jobs.cron import periodic_cron

REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
MAX_BACKOFF = 5.0  # seconds between attempts while Redis is away: back soon after it is
LOCK_LEASE = 10  # seconds the scheduler lock outlives its last renewal (one a second)


class DevexScheduler(RQScheduler):
    def __init__(self, *args, settings: Settings, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings = settings
        self._cron: CronScheduler | None = None

    def work(self) -> None:
        """``RQScheduler.work`` (runs in the forked process), surviving Redis outages."""
        self._install_signal_handlers()
        born = False
        backoff = 1.0
        while not self._stop_requested:
            try:
                if not born:
                    self.register_birth()
                    born = True
                self.tick()
                wait, backoff = self.interval, 1.0
            except REDIS_DOWN as exc:
                self.log.warning("Scheduler %s: Redis unreachable (%s); retrying in %.0f s",
                                 self.name, exc, backoff)
                wait, backoff = backoff, min(backoff * 2, MAX_BACKOFF)
            time.sleep(wait)  # SIGTERM sets _stop_requested; the sleep ends by itself
        self._shutdown()

    def tick(self) -> None:
        """One round of ``RQScheduler.work``, then the periodic jobs if this is the holder."""
        if self.should_reacquire_locks:
            self.acquire_locks()
        self.heartbeat()  # refreshes our locks; drops a lock another scheduler took over
        for name in self.acquired_locks:  # rq renewed them for 61 s: a shorter lease
            self.connection.expire(self.get_locking_key(name), LOCK_LEASE)
        self.enqueue_scheduled_jobs()
        if self.settings.queue_name in self.acquired_locks:
            if self._cron is None:
                # Built after the fork and on (re)taking the lock; it carries on the
                # schedule on record (jobs/cron.py).
                cron = periodic_cron(self.connection, self.settings)
                cron.register_birth()  # in rq:cron_schedulers, as `rq cron` would be
                self._cron = cron
            if self._cron.enqueue_jobs():
                self._cron.save()  # the schedule as `rq` monitoring reads it
            self._cron.heartbeat()  # re-registers it if Redis came back without it
        elif self._cron is not None:
            self._retire_cron()

    def _retire_cron(self) -> None:
        cron, self._cron = self._cron, None
        if cron is not None:
            with contextlib.suppress(SchedulerNotFound, *REDIS_DOWN):
                cron.register_death()

    def _shutdown(self) -> None:
        try:
            self._retire_cron()
            self.stop()  # releases our locks now rather than after their lease
        except REDIS_DOWN as exc:
            self.log.warning("Scheduler %s: stopped without releasing its locks (%s); "
                             "they lapse by themselves", self.name, exc)
