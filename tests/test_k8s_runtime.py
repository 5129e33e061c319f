"""KubernetesRuntime against the stateful fake API server (real client, real HTTP)."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
import yaml

from devex.config import Settings
from devex.errors import FilesNotSaved, RuntimeFailure
from devex.infra.runtime.kubernetes import KubernetesRuntime
from devex.infra.runtime.kubernetes.names import MANAGED_SELECTOR
from devex.models import Repl
from devex.templates_catalog import Catalog
from devex.tokens import repl_key
from tests.support.fake_k8s import FakeKube

NS = "devex-repls"
KINDS = ("deployments", "services", "ingresses", "networkpolicies", "secrets")
SECRET = "s" * 40


@pytest.fixture
def fake():
    with FakeKube() as kube:
        yield kube


@pytest.fixture
def settings():
    return Settings(secret_key=SECRET, runtime="kubernetes", storage="s3", s3_bucket="repls",
                    start_timeout=5, k8s_stop_timeout=5, core_url="http://devex-web.devex:8000")


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


class Events(list):
    def __call__(self, kind: str, message: str) -> None:
        self.append((kind, message))

    def text(self) -> str:
        return "\n".join(m for _, m in self)


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
    assert runtime.is_running(repl)
    assert "The runner is ready" in events.text()
    assert fake.count("watch") == 1  # waited by watching, not by polling


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
    fake.sync_message = "upload failed: AccessDenied"
    fake.reset_log()

    with pytest.raises(FilesNotSaved) as err:
        runtime.stop(repl, events)

    assert str(err.value) == ("files not saved: saving exited with code 1 "
                              "(upload failed: AccessDenied)")
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
        replace_runtime = KubernetesRuntime(replace(runtime.settings, k8s_stop_timeout=1),
                                            api_client=fake.api_client())
        replace_runtime.stop(repl, events)
    pod = fake.get("pods", NS, pod_name)
    names = [c["name"] for c in pod["spec"]["ephemeralContainers"]]
    assert names == ["sync-up-1", "sync-up-2"]
    for c in pod["spec"]["ephemeralContainers"]:
        assert c["targetContainerName"] == "runner"
        assert {"name": "workspace", "mountPath": "/workspace"} in c["volumeMounts"]
        creds = {e["name"]: e for e in c["env"]}
        assert creds["DEVEX_S3_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == \
            "devex-s3"


def test_stop_times_out_and_deletes_nothing(fake, settings, repl, template, events):
    runtime = KubernetesRuntime(replace(settings, k8s_stop_timeout=1),
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
    assert fake.count("create") == 5  # each answered 409 AlreadyExists ...
    assert fake.count("get") == 5  # ... read back and compared ...
    assert fake.count("patch") == 0  # ... and found equal
    assert fake.names("pods", NS) == pods  # the running pod was left alone


def test_start_patches_objects_that_differ(fake, settings, runtime, repl, template, events):
    runtime.start(repl, template, events)
    old_pod = fake.names("pods", NS)
    # someone changed things by hand: a different image and an extra port
    other = replace(template, image="ghcr.io/devex/runner-python:0.0.9", port=9090)
    KubernetesRuntime(settings, api_client=fake.api_client()).start(repl, other, Events())
    assert fake.get("deployments", NS, "repl-0123456789ab")["spec"]["template"]["spec"][
        "containers"][0]["image"] == "ghcr.io/devex/runner-python:0.0.9"
    fake.reset_log()

    runtime.start(repl, template, events)

    assert fake.count("patch") == 4  # deployment, service, ingress, network policy
    deployment = fake.get("deployments", NS, "repl-0123456789ab")
    runner = deployment["spec"]["template"]["spec"]["containers"][0]
    assert runner["image"] == template.image
    assert runner["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert fake.get("services", NS, "repl-0123456789ab")["spec"]["ports"][0]["port"] == 8080
    assert fake.get("services", NS, "repl-0123456789ab")["spec"]["clusterIP"]  # kept
    assert fake.names("pods", NS) != old_pod  # the changed template rolled the pod
    assert "Updated the existing Deployment" in events.text()


def test_stop_when_everything_is_already_gone(fake, runtime, repl, events):
    runtime.stop(repl, events)

    assert fake.count("delete") == 5  # every delete answered 404 and was taken as done
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
    assert all(v == [] for v in objects_of(fake, repl.id).values())
    if mode != "never-ready":
        assert any(words in m for k, m in events if k == "start")


def test_start_api_error_cleans_up(fake, runtime, repl, template, events):
    fake.fail[("POST", "deployments")] = 403

    with pytest.raises(RuntimeFailure, match="create Deployment repl-0123456789ab failed"):
        runtime.start(repl, template, events)
    assert all(v == [] for v in objects_of(fake, repl.id).values())


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
    assert all(MANAGED_SELECTOR in r.query.replace("%2F", "/").replace("%3D", "=")
               for r in fake.requests)


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


def test_api_calls_per_start_and_stop(fake, runtime, repl, template, events, capsys):
    counts = {}
    fake.reset_log()
    runtime.start(repl, template, events)
    counts["start (fresh)"] = fake.count()
    fake.reset_log()
    runtime.start(repl, template, events)
    counts["start (already running)"] = fake.count()
    fake.reset_log()
    runtime.stop(repl, events)
    counts["stop (save, exit 0)"] = fake.count()
    runtime.start(repl, template, events)
    fake.reset_log()
    runtime.stop(repl, events, save=False)
    counts["stop (force)"] = fake.count()
    fake.reset_log()
    runtime.stop(repl, events)
    counts["stop (already gone)"] = fake.count()

    with capsys.disabled():
        print("\nKubernetes API calls:", ", ".join(f"{k}: {v}" for k, v in counts.items()))
    assert counts == {"start (fresh)": 6, "start (already running)": 11,
                      "stop (save, exit 0)": 8, "stop (force)": 5, "stop (already gone)": 7}


def test_client_config_is_loaded_from_devex_kubeconfig(fake, settings, repl, template, tmp_path,
                                                       events):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
        "users": [{"name": "me", "user": {"token": "not-a-real-token"}}],
    }))
    runtime = KubernetesRuntime(replace(settings, kubeconfig=str(kubeconfig)))

    runtime.start(repl, template, events)

    assert fake.names("deployments", NS) == ["repl-0123456789ab"]
    assert runtime.kube is runtime.kube  # loaded once
