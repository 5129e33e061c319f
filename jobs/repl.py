"""RQ jobs for the REPL lifecycle. Each takes the REPL id, holds that REPL's lock, does
nothing when the REPL is no longer in the status the job was queued for (so running one
twice is harmless), writes progress events, lets RQ retry transient failures, and on the
final failure leaves the REPL ``failed`` with a readable reason."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError
from redis import RedisError
from rq import get_current_job

from devex import metrics
from devex.errors import (
    FilesNotSaved,
    LeaseLost,
    LockBusy,
    RuntimeFailure,
    RuntimeUnavailable,
)
from devex.infra.lease import Lease
from devex.infra.store_errors import ReplMissing, StatusRefused
from devex.infra.template_seed import publish_templates, template_prefix
from devex.models import Desired, Status
from devex.services.repls import ReplService
from devex.timestamps import utcnow
from devex_shared.redact import redact
from devex_shared.storage import StorageError
from jobs import context
from jobs.locking import hold, superseded

log = logging.getLogger(__name__)

# Failures worth another try: the next attempt may well succeed.
TRANSIENT = (StorageError, LockBusy, RedisError, BotoCoreError, RuntimeUnavailable, OSError)
# Failures a retry would only repeat: the REPL shows the reason at once. (A failed save
# is final too: the person sees "files not saved" now and decides — stop again or force.)
FINAL = (RuntimeFailure, FilesNotSaved)


def _final_attempt() -> bool:
    job = get_current_job()
    return job is None or not job.retries_left


def _run(repl_id: str, expected: Status, work: Callable, what: str,
         kind: str | None = None) -> str:
    """Run ``work(c, repl, lease)`` under the REPL's lock if the REPL is still
    ``expected``. On failure the REPL becomes ``failed`` (from ``expected``) with the
    reason, so no failure leaves it stuck mid-change -- unless this job's lease ended:
    then another job may be acting, and this one writes nothing. ``kind`` names the job in
    the job metrics (None: not a lifecycle job)."""
    c = context.get()
    job = get_current_job()
    outcome = "error"
    try:
        outcome = _attempt(c, job, repl_id, expected, work, what)
    except LeaseLost:
        outcome = "lease_lost"
        raise
    except TRANSIENT:
        outcome = "retry"
        raise
    finally:
        if kind is not None and job is not None and job.enqueued_at is not None:
            metrics.observe_job(c.redis, kind, outcome, _since(job.enqueued_at))
    return outcome


def _attempt(c, job, repl_id: str, expected: Status, work: Callable, what: str) -> str:
    me = job.id if job is not None else ""
    owned = (expected,)
    held: Lease | None = None
    try:
        repl = c.store.get(repl_id)
        if repl is None or repl.status != expected:
            return "skipped"  # already done, superseded, or deleted: no need to wait
        if superseded(c, repl_id, me):
            return "superseded"
        with hold(c, repl_id, me, wait=c.settings.lock_wait) as held:
            repl = c.store.get(repl_id)
            if repl is None or repl.status != expected:
                return "skipped"  # already done, superseded, or deleted
            return work(c, repl, held)
    except LeaseLost:
        raise  # another job may be acting: not a word from this one
    except StatusRefused:
        return "superseded"  # a person moved it on meanwhile (a delete, say); their job acts
    except FINAL as exc:
        _unless_lost(held, exc)
        _fail(c, repl_id, owned, f"{what} failed: {exc}")
        return "failed"
    except TRANSIENT as exc:
        _unless_lost(held, exc)
        if _final_attempt():
            _fail(c, repl_id, owned, f"{what} failed: {exc}")
            return "failed"
        c.store.add_event(repl_id, "retry", _safe(c, f"{what} hit a problem, retrying: {exc}"))
        raise
    except Exception as exc:  # a bug: show a failure instead of a REPL stuck mid-change
        _unless_lost(held, exc)
        _fail(
            c,
            repl_id,
            owned,
            f"{what} failed: unexpected {type(exc).__name__} (details in the worker log)",
        )
        raise


def _unless_lost(held: Lease | None, exc: Exception) -> None:
    """A job whose lease ended reports nothing: the job that took over does."""
    if held is not None and held.lost:
        raise LeaseLost(f"gave up after losing the lock: {exc}") from exc


def _since(moment: datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (datetime.now(UTC) - moment).total_seconds()


def _safe(c, message: str) -> str:
    """A message for the REPL's owner: no credentials (a storage endpoint's user:password,
    the configured secrets) whatever the library quoted."""
    return redact(message, (c.settings.s3_secret_access_key, c.settings.secret_key))


def _fail(c, repl_id: str, owned: tuple[Status, ...], reason: str) -> None:
    reason = _safe(c, reason)
    log.warning("REPL %s: %s", repl_id, reason)
    try:
        c.store.transition(repl_id, Status.FAILED, allowed=owned, fields={"error": reason})
    except (StatusRefused, ReplMissing):
        return  # someone moved it on (or deleted it) meanwhile; their job reports
    c.store.add_event(repl_id, "failed", reason)


def _progress(c, repl_id: str, lease: Lease):
    """Events from the runtime; each first checks the lease, so a job that lost it stops
    at its next step."""

    def report(kind: str, message: str) -> None:
        lease.check()
        c.store.add_event(repl_id, kind, _safe(c, message))

    return report


def _ensure_files(c, repl) -> None:
    """Put the template's starter files in place once (a server-side copy, idempotent)."""
    if c.store.get_field(repl.id, "files_ready") == "1":
        return
    template = c.catalog.get(repl.template)
    if template is None:
        raise RuntimeFailure(f"the template {repl.template!r} no longer exists")
    publish_templates(c.storage, c.catalog)
    count = c.storage.copy_prefix(template_prefix(template.id), repl.storage_prefix)
    c.store.set_fields(repl.id, files_ready="1")
    c.store.add_event(repl.id, "files", f"Copied {count} starter files.")


