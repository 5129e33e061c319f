"""The REPL rules: names, templates, ownership, quotas, allowed changes, which job to run.

Plain Python (no Flask): views and the dashboard call this, jobs do the slow work.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import ParamSpec, TypeVar

from devex import metrics
from devex.errors import (
    Conflict,
    DevexError,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    TransitionRefused,
    Unavailable,
)
from devex.infra.store_errors import (
    IdTaken,
    NameTaken,
    QuotaReached,
    ReplMissing,
    StatusRefused,
    StoreRefusal,
    TooManyRetries,
)
from devex.models import Desired, Event, Repl, Status
from devex.timestamps import parse_time, utcnow
from devex.wiring import Components
from devex_shared import access_tokens
from devex_shared.redact import redact

NAME_RE = re.compile(r"^[A-Za-z0-9 _.\-]{1,64}$")
IDE_TOKEN_TTL = 3600


@dataclass(frozen=True)
class Actor:
    """Who is asking: a logged-in user (or an admin acting through the API)."""

    id: str
    login: str
    is_admin: bool = False
    # REPL records read in the same round trip as the user (a GET of one REPL), by id;
    # None: no such REPL. Good for this request only.
    seen: Mapping[str, Repl | None] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Outcome:
    repl: Repl
    job_id: str | None  # None when nothing had to be done

    @property
    def accepted(self) -> bool:
        return self.job_id is not None


def validate_name(raw: object) -> str:
    if not isinstance(raw, str):
        raise InvalidInput("The name must be a string.", code="invalid_name")
    name = raw.strip()
    if not name:
        raise InvalidInput("The name must not be empty.", code="invalid_name")
    if len(name) > 64:
        raise InvalidInput("The name must be at most 64 characters.", code="invalid_name")
    if not NAME_RE.match(name):
        raise InvalidInput(
            "The name may contain letters, digits, spaces, '-', '_' and '.' only.",
            code="invalid_name",
        )
    return name


def new_repl_id() -> str:
    # 12 lower-case hex characters: short, unguessable enough, a valid DNS-1123 label part.
    return secrets.token_hex(6)


def user_error(refusal: StoreRefusal) -> DevexError:
    """What people are told when the store refuses a change (status, code, Retry-After)."""
    if isinstance(refusal, ReplMissing):
        return NotFound("No such REPL.")
    if isinstance(refusal, StatusRefused):
        return TransitionRefused(
            f"The REPL is {refusal.current.value}; it cannot be {_verb(refusal.target)} now.",
            code="invalid_state",
        ).with_status(refusal.current)
    if isinstance(refusal, NameTaken):
        return Conflict(f"You already have a REPL named {refusal.name!r}.", code="name_taken")
    if isinstance(refusal, QuotaReached):
        if refusal.kind == "running":
            text = f"You may run at most {refusal.limit} REPLs at once; stop one first."
        else:
            text = f"You have reached your limit of {refusal.limit} REPLs; delete one first."
        return QuotaExceeded(text, headers={"Retry-After": "60"})
    if isinstance(refusal, TooManyRetries):
        return Unavailable("Too many changes to your REPLs at once; try again.",
                           headers={"Retry-After": "1"})
    if isinstance(refusal, IdTaken):
        return Conflict("That REPL id is already in use.")
    raise TypeError(f"no words for {refusal!r}")  # a new refusal needs its words here


def _verb(target: Status | None) -> str:
    return {
        Status.STARTING: "started",
        Status.STOPPING: "stopped",
        Status.DELETING: "deleted",
        Status.RUNNING: "marked running",
        Status.STOPPED: "marked stopped",
        Status.FAILED: "marked failed",
    }.get(target, "changed")


P = ParamSpec("P")
R = TypeVar("R")


def _in_user_terms(method: Callable[P, R]) -> Callable[P, R]:
    """A method that changes records answers the store's refusals as ``user_error``."""

    @functools.wraps(method)
    def worded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except StoreRefusal as refusal:
            raise user_error(refusal) from None

    return worded


