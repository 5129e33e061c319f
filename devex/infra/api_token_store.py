"""Personal API tokens in Redis: only their SHA-256 is kept, never the plaintext.

``apiToken:{sha256}`` (hash) holds the record; ``userTokens:{userId}`` (hash) maps the
token's public id to its SHA-256, so a user can list and revoke by id. Adding and revoking
are single Lua scripts, so the two keys never disagree.
"""

from __future__ import annotations

import redis

from devex.infra import keys
from devex.infra.redis_text import decode, decode_hash

# KEYS: apiToken, userTokens.  ARGV: id, hash, limit, then field pairs.
_ADD = """
if tonumber(ARGV[3]) >= 0 and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[3]) then
  return 'quota'
end
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return 'exists'
end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 'ok'
"""

# KEYS: userTokens.  ARGV: id, key prefix of apiToken.
_REVOKE = """
local h = redis.call('HGET', KEYS[1], ARGV[1])
if not h then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', ARGV[2] .. h)
return 1
"""

# KEYS: apiToken.  ARGV: time.  Never resurrects a revoked token's record.
_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'last_used_at', ARGV[1])
return 1
"""


class ApiTokenLimitReached(Exception):
    """The user already holds the allowed number of tokens."""


class ApiTokenStore:
    def __init__(self, connection: redis.Redis):
        self.redis = connection
        self._add = connection.register_script(_ADD)
        self._revoke = connection.register_script(_REVOKE)
        self._touch = connection.register_script(_TOUCH)

    def add(self, token_hash: str, record: dict[str, str], *, limit: int = -1) -> None:
        flat: list[str] = []
        for k, v in record.items():
            flat.extend((k, v))
        result = decode(
            self._add(
                keys=[keys.api_token(token_hash), keys.user_tokens(record["user_id"])],
                args=[record["id"], token_hash, limit, *flat],
            )
        )
        if result == "quota":
            raise ApiTokenLimitReached(record["user_id"])
        if result != "ok":  # a 256-bit collision: practically impossible
            raise RuntimeError("token id or hash already in use")

    def get_by_hash(self, token_hash: str) -> dict[str, str] | None:
        raw = self.redis.hgetall(keys.api_token(token_hash))
        return decode_hash(raw) if raw else None

    @staticmethod
    def key(token_hash: str) -> str:
        """The token's record (a hash), for reading it together with others."""
        return keys.api_token(token_hash)

    def list_for_user(self, user_id: str) -> list[dict[str, str]]:
        hashes = [decode(h) for h in self.redis.hvals(keys.user_tokens(user_id))]
        if not hashes:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for h in hashes:
            pipe.hgetall(keys.api_token(h))
        return [decode_hash(raw) for raw in pipe.execute() if raw]

    def revoke(self, user_id: str, token_id: str) -> bool:
        prefix = keys.api_token("")
        return bool(self._revoke(keys=[keys.user_tokens(user_id)], args=[token_id, prefix]))

    def touch(self, token_hash: str, when: str) -> None:
        self._touch(keys=[keys.api_token(token_hash)], args=[when])
