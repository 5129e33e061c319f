"""Degrading cleanly while Redis is down: every page a readable 503, answered at once.

``RedisWatch`` knows whether this process reaches Redis: one daemon thread per process
pings it every ``DEVEX_HEALTH_INTERVAL`` seconds with its own client (time limit
``DEVEX_WEB_REDIS_TIMEOUT``: slower than a request may wait is down), and a request that
hits a connection error or a timeout marks it down at once. ``/readyz`` answers from it
and never waits on Redis itself.

While it is down, ``OutageGate`` (WSGI, in front of Flask) takes the cookie off each
request before Flask opens the session -- opening it would wait on Redis -- and marks it;
``refuse_during_outage`` then answers 503 before any view runs (``devex.web.errorhandlers``
picks HTML, an htmx fragment or JSON). ``/healthz``, ``/readyz``, ``/metrics`` and static
files still answer. Until the watch notices, a request waits at most
``DEVEX_WEB_REDIS_TIMEOUT`` seconds on a frozen Redis (``bound_redis_waits``).
"""

from __future__ import annotations

import logging
import os
import threading
import time

import redis
from flask import current_app, request, session
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from devex.web.errorhandlers import outage_response
from devex_shared.redact import redact

log = logging.getLogger(__name__)
OUTAGE = "devex.redis_down"  # WSGI environ key: this request arrived during an outage
# Paths that need no Redis and must keep answering (probes, scrapes, the pages' assets).
EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})
EXEMPT_PREFIXES = ("/static/",)


def exempt(path: str) -> bool:
    return path in EXEMPT or path.startswith(EXEMPT_PREFIXES)


def bound_redis_waits(client: redis.Redis, seconds: float) -> None:
    """Lower (never raise) how long ``client`` waits for a connection and for each reply:
    the web's requests give up on a frozen Redis after ``seconds``."""
    kwargs = client.connection_pool.connection_kwargs
    for key in ("socket_timeout", "socket_connect_timeout",
                "orig_socket_timeout", "orig_socket_connect_timeout"):
        if isinstance(kwargs.get(key), int | float) and kwargs[key] > seconds:
            kwargs[key] = seconds


def _probe_client(client: redis.Redis, timeout: float) -> redis.Redis:
    """A client for the same server with short timeouts, so a frozen Redis cannot hold
    the check longer than ``timeout`` (rq's worker raises the app client's own)."""
    from rq.connections import parse_connection  # rebuilds a client as rq's own pool does

    try:
        _cls, connection_class, kwargs = parse_connection(client)
        kwargs.update(socket_timeout=timeout, socket_connect_timeout=timeout,
                      health_check_interval=0)
        pool = redis.ConnectionPool(connection_class=connection_class, max_connections=2,
                                    **kwargs)
    except (AttributeError, TypeError, ValueError) as exc:  # a client of another make
        log.warning("Redis checks use the app's own client (%s)", exc)
        return client
    return redis.Redis(connection_pool=pool)


class RedisWatch:
    def __init__(self, client: redis.Redis, interval: float, timeout: float):
        self.client = client
        self.interval = interval
        self.timeout = timeout
        self.down = False  # read by every request: a plain attribute
        self.reason = ""
        self.checked_at = 0.0  # time.monotonic() of the last finished check; 0: none yet
        self._checked = threading.Condition()
        self._pid = 0
        self._stop = threading.Event()

    @classmethod
    def for_client(cls, client: redis.Redis, settings) -> RedisWatch | None:
        """None for an in-process Redis (fakeredis): it cannot be unreachable."""
        if type(client).__module__.startswith("fakeredis"):
            return None
        return cls(client, settings.health_interval, settings.web_redis_timeout)

    # -- the thread --------------------------------------------------------------------
    def ensure_running(self) -> None:
        """Start the checking thread in this process (again after a fork: gunicorn
        ``--preload`` forks workers after the app was built)."""
        if self._pid == os.getpid():
            return
        with self._checked:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._stop = threading.Event()
            threading.Thread(target=self._loop, args=(self._stop,), name="redis-watch",
                             daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self, stop: threading.Event) -> None:
        client = _probe_client(self.client, self.timeout)
        try:
            while not stop.is_set():
                self._check(client)
                stop.wait(self.interval)
        finally:
            if client is not self.client:
                client.close()

    def _check(self, client: redis.Redis) -> None:
        try:
            client.ping()
            reason = ""
        except RedisError as exc:
            reason = redact(f"{type(exc).__name__}: {exc}")
        # The thread must keep watching whatever happens; anything else is logged.
        except Exception as exc:  # noqa: BLE001
            log.exception("Redis check failed unexpectedly")
            reason = f"{type(exc).__name__}: {exc}"
        self._record(reason)

    def _record(self, reason: str) -> None:
        with self._checked:
            if reason and not self.down:
                log.error("Redis unreachable; answering 503 until it is back: %s", reason)
            elif not reason and self.down:
                log.warning("Redis reachable again")
            self.down = bool(reason)
            self.reason = reason
            self.checked_at = time.monotonic()
            self._checked.notify_all()

    # -- for requests ------------------------------------------------------------------
    def trip(self, error: BaseException) -> None:
        """A request could not reach Redis: answer 503 at once until a check succeeds."""
        if not self.down:
            log.error("Redis unreachable from a request; answering 503 until it is back: %s",
                      redact(str(error)))
            self.down = True

    def ready(self, wait: float) -> bool:
        """Whether Redis answered the last check, waiting up to ``wait`` seconds for a first
        one. A check older than an interval plus a time limit (the thread is stuck) is no
        answer."""
        self.ensure_running()
        with self._checked:
            if not self.checked_at:
                self._checked.wait(wait)
            fresh = time.monotonic() - self.checked_at <= self.interval + self.timeout + 1
            return bool(self.checked_at) and fresh and not self.down


class OutageGate:
    """WSGI middleware: while the watch says Redis is down, requests (but the exempt ones)
    reach Flask without their cookie and marked, so that nothing waits on Redis."""

    def __init__(self, wsgi_app, watch: RedisWatch):
        self.wsgi_app = wsgi_app
        self.watch = watch

    def __call__(self, environ, start_response):
        watch = self.watch
        watch.ensure_running()
        if watch.down:
            environ.pop("HTTP_COOKIE", None)  # no session to open (probes need none either)
            if not exempt(environ.get("PATH_INFO", "")):
                environ[OUTAGE] = True
        return self.wsgi_app(environ, start_response)


def refuse_during_outage():
    """First ``before_request`` hook after the host check: 503 for a request that arrived
    during an outage, or whose session could not be read (Redis failed just now)."""
    store_down = getattr(session, "store_down", False)
    if not (request.environ.get(OUTAGE) or store_down) or exempt(request.path):
        return None
    ops = current_app.extensions.get("devex_ops")
    if store_down and ops is not None and ops.watch is not None:
        ops.watch.trip(RedisConnectionError("the session could not be read"))
    return outage_response()
