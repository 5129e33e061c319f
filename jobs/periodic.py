"""Periodic jobs: ``reconcile`` (runtime objects vs records) and ``cull_idle``.

On a cluster a CronJob enqueues them (deploy/periodic.yaml); in embedded mode the worker
thread does every ``DEVEX_PERIODIC_INTERVAL`` seconds. Both only act on REPLs whose lock
is free, so they never race a lifecycle job.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from devex.errors import LockBusy, RuntimeFailure, TransitionRefused
from devex.models import Status
from devex.services.repls import ReplService
from jobs import context

log = logging.getLogger(__name__)
# A REPL mid-change that has not moved for this long lost its job (worker killed, failed
# enqueue, restart): reconcile enqueues it again. Longer than any job holds its lock for.
STUCK_AFTER = 600


def reconcile() -> dict:
    """Report runtime objects no REPL owns; mark REPLs ``failed`` whose runner vanished;
    enqueue again the job of REPLs stuck mid-change.

    Orphans are reported, never removed: without a record there is no storage prefix to
    save their files to, and removing them could throw away someone's unsaved work (for
    example after Redis lost its data). An operator decides; ``docs/`` says how.
    """
    c = context.get()
    vanished = []
    repls = c.store.list_all()  # one round trip
    orphans = sorted({obj.repl_id for obj in c.runtime.list_managed()} - {r.id for r in repls})
    for repl_id in orphans:
        log.warning("runtime objects of REPL %s have no record in Redis", repl_id)
    for repl in repls:
        if repl.status != Status.RUNNING:
            continue
        repl_id = repl.id
        try:
            with c.store.lock(repl_id):
                if c.runtime.is_running(repl):
                    continue
                c.store.transition(
                    repl_id,
                    Status.FAILED,
                    allowed=[Status.RUNNING],
                    fields={"error": "The runner stopped unexpectedly."},
                )
                c.store.add_event(
                    repl_id,
                    "failed",
                    "The runner stopped unexpectedly; "
                    "start it again (files saved in the workspace are kept).",
                )
                vanished.append(repl_id)
        except (LockBusy, TransitionRefused):
            continue  # a job is working on it: it reports for itself
    resumed = ReplService(c).resume_interrupted(quiet_for=STUCK_AFTER)
    if orphans or vanished or resumed:
        log.info("reconcile: orphans %s, vanished %s, resumed %s", orphans, vanished, resumed)
    return {"orphans": orphans, "vanished": vanished, "resumed": resumed}


def cull_idle() -> list[str]:
    """Stop (saving files) every REPL idle for longer than ``DEVEX_IDLE_TIMEOUT``: running
    ones, and ``failed`` ones whose runner still runs (a stop that could not save leaves
    its pod up with the files; nobody can edit there any more, but it costs like a running
    REPL). A failed REPL is idle from its last activity or failure, whichever is later."""
    c = context.get()
    if not c.settings.core_url:
        # Runners report activity to DEVEX_CORE_URL; without it silence means nothing.
        return []
    cutoff = time.time() - c.settings.idle_timeout
    service = ReplService(c)
    stopped = []
    for repl_id in c.store.idle_since(cutoff):
        repl = c.store.get(repl_id)
        if repl is None or repl.status != Status.RUNNING:
            continue
        try:
            if service.stop_idle(repl_id).accepted:
                stopped.append(repl_id)
        except TransitionRefused:
            continue
    for repl in c.store.list_all():  # one round trip
        if repl.status != Status.FAILED or _epoch(repl.last_activity_at, repl.updated_at) > cutoff:
            continue
        if c.store.is_locked(repl.id):
            continue  # a job works on it: it reports for itself
        try:
            if not c.runtime.is_running(repl):
                continue  # nothing left running: nothing to cull
            if service.stop_idle(repl.id).accepted:
                stopped.append(repl.id)
        except (RuntimeFailure, TransitionRefused) as exc:
            log.info("cull_idle: REPL %s left as it is: %s", repl.id, exc)
    return stopped


def _epoch(*stamps: str | None) -> float:
    """The latest of the REPL's timestamps (``utcnow()`` format) as epoch seconds."""
    latest = 0.0
    for stamp in stamps:
        try:
            latest = max(latest, datetime.strptime(stamp or "", "%Y-%m-%dT%H:%M:%S.%fZ")
                         .replace(tzinfo=UTC).timestamp())
        except ValueError:
            continue
    return latest
