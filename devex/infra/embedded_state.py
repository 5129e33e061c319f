"""Embedded mode's in-process Redis outlives a restart: its keys are snapshotted to
``$DEVEX_DATA_DIR/state.json`` and loaded again at start-up.

RQ's own keys are left out (job payloads are pickles of this process); instead, REPLs
found in a transitional status after a restart get their job enqueued again — jobs are
safe to run twice, so this only finishes what was interrupted.
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path

import redis

from devex.infra import keys

log = logging.getLogger(__name__)
# RQ's pickles, and locks of jobs that died with the process.
SKIP_PREFIXES = (b"rq:", keys.repl_lock("").encode())


def _b(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _u(text: str) -> bytes:
    return base64.b64decode(text)


def dump(conn: redis.Redis) -> dict:
    out = {}
    now = time.time()
    for key in sorted(conn.scan_iter(count=1000)):
        if key.startswith(SKIP_PREFIXES):
            continue
        ttl_ms = conn.pttl(key)
        if ttl_ms == -2:
            continue  # gone since the scan (a session ended, a key expired)
        kind = conn.type(key).decode()
        if kind == "string":
            raw = conn.get(key)
            if raw is None:
                continue
            value = _b(raw)
        elif kind == "hash":
            value = {_b(k): _b(v) for k, v in conn.hgetall(key).items()}
        elif kind == "zset":
            value = [[_b(m), s] for m, s in conn.zrange(key, 0, -1, withscores=True)]
        elif kind == "list":
            value = [_b(x) for x in conn.lrange(key, 0, -1)]
        elif kind == "set":
            value = sorted(_b(x) for x in conn.smembers(key))
        else:
            continue
        # An absolute expiry (whole seconds): downtime counts, and an unchanged key dumps
        # the same text every time.
        expires = int(now + ttl_ms / 1000) + 1 if ttl_ms > 0 else None
        out[_b(key)] = {"type": kind, "value": value, "expires": expires}
    return out


def load(conn: redis.Redis, data: dict) -> int:
    pipe = conn.pipeline(transaction=True)
    now = time.time()
    loaded = 0
    for raw_key, entry in data.items():
        expires = entry.get("expires")
        if expires is not None and expires <= now:
            continue  # expired while the process was down
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


class Snapshotter:
    """Writes the snapshot when it changed; atomic (temp file + rename), owner-only."""

    def __init__(self, conn: redis.Redis, path: Path):
        self.conn = conn
        self.path = path
        self._last = ""
        self._lock = threading.Lock()

    def restore(self) -> int:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            # Keep the unreadable file for a person to look at; start empty rather than die.
            log.error("embedded state %s unreadable (%s); starting empty", self.path, exc)
            self.path.rename(self.path.with_suffix(".unreadable"))
            return 0
        count = load(self.conn, data)
        self._last = json.dumps(data, sort_keys=True)
        return count

    def save(self) -> bool:
        with self._lock:
            text = json.dumps(dump(self.conn), sort_keys=True)
            if text == self._last:
                return False
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, self.path)
            self._last = text
            return True


class DataDirLock:
    """Embedded mode is one process: the first to take this lock runs the worker and keeps
    the state; another process on the same data dir (a CLI command, a second server) gets
    neither, instead of two workers racing over the same runners and snapshot."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
