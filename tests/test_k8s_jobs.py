"""The real lifecycle jobs over the Kubernetes runtime, against the fake API server.

``ReplService`` records and enqueues as the web would; an RQ ``SimpleWorker`` in burst mode
runs the queued jobs (``jobs.repl.create/start/stop/delete``, retries included) with the
real ``KubernetesRuntime`` talking HTTP to ``tests/support/fake_k8s.py``.
"""

from __future__ import annotations

import pytest

from devex.errors import NotFound
from devex.models import Status
from devex.services.repls import Actor, ReplService
from tests.support.k8s_env import bound_components, run_jobs

NS = "devex-repls"
KINDS = ("deployments", "services", "ingresses", "networkpolicies", "secrets", "pods")
URL_TEMPLATE = "https://ide.example.test/r/{repl_id}/"
ADA = Actor(id="1", login="ada")



@pytest.fixture
def components(fake, tmp_path):
    yield from bound_components(fake, tmp_path, {"DEVEX_REPL_URL_TEMPLATE": URL_TEMPLATE},
                                start_timeout=1)


@pytest.fixture
def service(components):
    return ReplService(components)


def objects(fake, repl_id: str) -> dict[str, list[str]]:
    return {kind: [n for n in fake.names(kind, NS) if repl_id in n] for kind in KINDS}


def nothing_left(fake, repl_id: str) -> bool:
    return all(v == [] for v in objects(fake, repl_id).values())


def messages(components, repl_id: str) -> str:
    return "\n".join(f"{e.kind}: {e.message}" for e in components.store.events(repl_id))


def running_repl(components, service) -> str:
    repl_id = service.create(ADA, "demo", "python").repl.id
    run_jobs(components)
    assert components.store.require(repl_id).status == Status.RUNNING, \
        messages(components, repl_id)
    return repl_id


def test_create_and_start_end_running_at_the_configured_url(components, service, fake):
    repl_id = running_repl(components, service)

    repl = components.store.require(repl_id)
    assert repl.url == f"https://ide.example.test/r/{repl_id}/"
    assert repl.error is None
    assert repl.runtime["deployment"] == f"repl-{repl_id}"
    assert {k: len(v) for k, v in objects(fake, repl_id).items()} == dict.fromkeys(KINDS, 1)
    assert components.storage.list(repl.storage_prefix)  # the starter files were copied
    text = messages(components, repl_id)
    assert "The runner is ready" in text
    assert f"running: Running at {repl.url}" in text


def test_stop_saves_then_removes_everything(components, service, fake):
    repl_id = running_repl(components, service)

    service.stop(ADA, repl_id)
    run_jobs(components)

    repl = components.store.require(repl_id)
    assert repl.status == Status.STOPPED and repl.url is None and repl.error is None
    assert nothing_left(fake, repl_id)
    assert "Files saved" in messages(components, repl_id)


def test_failed_save_keeps_everything_and_later_start_and_stop_succeed(components, service,
                                                                       fake):
    repl_id = running_repl(components, service)
    before = objects(fake, repl_id)
    fake.sync_exit_code = 1
    fake.sync_message = "upload failed: AccessDenied"
    fake.reset_log()

    service.stop(ADA, repl_id)
    run_jobs(components)

    failed = components.store.require(repl_id)
    assert failed.status == Status.FAILED
    assert "files not saved" in failed.error and "AccessDenied" in failed.error
    assert objects(fake, repl_id) == before  # the pod and its files are still there
    assert fake.count("delete") == 0
    pod = fake.get("pods", NS, before["pods"][0])
    assert [c["name"] for c in pod["spec"]["ephemeralContainers"]] == ["sync-up-1"]  # final

    # Starting it again reuses the very same pod (its files exist only there).
    service.start(ADA, repl_id)
    run_jobs(components)
    assert components.store.require(repl_id).status == Status.RUNNING
    assert objects(fake, repl_id) == before
    assert "reusing it as it is" in messages(components, repl_id)

    fake.sync_exit_code = 0
    service.stop(ADA, repl_id)
    run_jobs(components)
    stopped = components.store.require(repl_id)
    assert stopped.status == Status.STOPPED and stopped.error is None
    assert nothing_left(fake, repl_id)


