"""A user's standing in Redis: suspension, the last GitHub re-check, bound login names,
and the sealed GitHub credential the re-check uses.

The standing fields live in the user's hash (``user:{id}``) beside the profile that
``ReplStore`` writes, so the one read of the user that every request makes already
carries them: checking standing costs no extra round trip. This module writes only those
fields (``suspended``, ``suspended_reason``, ``suspended_at``, ``standing_checked_at``,
``held_logins``) and never creates a user record. The credential is a separate string key
(``userGitHub:{id}``): it is read only when a re-check is due.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from devex.infra import keys
from devex.infra.redis_text import decode

# KEYS: user.  ARGV: now, every.  1 when this caller should run the due re-check.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local last = tonumber(redis.call('HGET', KEYS[1], 'standing_checked_at') or '') or 0
if tonumber(ARGV[1]) - last < tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'standing_checked_at', ARGV[1])
return 1
"""

# KEYS: user.  ARGV: by, reason, at.  An administrator's suspension is never replaced by a
# failed re-check's (lifting that one must not lift the administrator's).
_SUSPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local current = redis.call('HGET', KEYS[1], 'suspended') or ''
if current == 'admin' and ARGV[1] ~= 'admin' then return 1 end
redis.call('HSET', KEYS[1], 'suspended', ARGV[1], 'suspended_reason', ARGV[2],
           'suspended_at', ARGV[3])
return 1
"""

# KEYS: user.  ARGV: only ('' = whoever suspended).  0 no user, 1 done, 2 suspended by another.
_RESUME = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local current = redis.call('HGET', KEYS[1], 'suspended') or ''
if current == '' then return 1 end
if ARGV[1] ~= '' and current ~= ARGV[1] then return 2 end
redis.call('HSET', KEYS[1], 'suspended', '', 'suspended_reason', '', 'suspended_at', '')
return 1
"""

# KEYS: boundLogins, user.  ARGV: id, then every configured name.  Records (and returns)
# which configured names are bound to this id.
_HOLD_LOGINS = """
local held = {}
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then table.insert(held, ARGV[i]) end
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], 'held_logins', table.concat(held, ','))
end
return held
"""

# KEYS: boundLogins or boundOrgs.  ARGV: name, id.  The id the name is bound to: the first
# one ever bound, for good.
_BIND = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HGET', KEYS[1], ARGV[1])
"""


class AccountStore:
    def __init__(self, connection: redis.Redis):
        self.redis = connection
        self._claim = connection.register_script(_CLAIM)
        self._suspend = connection.register_script(_SUSPEND)
        self._resume = connection.register_script(_RESUME)
        self._hold_logins = connection.register_script(_HOLD_LOGINS)
        self._bind = connection.register_script(_BIND)

    # -- standing ------------------------------------------------------------------------
    def claim_check(self, user_id: str, now: float, every: float) -> bool:
        """True (and the check marked done now) when the user's re-check is due; one of
        many concurrent requests wins, the others go on with the standing as it is."""
        return bool(self._claim(keys=[keys.user(user_id)], args=[int(now), every]))

    def set_checked(self, user_id: str, when: float) -> None:
        if self.redis.exists(keys.user(user_id)):
            self.redis.hset(keys.user(user_id), "standing_checked_at", int(when))

    def suspend(self, user_id: str, by: str, reason: str, at: str) -> bool:
        """False when there is no such user."""
        return bool(self._suspend(keys=[keys.user(user_id)], args=[by, reason, at]))

    def resume(self, user_id: str, only: str = "") -> int:
        """0 no such user, 1 not (or no longer) suspended, 2 suspended by someone other
        than ``only``."""
        return int(self._resume(keys=[keys.user(user_id)], args=[only]))

    # -- names bound to ids --------------------------------------------------------------
    def bind_login(self, name: str, user_id: str) -> str:
        """Bind a configured login name to ``user_id`` unless it is bound already; the id
        it is bound to."""
        return decode(self._bind(keys=[keys.BOUND_LOGINS], args=[name, user_id]))

    def bind_org(self, org_login: str, org_id: str) -> str:
        return decode(self._bind(keys=[keys.BOUND_ORGS], args=[org_login, org_id]))

    def bound_logins(self, names: Sequence[str]) -> dict[str, str]:
        if not names:
            return {}
        values = self.redis.hmget(keys.BOUND_LOGINS, list(names))
        return {n: decode(v) for n, v in zip(names, values, strict=True) if v is not None}

    def hold_logins(self, user_id: str, configured: Sequence[str]) -> list[str]:
        """Record on the user which ``configured`` names are bound to it."""
        held = self._hold_logins(
            keys=[keys.BOUND_LOGINS, keys.user(user_id)], args=[user_id, *configured]
        )
        return [decode(x) for x in held]

    # -- the GitHub credential (sealed by the caller) ------------------------------------
    def save_credential(self, user_id: str, sealed: bytes) -> None:
        self.redis.set(keys.github_credential(user_id), sealed)

    def credential(self, user_id: str) -> bytes | None:
        return self.redis.get(keys.github_credential(user_id))
