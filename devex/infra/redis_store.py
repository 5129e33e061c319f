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
from devex.models import Event, Repl, Status, User, allowed_sources, utcnow

EVENTS_KEPT = 200

# KEYS: meta, userRepls, names, allRepls.  ARGV: lname, id, quota, score, then field pairs.
_CREATE = """
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return 'name_taken' end
if tonumber(ARGV[3]) >= 0 and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  return 'quota'
end
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
return 'ok'
"""

# KEYS: meta, activeSession, runningIndex.
# ARGV: target status ('' = keep), allowed sources (space separated, '' = any),
#       session mode (keep|set|del), epoch, field count n, n field pairs, session pairs.
_TRANSITION = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if ARGV[2] ~= '' then
  local ok = false
  for s in string.gmatch(ARGV[2], '%S+') do if s == status then ok = true end end
  if not ok then return {'refused', status} end
end
local n = tonumber(ARGV[5])
for i = 6, 5 + 2 * n, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[1], 'status', ARGV[1])
  local id = redis.call('HGET', KEYS[1], 'id')
  if ARGV[1] == 'running' then
    redis.call('ZADD', KEYS[3], ARGV[4], id)
  elseif ARGV[1] ~= 'stopping' and ARGV[1] ~= 'failed' then
    redis.call('ZREM', KEYS[3], id)
  end
end
if ARGV[3] == 'del' then
  redis.call('DEL', KEYS[2])
elseif ARGV[3] == 'set' then
  for i = 6 + 2 * n, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
end
return {'ok', status}
"""

# KEYS: a sorted set of REPL ids (userRepls or allRepls).  Returns every REPL hash, newest
# first, in one round trip. (It reads replMeta keys it is not given: fine on one Redis
# server, which is what Devex uses; a Redis Cluster would need hash tags.)
_LIST = """
local ids = redis.call('ZREVRANGE', KEYS[1], 0, -1)
local out = {}
for i, id in ipairs(ids) do out[i] = redis.call('HGETALL', 'replMeta:' .. id) end
return out
"""

# KEYS: meta, userRepls, names, allRepls, runningIndex, session, events.  ARGV: id.
_DELETE = """
local owner = redis.call('HGET', KEYS[1], 'owner_id')
if not owner then return 0 end
local name = redis.call('HGET', KEYS[1], 'name')
if name and redis.call('HGET', KEYS[3], string.lower(name)) == ARGV[1] then
  redis.call('HDEL', KEYS[3], string.lower(name))
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('DEL', KEYS[1], KEYS[6], KEYS[7])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _decode(value):
    return value.decode() if isinstance(value, bytes) else value


def _pairs_to_dict(flat: list) -> dict[str, str]:
    items = [_decode(v) for v in flat]
    return dict(zip(items[::2], items[1::2], strict=True))


def name_key(name: str) -> str:
    return name.strip().lower()


