"""Periodic jobs: ``reconcile`` (runtime objects vs records) and ``cull_idle``.

On a cluster a CronJob enqueues them (deploy/periodic.yaml); in embedded mode the worker
thread does every ``DEVEX_PERIODIC_INTERVAL`` seconds. Both only act on REPLs whose lock
is free, so they never race a lifecycle job.
"""

from __future__ import annotations

import logging
import time

from devex.errors import LockBusy, TransitionRefused
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
    """Stop (saving files) every running REPL idle for longer than ``DEVEX_IDLE_TIMEOUT``."""
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
    return stopped
