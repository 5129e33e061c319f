"""KubernetesRuntime against the stateful fake API server (real client, real HTTP)."""

from __future__ import annotations

import base64
import copy
from dataclasses import replace

import pytest
import urllib3
import yaml
from kubernetes import client

from devex.config import KubernetesSettings, Settings
from devex.errors import FilesNotSaved, RuntimeFailure, RuntimeUnavailable
from devex.infra.runtime.kubernetes import KubernetesRuntime
from devex.infra.runtime.kubernetes.client import KubeError, is_transient
from devex.infra.runtime.kubernetes.pods import diagnose
from devex.models import Repl
from devex.templates_catalog import Catalog
from devex_shared.access_tokens import CONTROL_SCOPE, IDE_SCOPE, TokenError, repl_key, verify
from tests.support.k8s_helpers import Events
from tests.support.ports import free_port

NS = "devex-repls"
KINDS = ("deployments", "services", "ingresses", "networkpolicies", "secrets")
SECRET = "s" * 40
# How a failed sync-up's log ends: a logged error, then the one line it prints on failure.
UPLOAD_DENIED = (
    "2026-11-02 10:00:01,234 ERROR devex_shared.storage.sync: sync up of /workspace: could "
    "not upload notes.txt: S3 upload 'alice/0123456789ab/notes.txt' failed: AccessDenied\n"
    "runner: sync-up failed: sync up incomplete, nothing deleted: notes.txt: S3 upload "
    "'alice/0123456789ab/notes.txt' failed: AccessDenied Access Denied\n")


@pytest.fixture
def settings():
    return Settings(secret_key=SECRET, runtime="kubernetes", storage="s3", s3_bucket="repls",
                    start_timeout=5, core_url="http://devex-web.devex:8000",
                    kubernetes=KubernetesSettings(stop_timeout=5))


@pytest.fixture
def runtime(fake, settings):
    return KubernetesRuntime(settings, api_client=fake.api_client())


@pytest.fixture
def template(settings):
    return Catalog.load(settings.templates_dir).get("python")


def make_repl(repl_id="0123456789ab", owner="42", login="alice") -> Repl:
    return Repl(id=repl_id, name="demo", template="python", owner_id=owner, owner_login=login,
                storage_prefix=f"{login}/{repl_id}/")


@pytest.fixture
def repl():
    return make_repl()


@pytest.fixture
def events():
    return Events()


def all_names(fake):
    return {kind: fake.names(kind, NS) for kind in KINDS}


def objects_of(fake, repl_id):
    return {kind: [n for n in fake.names(kind, NS) if repl_id in n] for kind in KINDS + ("pods",)}


def test_start_returns_url_and_creates_every_object(fake, runtime, repl, template, events):
    result = runtime.start(repl, template, events)

    assert result.url == f"https://repl.example.com/{repl.id}/"
    assert result.handle == {"deployment": "repl-0123456789ab", "service": "repl-0123456789ab",
                             "ingress": "repl-0123456789ab",
                             "network_policy": "repl-0123456789ab",
                             "secret": "repl-0123456789ab-runner"}
    for kind in ("deployments", "services", "ingresses", "networkpolicies"):
        assert fake.names(kind, NS) == ["repl-0123456789ab"]
    assert fake.names("secrets", NS) == ["repl-0123456789ab-runner"]
    assert len(fake.names("pods", NS)) == 1
    secret = fake.get("secrets", NS, "repl-0123456789ab-runner")
    assert base64.b64decode(secret["data"]["runner-key"]).decode() == repl_key(SECRET, repl.id)
    assert fake.count("watch") == 0  # Ready at once: nothing to wait for
    assert runtime.is_running(repl)
    assert "The runner is ready" in events.text()


def test_stop_saves_then_deletes_everything(fake, runtime, repl, template, events):
    runtime.start(repl, template, events)
    pod_name = fake.names("pods", NS)[0]

    runtime.stop(repl, events)

    assert all(v == [] for v in objects_of(fake, repl.id).values())
    patch = [r for r in fake.requests if r.verb == "patch/ephemeralcontainers"]
    assert len(patch) == 1 and patch[0].path.endswith(f"/pods/{pod_name}/ephemeralcontainers")
    assert patch[0].content_type == "application/strategic-merge-patch+json"
    assert "Files saved" in events.text()
    assert not runtime.is_running(repl)


