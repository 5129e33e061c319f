"""Liveness, readiness and metrics for operators."""

from __future__ import annotations

import logging

from apiflask import APIBlueprint
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from redis import RedisError

from devex import schemas
from devex.infra.storage import StorageError
from devex.models import Status
from devex.redact import redact
from devex.security import devex, require_admin

log = logging.getLogger(__name__)
bp = APIBlueprint("health", __name__, tag="Operations")


@bp.get("/healthz")
@bp.output(schemas.OkOut)
@bp.doc(summary="200 while the process serves")
def healthz():
    return {"ok": True}


@bp.get("/readyz")
@bp.output(schemas.ReadyOut)
@bp.doc(summary="Can this process serve? (Redis reachable)", responses={503: "Redis is down"})
def readyz():
    # Only what this process cannot serve without. Storage and Kubernetes are used by the
    # workers, not by requests: a blip there must not take every web pod out of service.
    c = devex().components
    redis_state = _probe(lambda: c.redis.ping(), (RedisError,))
    if redis_state != "ok":
        log.error("not ready: redis %s", redis_state)
    # Anyone may ask: whether, never why (an error can name hosts, buckets, credentials).
    checks = {"redis": "ok" if redis_state == "ok" else "unavailable"}
    return checks, 200 if checks["redis"] == "ok" else 503


@bp.get("/api/admin/health")
@bp.output(schemas.DependenciesOut)
@bp.doc(summary="Every dependency, with the error of each that is down (administrators)",
        responses={401: "Not logged in", 403: "Not an administrator",
                   503: "A dependency is down"})
def dependencies():
    require_admin()
    c = devex().components
    checks = {
        "redis": _probe(lambda: c.redis.ping(), (RedisError,)),
        "storage": _probe(c.storage.check, (StorageError,)),
        "runtime": _probe(c.runtime.check, (Exception,)),  # any runtime error counts
    }
    return checks, 200 if all(v == "ok" for v in checks.values()) else 503


def _probe(fn, errors) -> str:
    try:
        fn()
    except errors as exc:
        return redact(f"error: {type(exc).__name__}: {exc}")[:200]
    return "ok"


@bp.get("/metrics")
@bp.doc(hide=True)  # Prometheus text, not part of the JSON contract
def metrics():
    registry = CollectorRegistry()
    gauge = Gauge("devex_repls", "REPLs by status", ["status"], registry=registry)
    counts = {s.value: 0 for s in Status}
    for repl in devex().components.store.list_all():
        counts[repl.status.value] += 1
    for status, n in counts.items():
        gauge.labels(status=status).set(n)
    return generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST}
