"""What operators get from the web process, installed by the app factory in one call:
JSON logs (``devex.logs``), a request id on every request and response, request durations
for ``/metrics`` (``devex.metrics``), the Redis watch and outage gate (``devex.web.degraded``)
and the bounded dependency checks of ``/api/admin/health`` (``devex.web.probes``).

The per-request cost is kept to a few microseconds: the WSGI edge writes two environ keys and
appends the response header; the ``after_request`` hook observes a histogram.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Response, current_app, request

from devex import logs
from devex.config import Settings
from devex.metrics import Exporter, RequestMetrics
from devex.web import degraded
from devex.web.probes import BoundedProbe

STARTED = "devex.started"  # WSGI environ key: time.perf_counter() when the request arrived


@dataclass
class Operations:
    """``app.extensions['devex_ops']``."""

    settings: Settings
    watch: degraded.RedisWatch | None  # None for an in-process Redis
    probes: list[BoundedProbe]
    metrics: Exporter

    def redis_ready(self, components) -> bool:
        if self.watch is None:
            components.redis.ping()  # in-process: answers at once
            return True
        # Never waits on Redis itself: the watch's thread does, and a first check is
        # awaited for less than /readyz's promised 2 s.
        return self.watch.ready(wait=1.5)


def ops() -> Operations:
    return current_app.extensions["devex_ops"]


class RequestEdge:
    """WSGI middleware: the request id and the arrival time, before anything else runs;
    the id goes back in the ``X-Request-ID`` response header."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        environ[STARTED] = time.perf_counter()
        environ[logs.REQUEST_ID] = request_id = logs.request_id_from(environ)

        def start_with_id(status, headers, exc_info=None):
            # Every response, however it was made; cheaper than Flask's Headers.
            headers.append(("X-Request-ID", request_id))
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start_with_id)


def _finisher(metrics: RequestMetrics) -> Callable[[Response], Response]:
    def finish(response: Response) -> Response:
        # The request object once (each proxy lookup costs about a microsecond).
        req = request._get_current_object()
        metrics.observe(req.endpoint, req.method, response.status_code,
                        time.perf_counter() - req.environ[STARTED])
        return response

    return finish


def init_operations(app) -> Operations:
    """Call right after the host check is installed: the outage hook must run before any
    other ``before_request`` hook that could ask Redis something."""
    ext = app.extensions["devex"]
    settings, components = ext.settings, ext.components
    logs.install(app, settings)
    if not settings.embedded:
        degraded.bound_redis_waits(components.redis, settings.web_redis_timeout)
    watch = degraded.RedisWatch.for_client(components.redis, settings)

    def is_down() -> bool:
        return watch is not None and watch.down

    probes = [
        BoundedProbe("redis", lambda: components.redis.ping()),
        BoundedProbe("storage", lambda: components.storage.check()),
        BoundedProbe("runtime", lambda: components.runtime.check()),
    ]
    operations = Operations(settings, watch, probes, Exporter(components, is_down))
    app.extensions["devex_ops"] = operations
    if watch is not None:
        ext.closers.append(watch.stop)
        app.wsgi_app = degraded.OutageGate(app.wsgi_app, watch)
        app.before_request(degraded.refuse_during_outage)
    app.wsgi_app = RequestEdge(app.wsgi_app)
    app.after_request(_finisher(operations.metrics.requests))
    return operations
