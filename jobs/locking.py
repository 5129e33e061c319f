"""How a lifecycle job holds its REPL's lock: a lease naming the job (see
``devex/infra/lease.py``), taken over at once from a job that is provably gone, and never
waited for when a later job for the REPL will do the work anyway."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from rq import get_current_job

from devex import metrics

log = logging.getLogger(__name__)


def superseded(c, repl_id: str, me: str) -> bool:
    """True when a later job for the REPL is queued or running (the one recorded in its
    ``job_id``): it does this work, so this older one (a retry of a job reconcile already
    replaced, say) need not wait for the lock."""
    recorded = c.store.get_field(repl_id, "job_id")
    return bool(me and recorded and recorded != me and c.jobs.is_pending(recorded))


def hold(c, repl_id: str, me: str, *, wait: float):
    """The REPL's lock for job ``me``, as every job takes it: a lease of
    ``DEVEX_LOCK_LEASE`` seconds naming the job, taken over at once from a holder that is
    provably gone (see ``_gone``) instead of waiting out its lease."""
    return c.store.lock(
        repl_id,
        c.settings.lock_lease,
        wait,
        holder=me,
        is_dead=lambda holder: _gone(c, holder, me),
        on_takeover=lambda holder: _took_over(c, repl_id, holder),
        keep=_worker_alive(),
    )


def _gone(c, holder: str, me: str) -> bool:
    """A holder is provably gone when it is an earlier run of this very job (RQ runs one
    at a time: a retry after its work horse was killed), or RQ says it is not running."""
    if not holder:
        return False  # a lock taken outside RQ: only its lease ends it
    return holder == me or c.jobs.is_dead(holder)


def _took_over(c, repl_id: str, holder: str) -> None:
    log.warning("REPL %s: lock taken over from job %s, which is gone", repl_id, holder)
    c.store.add_event(repl_id, "recovered", "Took over from an interrupted job (its worker "
                      "stopped) without waiting for its lock to expire.")
    metrics.count_repair(c.redis, "lock_taken_over")


def _worker_alive() -> Callable[[], bool] | None:
    """In a forked RQ work horse: a check that its worker still runs. A horse whose worker
    died goes on alone, but RQ will run its job again once the worker's heartbeats lapse,
    so it stops renewing its lease and stops acting."""
    job = get_current_job()
    if job is None or os.environ.get("RQ_JOB_ID") != job.id:
        return None  # not a forked horse (the embedded worker, a direct call)
    parent = os.getppid()
    return lambda: os.getppid() == parent