def create(repl_id: str) -> str:
    def work(c, repl, lease):
        _ensure_files(c, repl)
        lease.check()
        # Start or stop may have been asked while the files were copied: the stored
        # ``desired`` decides, checked in the same atomic step as the change.
        for _ in range(3):
            desired = c.store.get_field(repl_id, "desired") or Desired.STOPPED.value
            target = Status.STARTING if desired == Desired.RUNNING.value else Status.STOPPED
            try:
                c.store.transition(
                    repl_id, target, allowed=[Status.CREATING], expect=("desired", desired)
                )
                break
            except StatusRefused as refused:
                if refused.current != Status.CREATING:
                    raise
        else:
            raise RuntimeUnavailable("the REPL's desired state kept changing; trying again")
        if target == Status.STARTING:
            # Starting is its own job: its own retries, its own failure reason.
            ReplService(c).enqueue_job("jobs.repl.start", repl_id)
            return "starting"
        c.store.add_event(repl_id, "stopped", "Ready; not started.")
        return "stopped"

    return _run(repl_id, Status.CREATING, work, "Creating", "create")


def _start(c, repl, lease) -> str:
    _ensure_files(c, repl)  # a retry after a create whose copy failed
    template = c.catalog.get(repl.template)
    lease.check()
    c.store.add_event(repl.id, "starting", "Starting the runner.")
    result = c.runtime.start(repl, template, _progress(c, repl.id, lease))
    lease.check()
    try:
        c.store.transition(
            repl.id,
            Status.RUNNING,
            allowed=[Status.STARTING],
            fields={
                "url": result.url,
                "last_activity_at": utcnow(),
                "runtime": json.dumps(result.handle, sort_keys=True),
                "error": None,
            },
            session={"url": result.url, **result.handle},
        )
    except StatusRefused:
        # A stop or delete arrived while starting; its job (queued behind us) tears down.
        c.store.set_fields(repl.id, runtime=json.dumps(result.handle, sort_keys=True))
        return "superseded"
    c.store.add_event(repl.id, "running", f"Running at {result.url}")
    return "running"


