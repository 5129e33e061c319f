"""Kubernetes test parts shared by the test modules: the fake API server (``fake``, which a
module may override, e.g. with a process kubelet) and the job-level ``Components`` wired to
it. Registered as a pytest plugin in ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest

from devex.config import Settings
from devex.infra.queue import JobQueue
from devex.infra.redis_store import ReplStore
from devex.infra.runtime.kubernetes import KubernetesRuntime
from devex.templates_catalog import Catalog
from devex.wiring import Components
from devex_shared.storage import LocalStorage
from jobs import context
from jobs.embedded_worker import ThreadWorker
from tests.support.fake_k8s import FakeKube


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    with FakeKube() as kube:
        yield kube


def bound_components(fake: FakeKube, tmp_path: Path, env: dict[str, str] | None = None,
                     **overrides) -> Iterator[Components]:
    """What a worker's jobs use, with the real runtime talking to ``fake`` (pods use S3;
    the jobs get a LocalStorage), bound to this thread for the duration."""
    settings = Settings.from_env(
        {"DEVEX_RUNTIME": "kubernetes", "DEVEX_AUTH": "local", "DEVEX_K8S_STOP_TIMEOUT": "5",
         **(env or {})},
        **{"secret_key": "s" * 40, "data_dir": tmp_path / "data", "storage": "s3",
           "s3_bucket": "repls", "job_retry_intervals": (0, 0),
           "lock_wait": 0, **overrides},
    )
    conn = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    comps = Components(
        settings=settings, redis=conn, store=ReplStore(conn),
        jobs=JobQueue(conn, settings.queue_name, settings.job_retry_intervals),
        storage=LocalStorage(tmp_path / "storage"),
        runtime=KubernetesRuntime(settings, api_client=fake.api_client()),
        catalog=Catalog.load(settings.templates_dir),
    )
    context.bind_thread(comps)
    yield comps
    context.bind_thread(None)


def run_jobs(components: Components) -> None:
    ThreadWorker([components.jobs.queue], connection=components.redis).work(burst=True)
