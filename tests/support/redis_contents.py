"""Every key of a Redis with its contents: what a refused request must leave as it was."""

from __future__ import annotations

import redis


def redis_contents(conn: redis.Redis, skip: tuple[bytes, ...] = (b"rq:",)) -> dict:
    """Key -> (type, contents, whether it expires) for every key not starting with one of
    ``skip`` (by default RQ's own bookkeeping, which its worker changes on its own), so a
    changed field of one record shows, not only a new or missing key."""
    state = {}
    for key in conn.keys("*"):
        if key.startswith(skip):
            continue
        kind = conn.type(key).decode()
        if kind == "none":  # deleted since KEYS answered
            continue
        if kind == "string":
            value = conn.get(key)
        elif kind == "hash":
            value = conn.hgetall(key)
        elif kind == "zset":
            value = conn.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = conn.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(conn.smembers(key))
        else:
            raise AssertionError(f"redis_contents does not know {kind} keys ({key!r})")
        state[key] = (kind, value, conn.ttl(key) > 0)
    return state