def test_stop_keeps_everything_when_saving_fails(fake, runtime, repl, template, events):
    runtime.start(repl, template, events)
    before = objects_of(fake, repl.id)
    fake.sync_exit_code = 1
    fake.sync_message = UPLOAD_DENIED  # the end of sync-up's log
    fake.reset_log()

    with pytest.raises(FilesNotSaved) as err:
        runtime.stop(repl, events)

    reason = ("sync up incomplete, nothing deleted: notes.txt: S3 upload "
              "'alice/0123456789ab/notes.txt' failed: AccessDenied Access Denied")
    assert str(err.value) == f"files not saved: {reason}"  # the line sync-up printed
    assert ("stop", f"Saving failed: {reason}") in events
    assert objects_of(fake, repl.id) == before
    assert fake.count("delete") == 0
    assert runtime.is_running(repl)  # still reachable

    # a later stop retries with a fresh ephemeral container and succeeds
    fake.sync_exit_code = 0
    runtime.stop(repl, events)
    assert all(v == [] for v in objects_of(fake, repl.id).values())


def test_retried_stop_uses_a_new_ephemeral_container(fake, runtime, repl, template, events):
    runtime.start(repl, template, events)
    pod_name = fake.names("pods", NS)[0]
    fake.sync_exit_code = 2
    with pytest.raises(FilesNotSaved):
        runtime.stop(repl, events)
    fake.sync_exit_code = None  # the next one never finishes
    with pytest.raises(FilesNotSaved):
        replace_runtime = KubernetesRuntime(
            replace(runtime.settings, kubernetes=KubernetesSettings(stop_timeout=1)),
            api_client=fake.api_client())
        replace_runtime.stop(repl, events)
    pod = fake.get("pods", NS, pod_name)
    names = [c["name"] for c in pod["spec"]["ephemeralContainers"]]
    assert names == ["sync-up-1", "sync-up-2"]
    for c in pod["spec"]["ephemeralContainers"]:
        assert "targetContainerName" not in c
        assert {"name": "workspace", "mountPath": "/workspace"} in c["volumeMounts"]
        creds = {e["name"]: e for e in c["env"]}
        assert creds["DEVEX_S3_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == \
            "devex-s3"


def test_a_crash_looping_runner_does_not_block_the_save(fake, runtime, repl, template, events):
    """containerd will not start an ephemeral container whose target is not running; the
    save needs only the pod's volumes, so it must not name a target."""
    runtime.start(repl, template, events)
    pod_name = fake.names("pods", NS)[0]
    fake.set_pod_mode(NS, pod_name, "crashloop")

    runtime.stop(repl, events)

    assert "Files saved" in events.text()
    assert all(v == [] for v in objects_of(fake, repl.id).values())


def test_fake_refuses_an_ephemeral_container_whose_target_is_not_running(
        fake, runtime, repl, template, events):
    """The rule the test above relies on, as containerd applies it."""
    runtime.start(repl, template, events)
    pod_name = fake.names("pods", NS)[0]
    fake.set_pod_mode(NS, pod_name, "crashloop")
    debug = {"name": "debug", "image": "busybox", "targetContainerName": "runner"}
    free = {"name": "free", "image": "busybox"}

    runtime.kube.patch_ephemeral_containers(pod_name, [debug, free])

    statuses = {s["name"]: s["state"] for s in
                fake.get("pods", NS, pod_name)["status"]["ephemeralContainerStatuses"]}
    assert statuses["debug"]["waiting"]["reason"] == "CreateContainerError"
    assert "is not running" in statuses["debug"]["waiting"]["message"]
    assert statuses["free"]["terminated"]["exitCode"] == 0


def test_sync_up_quiesces_the_runner_with_a_control_token_for_this_repl(
        fake, settings, runtime, repl, template, events):
    # a pod from an older spec, whose runner listens on 9090: the save must ask it there
    KubernetesRuntime(settings, api_client=fake.api_client()).start(repl, older(template),
                                                                    Events())
    pod_name = fake.names("pods", NS)[0]
    fake.sync_exit_code = 1  # so the pod stays to be looked at

    with pytest.raises(FilesNotSaved):
        runtime.stop(repl, events)

    sync_up = fake.get("pods", NS, pod_name)["spec"]["ephemeralContainers"][0]
    command = sync_up["command"]
    assert command[command.index("--quiesce-url") + 1] == \
        f"http://127.0.0.1:9090/{repl.id}/_control/quiesce"
    assert command[command.index("--lock") + 1] == "/devex-state/sync.lock"
    token = {e["name"]: e.get("value") for e in sync_up["env"]}["RUNNER_CONTROL_TOKEN"]
    verify(repl_key(SECRET, repl.id), repl.id, CONTROL_SCOPE, token, max_age=60)
    with pytest.raises(TokenError):  # useless for any other REPL or purpose
        verify(repl_key(SECRET, "bbbbbbbbbbbb"), "bbbbbbbbbbbb", CONTROL_SCOPE, token, 60)
    with pytest.raises(TokenError):
        verify(repl_key(SECRET, repl.id), repl.id, IDE_SCOPE, token, 60)


def test_stop_returns_only_once_no_pod_is_left(fake, settings, repl, template, events):
    """Its autosave saves once more on SIGTERM: until the pod is gone, storage may still
    change (and a delete job removes the files right after the stop)."""
    runtime = KubernetesRuntime(replace(settings, kubernetes=KubernetesSettings(stop_timeout=1)),
                                api_client=fake.api_client())
    runtime.start(repl, template, events)
    stray = copy.deepcopy(fake.get("pods", NS, fake.names("pods", NS)[0]))
    stray["metadata"] = {"name": "repl-0123456789ab-stray",
                         "labels": stray["metadata"]["labels"]}  # no owner: not removed
    fake.put("pods", NS, stray)

    with pytest.raises(RuntimeUnavailable, match="its pod is still shutting down"):
        runtime.stop(repl, events, save=False)
    assert "Waiting for the REPL's pod to shut down" in events.text()
    assert fake.names("deployments", NS) == []

    runtime.kube.delete("Pod", "repl-0123456789ab-stray")
    runtime.stop(repl, events, save=False)  # the job's retry
    assert all(v == [] for v in objects_of(fake, repl.id).values())


def pre_sidecar(deployment: dict) -> dict:
    """The Deployment as Devex made it before the autosave sidecar: no devex-state, no
    sync-tmp (its pod may be reused as it is, holding the only copy of its files)."""
    spec = deployment["spec"]["template"]["spec"]
    spec["initContainers"] = [c for c in spec["initContainers"] if c["name"] == "sync-down"]
    spec["initContainers"][0]["volumeMounts"] = [{"name": "workspace", "mountPath": "/workspace"},
                                                 {"name": "tmp", "mountPath": "/tmp"}]
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] in ("workspace", "tmp")]
    return deployment