def test_stop_from_failed_after_a_failed_save_succeeds(components, service, fake):
    repl_id = running_repl(components, service)
    fake.sync_exit_code = 1
    service.stop(ADA, repl_id)
    run_jobs(components)
    assert components.store.require(repl_id).status == Status.FAILED

    fake.sync_exit_code = 0
    service.stop(ADA, repl_id)
    run_jobs(components)

    assert components.store.require(repl_id).status == Status.STOPPED
    assert nothing_left(fake, repl_id)


@pytest.mark.parametrize(("mode", "words"), [
    ("never-ready", "The runner did not become ready within 1 seconds."),
    ("image-pull", "The image ghcr.io/devex/runner-python:0.1.0 could not be pulled."),
])
def test_pod_never_ready_fails_with_the_reason_and_cleans_up(components, service, fake,
                                                             mode, words):
    fake.pod_mode = mode

    repl_id = service.create(ADA, "demo", "python").repl.id
    run_jobs(components)

    repl = components.store.require(repl_id)
    assert repl.status == Status.FAILED, messages(components, repl_id)
    assert repl.error.startswith("Starting failed: ") and words in repl.error
    assert repl.url is None
    assert nothing_left(fake, repl_id)


def test_transient_api_error_is_retried_by_the_job(components, service, fake):
    fake.fail[("POST", "deployments")] = 503
    fake.fail_times[("POST", "deployments")] = 1

    repl_id = running_repl(components, service)

    text = messages(components, repl_id)
    assert "retry: Starting hit a problem, retrying: the Kubernetes API is unavailable" in text
    assert len(objects(fake, repl_id)["pods"]) == 1
    assert fake.count("delete") == 0  # a transient error cleans nothing up


def test_lasting_api_outage_fails_after_the_retries_without_removing_anything(
        components, service, fake):
    fake.fail[("POST", "deployments")] = 500

    repl_id = service.create(ADA, "demo", "python").repl.id
    run_jobs(components)

    repl = components.store.require(repl_id)
    assert repl.status == Status.FAILED
    assert "the Kubernetes API is unavailable" in repl.error
    assert messages(components, repl_id).count("retry: Starting") == 2
    assert fake.count("delete") == 0


def test_transient_error_while_saving_is_retried_and_nothing_is_lost(components, service,
                                                                     fake):
    repl_id = running_repl(components, service)
    fake.fail[("PATCH", "pods")] = 503  # adding the sync-up container
    fake.fail_times[("PATCH", "pods")] = 1
    fake.reset_log()

    service.stop(ADA, repl_id)
    run_jobs(components)

    assert components.store.require(repl_id).status == Status.STOPPED
    text = messages(components, repl_id)
    assert "retry: Stopping hit a problem, retrying: files not saved yet" in text
    assert "Files saved" in text
    assert fake.count("patch/ephemeralcontainers") == 2
    assert nothing_left(fake, repl_id)


def test_delete_when_the_objects_are_already_gone(components, service, fake):
    repl_id = running_repl(components, service)
    prefix = components.store.require(repl_id).storage_prefix
    kube = components.runtime.kube
    for kind in ("Ingress", "Service", "NetworkPolicy", "Deployment"):
        kube.delete(kind, f"repl-{repl_id}")
    kube.delete("Secret", f"repl-{repl_id}-runner")
    fake.reset_log()

    service.delete(ADA, repl_id)
    run_jobs(components)

    with pytest.raises(NotFound):
        service.get(ADA, repl_id)
    assert components.store.get(repl_id) is None
    assert components.storage.list(prefix) == []
    assert fake.resources("delete") == {  # each answered 404 and taken as done
        "deployments", "services", "ingresses", "networkpolicies", "secrets"}
    assert nothing_left(fake, repl_id)
