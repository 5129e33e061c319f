"""Liveness, readiness and metrics for operators."""

from __future__ import annotations

from apiflask import APIBlueprint
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from redis import RedisError

from devex import schemas
from devex.infra.storage import StorageError
from devex.models import Status
from devex.security import devex

bp = APIBlueprint("health", __name__, tag="Operations")


@bp.get("/healthz")
@bp.output(schemas.OkOut)
@bp.doc(summary="200 while the process serves")
def healthz():
    return {"ok": True}


@bp.get("/readyz")
@bp.output(schemas.ReadyOut)
@bp.doc(summary="Dependencies reachable?", responses={503: "A dependency is down"})
def readyz():
    c = devex().components
    checks = {
        "redis": _probe(lambda: c.redis.ping(), (RedisError,)),
        "storage": _probe(c.storage.check, (StorageError,)),
        "runtime": _probe(c.runtime.check, (Exception,)),  # any runtime error means not ready
    }
    status = 200 if all(v == "ok" for v in checks.values()) else 503
    return checks, status


def _probe(fn, errors) -> str:
    try:
        fn()
    except errors as exc:
        return f"error: {type(exc).__name__}: {exc}"[:200]
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
