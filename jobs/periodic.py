"""Periodic jobs: ``reconcile`` (runtime objects vs records) and ``cull_idle``.

They run on RQ's own scheduling (``jobs/cron.py``); the optional CronJobs in
deploy/periodic.yaml enqueue them too. Both act only on REPLs no job attends to, so they
never race a lifecycle job.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from rq import get_current_job

from devex import metrics
from devex.errors import (
    FilesNotSaved,
    LockBusy,
    RuntimeFailure,
    RuntimeUnavailable,
    TransitionRefused,
)
from devex.infra.store_errors import StatusRefused
from devex.models import Repl, Status
from devex.services.repls import ReplService
from devex.timestamps import parse_time
from devex_shared.storage import StorageError
from jobs import context
from jobs.repl import STRAY_STATUSES

log = logging.getLogger(__name__)
ORPHANS_PREFIX = "_orphans/"


def reconcile() -> dict:
    """Make every REPL's status match the runtime, within one run:

    - runtime objects with no REPL record (orphans) are quarantined: their files saved
      under ``_orphans/{repl-id}/{UTC timestamp}/``, then removed;
    - a REPL recorded ``running`` whose runner is gone becomes ``failed``;
    - a runner up while its REPL is stopped, failed or creating is stopped, files saved
      (``jobs.repl.stop_stray``);
    - a REPL mid-change that no job attends to (its job died with its worker, or was
      never enqueued) gets its job enqueued again, once it has been quiet for one lease.

    Only REPLs no live job works on are touched.
    """
    c = context.get()
    job = get_current_job()
    me = job.id if job is not None else ""
    grace = c.settings.lock_lease
    service = ReplService(c)
    c.jobs.clean_registries()  # RQ's view of dead jobs, first
    # Objects before records: a record is always written before its runtime objects, so
    # an object listed now whose record is missing afterwards truly has none. (The other
    # order would take a REPL created in between for an orphan.)
    managed = c.runtime.list_managed()
    repls = c.store.list_all()  # one round trip
    known = {r.id for r in repls}
    orphans = sorted({o.repl_id for o in managed if o.repl_id and _owner(o.repl_id) not in known})
    quarantined = [x for x in orphans if _quarantine(c, x, me)]
    present = {_owner(o.repl_id) for o in managed}
    vanished, stray = [], []
    for repl in repls:
        try:
            if repl.status == Status.RUNNING and _vanished(c, repl, me):
                vanished.append(repl.id)
            elif (repl.status in STRAY_STATUSES and repl.id in present
                  and _stray(c, service, repl, grace)):
                stray.append(repl.id)
        except RuntimeFailure as exc:  # the runtime cannot tell now: next run
            log.warning("reconcile: REPL %s not checked: %s", repl.id, exc)
    resumed = service.resume_interrupted(quiet_for=grace)
    metrics.count_repair(c.redis, "vanished", len(vanished))
    metrics.count_repair(c.redis, "runner_stopped", len(stray))
    if orphans or vanished or stray or resumed:
        log.info("reconcile: orphans %s (quarantined %s), vanished %s, stray runners %s, "
                 "resumed %s", orphans, quarantined, vanished, stray, resumed)
    return {"orphans": orphans, "quarantined": quarantined, "vanished": vanished,
            "stray": stray, "resumed": resumed}


def _owner(object_id: str) -> str:
    """The REPL an object belongs to (a local start fetches files into ``{id}.partial``)."""
    return object_id.split(".", 1)[0]


def _vanished(c, repl: Repl, me: str) -> bool:
    """A running REPL whose runner is gone becomes ``failed``; True if so."""
    try:
        with c.store.lock(repl.id, c.settings.lock_lease, holder=me):
            if c.runtime.is_running(repl):
                return False
            c.store.transition(
                repl.id,
                Status.FAILED,
                allowed=[Status.RUNNING],
                fields={"error": "The runner stopped unexpectedly."},
            )
            c.store.add_event(
                repl.id,
                "failed",
                "The runner stopped unexpectedly; "
                "start it again (files saved in the workspace are kept).",
            )
            return True
    except (LockBusy, StatusRefused):
        return False  # a job is working on it: it reports for itself


def _stray(c, service: ReplService, repl: Repl, grace: float) -> bool:
    """A runner up while the REPL is stopped, failed or creating: its stop is enqueued
    (``jobs.repl.stop_stray``, files saved); True if so. Left alone: a failed REPL whose
    stop could not save (its runner holds the only copy: a person decides, or the idle
    cull), and REPLs a job attends to."""
    if repl.status == Status.FAILED and "files not saved" in (repl.error or ""):
        return False
    if not service.unattended(repl.id, grace):
        return False
    if not c.runtime.is_running(repl):
        return False
    c.store.add_event(repl.id, "repair", f"A runner is up although the REPL is "
                      f"{repl.status.value}; stopping it, files saved first.")
    service.enqueue_job("jobs.repl.stop_stray", repl.id, status=repl.status.value)
    return True


def _quarantine(c, object_id: str, me: str) -> bool:
    """Save the files of an orphan's runtime objects under the quarantine prefix, then
    remove them (``runtime.stop`` with a stand-in REPL whose storage prefix is that
    prefix); True once done. Left for the next run when that fails."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    prefix = f"{ORPHANS_PREFIX}{object_id}/{stamp}/"
    stand_in = Repl(id=object_id, name=object_id, template="", owner_id="", owner_login="",
                    storage_prefix=prefix)

    def progress(kind: str, message: str) -> None:
        log.info("orphan %s: %s", object_id, message)

    try:
        with c.store.lock(_owner(object_id), c.settings.lock_lease, holder=me):
            if c.store.get(_owner(object_id)) is not None:
                return False  # not an orphan after all
            c.runtime.stop(stand_in, progress, save=True)
    except LockBusy:
        return False
    except (FilesNotSaved, RuntimeFailure, RuntimeUnavailable, StorageError, OSError) as exc:
        log.warning("orphan runtime objects of REPL %s (no record in Redis) kept: their "
                    "files could not be saved to %s: %s", object_id, prefix, exc)
        return False
    log.warning("orphan runtime objects of REPL %s (no record in Redis): files saved under "
                "%s, objects removed", object_id, prefix)
    metrics.count_repair(c.redis, "orphan_quarantined")
    return True


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
    """The latest of the REPL's timestamps as epoch seconds; 0 when none can be read."""
    times = [parse_time(stamp) for stamp in stamps]
    return max((t.timestamp() for t in times if t is not None), default=0.0)
