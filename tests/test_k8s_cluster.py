"""KubernetesRuntime against the fake API server where a real cluster differs from a tidy one:
evicted pods, Kubernetes Events during a slow start, a save an earlier stop left running,
readiness blips, sync failures that say why, and the worker's RBAC Role."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from devex.config import KubernetesSettings, Settings
from devex.errors import FilesNotSaved, RuntimeFailure
from devex.infra.runtime.kubernetes import KubernetesRuntime
from devex.models import Repl
from devex.templates_catalog import Catalog
from tests.support.fake_k8s import FakeKube
from tests.support.k8s_helpers import Background, Events
from tests.support.waiting import wait_for

NS = "devex-repls"
SECRET = "s" * 40
ROOT = Path(__file__).resolve().parent.parent
KINDS = ("deployments", "services", "ingresses", "networkpolicies", "secrets", "pods")
IMAGE = "ghcr.io/devex/runner-python:0.1.0"


def worker_role() -> list[dict]:
    """The rules of the Role the worker runs with (deploy/rbac.yaml)."""
    docs = yaml.safe_load_all((ROOT / "deploy" / "rbac.yaml").read_text())
    return next(d for d in docs if d and d["kind"] == "Role"
                and d["metadata"]["name"] == "devex-runtime")["rules"]


@pytest.fixture
def settings():
    return Settings(secret_key=SECRET, runtime="kubernetes", storage="s3", s3_bucket="repls",
                    start_timeout=10, core_url="http://devex-web.devex:8000",
                    kubernetes=KubernetesSettings(stop_timeout=10))


@pytest.fixture
def runtime(fake, settings):
    return KubernetesRuntime(settings, api_client=fake.api_client())


@pytest.fixture
def template(settings):
    return Catalog.load(settings.templates_dir).get("python")


@pytest.fixture
def repl():
    return Repl(id="0123456789ab", name="demo", template="python", owner_id="42",
                owner_login="alice", storage_prefix="alice/0123456789ab/")


@pytest.fixture
def events():
    return Events()


def objects_of(fake, repl_id):
    return {kind: [n for n in fake.names(kind, NS) if repl_id in n] for kind in KINDS}


def gone(fake, repl_id) -> bool:
    return all(v == [] for v in objects_of(fake, repl_id).values())


def put_evicted(fake, like: str, name: str) -> str:
    """A pod the kubelet evicted earlier, left in the API beside the live one (as Failed
    pods are, until garbage collection)."""
    pod = copy.deepcopy(fake.get("pods", NS, like))
    pod["metadata"] = {"name": name, "labels": pod["metadata"]["labels"],
                       "ownerReferences": pod["metadata"]["ownerReferences"]}
    pod["status"] = {"phase": "Failed", "reason": "Evicted",
                     "message": "The node was low on resource: ephemeral-storage. ",
                     "conditions": [{"type": "Ready", "status": "False"}]}
    fake.put("pods", NS, pod)
    return name


# -- evictions --------------------------------------------------------------------------------
def test_start_ignores_an_evicted_pod_beside_its_ready_replacement(fake, runtime, repl,
                                                                    template, events):
    runtime.start(repl, template, Events())
    live = fake.names("pods", NS)[0]
    put_evicted(fake, live, "repl-0123456789ab-0000000000-00000")  # listed first

    result = runtime.start(repl, template, events)

    assert result.url.endswith(f"/{repl.id}/")
    assert "evicted" not in events.text()  # history, not the REPL's state
    assert runtime.is_running(repl)


def test_an_eviction_during_start_is_its_own_event_and_the_replacement_is_awaited(
        fake, runtime, repl, template, events):
    fake.pod_mode = "never-ready"
    start = Background(runtime.start, repl, template, events)
    wait_for(lambda: any("Successfully assigned" in m for m in events.of("kubernetes")), 10,
             "the start to watch the pod (its Events are copied)")
    first = fake.names("pods", NS)[0]
    fake.pod_mode = "ready"  # the replacement comes up

    fake.evict_pod(NS, first, "The node was low on resource: memory. ")

    assert start.join().url.endswith(f"/{repl.id}/")
    assert events.of("evicted") == [
        "The REPL's pod was evicted: The node was low on resource: memory. Waiting for its "
        "replacement."]
    assert [e["type"] for e in fake.events_of(NS, first) if e["reason"] == "Evicted"] == \
        ["Warning"]  # as the kubelet records it (copied too, when it comes before Ready)
    assert len(fake.names("pods", NS)) == 2  # the evicted one stays, Failed
    assert runtime.is_running(repl)


def test_stop_saves_from_the_replacement_not_the_evicted_pod(fake, runtime, repl, template,
                                                             events):
    runtime.start(repl, template, events)
    live = fake.names("pods", NS)[0]
    evicted = put_evicted(fake, live, "repl-0123456789ab-zzzzzzzzzz-zzzzz")  # listed last

    runtime.stop(repl, events)

    patches = [r.path for r in fake.requests if r.verb == "patch/ephemeralcontainers"]
    assert patches == [f"/api/v1/namespaces/{NS}/pods/{live}/ephemeralcontainers"]
    assert evicted not in patches[0]
    assert "Files saved" in events.text()
    assert gone(fake, repl.id)  # the evicted pod went with its Deployment


def test_stop_refuses_while_an_evicted_pod_has_no_replacement_yet(fake, runtime, repl,
                                                                  template, events):
    runtime.start(repl, template, events)
    pod = fake.names("pods", NS)[0]
    fake.evict_pod(NS, pod, "The node was low on resource: memory. ", replace=False)

    with pytest.raises(FilesNotSaved, match="pod was evicted: The node was low on resource"):
        runtime.stop(repl, events)
    assert fake.count("patch/ephemeralcontainers") == 0  # nothing runs in a Failed pod
    assert fake.names("deployments", NS) == ["repl-0123456789ab"]


def test_fake_never_runs_an_ephemeral_container_in_a_finished_pod(fake, runtime, repl,
                                                                  template):
    """The rule the test above stands on: the API takes it, no kubelet starts it."""
    runtime.start(repl, template, Events())
    pod = fake.names("pods", NS)[0]
    fake.evict_pod(NS, pod, replace=False)

    runtime.kube.patch_ephemeral_containers(pod, [{"name": "probe", "image": "busybox"}])

    status = fake.get("pods", NS, pod)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "Evicted"
    assert "ephemeralContainerStatuses" not in status


# -- progress from Kubernetes Events during a slow image pull ---------------------------------
def test_a_slow_image_pull_shows_kubernetes_events_while_the_start_waits(
        fake, runtime, repl, template, events):
    fake.pod_mode = "pulling"
    start = Background(runtime.start, repl, template, events)
    wait_for(lambda: f'Pulling image "{IMAGE}"' in events.of("kubernetes"), 10,
             "the Pulling event in the REPL's progress")
    assert start.thread.is_alive()  # still waiting, and saying why
    pod = fake.names("pods", NS)[0]

    fake.set_pod_mode(NS, pod, "ready")  # the pull ends, the runner starts

    start.join()
    told = [m for _, m in events]
    assert told.index(f"Successfully assigned {NS}/{pod} to node-1") < \
        told.index(f'Pulling image "{IMAGE}"') < told.index("The runner is ready")
    assert fake.count("list") >= 1 and fake.count("watch") >= 1  # waited by watching


def test_each_kubernetes_event_is_told_once_and_warnings_say_their_reason(
        fake, settings, repl, template, events):
    fake.pod_mode = "crashloop"
    runtime = KubernetesRuntime(replace(settings, start_timeout=2),
                                api_client=fake.api_client())
    start = Background(runtime.start, repl, template, events)
    pod = wait_for(lambda: fake.names("pods", NS), 10, "the pod")[0]
    backoff = f"Warning BackOff: Back-off restarting failed container runner in pod {pod}_{NS}"
    wait_for(lambda: backoff in events.of("kubernetes"), 10, "the BackOff event")
    fake.set_pod_mode(NS, pod, "crashloop")  # the kubelet says it again: count 2

    with pytest.raises(RuntimeFailure, match="The runner keeps crashing"):
        start.join()
    assert events.of("kubernetes").count(backoff) == 1
    repeated = [e for e in fake.events_of(NS, pod) if e["reason"] == "BackOff"]
    assert repeated[0]["count"] == 2


def test_fake_refuses_field_selectors_the_api_server_does_not_support(fake, runtime):
    from devex.infra.runtime.kubernetes.client import KubeError

    with pytest.raises(KubeError, match="400 field label not supported: spec.image"):
        list(runtime.kube.watch_pods(1, field_selector="spec.image=x"))


# -- a save an earlier stop left running ------------------------------------------------------
def test_a_second_stop_waits_for_the_save_an_earlier_stop_left_running(
        fake, settings, repl, template, events):
    runtime = KubernetesRuntime(replace(settings, kubernetes=KubernetesSettings(stop_timeout=1)),
                                api_client=fake.api_client())
    runtime.start(repl, template, events)
    pod = fake.names("pods", NS)[0]
    fake.sync_exit_code = None  # sync-up-1 keeps uploading
    with pytest.raises(FilesNotSaved, match="saving did not finish within 1 seconds"):
        runtime.stop(repl, events)  # the job gives up waiting; the upload goes on

    patient = KubernetesRuntime(settings, api_client=fake.api_client())
    second = Background(patient.stop, repl, events)
    wait_for(lambda: "(sync-up-1) is still running; waiting for it" in events.text(), 10,
             "the second stop to wait for sync-up-1")
    containers = [c["name"] for c in fake.get("pods", NS, pod)["spec"]["ephemeralContainers"]]
    assert containers == ["sync-up-1"]  # not two saves at once

    fake.finish_ephemeral(NS, pod, "sync-up-1", 0)

    second.join()
    assert fake.count("patch/ephemeralcontainers") == 1
    assert gone(fake, repl.id)


def test_a_second_stop_saves_again_when_the_earlier_save_failed(fake, settings, repl,
                                                                template, events):
    runtime = KubernetesRuntime(replace(settings, kubernetes=KubernetesSettings(stop_timeout=1)),
                                api_client=fake.api_client())
    runtime.start(repl, template, events)
    pod = fake.names("pods", NS)[0]
    fake.sync_exit_code = None
    with pytest.raises(FilesNotSaved):
        runtime.stop(repl, events)
    fake.sync_exit_code = 0  # the next save works

    second = Background(KubernetesRuntime(settings, api_client=fake.api_client()).stop,
                        repl, events)
    wait_for(lambda: "waiting for it" in events.text(), 10, "the second stop to wait")
    fake.finish_ephemeral(NS, pod, "sync-up-1", 1, "runner: sync-up failed: S3 upload "
                          "'alice/0123456789ab/a' failed: SlowDown Please reduce your rate")

    second.join()
    assert "The earlier save failed (S3 upload 'alice/0123456789ab/a' failed: SlowDown " \
           "Please reduce your rate); saving again" in events.text()
    assert fake.count("patch/ephemeralcontainers") == 2
    assert gone(fake, repl.id)


# -- sync failures say why --------------------------------------------------------------------
def test_a_failing_sync_down_gives_its_reason_to_the_start_failure(fake, settings, repl,
                                                                   template, events):
    fake.pod_mode = "sync-down-fails"
    runtime = KubernetesRuntime(replace(settings, start_timeout=1),
                                api_client=fake.api_client())

    with pytest.raises(RuntimeFailure) as err:
        runtime.start(repl, template, events)

    why = ("Loading the REPL's files from storage failed: S3 list 'alice/' failed: "
           "AccessDenied Access Denied")
    assert str(err.value).startswith(why)
    assert why in events.of("start")


def test_fake_keeps_a_log_tail_only_with_fallback_to_logs_on_error(fake, runtime, repl,
                                                                   template):
    """The rule the test above stands on: without the policy the kubelet has no message."""
    fake.pod_mode = "sync-down-fails"
    deployment = runtime.objects(repl, template)[-1]
    sync_down = deployment["spec"]["template"]["spec"]["initContainers"][0]
    del sync_down["terminationMessagePolicy"]
    fake.put("deployments", NS, deployment)

    status = fake.get("pods", NS, fake.names("pods", NS)[0])["status"]
    last = status["initContainerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 1 and "message" not in last


# -- readiness blips are not failures ---------------------------------------------------------
def test_a_readiness_blip_is_still_running_a_lasting_one_is_not(fake, runtime, settings,
                                                                repl, template):
    runtime.start(repl, template, Events())
    pod = fake.names("pods", NS)[0]

    fake.set_pod_mode(NS, pod, "never-ready")  # the probe fails: busy, restarting, ...
    assert runtime.is_running(repl)

    fake.backdate_ready(NS, pod, settings.start_timeout + 1)  # ... for too long
    assert not runtime.is_running(repl)

    fake.set_pod_mode(NS, pod, "ready")
    assert runtime.is_running(repl)


def test_an_evicted_pod_being_replaced_is_still_running(fake, runtime, repl, template):
    runtime.start(repl, template, Events())
    fake.pod_mode = "pulling"  # the replacement pulls its image
    fake.evict_pod(NS, fake.names("pods", NS)[0])

    assert runtime.is_running(repl)


# -- RBAC -------------------------------------------------------------------------------------
def test_the_worker_role_allows_every_call_of_start_stop_and_reconcile(settings, repl,
                                                                      template, events):
    with FakeKube(rbac=worker_role()) as fake:
        runtime = KubernetesRuntime(settings, api_client=fake.api_client())
        fake.pod_mode = "pulling"
        start = Background(runtime.start, repl, template, events)
        wait_for(lambda: f'Pulling image "{IMAGE}"' in events.of("kubernetes"), 10,
                 "Kubernetes Events (list and watch on events)")
        fake.set_pod_mode(NS, fake.names("pods", NS)[0], "ready")
        fake.pod_mode = "ready"
        start.join()
        runtime.start(repl, template, events)  # everything exists: 409, get, patch
        assert runtime.is_running(repl)
        assert {o.kind for o in runtime.list_managed()} == {
            "Deployment", "Service", "Ingress", "NetworkPolicy", "Secret"}
        runtime.check()
        runtime.stop(repl, events)
        assert gone(fake, repl.id)
        runtime.start(repl, template, events)
        runtime.stop(repl, events, save=False)
        assert gone(fake, repl.id)


def test_fake_refuses_what_the_role_does_not_grant(settings, repl, template, events):
    rules = [r for r in worker_role() if r["resources"] != ["events"]]
    with FakeKube(rbac=rules) as fake:
        runtime = KubernetesRuntime(settings, api_client=fake.api_client())
        fake.pod_mode = "pulling"
        start = Background(runtime.start, repl, template, events)
        wait_for(lambda: fake.count("list") >= 2, 10, "the start to try the pod's events")
        fake.set_pod_mode(NS, fake.names("pods", NS)[0], "ready")
        start.join()  # Events are progress only: a start without them still works
        assert events.of("kubernetes") == []
        with pytest.raises(Exception, match='cannot get resource "pods"'):
            runtime.kube.get("Pod", fake.names("pods", NS)[0])
