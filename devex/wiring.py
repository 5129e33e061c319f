"""Builds the clients Devex needs from settings: shared by the web app and the workers."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from devex.config import Settings
from devex.infra.queue import JobQueue
from devex.infra.redis_store import ReplStore
from devex.infra.runtime.base import Runtime
from devex.infra.storage_factory import build_storage
from devex.templates_catalog import Catalog
from devex_shared.storage import Storage


@dataclass
class Components:
    settings: Settings
    redis: redis.Redis
    store: ReplStore
    jobs: JobQueue
    storage: Storage
    runtime: Runtime
    catalog: Catalog


def connect_redis(settings: Settings) -> redis.Redis:
    if settings.redis_url:
        return redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=10,
            socket_connect_timeout=5,
            health_check_interval=30,
        )
    # Embedded mode: the data dir's own redis-server, on a unix socket; the holder of the
    # data dir's lock starts it (devex.infra.embedded_state).
    from devex.infra.embedded_redis import connect

    return connect(settings.data_dir)


def build_runtime(settings: Settings) -> Runtime:
    if settings.runtime == "kubernetes":
        from devex.infra.runtime.kubernetes import KubernetesRuntime

        return KubernetesRuntime(settings)
    from devex.infra.runtime.local import LocalRuntime

    return LocalRuntime(settings)


def build(settings: Settings, connection: redis.Redis | None = None) -> Components:
    conn = connection if connection is not None else connect_redis(settings)
    return Components(
        settings=settings,
        redis=conn,
        store=ReplStore(conn),
        jobs=JobQueue(conn, settings.queue_name, settings.job_retry_intervals),
        storage=build_storage(settings),
        runtime=build_runtime(settings),
        catalog=Catalog.load(settings.templates_dir),
    )