def start(repl_id: str) -> str:
    return _run(repl_id, Status.STARTING, _start, "Starting", "start")


def stop(repl_id: str, **_queued_by_older_versions: object) -> str:
    """Stop, saving the files unless the REPL's stored ``stop_force`` says not to: so a
    force stop asked while a save runs takes effect, and a late force job never discards
    the files of a later, ordinary stop. Jobs queued by older versions carry ``force=``:
    accepted, and ignored like it always was."""

    def work(c, repl, lease):
        progress = _progress(c, repl_id, lease)
        forced = c.store.get_field(repl_id, "stop_force") == "1"
        if forced:
            c.store.add_event(repl_id, "force-stop", "Stopping without saving files.")
        try:
            c.runtime.stop(repl, progress, save=not forced)
        except FilesNotSaved:
            if c.store.get_field(repl_id, "stop_force") != "1":
                raise
            forced = True  # the person chose to give up the files while we tried
            c.store.add_event(
                repl_id,
                "force-stop",
                "Saving failed; force stop requested: stopping without saving files.",
            )
            c.runtime.stop(repl, progress, save=False)
        lease.check()
        c.store.transition(
            repl_id,
            Status.STOPPED,
            allowed=[Status.STOPPING],
            fields={"url": None, "runtime": "{}", "error": None, "stop_force": ""},
            clear_session=True,
        )
        c.store.add_event(
            repl_id,
            "stopped",
            "Stopped; files were not saved." if forced else "Stopped; files saved.",
        )
        return "stopped"

    return _run(repl_id, Status.STOPPING, work, "Stopping", "stop")


def delete(repl_id: str) -> str:
    def work(c, repl, lease):
        c.runtime.stop(repl, _progress(c, repl_id, lease), save=False)
        lease.check()
        removed = c.storage.delete_prefix(repl.storage_prefix)
        c.runtime.discard(repl_id)  # its runner's logs and records go with it
        log.info("REPL %s deleted with %d files", repl_id, removed)
        lease.check()
        c.store.delete(repl)
        return "deleted"

    return _run(repl_id, Status.DELETING, work, "Deleting", "delete")


# Runners that should not be up: reconcile finds them (``jobs.periodic``).
STRAY_STATUSES = (Status.STOPPED, Status.FAILED, Status.CREATING)


def stop_stray(repl_id: str, status: str) -> str:
    """Stop, saving its files, a runner that is up although the REPL is ``status``
    (stopped, failed or creating): a start whose record was lost, a restart. The REPL
    keeps its status; only the runner goes, as an ordinary stop would take it."""
    expected = Status(status)

    def work(c, repl, lease):
        if not c.runtime.is_running(repl):
            return "gone"  # it stopped by itself meanwhile
        if expected == Status.CREATING:
            # A runner ran from these files, so the starter files were copied: a create
            # resumed later must not copy them again over what the runner saved.
            c.store.set_fields(repl_id, files_ready="1")
        try:
            c.runtime.stop(repl, _progress(c, repl_id, lease), save=True)
        except FilesNotSaved as exc:
            lease.check()
            c.store.add_event(repl_id, "repair", _safe(
                c, f"A runner was still up although the REPL is {status}; its files could "
                   f"not be saved, so it is kept and tried again later: {exc}"))
            return "kept"
        lease.check()
        c.store.add_event(repl_id, "repair", f"Stopped a runner that was still up although "
                          f"the REPL is {status}; its files were saved first.")
        if expected == Status.CREATING:
            ReplService(c).enqueue_job("jobs.repl.create", repl_id)  # now finish creating
        return "stopped"

    return _run(repl_id, expected, work, "Stopping a runner left up")
