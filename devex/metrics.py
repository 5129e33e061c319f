"""Operational metrics shared by web and worker processes, exposed by the web's ``/metrics``.

Job and reconcile figures are produced in short-lived work horses (rq forks one per job),
so ``observe_job`` and ``count_repair`` add them up in Redis hashes (one MULTI/EXEC each)
and ``StateCollector`` turns them into Prometheus families at scrape time, with the queue's
depth and the age of its oldest job read from RQ and the REPLs counted by status. Request
durations are in-process ``prometheus_client`` histograms (``RequestMetrics``); with
``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn with several workers) they go to that directory
and every worker's are summed at scrape time (``render``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString
from redis import RedisError

from devex.infra.redis_text import decode_hash

log = logging.getLogger(__name__)

# Redis hashes (kept here with the code that reads and writes them): "kind|outcome|bucket"
# -> count, "kind|outcome|count", "kind|outcome|sum"; kind -> count.
JOB_DURATION_KEY = "devexMetrics:jobDuration"
JOB_FAILURES_KEY = "devexMetrics:jobFailures"
REPAIRS_KEY = "devexMetrics:repairs"
# Seconds: a create copies files, a start may wait minutes for a pod, a stop for a save.
JOB_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, math.inf)
FAILED_OUTCOMES = frozenset({"failed", "error"})  # "error": ended by an unexpected exception
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CONTENT_TYPE = CONTENT_TYPE_LATEST


def _label(value: str) -> str:
    # "|" separates the parts of a field name; labels come from code, never from users.
    return str(value).replace("|", "_") or "unknown"


def observe_job(redis, kind: str, outcome: str, seconds: float) -> None:
    """A lifecycle job (``create``/``start``/``stop``/``delete``) ended with ``outcome``
    (``running``, ``stopped``, ``failed``, ``retry``, ``skipped``, ...) ``seconds`` after
    it was asked for. Never raises: metrics must not break a job."""
    try:
        seconds = max(0.0, float(seconds))
        bound = next(b for b in JOB_BUCKETS if seconds <= b)
        name = f"{_label(kind)}|{_label(outcome)}"
        pipe = redis.pipeline(transaction=True)  # a scrape never sees half an observation
        pipe.hincrby(JOB_DURATION_KEY, f"{name}|{floatToGoString(bound)}", 1)
        pipe.hincrby(JOB_DURATION_KEY, f"{name}|count", 1)
        pipe.hincrbyfloat(JOB_DURATION_KEY, f"{name}|sum", seconds)
        if outcome in FAILED_OUTCOMES:
            pipe.hincrby(JOB_FAILURES_KEY, _label(kind), 1)
        pipe.execute()
    except (RedisError, OSError, TypeError, ValueError) as exc:
        log.warning("job metric not recorded (%s %s): %s", kind, outcome, exc)


def count_repair(redis, kind: str, n: int = 1) -> None:
    """Reconcile repaired ``n`` things of ``kind`` (``resumed``, ``vanished``,
    ``runner_stopped``, ``orphan_quarantined``, ``lock_taken_over``, ...). Never raises."""
    if not n:
        return
    try:
        redis.hincrby(REPAIRS_KEY, _label(kind), int(n))
    except (RedisError, OSError, TypeError, ValueError) as exc:
        log.warning("repair metric not recorded (%s): %s", kind, exc)


class RequestMetrics:
    """``devex_http_request_duration_seconds{endpoint,method,status}``. ``observe`` is on
    every request's path: a dict lookup and the histogram's own update (a few µs)."""

    def __init__(self, registry: CollectorRegistry):
        self.histogram = Histogram(
            "devex_http_request_duration_seconds",
            "Time to answer an HTTP request, by Flask endpoint, method and status.",
            ["endpoint", "method", "status"],
            registry=registry,
        )
        self._children: dict[tuple, object] = {}

    def observe(self, endpoint: str | None, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        child = self._children.get(key)
        if child is None:
            # Bounded labels: endpoints are the app's routes (404s have none), methods a
            # fixed set, statuses the app's own.
            child = self.histogram.labels(endpoint or "none",
                                          method if method in METHODS else "other", str(status))
            self._children[key] = child
        child.observe(seconds)


class StateCollector:
    """What Redis and RQ know, read at scrape time. Nothing from Redis while this process
    knows it is unreachable (``is_down``): the scrape still answers, with
    ``devex_redis_up 0`` and the in-process figures."""

    def __init__(self, components, is_down: Callable[[], bool]):
        self.components = components
        self.is_down = is_down

    def collect(self) -> Iterator[Metric]:
        families: list[Metric] = []
        up = not self.is_down()
        if up:
            try:
                families = self._families()
            except RedisError as exc:
                log.error("metrics: Redis unavailable: %s", exc)
                up = False
        yield GaugeMetricFamily("devex_redis_up",
                                "1 if this web process reached Redis for this scrape.",
                                value=1 if up else 0)
        yield from families

    def _families(self) -> list[Metric]:
        c = self.components
        pipe = c.redis.pipeline(transaction=False)
        pipe.hgetall(JOB_DURATION_KEY)
        pipe.hgetall(JOB_FAILURES_KEY)
        pipe.hgetall(REPAIRS_KEY)
        durations, failures, repairs = (decode_hash(raw) for raw in pipe.execute())
        return [
            _job_histogram(durations),
            _counter("devex_job_failures", "Lifecycle jobs that ended failed, by kind.",
                     "kind", failures),
            _counter("devex_reconcile_repairs", "Things reconcile repaired, by kind.",
                     "kind", repairs),
            *self._queue(),
            self._repls(),
        ]

    def _queue(self) -> list[Metric]:
        queue = self.components.jobs.queue
        depth = GaugeMetricFamily("devex_queue_depth", "Jobs waiting in the queue.",
                                  labels=["queue"])
        depth.add_metric([queue.name], queue.count)
        age = GaugeMetricFamily("devex_queue_oldest_job_age_seconds",
                                "How long the job at the head of the queue has waited.",
                                labels=["queue"])
        age.add_metric([queue.name], _oldest_age(queue))
        return [depth, age]

    def _repls(self) -> Metric:
        from devex.models import Status

        counts = {s.value: 0 for s in Status}
        for repl in self.components.store.list_all():
            counts[repl.status.value] += 1
        gauge = GaugeMetricFamily("devex_repls", "REPLs by status", labels=["status"])
        for status, n in counts.items():
            gauge.add_metric([status], n)
        return gauge


def _job_histogram(fields: dict[str, str]) -> Metric:
    family = HistogramMetricFamily(
        "devex_job_duration_seconds",
        "Time from asking for a lifecycle change to its job's end, by kind and outcome.",
        labels=["kind", "outcome"],
    )
    names = sorted({f.rsplit("|", 1)[0] for f in fields if f.endswith("|count")})
    for name in names:
        kind, _, outcome = name.partition("|")
        running = 0
        buckets = []
        for bound in JOB_BUCKETS:
            le = floatToGoString(bound)
            running += int(fields.get(f"{name}|{le}", 0))
            buckets.append((le, running))
        buckets[-1] = ("+Inf", int(fields[f"{name}|count"]))
        family.add_metric([kind, outcome], buckets, float(fields.get(f"{name}|sum", 0)))
    return family


def _counter(name: str, doc: str, label: str, fields: dict[str, str]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=[label])
    for value, count in sorted(fields.items()):
        family.add_metric([value], int(count))
    return family


def _oldest_age(queue) -> float:
    for job_id in queue.get_job_ids(0, 0):
        job = queue.fetch_job(job_id)
        if job is not None and job.enqueued_at is not None:
            enqueued = job.enqueued_at
            if enqueued.tzinfo is None:  # rq writes UTC
                enqueued = enqueued.replace(tzinfo=UTC)
            return max(0.0, (datetime.now(UTC) - enqueued).total_seconds())
    return 0.0


class Exporter:
    """The app's metrics: the request histogram and the state collector, rendered as the
    Prometheus text format (summing every gunicorn worker's files in multiprocess mode)."""

    def __init__(self, components, is_down: Callable[[], bool]):
        # prometheus_client chose its value store when imported; this follows the same
        # variable, so both agree.
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self.registry = CollectorRegistry()
        self.requests = RequestMetrics(self.registry)
        self.state = StateCollector(components, is_down)
        self.registry.register(self.state)

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        registry.register(self.state)
        return generate_latest(registry)
