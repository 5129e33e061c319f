"""The only code that reads or writes Devex state in Redis.

Every state change is one Lua script (atomic on the server), so a refused change is never
half-applied and two racing requests cannot both win. A refusal is raised in the store's
terms (``devex.infra.store_errors``); the service layer words it for people.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import redis
from redis.client import Pipeline

from devex.errors import LockBusy
from devex.infra import keys, lease
from devex.infra import store_scripts as scripts
from devex.infra.redis_direct import run_script
from devex.infra.redis_text import decode, decode_hash, decode_pairs
from devex.infra.store_errors import (
    IdTaken,
    NameTaken,
    QuotaReached,
    ReplMissing,
    StatusRefused,
    TooManyRetries,
)
from devex.models import Desired, Event, Repl, Status, User, allowed_sources
from devex.timestamps import utcnow

EVENTS_KEPT = 200
LEASE_SECONDS = 15.0  # jobs pass DEVEX_LOCK_LEASE
CREATE_ATTEMPTS = 20  # a create retried this often when a watched key changed meanwhile
META_PREFIX = keys.repl_meta("")


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
        self._renew = connection.register_script(scripts.RENEW)
        self._take_over = connection.register_script(scripts.TAKE_OVER)
        self._create_check = connection.register_script(scripts.CREATE_CHECK)
        self._read_with_user = connection.register_script(scripts.READ_WITH_USER)

    # -- REPLs -------------------------------------------------------------------------
    def create(
        self,
        repl: Repl,
        *,
        quota: int = -1,
        max_active: int = -1,
        fields: dict[str, str] | None = None,
        event: Event | None = None,
        then: Callable[[Pipeline], object] | None = None,
    ) -> None:
        """Record a new REPL: unique name (ignoring case), at most ``quota`` REPLs, and,
        when it is to start, at most ``max_active`` running ones — all in one step, with
        ``fields`` besides the record's own and ``event`` as its first event. ``then``
        adds commands (the create job's enqueue) to the same MULTI/EXEC: the REPL and its
        job exist together or not at all, whenever the caller dies."""
        meta = keys.repl_meta(repl.id)
        script_keys = [meta, keys.user_repls(repl.owner_id),
                       keys.user_repl_names(repl.owner_id), keys.ALL_REPLS]
        active_limit = max_active if repl.desired == Desired.RUNNING else -1
        args = [name_key(repl.name), repl.id, quota, time.time(), active_limit, META_PREFIX,
                *_flatten({**repl.to_hash(), **(fields or {})})]
        with self.redis.pipeline(transaction=True) as pipe:
            for _ in range(CREATE_ATTEMPTS):
                try:
                    # The checks run first, writing nothing, on watched keys: everything
                    # they read. A change to any of it before EXEC drops the transaction,
                    # and the create is tried again.
                    pipe.watch(*script_keys[:3])
                    if active_limit >= 0:
                        ids = pipe.zrange(script_keys[1], 0, -1)
                        if ids:
                            pipe.watch(*(keys.repl_meta(decode(i)) for i in ids))
                    _refuse(decode(self._create_check(keys=script_keys, args=args,
                                                       client=pipe)), repl, quota, max_active)
                    pipe.multi()
                    self._create(keys=script_keys, args=args, client=pipe)
                    if event is not None:
                        self._add_event(keys=[meta, keys.repl_events(repl.id)],
                                        args=[event.to_json(), EVENTS_KEPT], client=pipe)
                    if then is not None:
                        then(pipe)
                    result = decode(pipe.execute()[0])
                    break
                except redis.WatchError:
                    continue
            else:
                raise TooManyRetries(f"{CREATE_ATTEMPTS} attempts to create {repl.id}")
        # Refused inside the transaction: only if something unwatched changed, which the
        # checks above rule out. A job enqueued with it would find no REPL and do nothing.
        _refuse(result, repl, quota, max_active)

    def get(self, repl_id: str) -> Repl | None:
        raw = self.redis.hgetall(keys.repl_meta(repl_id))
        return Repl.from_hash(decode_hash(raw)) if raw else None

    def require(self, repl_id: str) -> Repl:
        repl = self.get(repl_id)
        if repl is None:
            raise ReplMissing(repl_id)
        return repl

    def list_for_user(self, user_id: str) -> list[Repl]:
        rows = self._list(keys=[keys.user_repls(user_id)], args=[META_PREFIX])
        return [Repl.from_hash(decode_pairs(row)) for row in rows if row]

    def page_for_user(self, user_id: str, limit: int, after: tuple[str, str] | None = None
                      ) -> tuple[list[Repl], int, tuple[str, str] | None]:
        """One page of a user's REPLs, newest first, in one round trip: the REPLs, how many
        the user has, and the position after this page (None on the last page). ``after``
        is such a position from the page before."""
        score, last_id = after or ("", "")
        total, rows = self._page(keys=[keys.user_repls(user_id)],
                                 args=[META_PREFIX, score, last_id, limit])
        found = [(decode(row[0]), decode(row[1]), row[2]) for row in rows]
        repls = [Repl.from_hash(decode_pairs(raw)) for _, _, raw in found[:limit] if raw]
        more = len(found) > limit
        return repls, int(total), (found[limit - 1][1], found[limit - 1][0]) if more else None

    def list_all(self) -> list[Repl]:
        rows = self._list(keys=[keys.ALL_REPLS], args=[META_PREFIX])
        return [Repl.from_hash(decode_pairs(row)) for row in rows if row]

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
        owner (``owner_id``) already has that many REPLs starting or running
        (``QuotaReached``). ``expect`` = (field, value) also refuses the change unless that
        field has that value (``StatusRefused``, as a status outside ``allowed`` does)."""
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
        outcome, previous = decode(result[0]), decode(result[1])
        if outcome == "missing":
            raise ReplMissing(repl_id)
        if outcome == "refused":
            raise StatusRefused(repl_id, Status(previous), target)
        if outcome == "running_quota":
            raise QuotaReached("running", max_active)
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
        return decode(self.redis.hget(keys.repl_meta(repl_id), name))

    def is_locked(self, repl_id: str) -> bool:
        return bool(self.redis.exists(keys.repl_lock(repl_id)))

    def session(self, repl_id: str) -> dict[str, str]:
        raw = self.redis.hgetall(keys.active_session(repl_id))
        return decode_hash(raw)

    def touch_activity(self, repl_id: str) -> bool:
        """Record activity of a running REPL; False (nothing written) for any other."""
        return bool(
            self._touch(
                keys=[keys.repl_meta(repl_id), keys.RUNNING_INDEX], args=[utcnow(), time.time()]
            )
        )

    def idle_since(self, cutoff_epoch: float) -> list[str]:
        """Running REPLs whose last activity (or start) is older than the cutoff."""
        return [decode(x) for x in self.redis.zrangebyscore(keys.RUNNING_INDEX, 0, cutoff_epoch)]

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
            Event.from_json(decode(x)) for x in self.redis.lrange(keys.repl_events(repl_id), 0, -1)
        ]

    # -- locks -------------------------------------------------------------------------
    @contextmanager
    def lock(
        self,
        repl_id: str,
        ttl_seconds: float = LEASE_SECONDS,
        wait: float = 0,
        *,
        holder: str = "",
        is_dead: Callable[[str], bool] | None = None,
        on_takeover: Callable[[str], object] | None = None,
        keep: Callable[[], bool] | None = None,
    ) -> Iterator[lease.Lease]:
        """Hold the REPL's lock for one job (``holder``: its RQ job id) as a lease of
        ``ttl_seconds``, renewed in the background until the block ends. Waits up to
        ``wait`` seconds for another holder, then raises ``LockBusy`` -- except that a
        holder ``is_dead`` says is gone is taken over at once (``on_takeover(its id)``)
        instead of waiting out its lease. ``keep``: renew only while it says True."""
        key = keys.repl_lock(repl_id)
        value = lease.new_value(holder)
        ms = max(1, int(ttl_seconds * 1000))
        deadline = time.monotonic() + wait
        asked = 0.0  # when is_dead was last asked: at most once a second, it reads RQ
        while True:
            sent = time.monotonic()
            if self.redis.set(key, value, nx=True, px=ms):
                break
            current = decode(self.redis.get(key))
            if current is None:
                continue  # freed meanwhile: try again at once
            if is_dead is not None and time.monotonic() - asked >= 1:
                asked = time.monotonic()
                old = lease.holder_of(current)
                if is_dead(old) and self._take_over(keys=[key], args=[current, value, ms]):
                    if on_takeover is not None:
                        on_takeover(old)
                    break
            if time.monotonic() >= deadline:
                raise LockBusy(f"REPL {repl_id} is locked by another job")
            time.sleep(0.2)  # polling: Redis has no "wait until this key is gone"
        held = lease.Lease(self.redis, key, value, ttl_seconds, self._renew, self._release,
                           taken_at=sent, keep=keep)
        held.start()
        try:
            yield held
        finally:
            held.release()

    def lock_holder(self, repl_id: str) -> str | None:
        """Who holds the REPL's lock: None when it is free, else the holder's job id
        ("" when it names none)."""
        value = decode(self.redis.get(keys.repl_lock(repl_id)))
        return None if value is None else lease.holder_of(value)

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
        return User.from_hash(decode_hash(raw))

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
        return _user_and_repls(decode_hash(raw_user), repl_ids, [decode_hash(r) for r in raw_repls])

    def read_with_user(
        self, credential_key: str, kind: str, user_id: str | None, repl_ids: Iterable[str]
    ) -> tuple[object, tuple[User | None, dict[str, Repl | None]] | None]:
        """In one command: a credential (``kind`` "string": its value; "hash": its fields as
        a dict) and, if ``user_id`` is given, that user's record and some REPL records.
        Returns the credential and ``(user, repls)`` (None without ``user_id``)."""
        repl_ids = list(repl_ids) if user_id else []
        extra = [keys.user(user_id), *map(keys.repl_meta, repl_ids)] if user_id else []
        # Every authenticated request comes here: redis_direct skips execute_command's wrappers.
        head, *rest = run_script(self.redis, self._read_with_user,
                                 [credential_key, *extra], [kind])
        if kind == "hash":
            head = decode_pairs(head)
        if not user_id:
            return head, None
        user, *repls = (decode_pairs(flat) for flat in rest)
        return head, _user_and_repls(user, repl_ids, repls)


def _user_and_repls(
    user: dict[str, str], repl_ids: list[str], repls: list[dict[str, str]]
) -> tuple[User | None, dict[str, Repl | None]]:
    """Records already decoded (``decode_hash`` or ``decode_pairs``); empty: none."""
    found = User.from_hash(user) if user else None
    by_id = {
        repl_id: Repl.from_hash(fields) if fields else None
        for repl_id, fields in zip(repl_ids, repls, strict=True)
    }
    return found, by_id


def _refuse(result: str, repl: Repl, quota: int, max_active: int) -> None:
    """Raise the refusal a create script's answer stands for (nothing for 'ok')."""
    if result == "ok":
        return
    if result == "name_taken":
        raise NameTaken(repl.name)
    if result == "quota":
        raise QuotaReached("repls", quota)
    if result == "running_quota":
        raise QuotaReached("running", max_active)
    raise IdTaken(repl.id)


def _flatten(mapping: dict[str, str]) -> list[str]:
    out: list[str] = []
    for k, v in mapping.items():
        out.extend((k, v))
    return out