def test_a_pod_from_before_the_autosave_sidecar_can_still_be_saved(fake, runtime, repl,
                                                                   template, events):
    """The API refuses an ephemeral container that mounts a volume the pod lacks."""
    for obj in runtime.objects(repl, template):
        fake.put(RESOURCE[obj["kind"]], NS, pre_sidecar(obj) if obj["kind"] == "Deployment"
                 else obj)
    runtime.start(repl, template, events)  # reuses that pod as it is
    pod_name = fake.names("pods", NS)[0]
    fake.sync_exit_code = 1  # so the pod stays to be looked at

    with pytest.raises(FilesNotSaved, match="saving exited with code 1"):
        runtime.stop(repl, events)

    sync_up = fake.get("pods", NS, pod_name)["spec"]["ephemeralContainers"][0]
    assert sync_up["volumeMounts"] == [{"name": "workspace", "mountPath": "/workspace"},
                                       {"name": "tmp", "mountPath": "/tmp"}]
    assert "--lock" not in sync_up["command"]  # no autosave there, nothing to lock against
    fake.sync_exit_code = 0
    runtime.stop(repl, events)
    assert all(v == [] for v in objects_of(fake, repl.id).values())


def test_stop_times_out_and_deletes_nothing(fake, settings, repl, template, events):
    runtime = KubernetesRuntime(replace(settings, kubernetes=KubernetesSettings(stop_timeout=1)),
                                api_client=fake.api_client())
    runtime.start(repl, template, events)
    fake.sync_exit_code = None
    fake.reset_log()

    with pytest.raises(FilesNotSaved, match="files not saved: saving did not finish within 1"):
        runtime.stop(repl, events)
    assert fake.count("delete") == 0
    assert len(fake.names("deployments", NS)) == 1