class ReplService:
    """The rules of REPLs. Methods that change records answer what the store refuses in
    people's words (``user_error``): 404, 409, 429 with Retry-After, 503."""

    def __init__(self, components: Components):
        self.c = components
        self.store = components.store

    # -- reading ---------------------------------------------------------------------
    def get(self, actor: Actor, repl_id: str, *, as_admin: bool = True) -> Repl:
        """The REPL if ``actor`` may see it. Admins may read and stop anyone's REPL, but
        not start, delete or enter it (``as_admin=False`` for those)."""
        if not plausible_id(repl_id):
            repl = None
        elif repl_id in actor.seen:
            repl = actor.seen[repl_id]
        else:
            repl = self.store.get(repl_id)
        admin_ok = as_admin and actor.is_admin
        if repl is None or (repl.owner_id != actor.id and not admin_ok):
            raise NotFound("No such REPL.")  # another user's REPL looks exactly like none
        return repl

    def list(self, actor: Actor) -> list[Repl]:
        return self.store.list_for_user(actor.id)

    def page(self, actor: Actor, limit: object = None, cursor: object = None) -> ReplPage:
        """A page of the actor's REPLs, newest first; ``cursor`` is ``next_cursor`` of the
        page before."""
        size = PAGE_DEFAULT if limit in (None, "") else _whole(limit, "limit")
        if not 1 <= size <= PAGE_MAX:
            raise InvalidInput(f"limit must be from 1 to {PAGE_MAX}.", code="invalid_limit")
        repls, total, after = self.store.page_for_user(actor.id, size, _read_cursor(cursor))
        return ReplPage(repls, total, _make_cursor(after) if after else None)

    def list_all(self, actor: Actor, status: Status | None = None) -> list[Repl]:
        """Every user's REPLs, newest first: administrators only."""
        if not actor.is_admin:
            raise NotFound("No such page.")
        repls = self.store.list_all()
        return [r for r in repls if status is None or r.status == status]

    def events(self, actor: Actor, repl_id: str) -> list[Event]:
        self.get(actor, repl_id)
        # Credentials never reach people, even in events written before redaction existed.
        return [replace(e, message=redact(e.message)) for e in self.store.events(repl_id)]

    # -- changing --------------------------------------------------------------------
    @_in_user_terms
    def create(self, actor: Actor, name: object, template: object, start: bool = True) -> Outcome:
        clean = validate_name(name)
        if not isinstance(template, str) or self.c.catalog.get(template) is None:
            raise InvalidInput(
                f"Unknown template; choose one of: {', '.join(self.c.catalog.ids())}.",
                code="invalid_template",
            )
        now = utcnow()
        repl_id = new_repl_id()
        repl = Repl(
            id=repl_id,
            name=clean,
            template=template,
            owner_id=actor.id,
            owner_login=actor.login,
            storage_prefix=f"{actor.login}/{repl_id}/",
            status=Status.CREATING,
            desired=Desired.RUNNING if start else Desired.STOPPED,
            created_at=now,
            updated_at=now,
        )
        settings = self.c.settings
        jobs = self.c.jobs
        job_id = str(uuid.uuid4())
        # The record, its first event and its job in one MULTI/EXEC: a web process that
        # dies half-way leaves all or nothing, never a REPL no job works on.
        self.store.create(
            repl,
            quota=settings.quota_repls,
            max_active=settings.quota_running,
            fields={"job_id": job_id},
            event=Event(at=now, kind="created", message=f"Created from the {template} "
                        "template.", actor=actor.login),
            then=lambda pipe: jobs.enqueue("jobs.repl.create", repl_id, job_id=job_id,
                                           pipeline=pipe),
        )
        jobs.notify()
        return Outcome(self.store.require(repl_id), job_id)

    @_in_user_terms
    def start(self, actor: Actor, repl_id: str) -> Outcome:
        repl = self.get(actor, repl_id, as_admin=False)
        if repl.status in (Status.STARTING, Status.RUNNING):
            return Outcome(repl, None)
        if repl.desired == Desired.DELETED:  # a delete failed half-way: finish it instead
            raise TransitionRefused("This REPL failed while being deleted; delete it again.")
        quota = {"max_active": self.c.settings.quota_running, "owner_id": repl.owner_id}
        if repl.status == Status.CREATING:
            # The create job starts it once the files are in place.
            try:
                self.store.transition(
                    repl_id,
                    None,
                    allowed=[Status.CREATING],
                    fields={"desired": Desired.RUNNING.value},
                    **quota,
                )
            except StatusRefused:
                return self.start(actor, repl_id)  # created meanwhile: start it the usual way
            return Outcome(self.store.require(repl_id), None)
        try:
            self.store.transition(
                repl_id,
                Status.STARTING,
                fields={"desired": Desired.RUNNING.value, "error": None},
                session={"requested_at": utcnow()},
                **quota,
            )
        except StatusRefused as refused:
            if refused.current in (Status.STARTING, Status.RUNNING):
                return Outcome(self.store.require(repl_id), None)  # lost a race to a twin
            raise
        self.store.add_event(repl_id, "start", "Start requested.", actor.login)
        return Outcome(self.store.require(repl_id), self.enqueue_job("jobs.repl.start", repl_id))

    @_in_user_terms
    def stop(self, actor: Actor, repl_id: str, *, force: bool = False) -> Outcome:
        """Stop, saving files; ``force`` stops without saving (owners only)."""
        repl = self.get(actor, repl_id, as_admin=not force)
        if repl.status == Status.STOPPED:
            return Outcome(repl, None)
        if repl.status == Status.CREATING:
            try:
                self.store.transition(
                    repl_id,
                    None,
                    allowed=[Status.CREATING],
                    fields={"desired": Desired.STOPPED.value},
                )
            except StatusRefused:
                return self.stop(actor, repl_id, force=force)  # created meanwhile
            return Outcome(self.store.require(repl_id), None)
        fields = {"desired": Desired.STOPPED.value, "stop_force": "1" if force else ""}
        try:
            if repl.status == Status.STOPPING:
                if not force:
                    return Outcome(repl, None)
                # A save that hangs can be overtaken by a force stop.
                self.store.transition(repl_id, None, allowed=[Status.STOPPING], fields=fields)
            else:
                self.store.transition(repl_id, Status.STOPPING, fields=fields)
        except StatusRefused as refused:
            if refused.current in (Status.STOPPED, Status.STOPPING):
                return Outcome(self.store.require(repl_id), None)
            raise
        what = ("Force stop requested: the final save is skipped; changes since the "
                "last autosave may be lost.") if force else "Stop requested."
        self.store.add_event(repl_id, "stop", what, actor.login)
        job_id = self.enqueue_job("jobs.repl.stop", repl_id)  # the job reads stop_force
        return Outcome(self.store.require(repl_id), job_id)

    @_in_user_terms
    def stop_idle(self, repl_id: str) -> Outcome:
        """Stop (saving files) a REPL nobody used for the idle period."""
        repl = self.store.require(repl_id)
        self.store.add_event(repl_id, "idle", "No activity for the idle period; stopping.")
        return self.stop(Actor(id=repl.owner_id, login="system"), repl_id)

    @_in_user_terms
    def delete(self, actor: Actor, repl_id: str) -> Outcome:
        repl = self.get(actor, repl_id, as_admin=False)
        if repl.status == Status.DELETING:
            return Outcome(repl, None)
        self.store.transition(repl_id, Status.DELETING, fields={"desired": Desired.DELETED.value})
        self.store.add_event(repl_id, "delete", "Delete requested.", actor.login)
        return Outcome(self.store.require(repl_id), self.enqueue_job("jobs.repl.delete", repl_id))

    @_in_user_terms
    def resume_interrupted(self, quiet_for: float = 0) -> list[str]:
        """Enqueue again the job of every REPL caught mid-change that no job attends to
        (``unattended``) and that has not changed for ``quiet_for`` seconds (its job was
        lost: a worker killed mid-job, a restart, a failed enqueue). Jobs are safe to run
        twice."""
        cutoff = datetime.now(UTC) - timedelta(seconds=quiet_for)
        resumed = []
        for repl in self.store.list_all():
            job = RESUME_JOBS.get(repl.status)
            changed = parse_time(repl.updated_at)  # None (unreadable): long ago
            if job is None or (changed is not None and changed > cutoff):
                continue
            if not self.unattended(repl.id, grace=quiet_for):
                continue
            # (A stop job reads ``stop_force`` from the record: nothing to pass on.)
            change = job.rsplit(".", 1)[-1]
            self.store.add_event(repl.id, "resume",
                                 f"Resumed the interrupted {change} after its worker stopped.")
            self.enqueue_job(job, repl.id)
            metrics.count_repair(self.c.redis, "resumed")
            resumed.append(repl.id)
        return resumed

    def unattended(self, repl_id: str, grace: float) -> bool:
        """True when no job works on the REPL or is about to: its lock is free (or held by
        a job RQ says is over), and its last job neither waits for a worker nor started
        less than ``grace`` seconds ago. A job started before that which holds no lock
        died with its worker: nothing else would leave the lock free."""
        holder = self.store.lock_holder(repl_id)
        if holder is not None and not self.c.jobs.is_dead(holder):
            return False  # a job is on it right now (or a holder only its lease can end)
        return not self.c.jobs.may_still_run(self.store.get_field(repl_id, "job_id"), grace)

    # -- IDE and runner ----------------------------------------------------------------
    @_in_user_terms
    def ide_session(self, actor: Actor, repl_id: str) -> dict:
        repl = self.get(actor, repl_id, as_admin=False)
        if repl.status != Status.RUNNING or not repl.url:
            raise TransitionRefused(
                f"The REPL is {repl.status.value}; start it first.", code="not_running"
            )
        self.store.touch_activity(repl_id)  # opening the IDE is activity
        key = access_tokens.repl_key(self.c.settings.secret_key, repl_id)
        expires = datetime.now(UTC) + timedelta(seconds=IDE_TOKEN_TTL)
        return {
            "url": repl.url,
            "token": access_tokens.sign(key, repl_id, access_tokens.IDE_SCOPE),
            "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    @_in_user_terms
    def runner_heartbeat(self, repl_id: str, active: bool, autosave: dict | None = None) -> None:
        repl = self.store.get(repl_id)
        if repl is None:
            raise NotFound("No such REPL.")
        if active:
            self.store.touch_activity(repl_id)
        if autosave:
            self._note_autosave(repl_id, autosave)

    def _note_autosave(self, repl_id: str, autosave: dict) -> None:
        """Autosave failures, and their end, go to the REPL's events (not every save)."""
        state = autosave["state"]
        if state not in ("saved", "error"):
            return  # saving / pending say nothing new
        previous = self.store.get_field(repl_id, "autosave_state")
        if state == previous:
            return
        if state == "error":
            reason = redact(autosave.get("error") or "unknown error")[:300]
            self.store.add_event(repl_id, "autosave", f"Autosave failed: {reason}")
        elif previous == "error":
            self.store.add_event(repl_id, "autosave", "Autosave works again: files saved.")
        else:
            self.store.add_event(repl_id, "autosave", "Autosave is on: changed files are "
                                 f"saved every {self.c.settings.autosave_seconds} s.")
        self.store.set_fields(repl_id, autosave_state=state)

    @_in_user_terms
    def enqueue_job(self, func: str, repl_id: str, **kwargs) -> str:
        # The job id is kept with the REPL so reconcile can tell a lost job from a queued
        # one. It is recorded before the enqueue: afterwards a fast worker may already have
        # run the job (a delete removes the record).
        job_id = str(uuid.uuid4())
        self.store.set_fields(repl_id, job_id=job_id)
        return self.c.jobs.enqueue(func, repl_id, job_id=job_id, **kwargs)

    @_in_user_terms
    def runner_idle(self, repl_id: str) -> Outcome:
        if self.store.get(repl_id) is None:
            raise NotFound("No such REPL.")
        return self.stop_idle(repl_id)


RESUME_JOBS = {
    Status.CREATING: "jobs.repl.create",
    Status.STARTING: "jobs.repl.start",
    Status.STOPPING: "jobs.repl.stop",
    Status.DELETING: "jobs.repl.delete",
}


PAGE_DEFAULT = 100
PAGE_MAX = 200


@dataclass(frozen=True)
class ReplPage:
    repls: list[Repl]
    total: int
    next_cursor: str | None


def _whole(value: object, name: str) -> int:
    try:
        return int(str(value), 10)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number.", code=f"invalid_{name}") from None


def _make_cursor(after: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(f"{after[0]} {after[1]}".encode()).decode().rstrip("=")


def _read_cursor(cursor: object) -> tuple[str, str] | None:
    if cursor in (None, ""):
        return None
    try:
        text = base64.urlsafe_b64decode(str(cursor) + "=" * (-len(str(cursor)) % 4)).decode()
        score, repl_id = text.split(" ")
        float(score)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InvalidInput("cursor is not one this API gave out.", code="invalid_cursor") from None
    if not plausible_id(repl_id):
        raise InvalidInput("cursor is not one this API gave out.", code="invalid_cursor")
    return score, repl_id


def plausible_id(repl_id: str) -> bool:
    return bool(re.fullmatch(r"[a-z0-9]{1,32}", repl_id or ""))
