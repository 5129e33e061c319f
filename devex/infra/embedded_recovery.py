"""What a previous embedded process left behind, dealt with once at start-up by the new
holder of the data dir's lock, before its worker starts.

- ``state.json``, the snapshot older versions kept instead of a durable Redis: loaded
  into the server once if it is empty, then renamed ``state.json.migrated``.
- The dead process's jobs: embedded mode has one worker, the lock holder's, so every
  REPL lock and every started RQ job found now belonged to a process that is gone.
  The locks are dropped and the jobs failed (or retried, if they have retries left), so
  that ``resume_interrupted`` and ``reconcile`` see them as dead at once rather than
  after their timeouts. Queued and scheduled jobs stay and run as usual.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path

import redis
from rq import Queue, Worker
from rq.registry import StartedJobRegistry

from devex.infra import keys

log = logging.getLogger(__name__)


def _u(text: str) -> bytes:
    return base64.b64decode(text)


def load(conn: redis.Redis, data: dict) -> int:
    """Write a ``state.json`` snapshot (base64 keys and values, absolute expiries) into
    ``conn``; keys that expired while the process was down are left out."""
    pipe = conn.pipeline(transaction=True)
    now = time.time()
    loaded = 0
    for raw_key, entry in data.items():
        expires = entry.get("expires")
        if expires is not None and expires <= now:
            continue
        loaded += 1
        key, kind, value = _u(raw_key), entry["type"], entry["value"]
        if kind == "string":
            pipe.set(key, _u(value))
        elif kind == "hash" and value:
            pipe.hset(key, mapping={_u(k): _u(v) for k, v in value.items()})
        elif kind == "zset" and value:
            pipe.zadd(key, {_u(m): s for m, s in value})
        elif kind == "list" and value:
            pipe.rpush(key, *[_u(x) for x in value])
        elif kind == "set" and value:
            pipe.sadd(key, *[_u(x) for x in value])
        if expires is not None:
            pipe.expireat(key, int(expires))
    pipe.execute()
    return loaded


def migrate_snapshot(conn: redis.Redis, path: Path) -> int:
    """Load the old snapshot at ``path`` into an empty server, once; keys loaded."""
    if not path.exists():
        return 0
    loaded = 0
    if conn.dbsize() == 0:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            # Keep the unreadable file for a person to look at; start empty rather than die.
            log.error("embedded state %s unreadable (%s); not migrated", path, exc)
            path.rename(path.with_name(path.name + ".unreadable"))
            return 0
        # The one write that must not wait for the next second's fsync: the file that
        # held these keys is renamed right after.
        conn.config_set("appendfsync", "always")
        try:
            loaded = load(conn, data)
        finally:
            conn.config_set("appendfsync", "everysec")
        log.info("embedded state: %d keys migrated from %s", loaded, path)
    path.rename(path.with_name(path.name + ".migrated"))
    return loaded


def forget_dead_process(conn: redis.Redis, queue: Queue) -> dict[str, int]:
    """Drop the REPL locks, fail the started jobs and unregister the workers of the
    process that held the data dir before. Only the new lock holder, before its own
    worker starts, may call this."""
    locks = list(conn.scan_iter(match=keys.repl_lock("") + "*", count=1000))
    if locks:
        conn.delete(*locks)
    started = StartedJobRegistry(queue=queue)
    jobs = len(started.get_job_ids(cleanup=False))
    if jobs:
        started.cleanup(timestamp=float("inf"))  # every one is abandoned
    workers = Worker.all(connection=conn)
    for worker in workers:
        worker.register_death()
    return {"locks": len(locks), "jobs": jobs, "workers": len(workers)}