def test_force_stop_deletes_without_saving(fake, runtime, repl, template, events):
    runtime.start(repl, template, events)
    fake.sync_exit_code = 1  # would fail, but is never asked
    fake.reset_log()

    runtime.stop(repl, events, save=False)

    assert fake.count("patch/ephemeralcontainers") == 0
    assert all(v == [] for v in objects_of(fake, repl.id).values())
    assert "WITHOUT saving" in events.text()


def test_start_when_objects_already_exist_is_a_no_op(fake, runtime, repl, template, events):
    runtime.start(repl, template, events)
    pods = fake.names("pods", NS)
    fake.reset_log()

    result = runtime.start(repl, template, events)

    assert result.url.endswith(f"/{repl.id}/")
    assert fake.resources("create") == set(KINDS)  # each answered 409 AlreadyExists ...
    assert fake.resources("get") == set(KINDS)  # ... read back and compared ...
    assert fake.count("patch") == 0  # ... and found equal
    assert fake.names("pods", NS) == pods  # the running pod was left alone


def older(template):
    """The template as an earlier Devex version had it: another image and port."""
    return replace(template, image="ghcr.io/devex/runner-python:0.0.9", port=9090)


def deployment_state(fake):
    """What must not change when a Deployment is kept: its whole spec and its pods."""
    d = fake.get("deployments", NS, "repl-0123456789ab")
    return d["spec"], d["metadata"]["uid"], d["metadata"]["generation"], fake.names("pods", NS)


def test_start_converges_everything_but_an_existing_deployment(
        fake, settings, runtime, repl, template, events):
    KubernetesRuntime(settings, api_client=fake.api_client()).start(repl, older(template),
                                                                    Events())
    kept = deployment_state(fake)
    fake.reset_log()

    result = runtime.start(repl, template, events)

    assert result.url.endswith(f"/{repl.id}/")
    patched = [r.path.rsplit("/", 2)[-2] for r in fake.requests if r.verb == "patch"]
    assert sorted(patched) == ["ingresses", "networkpolicies", "services"]
    assert deployment_state(fake) == kept  # same spec, same pod: its files are safe
    assert containers_of(fake)["runner"]["image"] == "ghcr.io/devex/runner-python:0.0.9"
    assert fake.get("services", NS, "repl-0123456789ab")["spec"]["ports"][0]["port"] == 8080
    assert fake.get("services", NS, "repl-0123456789ab")["spec"]["clusterIP"]  # kept
    assert "An earlier runner is still there; reusing it as it is" in events.text()
    assert "older spec" in events.text()
    assert "Updated the existing Deployment" not in events.text()


def containers_of(fake):
    spec = fake.get("deployments", NS, "repl-0123456789ab")["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"]}


def test_start_reuses_a_ready_earlier_pod_even_if_its_spec_is_older(
        fake, settings, runtime, repl, template, events):
    """A failed REPL whose stop could not save: its only copy of the files is in the pod.
    Patching the Deployment would replace that pod (and here the new one never gets
    Ready, which used to delete everything)."""
    KubernetesRuntime(settings, api_client=fake.api_client()).start(repl, older(template),
                                                                    Events())
    kept = deployment_state(fake)
    fake.pod_mode = "never-ready"  # any replacement pod would never be Ready

    result = runtime.start(repl, template, events)

    assert result.url == f"https://repl.example.com/{repl.id}/"
    assert deployment_state(fake) == kept
    assert fake.count("delete") == 0


