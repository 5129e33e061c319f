"""The periodic jobs over the Kubernetes runtime, against the fake API server: reconcile
does not fail a REPL for a readiness blip, and the idle cull stops a ``failed`` REPL whose
pod still runs (saving its files first), like a running one."""

from __future__ import annotations

from dataclasses import replace

import pytest

from devex.infra.runtime.kubernetes import KubernetesRuntime
from devex.models import Status
from devex.services.repls import Actor, ReplService
from jobs import periodic
from tests.support.k8s_env import bound_components, run_jobs

NS = "devex-repls"
ADA = Actor(id="1", login="ada")



@pytest.fixture
def components(fake, tmp_path):
    yield from bound_components(fake, tmp_path, start_timeout=30,
                                core_url="http://devex-web.devex.svc:8000")


@pytest.fixture
def service(components):
    return ReplService(components)


def messages(components, repl_id: str) -> str:
    return "\n".join(f"{e.kind}: {e.message}" for e in components.store.events(repl_id))


def running_repl(components, service) -> str:
    repl_id = service.create(ADA, "demo", "python").repl.id
    run_jobs(components)
    assert components.store.require(repl_id).status == Status.RUNNING, \
        messages(components, repl_id)
    return repl_id


def test_reconcile_does_not_fail_a_repl_for_a_readiness_blip(components, service, fake):
    repl_id = running_repl(components, service)
    pod = fake.names("pods", NS)[0]
    fake.set_pod_mode(NS, pod, "never-ready")  # the runner is busy; its probe fails

    assert periodic.reconcile()["vanished"] == []
    assert components.store.require(repl_id).status == Status.RUNNING

    # Unready for longer than a start may take: the runner is gone for good.
    fake.backdate_ready(NS, pod, components.settings.start_timeout + 1)
    assert periodic.reconcile()["vanished"] == [repl_id]
    failed = components.store.require(repl_id)
    assert failed.status == Status.FAILED and "stopped unexpectedly" in failed.error


def test_reconcile_keeps_a_repl_whose_evicted_pod_is_being_replaced(components, service,
                                                                     fake):
    repl_id = running_repl(components, service)
    fake.pod_mode = "pulling"  # the replacement is still pulling its image
    fake.evict_pod(NS, fake.names("pods", NS)[0])

    assert periodic.reconcile()["vanished"] == []
    assert components.store.require(repl_id).status == Status.RUNNING


def test_an_idle_failed_repl_with_its_pod_running_is_culled_files_saved_first(
        components, service, fake):
    repl_id = running_repl(components, service)
    fake.sync_exit_code = 1  # the stop's save fails: failed, pod kept with the files
    fake.sync_message = "runner: sync-up failed: S3 list 'ada/' failed: SlowDown Slow down"
    service.stop(ADA, repl_id)
    run_jobs(components)
    failed = components.store.require(repl_id)
    assert failed.status == Status.FAILED
    assert failed.error == "Stopping failed: files not saved: S3 list 'ada/' failed: " \
                           "SlowDown Slow down"
    assert periodic.cull_idle() == []  # not idle yet
    fake.sync_exit_code = 0

    components.settings = replace(components.settings, idle_timeout=-1)
    assert periodic.cull_idle() == [repl_id]
    run_jobs(components)

    stopped = components.store.require(repl_id)
    assert stopped.status == Status.STOPPED and stopped.error is None
    text = messages(components, repl_id)
    assert "idle: No activity for the idle period; stopping." in text
    assert text.index("idle:") < text.rindex("Files saved")  # saved, then removed
    assert fake.names("pods", NS) == [] and fake.names("deployments", NS) == []
    assert fake.count("patch/ephemeralcontainers") == 2  # the failed save, then the cull's


def test_an_idle_failed_repl_without_a_pod_is_left_alone(components, service, fake):
    fake.pod_mode = "image-pull"
    components.settings = replace(components.settings, start_timeout=1)
    components.runtime = KubernetesRuntime(components.settings, api_client=fake.api_client())
    repl_id = service.create(ADA, "demo", "python").repl.id
    run_jobs(components)
    assert components.store.require(repl_id).status == Status.FAILED  # cleaned up
    fake.reset_log()

    components.settings = replace(components.settings, idle_timeout=-1)
    assert periodic.cull_idle() == []
    assert components.store.require(repl_id).status == Status.FAILED
    assert fake.count("patch/ephemeralcontainers") == 0
