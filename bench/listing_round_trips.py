"""Redis round trips to list a user's REPLs, for 1, 100 and 1,000 REPLs (counted, not timed)."""

from __future__ import annotations

import redis

from devex.infra.redis_store import ReplStore
from devex.models import Repl
from devex.timestamps import utcnow


def count_calls(fn) -> int:
    calls = 0
    original = redis.Redis.execute_command

    def counting(self, *args, **kwargs):
        nonlocal calls
        calls += 1
        return original(self, *args, **kwargs)

    redis.Redis.execute_command = counting
    try:
        fn()
    finally:
        redis.Redis.execute_command = original
    return calls


def run(redis_url: str) -> dict:
    conn = redis.Redis.from_url(redis_url)
    results = {}
    for n in (1, 100, 1000):
        conn.flushall()
        store = ReplStore(conn)
        owner = f"u{n}"
        for i in range(n):
            now = utcnow()
            store.create(
                Repl(
                    id=f"{i:012x}",
                    name=f"r{i}",
                    template="bash",
                    owner_id=owner,
                    owner_login="bench",
                    storage_prefix=f"bench/{i:012x}/",
                    created_at=now,
                    updated_at=now,
                )
            )
        store.list_for_user(owner)  # loads the script once
        listed: list = []
        trips = count_calls(lambda s=store, o=owner, out=listed: out.append(s.list_for_user(o)))
        assert len(listed[0]) == n
        results[str(n)] = trips
    conn.close()
    return {"redis_round_trips_to_list": results}
