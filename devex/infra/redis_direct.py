"""One Lua script call on a pooled connection, for the web's hottest read.

``Redis.execute_command`` wraps every command in per-call machinery (observability
recording, event dispatch, HIMPORT handling, a retry closure); under load that costs as
much CPU as the round trip itself (``bench/http_wrk.py``: a bare Flask endpoint answering
after a ``PING`` runs at 0.62x bare Flask through ``Redis.ping()``, 0.68x through the pool
and connection directly). This uses the same pool, connections, parser and retry policy,
and does what ``execute_command`` does on failure: the connection is dropped before a retry
and before it goes back to the pool.
"""

from __future__ import annotations

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError


def run_script(client: redis.Redis, script: Script, keys: list[str], args: list[str]):
    """``script(keys=keys, args=args)``, answered as the server sends it (no response
    callback applies to EVALSHA), loading the script once if the server lacks it."""
    try:
        return _call(client, "EVALSHA", script.sha, len(keys), *keys, *args)
    except NoScriptError:
        # A restarted (or flushed) server: load it again, as Script.__call__ does.
        script.sha = client.script_load(script.script)
        return _call(client, "EVALSHA", script.sha, len(keys), *keys, *args)


def _call(client: redis.Redis, *command):
    pool = client.connection_pool
    conn = pool.get_connection()

    def send():
        conn.send_command(*command)
        return conn.read_response()

    try:
        return conn.retry.call_with_retry(send, lambda _error: conn.disconnect())
    finally:
        pool.release(conn)
