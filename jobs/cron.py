"""The periodic jobs on RQ's own cron (``rq.cron``): ``reconcile`` and ``cull_idle`` every
``DEVEX_PERIODIC_INTERVAL`` seconds.

Two drivers call ``CronScheduler.enqueue_jobs()`` on these registrations; neither keeps a
timer of its own:

- the RQ scheduler process of ``rq worker --with-scheduler`` (``jobs/scheduler.py``), only
  while it holds RQ's scheduler lock of the queue: one enqueuer at a time however many
  workers run, and another worker's scheduler takes over when the holder dies;
- the worker thread of embedded mode (``jobs/embedded_worker.py``).

Both jobs are idempotent and act only on REPLs whose lock is free, so an extra run (the
optional CronJobs in ``deploy/periodic.yaml``, or an embedded worker thread beside ``rq
worker`` on the same Redis) costs a little work and changes nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from redis import Redis
from rq.cron import CronScheduler
from rq.utils import import_attribute, now

from devex.config import ConfigError, Settings
from devex.infra.queue import JOB_TIMEOUT

# By dotted path: the job code is owned (and may be reworked) elsewhere; these names are
# the contract. Resolved when a driver builds its CronScheduler, not at import.
PERIODIC_JOBS = ("jobs.periodic.reconcile", "jobs.periodic.cull_idle")


def periodic_cron(connection: Redis, settings: Settings,
                  logging_level: str | int = logging.INFO) -> CronScheduler:
    """A CronScheduler with both periodic jobs registered on ``settings.queue_name``.

    Each keeps the schedule on record: its next run comes one interval after its last one
    in RQ's cron history (``rq:cron_job:<name>:jobs``, whoever enqueued it), at once if
    that is past, and one interval from now if there is none. So a scheduler taking over
    (a restart, another worker) neither runs everything again at once nor starts late.
    """
    if settings.periodic_interval < 1:
        raise ConfigError("DEVEX_PERIODIC_INTERVAL must be at least 1 (seconds)")
    cron = CronScheduler(connection=connection, logging_level=logging_level)
    for path in PERIODIC_JOBS:
        # No Retry: the next run is the retry. The failure is kept in RQ's failed registry.
        job = cron.register(
            import_attribute(path),
            settings.queue_name,
            interval=settings.periodic_interval,
            job_timeout=JOB_TIMEOUT,
        )
        last = connection.zrange(job.job_history_key, -1, -1, withscores=True)
        job.set_enqueue_time(datetime.fromtimestamp(last[0][1], UTC) if last else now())
    return cron
