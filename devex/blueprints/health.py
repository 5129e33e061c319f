"""Liveness, readiness and metrics for operators.

None of these can be held up by a dependency: ``/healthz`` touches none, ``/readyz``
answers from the Redis watch's last check (``devex.web.degraded``), ``/api/admin/health`` waits
at most ``DEVEX_HEALTH_TIMEOUT`` for its checks (``devex.web.probes``), and ``/metrics`` reads
Redis only while the watch says it is up.
"""

from __future__ import annotations

import hmac
import logging

from apiflask import APIBlueprint
from flask import request
from redis import RedisError

from devex.errors import Unauthorized
from devex.extension import extension
from devex.metrics import CONTENT_TYPE
from devex.web.operations import ops
from devex.web.probes import run_all
from devex.web.schemas.common import OkOut
from devex.web.schemas.health import DependenciesOut, ReadyOut
from devex.web.security import require_admin
from devex_shared.bearer import parse_bearer

log = logging.getLogger(__name__)
bp = APIBlueprint("health", __name__, tag="Operations")


@bp.get("/healthz")
@bp.output(OkOut)
@bp.doc(summary="200 while the process serves")
def healthz():
    return {"ok": True}


@bp.get("/readyz")
@bp.output(ReadyOut)
@bp.doc(summary="Can this process serve? (Redis reachable)", responses={503: "Redis is down"})
def readyz():
    # Only what this process cannot serve without. Storage and Kubernetes are used by the
    # workers, not by requests: a blip there must not take every web pod out of service.
    try:
        ready = ops().redis_ready(extension().components)
    except RedisError as exc:  # the in-process Redis, asked directly
        log.error("not ready: redis %s", exc)
        ready = False
    # Anyone may ask: whether, never why (an error can name hosts, buckets, credentials).
    checks = {"redis": "ok" if ready else "unavailable"}
    return checks, 200 if ready else 503


@bp.get("/api/admin/health")
@bp.output(DependenciesOut)
@bp.doc(summary="Every dependency, with the error of each that is down (administrators)",
        responses={401: "Not logged in", 403: "Not an administrator",
                   503: "A dependency is down"})
def dependencies():
    require_admin()
    operations = ops()
    # All at once, each with the same time limit; a check still under way from an earlier
    # call is waited on, not started again.
    checks = run_all(operations.probes, operations.settings.health_timeout)
    return checks, 200 if all(v == "ok" for v in checks.values()) else 503


@bp.get("/metrics")
@bp.doc(hide=True)  # Prometheus text, not part of the JSON contract
def metrics():
    token = ops().settings.metrics_token
    if token:
        sent = parse_bearer(request.headers.get("Authorization"))
        if sent is None or not hmac.compare_digest(sent.encode(), token.encode()):
            raise Unauthorized("Metrics need the bearer token (DEVEX_METRICS_TOKEN).",
                               headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    return ops().metrics.render(), 200, {"Content-Type": CONTENT_TYPE}