def test_start_failure_never_removes_an_earlier_deployment(fake, settings, repl, template,
                                                           events):
    # The earlier runner: its Deployment (older spec) and Secret exist, its pod is not Ready.
    fake.pod_mode = "never-ready"
    earlier = KubernetesRuntime(settings, api_client=fake.api_client())
    for obj in earlier.objects(repl, older(template)):
        if obj["kind"] in ("Deployment", "Secret"):
            fake.put(RESOURCE[obj["kind"]], NS, obj)
    kept = deployment_state(fake)
    runtime = KubernetesRuntime(replace(settings, start_timeout=1), api_client=fake.api_client())
    fake.reset_log()

    with pytest.raises(RuntimeFailure, match="did not become ready"):
        runtime.start(repl, template, events)

    assert deployment_state(fake) == kept  # untouched: same spec, same pod
    assert fake.names("secrets", NS) == ["repl-0123456789ab-runner"]
    deleted = sorted(r.path.rsplit("/", 2)[-2] for r in fake.requests if r.verb == "delete")
    assert deleted == ["ingresses", "networkpolicies", "services"]  # what this start made
    assert fake.count("patch") == 0
    assert "the earlier objects are kept" in events.text()


RESOURCE = {"Deployment": "deployments", "Service": "services", "Ingress": "ingresses",
            "NetworkPolicy": "networkpolicies", "Secret": "secrets"}


def test_stop_when_everything_is_already_gone(fake, runtime, repl, events):
    runtime.stop(repl, events)

    assert fake.resources("delete") == set(KINDS)  # each answered 404, taken as done
    assert "no unsaved files" in events.text()


def test_stop_finishes_a_half_deleted_repl(fake, runtime, repl, template, events):
    runtime.start(repl, template, events)
    runtime.kube.delete("Deployment", "repl-0123456789ab")  # its pod goes with it
    runtime.kube.delete("Service", "repl-0123456789ab")

    runtime.stop(repl, events)

    assert all(v == [] for v in objects_of(fake, repl.id).values())


def test_stop_refuses_when_the_pod_is_missing_but_the_deployment_is_not(
        fake, runtime, repl, template, events):
    runtime.start(repl, template, events)
    runtime.kube.delete("Pod", fake.names("pods", NS)[0])
    fake.reset_log()

    with pytest.raises(FilesNotSaved, match="pod is missing"):
        runtime.stop(repl, events)
    assert fake.count("delete") == 0


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("never-ready", "did not become ready within 1 seconds"),
        ("image-pull", "The image ghcr.io/devex/runner-python:0.1.0 could not be pulled."),
        ("unschedulable", "No node has room for this REPL"),
        ("crashloop", "The runner keeps crashing."),
        ("invalid-image", "The image name ghcr.io/devex/runner-python:0.1.0 is not valid."),
    ],
)
def test_start_failure_is_readable_and_cleans_up(fake, settings, repl, template, events,
                                                 mode, words):
    fake.pod_mode = mode
    runtime = KubernetesRuntime(replace(settings, start_timeout=1), api_client=fake.api_client())

    with pytest.raises(RuntimeFailure) as err:
        runtime.start(repl, template, events)

    assert words in str(err.value)
    assert "Back-off" not in str(err.value)  # translated, not raw
    if mode == "invalid-image":  # fatal: failed on the reason, not at the timeout
        assert "not ready after" not in str(err.value)
    assert all(v == [] for v in objects_of(fake, repl.id).values())
    if mode != "never-ready":
        assert any(words in m for k, m in events if k == "start")


@pytest.mark.parametrize("status", [403, 422])
def test_start_api_error_that_will_not_heal_is_final_and_cleans_up(
        fake, runtime, repl, template, events, status):
    fake.fail[("POST", "deployments")] = status

    with pytest.raises(RuntimeFailure, match="create Deployment repl-0123456789ab failed "
                                             f"\\({status} injected failure\\)"):
        runtime.start(repl, template, events)
    assert all(v == [] for v in objects_of(fake, repl.id).values())


