"""Embedded mode's state: the data dir's lock and the Redis server its holder runs.

The first process on a data dir takes ``embedded.lock``, starts the dir's redis-server
(``embedded_redis``), deals with what a previous process left (``embedded_recovery``)
and runs the worker. Any other process on the same data dir (a ``flask devex`` command
while ``flask run`` runs) connects to that same server: it sees and changes the same
state, and its jobs run in the lock holder's worker. It runs no worker or server itself.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
from pathlib import Path

from devex.config import Settings
from devex.infra import embedded_recovery
from devex.infra.embedded_redis import RedisServer, answers, find_server
from devex.wiring import Components

log = logging.getLogger(__name__)


class DataDirLock:
    """Embedded mode is one process: the first to take this lock runs the worker and the
    Redis server; another process on the same data dir gets neither, instead of two
    workers racing over the same runners."""

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


class EmbeddedState:
    """Opened by the app factory before the clients are built; closed with the app."""

    def __init__(self, settings: Settings, lock: DataDirLock, server: RedisServer | None):
        self.settings = settings
        self.lock = lock
        self.server = server

    @property
    def owner(self) -> bool:
        """This process holds the data dir: it runs the server and the worker."""
        return self.server is not None

    @classmethod
    def open(cls, settings: Settings, wait: float = 5) -> EmbeddedState:
        lock = DataDirLock(settings.data_dir / "embedded.lock")
        if not lock.acquire():
            # The holder's server may still be starting: give it a moment, no more.
            if not answers(settings.data_dir, wait):
                log.warning("the Devex process holding %s runs no Redis server (yet)",
                            settings.data_dir)
            return cls(settings, lock, None)
        try:
            server = RedisServer(settings.data_dir, find_server(settings.redis_server))
            server.start()
        except BaseException:
            lock.release()
            raise
        state = cls(settings, lock, server)
        atexit.register(state.close)  # at the latest; normally the app closes it first
        return state

    def recover(self, components: Components) -> dict[str, int]:
        """Once, before the worker starts: migrate an old snapshot, forget the jobs and
        locks of the process that held the data dir before."""
        conn = components.redis
        migrated = embedded_recovery.migrate_snapshot(conn, self.settings.data_dir / "state.json")
        report = embedded_recovery.forget_dead_process(conn, components.jobs.queue)
        return {"migrated": migrated, **report}

    def close(self) -> None:
        """Stop the server (AOF flushed), then let go of the data dir."""
        atexit.unregister(self.close)
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.lock.release()