class ReplStore:
    """State of REPLs, users and events. The Redis connection is passed in."""

    def __init__(self, connection: redis.Redis):
        self.redis = connection
        self._create = connection.register_script(_CREATE)
        self._transition = connection.register_script(_TRANSITION)
        self._list = connection.register_script(_LIST)
        self._delete = connection.register_script(_DELETE)
        self._release = connection.register_script(_RELEASE)

    # -- REPLs -------------------------------------------------------------------------
    def create(self, repl: Repl, *, quota: int = -1) -> None:
        result = _decode(
            self._create(
                keys=[
                    keys.repl_meta(repl.id),
                    keys.user_repls(repl.owner_id),
                    keys.user_repl_names(repl.owner_id),
                    keys.ALL_REPLS,
                ],
                args=[name_key(repl.name), repl.id, quota, time.time(), *_flatten(repl.to_hash())],
            )
        )
        if result == "name_taken":
            raise Conflict(f"You already have a REPL named {repl.name!r}.", code="name_taken")
        if result == "quota":
            raise QuotaExceeded(
                f"You have reached your limit of {quota} REPLs; delete one first.",
                headers={"Retry-After": "60"},
            )
        if result != "ok":
            raise Conflict("That REPL id is already in use.")

    def get(self, repl_id: str) -> Repl | None:
        raw = self.redis.hgetall(keys.repl_meta(repl_id))
        if not raw:
            return None
        return Repl.from_hash({_decode(k): _decode(v) for k, v in raw.items()})

    def require(self, repl_id: str) -> Repl:
        repl = self.get(repl_id)
        if repl is None:
            raise NotFound("No such REPL.")
        return repl

    def list_for_user(self, user_id: str) -> list[Repl]:
        rows = self._list(keys=[keys.user_repls(user_id)])
        return [Repl.from_hash(_pairs_to_dict(row)) for row in rows if row]

    def list_all(self) -> list[Repl]:
        rows = self._list(keys=[keys.ALL_REPLS])
        return [Repl.from_hash(_pairs_to_dict(row)) for row in rows if row]

    def list_ids(self) -> list[str]:
        return [_decode(x) for x in self.redis.zrange(keys.ALL_REPLS, 0, -1)]

    def count_running(self, user_id: str) -> int:
        return sum(
            1 for r in self.list_for_user(user_id) if r.status in (Status.STARTING, Status.RUNNING)
        )

    def transition(
        self,
        repl_id: str,
        target: Status | None,
        *,
        allowed: Iterable[Status] | None = None,
        fields: dict[str, str | None] | None = None,
        session: dict[str, str] | None = None,
        clear_session: bool = False,
    ) -> Status:
        """Move a REPL to ``target`` if its status allows it; returns the previous status.

        ``allowed`` defaults to the transition table's sources for ``target``. With
        ``target=None`` only ``fields`` change, still guarded by ``allowed``.
        """
        if allowed is None:
            allowed = allowed_sources(target) if target is not None else ()
        fields = dict(fields or {})
        fields["updated_at"] = utcnow()
        flat_fields = _flatten({k: "" if v is None else str(v) for k, v in fields.items()})
        mode = "del" if clear_session else ("set" if session else "keep")
        result = self._transition(
            keys=[keys.repl_meta(repl_id), keys.active_session(repl_id), keys.RUNNING_INDEX],
            args=[
                target.value if target is not None else "",
                " ".join(s.value for s in allowed),
                mode,
                time.time(),
                len(fields),
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
        return Status(previous)

    def set_fields(self, repl_id: str, **fields: str | None) -> None:
        self.transition(repl_id, None, allowed=(), fields=fields)

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

    def session(self, repl_id: str) -> dict[str, str]:
        raw = self.redis.hgetall(keys.active_session(repl_id))
        return {_decode(k): _decode(v) for k, v in raw.items()}

    def touch_activity(self, repl_id: str) -> None:
        now = utcnow()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.repl_meta(repl_id), "last_activity_at", now)
        pipe.zadd(keys.RUNNING_INDEX, {repl_id: time.time()}, xx=True)
        pipe.execute()

    def idle_since(self, cutoff_epoch: float) -> list[str]:
        """Running REPLs whose last activity (or start) is older than the cutoff."""
        return [_decode(x) for x in self.redis.zrangebyscore(keys.RUNNING_INDEX, 0, cutoff_epoch)]

    # -- events ------------------------------------------------------------------------
    def add_event(self, repl_id: str, kind: str, message: str, actor: str = "system") -> Event:
        event = Event(at=utcnow(), kind=kind, message=message, actor=actor)
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(keys.repl_events(repl_id), event.to_json())
        pipe.ltrim(keys.repl_events(repl_id), -EVENTS_KEPT, -1)
        pipe.execute()
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
        raw = self.redis.hgetall(keys.user(user_id))
        if not raw:
            return None
        return User.from_hash({_decode(k): _decode(v) for k, v in raw.items()})


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