# -- transient API trouble: RuntimeUnavailable, nothing removed, the retry succeeds ----------
@pytest.mark.parametrize(("method", "resource", "status"), [
    ("POST", "deployments", 500),
    ("POST", "services", 503),
    ("POST", "ingresses", 429),
    ("GET", "pods", 500),  # listing the pods to wait for Ready
])
def test_start_transient_api_error_keeps_everything_for_the_retry(
        fake, runtime, repl, template, events, method, resource, status):
    fake.fail[(method, resource)] = status

    with pytest.raises(RuntimeUnavailable, match=f"unavailable.*{status}"):
        runtime.start(repl, template, events)

    assert fake.count("delete") == 0
    made = objects_of(fake, repl.id)
    del fake.fail[(method, resource)]
    result = runtime.start(repl, template, events)  # what the job's retry does
    assert result.url.endswith(f"/{repl.id}/")
    assert all(len(v) == 1 for v in objects_of(fake, repl.id).values())
    assert all(set(made[k]) <= set(v) for k, v in objects_of(fake, repl.id).items())


def test_start_request_timeout_is_transient(fake, settings, repl, template, events):
    runtime = KubernetesRuntime(replace(settings, kubernetes=replace(settings.kubernetes,
                                                                     request_timeout=1)),
                                api_client=fake.api_client())
    fake.hang.add(("POST", "services"))  # never answered: the client's read timeout fires

    with pytest.raises(RuntimeUnavailable, match="unavailable"):
        runtime.start(repl, template, events)
    assert fake.count("delete") == 0


def refused_api_client():
    # A port nobody listens on: connections are refused.
    return client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{free_port()}"))


def test_refused_connection_is_transient_for_start_stop_and_delete(settings, repl, template,
                                                                   events):
    runtime = KubernetesRuntime(settings, api_client=refused_api_client())
    with pytest.raises(RuntimeUnavailable, match="unavailable"):
        runtime.start(repl, template, events)
    with pytest.raises(RuntimeUnavailable, match="files not saved yet"):
        runtime.stop(repl, events)
    with pytest.raises(RuntimeUnavailable, match="unavailable"):
        runtime.stop(repl, events, save=False)  # what the delete job calls


@pytest.mark.parametrize(("method", "resource", "status"), [
    ("GET", "pods", 500),  # finding the pod
    ("PATCH", "pods", 503),  # adding the sync-up container
    ("WATCH", "pods", 502),  # waiting for it
])
def test_stop_transient_api_error_while_saving_removes_nothing(
        fake, runtime, repl, template, events, method, resource, status):
    runtime.start(repl, template, events)
    before = objects_of(fake, repl.id)
    fake.fail[(method, resource)] = status
    fake.reset_log()

    with pytest.raises(RuntimeUnavailable, match="files not saved yet .nothing was removed"):
        runtime.stop(repl, events)

    assert fake.count("delete") == 0
    assert objects_of(fake, repl.id) == before
    del fake.fail[(method, resource)]
    runtime.stop(repl, events)  # the retry saves with a fresh sync-up container
    assert all(v == [] for v in objects_of(fake, repl.id).values())


def test_stop_refused_sync_is_files_not_saved(fake, runtime, repl, template, events):
    runtime.start(repl, template, events)
    fake.fail[("PATCH", "pods")] = 403  # RBAC lacks pods/ephemeralcontainers
    fake.reset_log()

    with pytest.raises(FilesNotSaved, match="files not saved: .*403"):
        runtime.stop(repl, events)
    assert fake.count("delete") == 0


def test_stop_transient_error_while_removing_is_retried(fake, runtime, repl, template, events):
    runtime.start(repl, template, events)
    fake.fail[("DELETE", "deployments")] = 503

    with pytest.raises(RuntimeUnavailable, match="Files are saved, but removing"):
        runtime.stop(repl, events)
    assert fake.names("deployments", NS) == ["repl-0123456789ab"]

    del fake.fail[("DELETE", "deployments")]
    runtime.stop(repl, events)
    assert all(v == [] for v in objects_of(fake, repl.id).values())


