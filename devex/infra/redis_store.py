"""The only code that reads or writes Devex state in Redis.

Every state change is one Lua script (atomic on the server), so a refused change is never
half-applied and two racing requests cannot both win.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from contextlib import contextmanager

import redis

from devex.errors import Conflict, LockBusy, NotFound, QuotaExceeded, TransitionRefused
from devex.infra import keys
from devex.infra import store_scripts as scripts
from devex.models import Desired, Event, Repl, Status, User, allowed_sources, utcnow

EVENTS_KEPT = 200
META_PREFIX = keys.repl_meta("")


def _decode(value):
    return value.decode() if isinstance(value, bytes) else value


def _as_str_dict(raw: dict) -> dict[str, str]:
    return {_decode(k): _decode(v) for k, v in raw.items()}


def _pairs_to_dict(flat: list) -> dict[str, str]:
    items = [_decode(v) for v in flat]
    return dict(zip(items[::2], items[1::2], strict=True))


def name_key(name: str) -> str:
    return name.strip().lower()


class ReplStore:
    """State of REPLs, users and events. The Redis connection is passed in."""

    def __init__(self, connection: redis.Redis):
        self.redis = connection
        self._create = connection.register_script(scripts.CREATE)
        self._transition = connection.register_script(scripts.TRANSITION)
        self._list = connection.register_script(scripts.LIST)
        self._page = connection.register_script(scripts.PAGE)
        self._delete = connection.register_script(scripts.DELETE)
        self._touch = connection.register_script(scripts.TOUCH)
        self._add_event = connection.register_script(scripts.ADD_EVENT)
        self._release = connection.register_script(scripts.RELEASE)

    # -- REPLs -------------------------------------------------------------------------
    def create(self, repl: Repl, *, quota: int = -1, max_active: int = -1) -> None:
        """Record a new REPL: unique name (ignoring case), at most ``quota`` REPLs, and,
        when it is to start, at most ``max_active`` running ones — all in one step."""
        result = _decode(
            self._create(
                keys=[
                    keys.repl_meta(repl.id),
                    keys.user_repls(repl.owner_id),
                    keys.user_repl_names(repl.owner_id),
                    keys.ALL_REPLS,
                ],
                args=[
                    name_key(repl.name),
                    repl.id,
                    quota,
                    time.time(),
                    max_active if repl.desired == Desired.RUNNING else -1,
                    META_PREFIX,
                    *_flatten(repl.to_hash()),
                ],
            )
        )
        if result == "name_taken":
            raise Conflict(f"You already have a REPL named {repl.name!r}.", code="name_taken")
        if result == "quota":
            raise QuotaExceeded(
                f"You have reached your limit of {quota} REPLs; delete one first.",
                headers={"Retry-After": "60"},
            )
        if result == "running_quota":
            raise running_quota_exceeded(max_active)
        if result != "ok":
            raise Conflict("That REPL id is already in use.")

    def get(self, repl_id: str) -> Repl | None:
        raw = self.redis.hgetall(keys.repl_meta(repl_id))
        return Repl.from_hash(_as_str_dict(raw)) if raw else None

    def require(self, repl_id: str) -> Repl:
        repl = self.get(repl_id)
        if repl is None:
            raise NotFound("No such REPL.")
        return repl

    def list_for_user(self, user_id: str) -> list[Repl]:
        rows = self._list(keys=[keys.user_repls(user_id)], args=[META_PREFIX])
        return [Repl.from_hash(_pairs_to_dict(row)) for row in rows if row]

    def page_for_user(self, user_id: str, limit: int, after: tuple[str, str] | None = None
                      ) -> tuple[list[Repl], int, tuple[str, str] | None]:
        """One page of a user's REPLs, newest first, in one round trip: the REPLs, how many
        the user has, and the position after this page (None on the last page). ``after``
        is such a position from the page before."""
        score, last_id = after or ("", "")
        total, rows = self._page(keys=[keys.user_repls(user_id)],
                                 args=[META_PREFIX, score, last_id, limit])
        found = [(_decode(row[0]), _decode(row[1]), row[2]) for row in rows]
        repls = [Repl.from_hash(_pairs_to_dict(raw)) for _, _, raw in found[:limit] if raw]
        more = len(found) > limit
        return repls, int(total), (found[limit - 1][1], found[limit - 1][0]) if more else None

    def list_all(self) -> list[Repl]:
        rows = self._list(keys=[keys.ALL_REPLS], args=[META_PREFIX])
        return [Repl.from_hash(_pairs_to_dict(row)) for row in rows if row]

    def transition(
        self,
        repl_id: str,
        target: Status | None,
        *,
        allowed: Iterable[Status] | None = None,
        fields: dict[str, str | None] | None = None,
        session: dict[str, str] | None = None,
        clear_session: bool = False,
        max_active: int = -1,
        owner_id: str = "",
        expect: tuple[str, str] | None = None,
    ) -> Status:
        """Move a REPL to ``target`` if the transition table allows it from its current
        status; returns the previous status. ``allowed`` may only narrow the table's
        sources. With ``target=None`` only ``fields`` change (guarded by ``allowed``, any
        status when None). With ``max_active`` >= 0 the change is refused (429) when the
        owner (``owner_id``) already has that many REPLs starting or running. ``expect``
        = (field, value) also refuses the change unless that field has that value."""
        if fields and "status" in fields:
            raise ValueError("status changes only through the transition table")
        if target is not None:
            sources = allowed_sources(target)
            allowed = sources if allowed is None else [s for s in allowed if s in sources]
        guard = "*" if allowed is None else " ".join(s.value for s in allowed)
        fields = dict(fields or {})
        fields["updated_at"] = utcnow()
        flat_fields = _flatten({k: "" if v is None else str(v) for k, v in fields.items()})
        mode = "del" if clear_session else ("set" if session else "keep")
        result = self._transition(
            keys=[
                keys.repl_meta(repl_id),
                keys.active_session(repl_id),
                keys.RUNNING_INDEX,
                keys.user_repls(owner_id),
            ],
            args=[
                target.value if target is not None else "",
                guard,
                mode,
                time.time(),
                len(fields),
                max_active if owner_id else -1,
                META_PREFIX,
                *(expect or ("", "")),
                *flat_fields,
                *_flatten(session or {}),
            ],
        )
        outcome, previous = _decode(result[0]), _decode(result[1])
        if outcome == "missing":
            raise NotFound("No such REPL.")
        if outcome == "refused":
            raise TransitionRefused(
                f"The REPL is {previous}; it cannot be {_verb(target)} now.",
                code="invalid_state",
            ).with_status(Status(previous))
        if outcome == "running_quota":
            raise running_quota_exceeded(max_active)
        return Status(previous)

    def set_fields(self, repl_id: str, **fields: str | None) -> None:
        """Change fields (never the status) of a REPL in any status."""
        self.transition(repl_id, None, fields=fields)

    def delete(self, repl: Repl) -> bool:
        return bool(
            self._delete(
                keys=[
                    keys.repl_meta(repl.id),
                    keys.user_repls(repl.owner_id),
                    keys.user_repl_names(repl.owner_id),
                    keys.ALL_REPLS,
                    keys.RUNNING_INDEX,
                    keys.active_session(repl.id),
                    keys.repl_events(repl.id),
                ],
                args=[repl.id],
            )
        )

    def get_field(self, repl_id: str, name: str) -> str | None:
        return _decode(self.redis.hget(keys.repl_meta(repl_id), name))

    def is_locked(self, repl_id: str) -> bool:
        return bool(self.redis.exists(keys.repl_lock(repl_id)))

    def session(self, repl_id: str) -> dict[str, str]:
        raw = self.redis.hgetall(keys.active_session(repl_id))
        return {_decode(k): _decode(v) for k, v in raw.items()}

    def touch_activity(self, repl_id: str) -> bool:
        """Record activity of a running REPL; False (nothing written) for any other."""
        return bool(
            self._touch(
                keys=[keys.repl_meta(repl_id), keys.RUNNING_INDEX], args=[utcnow(), time.time()]
            )
        )

    def idle_since(self, cutoff_epoch: float) -> list[str]:
        """Running REPLs whose last activity (or start) is older than the cutoff."""
        return [_decode(x) for x in self.redis.zrangebyscore(keys.RUNNING_INDEX, 0, cutoff_epoch)]

    # -- events ------------------------------------------------------------------------
    def add_event(self, repl_id: str, kind: str, message: str, actor: str = "system") -> Event:
        event = Event(at=utcnow(), kind=kind, message=message, actor=actor)
        self._add_event(
            keys=[keys.repl_meta(repl_id), keys.repl_events(repl_id)],
            args=[event.to_json(), EVENTS_KEPT],
        )
        return event

    def events(self, repl_id: str) -> list[Event]:
        return [
            Event.from_json(_decode(x)) for x in self.redis.lrange(keys.repl_events(repl_id), 0, -1)
        ]

    # -- locks -------------------------------------------------------------------------
    @contextmanager
    def lock(self, repl_id: str, ttl_seconds: int = 900, wait: float = 0):
        """Hold the REPL's lock for one job, waiting up to ``wait`` seconds for another job
        to finish with it; raise ``LockBusy`` if it is still held then."""
        token = secrets.token_hex(16)
        key = keys.repl_lock(repl_id)
        deadline = time.monotonic() + wait
        while not self.redis.set(key, token, nx=True, ex=ttl_seconds):
            if time.monotonic() >= deadline:
                raise LockBusy(f"REPL {repl_id} is locked by another job")
            time.sleep(0.2)
        try:
            yield token
        finally:
            self._release(keys=[key], args=[token])

    # -- users -------------------------------------------------------------------------
    def upsert_user(self, user: User) -> User:
        key = keys.user(user.id)
        now = utcnow()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(key, "first_login_at", now)
        pipe.hset(
            key,
            mapping={
                "id": user.id,
                "login": user.login,
                "name": user.name,
                "avatar_url": user.avatar_url,
                "last_login_at": now,
            },
        )
        pipe.set(keys.user_by_login(user.login), user.id)
        pipe.hgetall(key)
        raw = pipe.execute()[-1]
        return User.from_hash({_decode(k): _decode(v) for k, v in raw.items()})

    def get_user(self, user_id: str) -> User | None:
        return self.get_user_with_repls(user_id, ())[0]

    def get_user_with_repls(
        self, user_id: str, repl_ids: Iterable[str]
    ) -> tuple[User | None, dict[str, Repl | None]]:
        """A user and some REPL records in one round trip (one pipeline)."""
        repl_ids = list(repl_ids)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(keys.user(user_id))
        for repl_id in repl_ids:
            pipe.hgetall(keys.repl_meta(repl_id))
        raw_user, *raw_repls = pipe.execute()
        user = User.from_hash(_as_str_dict(raw_user)) if raw_user else None
        repls = {
            repl_id: Repl.from_hash(_as_str_dict(raw)) if raw else None
            for repl_id, raw in zip(repl_ids, raw_repls, strict=True)
        }
        return user, repls


def running_quota_exceeded(limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"You may run at most {limit} REPLs at once; stop one first.",
        headers={"Retry-After": "60"},
    )


def _flatten(mapping: dict[str, str]) -> list[str]:
    out: list[str] = []
    for k, v in mapping.items():
        out.extend((k, v))
    return out


def _verb(target: Status | None) -> str:
    return {
        Status.STARTING: "started",
        Status.STOPPING: "stopped",
        Status.DELETING: "deleted",
        Status.RUNNING: "marked running",
        Status.STOPPED: "marked stopped",
        Status.FAILED: "marked failed",
    }.get(target, "changed")
