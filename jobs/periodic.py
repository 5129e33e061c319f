"""Periodic jobs: ``reconcile`` (runtime objects vs records) and ``cull_idle``.

On a cluster a CronJob enqueues them (deploy/periodic.yaml); in embedded mode the worker
thread does every ``DEVEX_PERIODIC_INTERVAL`` seconds. Both only act on REPLs whose lock
is free, so they never race a lifecycle job.
"""

from __future__ import annotations

import logging
import time

from devex.errors import FilesNotSaved, LockBusy, TransitionRefused
from devex.models import Repl, Status
from devex.services.repls import Actor, ReplService
from jobs import context

log = logging.getLogger(__name__)
SYSTEM = Actor(id="system", login="system", is_admin=True)


def reconcile() -> dict:
    """Tear down runtime objects no REPL owns; mark REPLs ``failed`` whose runner vanished."""
    c = context.get()
    orphans, vanished = [], []
    known = set(c.store.list_ids())
    for repl_id in sorted({obj.repl_id for obj in c.runtime.list_managed()} - known):
        # No record at all (deleted, or a crash between steps): nothing left to save for.
        ghost = Repl(id=repl_id, name=repl_id, template="", owner_id="", owner_login="",
                     storage_prefix="")
        try:
            c.runtime.stop(ghost, lambda kind, msg: None, save=False)
            orphans.append(repl_id)
        except FilesNotSaved as exc:  # pragma: no cover - save=False never saves
            log.warning("orphan %s not removed: %s", repl_id, exc)
    for repl_id in known:
        repl = c.store.get(repl_id)
        if repl is None or repl.status != Status.RUNNING:
            continue
        try:
            with c.store.lock(repl_id):
                if c.runtime.is_running(repl):
                    continue
                c.store.transition(repl_id, Status.FAILED, allowed=[Status.RUNNING],
                                   fields={"error": "The runner stopped unexpectedly."})
                c.store.add_event(repl_id, "failed", "The runner stopped unexpectedly; "
                                  "start it again (files saved in the workspace are kept).")
                vanished.append(repl_id)
        except (LockBusy, TransitionRefused):
            continue  # a job is working on it: it reports for itself
    if orphans or vanished:
        log.info("reconcile: removed orphans %s, marked vanished %s", orphans, vanished)
    return {"orphans": orphans, "vanished": vanished}


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
            c.store.add_event(repl_id, "idle", "No activity for the idle period; stopping.")
            if service.stop(SYSTEM, repl_id).accepted:
                stopped.append(repl_id)
        except TransitionRefused:
            continue
    return stopped