def test_stop_lasting_error_while_removing_is_final(fake, runtime, repl, template, events):
    runtime.start(repl, template, events)
    fake.fail[("DELETE", "deployments")] = 403
    with pytest.raises(RuntimeFailure, match="Files are saved, but removing"):
        runtime.stop(repl, events)


@pytest.mark.parametrize(("exc", "transient"), [
    (KubeError("x", client.ApiException(status=500)), True),
    (KubeError("x", client.ApiException(status=503)), True),
    (KubeError("x", client.ApiException(status=429)), True),
    (KubeError("x", client.ApiException(status=403)), False),
    (KubeError("x", client.ApiException(status=422)), False),
    (client.ApiException(status=504), True),
    (urllib3.exceptions.ReadTimeoutError(None, "/", "timed out"), True),
    (urllib3.exceptions.MaxRetryError(None, "/"), True),
    (TimeoutError(), True),
])
def test_transient_classification(exc, transient):
    assert is_transient(exc) is transient


# -- what a waiting container is said to be, and whether waiting longer can help --------------
@pytest.mark.parametrize("reason, words, fatal", [
    ("ImagePullBackOff", "The image img:1 could not be pulled.", False),
    ("ErrImagePull", "The image img:1 could not be pulled.", False),
    ("ErrImageNeverPull", "The image img:1 could not be pulled.", True),
    ("InvalidImageName", "The image name img:1 is not valid.", True),
    ("CrashLoopBackOff", "The runner keeps crashing.", False),
    ("CreateContainerConfigError", "The runner could not be created: kubelet says no", True),
    ("CreateContainerError", "The runner could not be created: kubelet says no", True),
])
def test_waiting_reasons_are_told_in_words_and_judged_fatal_or_not(reason, words, fatal):
    pod = {"status": {"phase": "Pending", "containerStatuses": [{
        "name": "runner", "image": "img:1",
        "state": {"waiting": {"reason": reason, "message": "kubelet says no"}}}]}}
    assert diagnose(pod) == (words, fatal)
    assert diagnose({"status": {"phase": "Running"}}) == (None, False)


def test_list_managed_finds_every_repl_object_by_label(fake, runtime, template, events):
    one, two = make_repl("aaaaaaaaaaaa"), make_repl("bbbbbbbbbbbb", owner="7", login="bob")
    runtime.start(one, template, events)
    runtime.start(two, template, events)
    fake.put("services", NS, {"metadata": {"name": "not-ours", "labels": {"app": "x"}},
                              "spec": {"ports": [{"port": 80}]}})
    fake.reset_log()

    found = runtime.list_managed()

    assert {(o.repl_id, o.kind) for o in found} == {
        (rid, kind) for rid in ("aaaaaaaaaaaa", "bbbbbbbbbbbb")
        for kind in ("Deployment", "Service", "Ingress", "NetworkPolicy", "Secret")}
    assert "not-ours" not in {o.name for o in found}
    assert all("app.kubernetes.io/managed-by=devex" in r.query.replace("%2F", "/")
               .replace("%3D", "=") for r in fake.requests)


def test_check_reports_an_unreachable_api(fake, runtime):
    runtime.check()
    fake.fail[("GET", "deployments")] = 500
    with pytest.raises(RuntimeFailure, match="not reachable"):
        runtime.check()


def test_missing_secret_key_is_a_readable_failure(fake, settings, repl, template, events):
    runtime = KubernetesRuntime(replace(settings, secret_key=""), api_client=fake.api_client())
    with pytest.raises(RuntimeFailure, match="DEVEX_SECRET_KEY"):
        runtime.start(repl, template, events)
    assert fake.count() == 0


def test_client_config_is_loaded_from_devex_kubeconfig(fake, settings, repl, template, tmp_path,
                                                       events):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
        "users": [{"name": "me", "user": {"token": "not-a-real-token"}}],
    }))
    runtime = KubernetesRuntime(replace(settings, kubernetes=KubernetesSettings(
        stop_timeout=5, kubeconfig=str(kubeconfig))))

    runtime.start(repl, template, events)

    assert fake.names("deployments", NS) == ["repl-0123456789ab"]
    assert runtime.kube is runtime.kube  # loaded once
