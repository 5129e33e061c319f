"""The Kubernetes objects as data: labels, hardening, secrets, names, official schemas."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import shutil
import subprocess
import textwrap
from dataclasses import replace
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from flask import Flask
from kubernetes_validate.utils import all_versions
from packaging.version import Version

from devex.cli import devex_cli
from devex.config import ConfigError, KubernetesSettings, Settings
from devex.infra.runtime.kubernetes import KubernetesRuntime, manifests, names
from devex.models import Repl
from devex.templates_catalog import Catalog
from tests.support.netpol import Destination, egress_allowed

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CATALOG = Catalog.load(ROOT / "repl_templates")
TEMPLATES = CATALOG.all()
VERSIONS = sorted({v for v in all_versions() if Version(v) >= Version("1.30")}, key=Version)
S3_SECRET_VALUE = "s3-secret-value-never-in-a-manifest"
RUNNER_KEY = "per-repl-runner-key-value"
CONTROL_TOKEN = "control-token-for-this-stop"


def with_k8s(settings: Settings, **raw: str) -> Settings:
    """``settings`` with Kubernetes settings parsed from ``DEVEX_K8S_<NAME>=raw`` as the
    environment gives them (the others at their defaults)."""
    environ = {f"DEVEX_K8S_{name.upper()}": value for name, value in raw.items()}
    return replace(settings, kubernetes=KubernetesSettings.from_env(environ))


PLAIN = Settings(secret_key="k" * 40, storage="s3", s3_bucket="repls",
                 s3_access_key_id="AKIAEXAMPLE", s3_secret_access_key=S3_SECRET_VALUE)
FULL_K8S = {
    "ingress_class": "nginx", "tls_secret": "repl-tls",
    "ingress_annotations": '{"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"}',
    "image_pull_secret": "regcred", "ingress_pod_labels": "",
}
FULL = with_k8s(replace(PLAIN, s3_endpoint_url="https://minio.example.com", s3_path_style=True,
                        core_url="http://devex-web.devex.svc:8000"), **FULL_K8S)
# S3 inside the private ranges: a VPC endpoint (v4 and v6 CIDRs) and in-cluster MinIO.
STORAGE = with_k8s(
    replace(FULL, s3_endpoint_url="http://minio.storage.svc:9000"),
    **FULL_K8S,
    storage_egress="10.20.0.0/16, fd00:20::/64, 192.168.7.9",
    storage_namespace_labels="kubernetes.io/metadata.name=storage",
    storage_pod_labels="app=minio",
    storage_ports="9000,443",
)
VARIANTS = {"plain": PLAIN, "full": FULL, "storage": STORAGE}


def make_repl(template_id: str, repl_id: str = "0123456789ab") -> Repl:
    return Repl(id=repl_id, name="demo", template=template_id, owner_id="583231",
                owner_login="octocat", storage_prefix=f"octocat/{repl_id}/")


def objects_for(template, settings=PLAIN) -> list[dict]:
    return manifests.all_objects(make_repl(template.id), template, settings, RUNNER_KEY)


def ephemeral_pod(settings=PLAIN) -> dict:
    """The sync-up container inside a Pod, so the schema for ephemeral containers applies."""
    repl = make_repl("python")
    pod_spec = manifests.deployment(repl, CATALOG.get("python"), settings)["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "repl-0123456789ab-abc", "labels": pod_spec["metadata"]["labels"]},
            "spec": {**pod_spec["spec"], "ephemeralContainers": [
                manifests.sync_up_container(repl, settings, "sync-up-1", CONTROL_TOKEN, 8080)]}}


def every_object() -> list[tuple[str, dict]]:
    out = []
    for variant, settings in VARIANTS.items():
        for t in TEMPLATES:
            out += [(f"{variant}/{t.id}/{o['kind']}", o) for o in objects_for(t, settings)]
        out.append((f"{variant}/ephemeral-pod", ephemeral_pod(settings)))
    return out


def deploy_documents(examples: bool = True) -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(DEPLOY.rglob("*.yaml") if examples else DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":  # kustomize's own file, not an object
            continue
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc:
                docs.append((f"{path.relative_to(ROOT)}#{i}", doc))
    return docs


def kustomize_build() -> tuple[str, list[dict]]:
    """``kustomize build deploy/``: kubectl's built-in kustomize where kubectl is installed
    (the machine image has it); otherwise a small reader that does only what this
    kustomization asks of kustomize -- concatenate its ``resources`` files in order -- and
    refuses anything more (a real kustomize would be needed then)."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run([kubectl, "kustomize", str(DEPLOY)], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return "kubectl kustomize", [d for d in yaml.safe_load_all(out.stdout) if d]
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert set(kustomization) <= {"apiVersion", "kind", "resources"}, \
        "the fallback reader only understands a resources list"
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]
    return "resources reader", docs


def containers(deployment: dict) -> dict[str, dict]:
    spec = deployment["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["initContainers"] + spec["containers"]}


# -- official schemas ----------------------------------------------------------------------
def test_versions_cover_1_30_through_the_newest_bundled():
    assert VERSIONS[0] == "1.30.0"
    assert VERSIONS[-1] == kubernetes_validate.latest_version()


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_strictly(version):
    for what, obj in every_object():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{what} on {version}: {'.'.join(map(str, exc.path))}: {exc.message}")


@pytest.mark.parametrize("version", VERSIONS)
def test_every_deploy_document_validates_strictly(version):
    docs = deploy_documents()
    kinds = {d["kind"] for _, d in docs}
    assert {"Namespace", "Deployment", "Service", "Ingress", "StatefulSet", "CronJob",
            "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "Secret",
            "ConfigMap", "Job"} <= kinds
    for what, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{what} on {version}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_strict_validation_does_reject_unknown_fields():
    bad = objects_for(TEMPLATES[0])[-1]
    bad["spec"]["template"]["spec"]["containers"][0]["runAsRoot"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)


# -- labels and names ----------------------------------------------------------------------
@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.id)
def test_every_object_carries_the_devex_labels(template):
    expected = {"app.kubernetes.io/managed-by": "devex", "devex.io/repl-id": "0123456789ab",
                "devex.io/owner-id": "583231", "devex.io/template": template.id}
    objs = objects_for(template)
    assert [o["kind"] for o in objs] == ["Secret", "NetworkPolicy", "Service", "Ingress",
                                         "Deployment"]
    for obj in objs:
        assert obj["metadata"]["labels"] == expected
        assert obj["metadata"]["namespace"] == "devex-repls"
        assert names.DNS1123_LABEL.match(obj["metadata"]["name"])
        assert len(obj["metadata"]["name"]) <= 63
    deployment = objs[-1]
    assert deployment["spec"]["template"]["metadata"]["labels"] == expected
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/managed-by": "devex", "devex.io/repl-id": "0123456789ab"}


@pytest.mark.parametrize("bad", ["ABCDEF012345", "abc_def", "a" * 60, "-abc", ""])
def test_names_must_be_dns_labels(bad):
    with pytest.raises(ValueError, match="DNS-1123"):
        names.object_names(bad)


def test_label_values_are_validated():
    with pytest.raises(ValueError, match="label value"):
        names.repl_labels("0123456789ab", "owner with spaces", "python")


# -- the pod -------------------------------------------------------------------------------
@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.id)
def test_pod_is_hardened(template):
    deployment = manifests.deployment(make_repl(template.id), template, PLAIN)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod and "hostPID" not in pod
    pod_with_sync = ephemeral_pod()["spec"]
    for c in list(containers(deployment).values()) + pod_with_sync["ephemeralContainers"]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert sc["readOnlyRootFilesystem"] is True
        assert {"name": "workspace", "mountPath": "/workspace"} in c["volumeMounts"]
        assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(volumes) == {"workspace", "tmp", "sync-tmp", "devex-state"}
    assert all(set(v) == {"name", "emptyDir"} for v in volumes.values())


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.id)
def test_runner_container_follows_the_template(template):
    runner = containers(manifests.deployment(make_repl(template.id), template, PLAIN))["runner"]
    assert runner["image"] == template.image
    assert runner["resources"] == {
        "requests": {"cpu": template.resources.cpu_request,
                     "memory": template.resources.memory_request},
        "limits": {"cpu": template.resources.cpu_limit,
                   "memory": template.resources.memory_limit}}
    assert runner["readinessProbe"]["httpGet"] == {"path": "/0123456789ab/healthz",
                                                   "port": "http"}
    assert runner["ports"] == [{"name": "http", "containerPort": template.port,
                                "protocol": "TCP"}]
    assert runner["command"][-2:] == ["--base-path", "/0123456789ab/"]


def test_sync_containers_use_the_runner_image_and_the_repl_prefix():
    python = CATALOG.get("python")
    c = containers(manifests.deployment(make_repl("python"), python, PLAIN))
    assert c["sync-down"]["image"] == PLAIN.kubernetes.runner_image
    assert c["sync-down"]["command"] == ["python", "-m", "runner", "sync-down", "--prefix",
                                         "octocat/0123456789ab/", "--dest", "/workspace"]
    sync_up = ephemeral_pod()["spec"]["ephemeralContainers"][0]
    assert sync_up["image"] == PLAIN.kubernetes.runner_image
    assert sync_up["command"] == [
        "python", "-m", "runner", "sync-up", "--src", "/workspace",
        "--prefix", "octocat/0123456789ab/", "--lock", "/devex-state/sync.lock",
        "--quiesce-url", "http://127.0.0.1:8080/0123456789ab/_control/quiesce"]
    assert sync_up["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_every_sync_container_keeps_the_end_of_its_log_as_its_failure_reason():
    """The sync commands print a one-line reason on failure; with FallbackToLogsOnError the
    kubelet keeps the log's end as the termination message, which becomes the REPL's
    failure reason ("files not saved: ...", "Loading the REPL's files ... failed: ...")."""
    c = containers(manifests.deployment(make_repl("python"), CATALOG.get("python"), PLAIN))
    sync_up = ephemeral_pod()["spec"]["ephemeralContainers"][0]
    for container in (c["sync-down"], c["autosave"], sync_up):
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "terminationMessagePolicy" not in c["runner"]  # user code writes its log


def test_sync_up_needs_no_running_target_and_carries_the_control_token():
    """containerd refuses to start an ephemeral container whose target is not running: a
    crash-looping runner would block every save. Only the shared volumes are needed."""
    sync_up = ephemeral_pod()["spec"]["ephemeralContainers"][0]
    assert "targetContainerName" not in sync_up
    env = {e["name"]: e for e in sync_up["env"]}
    assert env["RUNNER_CONTROL_TOKEN"] == {"name": "RUNNER_CONTROL_TOKEN",
                                           "value": CONTROL_TOKEN}
    assert {"name": "devex-state", "mountPath": "/devex-state"} in sync_up["volumeMounts"]
    other_port = manifests.sync_up_container(make_repl("python"), PLAIN, "sync-up-2", "t", 9090)
    assert other_port["command"][-1] == "http://127.0.0.1:9090/0123456789ab/_control/quiesce"


@pytest.mark.parametrize("version", [VERSIONS[0], VERSIONS[-1]])
def test_sync_up_fits_a_pod_from_before_the_autosave_sidecar(version):
    """Such a pod (reused as it is) has only the workspace and tmp volumes: the API refuses
    mounts of any other. It gets no lock (no autosave runs there) and the pod's tmp."""
    pod = ephemeral_pod()
    spec = pod["spec"]
    spec["initContainers"] = spec["initContainers"][:1]
    spec["initContainers"][0]["volumeMounts"] = [{"name": "workspace", "mountPath": "/workspace"},
                                                 {"name": "tmp", "mountPath": "/tmp"}]
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] in ("workspace", "tmp")]
    sync_up = manifests.sync_up_container(make_repl("python"), PLAIN, "sync-up-1",
                                          CONTROL_TOKEN, 8080, ["workspace", "tmp"])
    spec["ephemeralContainers"] = [sync_up]
    kubernetes_validate.validate(pod, version, strict=True)
    assert {m["name"] for m in sync_up["volumeMounts"]} == {"workspace", "tmp"}
    assert "--lock" not in sync_up["command"]
    assert "--quiesce-url" in sync_up["command"]  # an older runner answers 404: logged


def test_autosave_is_a_native_sidecar_after_sync_down():
    repl = make_repl("python")
    settings = replace(PLAIN, autosave_seconds=7)
    pod = manifests.deployment(repl, CATALOG.get("python"), settings)["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["sync-down", "autosave"]
    assert "restartPolicy" not in pod["initContainers"][0]  # runs to completion first
    autosave = pod["initContainers"][1]
    assert autosave["restartPolicy"] == "Always"
    assert autosave["image"] == PLAIN.kubernetes.runner_image
    assert autosave["command"] == [
        "python", "-m", "runner", "autosave", "--src", "/workspace",
        "--prefix", "octocat/0123456789ab/", "--interval", "7",
        "--listen", "127.0.0.1:8081", "--lock", "/devex-state/sync.lock"]
    assert autosave["resources"] == {"requests": {"cpu": "20m", "memory": "64Mi"},
                                     "limits": {"cpu": "500m", "memory": "256Mi"}}
    assert autosave["volumeMounts"] == [
        {"name": "workspace", "mountPath": "/workspace"},
        {"name": "sync-tmp", "mountPath": "/tmp"},
        {"name": "devex-state", "mountPath": "/devex-state"}]
    assert "ports" not in autosave  # loopback only, never reachable from outside the pod


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.id)
def test_runner_env_tells_it_the_template_and_where_autosave_listens(template):
    settings = replace(PLAIN, idle_timeout=900)
    runner = containers(manifests.deployment(make_repl(template.id), template, settings))["runner"]
    env = {e["name"]: e.get("value") for e in runner["env"]}
    assert env["RUNNER_AUTOSAVE_URL"] == "http://127.0.0.1:8081/"
    assert env["RUNNER_IDLE_TIMEOUT"] == "900"
    assert env.get("RUNNER_RUN_COMMAND") == (template.run or None)
    assert env.get("RUNNER_SHELL") == (template.shell or None)
    assert "" not in (env.get("RUNNER_RUN_COMMAND"), env.get("RUNNER_SHELL"))
    custom = replace(template, run="make run", shell="zsh")
    env = {e["name"]: e.get("value") for e in containers(manifests.deployment(
        make_repl(template.id), custom, settings))["runner"]["env"]}
    assert (env["RUNNER_RUN_COMMAND"], env["RUNNER_SHELL"]) == ("make run", "zsh")
    bare = replace(template, run="", shell="")
    env = {e["name"] for e in containers(manifests.deployment(
        make_repl(template.id), bare, settings))["runner"]["env"]}
    assert not {"RUNNER_RUN_COMMAND", "RUNNER_SHELL"} & env


def test_the_pod_gives_autosaves_last_save_its_time():
    """On SIGTERM (eviction, deletion) autosave saves what changed once more; the kubelet
    kills whatever still runs at the grace period's end."""
    from runner.autosave import SHUTDOWN_SAVE_SECONDS

    pod = manifests.deployment(make_repl("go"), CATALOG.get("go"), PLAIN)["spec"]["template"]
    assert pod["spec"]["terminationGracePeriodSeconds"] >= SHUTDOWN_SAVE_SECONDS
    assert PLAIN.kubernetes.stop_timeout > pod["spec"]["terminationGracePeriodSeconds"]


def test_a_template_cannot_take_the_autosave_port():
    with pytest.raises(ValueError, match="autosave"):
        manifests.deployment(make_repl("go"), replace(CATALOG.get("go"), port=8081), PLAIN)


def test_nothing_the_runner_can_write_is_read_or_run_by_the_credential_holders():
    """User code runs in the runner: besides the workspace (which the sync code reads as
    data, never following symlinks), the credential-holding containers share no volume with
    it, and none of them runs in the workspace (``python -m`` imports from its working
    directory)."""
    pod = ephemeral_pod()["spec"]
    runner = next(c for c in pod["containers"] if c["name"] == "runner")
    runner_volumes = {m["name"] for m in runner["volumeMounts"]}
    assert runner_volumes == {"workspace", "tmp"}
    holders = pod["initContainers"] + pod["ephemeralContainers"]
    assert [c["name"] for c in holders] == ["sync-down", "autosave", "sync-up-1"]
    for c in holders:
        assert {m["name"] for m in c["volumeMounts"]} & runner_volumes == {"workspace"}
        assert c["workingDir"] == "/tmp"
        assert {"name": "sync-tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        assert {"name": "HOME", "value": "/tmp"} in c["env"]


# -- secrets -------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_s3_credentials_reach_only_the_sync_containers(variant):
    settings = VARIANTS[variant]
    python = CATALOG.get("python")
    objs = objects_for(python, settings) + [ephemeral_pod(settings)]
    text = json.dumps(objs)
    assert S3_SECRET_VALUE not in text and "AKIAEXAMPLE" not in text
    c = containers(objs[-2])
    runner_env = {e["name"] for e in c["runner"]["env"]}
    assert not {n for n in runner_env if n.startswith(("DEVEX_S3", "DEVEX_STORAGE", "AWS_"))}
    assert "devex-s3" not in json.dumps(c["runner"])
    assert "devex-state" not in json.dumps(c["runner"])  # nor the sync lock
    secret_refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in c["runner"]["env"]
                   if "valueFrom" in e]
    assert secret_refs == ["repl-0123456789ab-runner"]  # its own REPL's key, nothing else
    for sync in (c["sync-down"], c["autosave"], objs[-1]["spec"]["ephemeralContainers"][0]):
        env = {e["name"]: e for e in sync["env"]}
        assert env["DEVEX_S3_ACCESS_KEY_ID"]["valueFrom"] == {
            "secretKeyRef": {"name": "devex-s3", "key": "access-key-id"}}
        assert env["DEVEX_S3_SECRET_ACCESS_KEY"]["valueFrom"] == {
            "secretKeyRef": {"name": "devex-s3", "key": "secret-access-key"}}
        assert env["DEVEX_S3_BUCKET"]["value"] == "repls"
        assert "RUNNER_KEY" not in env


def test_runner_key_comes_from_the_per_repl_secret():
    python = CATALOG.get("python")
    objs = objects_for(python)
    secret, deployment = objs[0], objs[-1]
    assert secret["metadata"]["name"] == "repl-0123456789ab-runner"
    assert base64.b64decode(secret["data"]["runner-key"]).decode() == RUNNER_KEY
    assert RUNNER_KEY not in json.dumps(deployment)
    assert secret["data"]["runner-key"] not in json.dumps(deployment)
    env = {e["name"]: e for e in containers(deployment)["runner"]["env"]}
    assert env["RUNNER_KEY"] == {"name": "RUNNER_KEY", "valueFrom": {"secretKeyRef": {
        "name": "repl-0123456789ab-runner", "key": "runner-key"}}}
    assert env["RUNNER_REPL_ID"]["value"] == "0123456789ab"


# -- service, ingress, network policy ------------------------------------------------------
def test_service_selects_only_the_repl_pod():
    svc = manifests.service(make_repl("go"), CATALOG.get("go"), PLAIN)
    assert svc["spec"]["selector"] == {"app.kubernetes.io/managed-by": "devex",
                                       "devex.io/repl-id": "0123456789ab"}
    assert svc["spec"]["type"] == "ClusterIP"


def test_ingress_defaults_have_no_class_tls_or_annotations():
    ing = manifests.ingress(make_repl("go"), CATALOG.get("go"), PLAIN)
    assert "ingressClassName" not in ing["spec"] and "tls" not in ing["spec"]
    assert "annotations" not in ing["metadata"]
    path = ing["spec"]["rules"][0]["http"]["paths"][0]
    assert ing["spec"]["rules"][0]["host"] == "repl.example.com"
    assert path["path"] == "/0123456789ab/" and path["pathType"] == "Prefix"
    assert path["backend"]["service"] == {"name": "repl-0123456789ab",
                                          "port": {"number": 8080}}


def test_ingress_options_are_configurable():
    ing = manifests.ingress(make_repl("go"), CATALOG.get("go"), FULL)
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": ["repl.example.com"], "secretName": "repl-tls"}]
    assert ing["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"}
    kv = with_k8s(PLAIN, ingress_annotations="a.example/x=1, b.example/y=two")
    assert manifests.ingress(make_repl("go"), CATALOG.get("go"), kv)["metadata"][
        "annotations"] == {"a.example/x": "1", "b.example/y": "two"}


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", "novalue"])
def test_bad_annotation_settings_are_config_errors(raw):
    with pytest.raises(ConfigError, match="^DEVEX_K8S_INGRESS_ANNOTATIONS: "):
        Settings.from_env({"DEVEX_K8S_INGRESS_ANNOTATIONS": raw})


def test_network_policy_admits_only_the_ingress_controller_and_fences_egress():
    np = manifests.network_policy(make_repl("node"), CATALOG.get("node"), PLAIN)["spec"]
    assert np["policyTypes"] == ["Ingress", "Egress"]
    assert np["podSelector"]["matchLabels"]["devex.io/repl-id"] == "0123456789ab"
    assert np["ingress"] == [{
        "from": [{"namespaceSelector": {"matchLabels": {
                      "kubernetes.io/metadata.name": "ingress-nginx"}},
                  "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}}}],
        "ports": [{"protocol": "TCP", "port": 8080}]}]
    dns, core, internet = np["egress"]
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    assert core["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "web"
    assert core["ports"] == [{"protocol": "TCP", "port": 8000}]
    v4 = internet["to"][0]["ipBlock"]
    assert v4["cidr"] == "0.0.0.0/0"
    for denied in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
                   "100.64.0.0/10"):
        assert denied in v4["except"]
    assert "ports" not in internet  # the public internet on any port
    assert internet["to"][1]["ipBlock"]["cidr"] == "::/0"


KUBE_DNS_POD = Destination("10.244.0.5", 53, "UDP",
                           {"kubernetes.io/metadata.name": "kube-system"},
                           {"k8s-app": "kube-dns"})


@pytest.mark.parametrize(("dest", "allowed"), [
    (KUBE_DNS_POD, True),  # CoreDNS / kube-dns pods
    (replace(KUBE_DNS_POD, protocol="TCP"), True),  # large answers
    (Destination("169.254.20.10", 53, "UDP"), True),  # NodeLocal DNSCache (link-local)
    (Destination("169.254.25.10", 53, "TCP"), True),  # ... as kubespray sets it up
    (Destination("10.96.0.10", 53, "UDP"), True),  # a cache answering on the ClusterIP
    (Destination("169.254.169.254", 53, "UDP"), True),  # GKE metadata DNS
    (Destination("fd00:10:96::a", 53, "UDP"), True),  # an IPv6 cluster's DNS ClusterIP
    (Destination("8.8.8.8", 53, "UDP"), True),  # public resolvers (the internet rule)
    (Destination("169.254.169.254", 80), False),  # the metadata service itself: never
    (Destination("169.254.20.10", 8080), False),  # only DNS on those addresses
    (Destination("10.96.0.1", 443), False),  # the cluster's API server
    (replace(KUBE_DNS_POD, port=9153, protocol="TCP"), False),  # CoreDNS metrics
])
def test_dns_reaches_the_resolvers_real_clusters_use_and_nothing_else(dest, allowed):
    policy = manifests.network_policy(make_repl("node"), CATALOG.get("node"), PLAIN)
    assert egress_allowed(policy, dest) is allowed


def test_the_policy_evaluator_agrees_with_the_old_kube_system_only_rule():
    """The evaluator is strict: a namespace selector never matches an address that is no
    pod, which is why NodeLocal DNSCache needs an ipBlock (what the old rule lacked)."""
    old = {"spec": {"policyTypes": ["Egress"], "egress": [{
        "to": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "kube-system"}}}],
        "ports": [{"protocol": "UDP", "port": 53}]}]}}
    assert egress_allowed(old, KUBE_DNS_POD)
    assert not egress_allowed(old, Destination("169.254.20.10", 53, "UDP"))
    assert not egress_allowed(old, Destination("10.96.0.10", 53, "UDP"))


def test_dns_egress_is_configurable():
    settings = with_k8s(PLAIN, dns_egress="169.254.20.10/32",
                        dns_namespace_labels="kubernetes.io/metadata.name=kube-system",
                        dns_pod_labels="k8s-app=kube-dns")
    rule = manifests.dns_egress(settings)
    assert rule == {"to": [{"namespaceSelector": {"matchLabels": {
                               "kubernetes.io/metadata.name": "kube-system"}},
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}},
                           {"ipBlock": {"cidr": "169.254.20.10/32"}}],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    policy = manifests.network_policy(make_repl("go"), CATALOG.get("go"), settings)
    kubernetes_validate.validate(policy, VERSIONS[-1], strict=True)
    assert not egress_allowed(policy, Destination("10.96.0.10", 53, "UDP"))
    assert not egress_allowed(policy, replace(KUBE_DNS_POD, pod_labels={"app": "other"}))
    none = with_k8s(PLAIN, dns_egress="", dns_namespace_labels="")
    assert manifests.dns_egress(none) is None
    egress = manifests.network_policy(make_repl("go"), CATALOG.get("go"), none)["spec"]["egress"]
    assert all({"protocol": "UDP", "port": 53} not in r.get("ports", []) for r in egress)


@pytest.mark.parametrize(("name", "raw", "words"), [
    ("DNS_EGRESS", "169.254.20.10/24", "is not a CIDR"),
    ("DNS_EGRESS", "node-local-dns", "is not a CIDR"),
    ("DNS_POD_LABELS", "k8s-app=kube-dns", "needs DEVEX_K8S_DNS_NAMESPACE_LABELS"),
    ("DNS_NAMESPACE_LABELS", "bad key=x", "is not a label key"),
])
def test_bad_dns_settings_are_config_errors(name, raw, words):
    env = {f"DEVEX_K8S_{name}": raw}
    if name == "DNS_POD_LABELS":
        env["DEVEX_K8S_DNS_NAMESPACE_LABELS"] = ""
    with pytest.raises(ConfigError, match=f"^DEVEX_K8S_DNS_.*{words}"):
        Settings.from_env(env)  # refused at start-up, not per REPL


def test_default_dns_cidrs_are_exact_networks_and_only_reach_port_53():
    for cidr in PLAIN.kubernetes.dns_egress:
        ipaddress.ip_network(cidr, strict=True)
    rule = manifests.network_policy(make_repl("go"), CATALOG.get("go"), PLAIN)["spec"][
        "egress"][0]
    assert rule["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def test_storage_egress_is_off_by_default():
    np = manifests.network_policy(make_repl("node"), CATALOG.get("node"), FULL)["spec"]
    assert len(np["egress"]) == 3


def test_storage_egress_opens_only_the_configured_peers_and_ports():
    np = manifests.network_policy(make_repl("node"), CATALOG.get("node"), STORAGE)["spec"]
    dns, core, internet, storage = np["egress"]
    assert internet["to"][0]["ipBlock"]["except"] == list(manifests.DENIED_V4)  # fence kept
    assert storage == {
        "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}},
               {"ipBlock": {"cidr": "fd00:20::/64"}},
               {"ipBlock": {"cidr": "192.168.7.9/32"}},
               {"namespaceSelector": {"matchLabels": {
                   "kubernetes.io/metadata.name": "storage"}},
                "podSelector": {"matchLabels": {"app": "minio"}}}],
        "ports": [{"protocol": "TCP", "port": 9000}, {"protocol": "TCP", "port": 443}]}
    only_cidr = with_k8s(PLAIN, storage_egress="172.20.1.0/24")
    rule = manifests.network_policy(make_repl("go"), CATALOG.get("go"), only_cidr)["spec"][
        "egress"][-1]
    assert rule == {"to": [{"ipBlock": {"cidr": "172.20.1.0/24"}}]}  # any port
    kubernetes_validate.validate(
        manifests.network_policy(make_repl("go"), CATALOG.get("go"), only_cidr), VERSIONS[-1],
        strict=True)


@pytest.mark.parametrize(("name", "raw", "words"), [
    ("STORAGE_EGRESS", "10.20.0.1/16", "has host bits set"),
    ("STORAGE_EGRESS", "minio.storage", "is not a CIDR"),
    ("STORAGE_EGRESS", "169.254.169.254/32", "overlaps 169.254.0.0/16"),
    ("STORAGE_EGRESS", "127.0.0.1", "overlaps 127.0.0.0/8"),
    ("STORAGE_EGRESS", "fe80::1/128", "overlaps fe80::/10"),
    ("STORAGE_EGRESS", "0.0.0.0/0", "too broad"),
    ("STORAGE_EGRESS", "10.0.0.0/7", "too broad"),
    ("STORAGE_PORTS", "9000,http", "is not a TCP port"),
    ("STORAGE_PORTS", "70000", "is not a TCP port"),
    ("STORAGE_POD_LABELS", "app=minio", "needs DEVEX_K8S_STORAGE_NAMESPACE_LABELS"),
    ("STORAGE_NAMESPACE_LABELS", "bad key=x", "is not a label key"),
    ("STORAGE_NAMESPACE_LABELS", "k=bad value!", "is not a label value"),
])
def test_bad_storage_egress_settings_are_config_errors(name, raw, words):
    env = {f"DEVEX_K8S_{name}": raw}
    if name == "STORAGE_PORTS":
        env["DEVEX_K8S_STORAGE_EGRESS"] = "10.20.0.0/16"
    with pytest.raises(ConfigError, match=f"^DEVEX_K8S_STORAGE_.*{words}"):
        Settings.from_env(env)  # refused at start-up, not per REPL


def test_storage_ports_alone_are_a_config_error():
    with pytest.raises(ConfigError, match="needs DEVEX_K8S_STORAGE_EGRESS"):
        Settings.from_env({"DEVEX_K8S_STORAGE_PORTS": "9000"})


def test_kubernetes_settings_are_parsed_once_into_plain_values():
    """The builders get dicts, normalised CIDRs and numbers, never the raw strings."""
    settings = Settings.from_env({
        "DEVEX_K8S_INGRESS_ANNOTATIONS": '{"a.example/timeout": 3600}',
        "DEVEX_K8S_STORAGE_EGRESS": "10.20.0.0/16, 192.168.7.9",
        "DEVEX_K8S_STORAGE_NAMESPACE_LABELS": "kubernetes.io/metadata.name=storage",
        "DEVEX_K8S_STORAGE_PORTS": "9000,443",
        "DEVEX_K8S_CORE_POD_LABELS": "",
        "DEVEX_K8S_CORE_PORT": "8080",
        "DEVEX_K8S_READ_ONLY_ROOT": "false",
        "DEVEX_KUBECONFIG": "/etc/kube.yaml",
    })
    assert settings.kubernetes == replace(
        KubernetesSettings(),
        ingress_annotations={"a.example/timeout": "3600"},
        storage_egress=("10.20.0.0/16", "192.168.7.9/32"),
        storage_namespace_labels={"kubernetes.io/metadata.name": "storage"},
        storage_ports=(9000, 443), core_pod_labels={}, core_port=8080,
        read_only_root=False, kubeconfig="/etc/kube.yaml")
    assert Settings.from_env({}).kubernetes == KubernetesSettings()  # the defaults parse
    with pytest.raises(ConfigError, match="^DEVEX_K8S_CORE_PORT must be an integer"):
        Settings.from_env({"DEVEX_K8S_CORE_PORT": "http"})


def test_storage_egress_settings_come_from_the_environment():
    settings = Settings.from_env({
        "DEVEX_K8S_STORAGE_EGRESS": "10.20.0.0/16,fd00:20::/64",
        "DEVEX_K8S_STORAGE_NAMESPACE_LABELS": "kubernetes.io/metadata.name=storage",
        "DEVEX_K8S_STORAGE_POD_LABELS": "app=minio",
        "DEVEX_K8S_STORAGE_PORTS": "9000",
    })
    rule = manifests.storage_egress(settings)
    assert [p.get("ipBlock", {}).get("cidr") for p in rule["to"]] == [
        "10.20.0.0/16", "fd00:20::/64", None]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9000}]


# -- deploy/ -------------------------------------------------------------------------------
@pytest.mark.parametrize("version", VERSIONS)
def test_kustomize_build_of_deploy_validates_strictly(version):
    how, docs = kustomize_build()
    assert {d["kind"] for d in docs} == {
        "Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Service",
        "StatefulSet", "Deployment", "Ingress", "CronJob", "NetworkPolicy"}, how
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{how}: {doc['kind']}/{doc['metadata']['name']} on {version}: "
                        f"{'.'.join(map(str, exc.path))}: {exc.message}")


def test_kustomization_applies_every_deploy_file_but_the_examples():
    """``kubectl apply -k deploy/`` creates what ``kubectl apply -f`` of each file would:
    nothing left out, and never the example Secrets (placeholder values)."""
    listed = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    files = sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == files
    _, built = kustomize_build()
    assert "Secret" not in {d["kind"] for d in built}
    names = {(d["kind"], d["metadata"]["name"]) for d in built}
    assert names == {(d["kind"], d["metadata"]["name"])
                     for _, d in deploy_documents(examples=False)}


def docs_overlay(root: Path) -> Path:
    """The trial overlay docs/KUBERNETES.md has people write, taken from the page itself:
    every ```yaml block whose first line is ``# devex-local/<file>``, written beside a
    checkout named ``devex`` (here: a link to this one)."""
    text = (ROOT / "docs" / "KUBERNETES.md").read_text()
    overlay = root / "devex-local"
    overlay.mkdir()
    (root / "devex").symlink_to(ROOT)
    written = []
    for match in re.finditer(r"^( *)```yaml\n(.*?)^\1```", text, re.M | re.S):
        body = textwrap.dedent(match.group(2))
        first = body.splitlines()[0]
        if first.startswith("# devex-local/"):
            name = first.removeprefix("# devex-local/").strip()
            (overlay / name).write_text(body)
            written.append(name)
    assert "kustomization.yaml" in written, written
    return overlay


@pytest.mark.skipif(not shutil.which("kubectl"), reason="needs kubectl's kustomize (patches)")
def test_the_trial_overlay_in_the_docs_builds_and_validates(tmp_path):
    out = subprocess.run(["kubectl", "kustomize", str(docs_overlay(tmp_path))],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    for doc in docs:
        for version in (VERSIONS[0], VERSIONS[-1]):
            kubernetes_validate.validate(doc, version, strict=True)
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert config["DEVEX_S3_ENDPOINT_URL"] == "http://minio.storage.svc:9000"
    assert config["DEVEX_TRUSTED_PROXIES"] == "1"  # the base's settings are kept
    settings = Settings.from_env({**config, "DEVEX_SECRET_KEY": "k" * 40,
                                  "DEVEX_GITHUB_CLIENT_ID": "id",
                                  "DEVEX_GITHUB_CLIENT_SECRET": "secret"})
    policy = manifests.network_policy(make_repl("go"), CATALOG.get("go"), settings)
    minio = Destination("10.244.1.9", 9000, "TCP", {"kubernetes.io/metadata.name": "storage"},
                        {"app.kubernetes.io/name": "minio"})
    assert egress_allowed(policy, minio)  # the sync containers reach MinIO
    ingress = next(d for d in docs if d["kind"] == "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "devex.127.0.0.1.nip.io"
    minio_docs = [d for d in yaml.safe_load_all((DEPLOY / "examples" / "minio.yaml").read_text())]
    assert {d["metadata"]["namespace"] for d in minio_docs if d["kind"] != "Namespace"} == \
        {"storage"}  # what DEVEX_K8S_STORAGE_NAMESPACE_LABELS selects


def deploy_config() -> dict[str, str]:
    return next(d for _, d in deploy_documents() if d["kind"] == "ConfigMap")["data"]


def test_deploy_config_is_for_a_web_behind_one_tls_ingress():
    """The GitHub callback URL is built from X-Forwarded-Proto/Host: the web trusts the
    one proxy in front of it (the ingress controller), and the settings hold together."""
    data = deploy_config()
    assert data["DEVEX_TRUSTED_PROXIES"] == "1"
    env = {**data, "DEVEX_SECRET_KEY": "k" * 40, "DEVEX_GITHUB_CLIENT_ID": "id",
           "DEVEX_GITHUB_CLIENT_SECRET": "secret"}
    settings = Settings.from_env(env)
    assert settings.trusted_proxies == 1 and settings.auth_mode == "github"
    assert settings.start_timeout >= 300  # a cold image pull fits
    KubernetesRuntime(settings)  # from_env refused any bad Kubernetes setting above


def test_web_readiness_probe_checks_only_what_the_web_needs():
    web = next(d for _, d in deploy_documents() if d["kind"] == "Deployment"
               and d["metadata"]["name"] == "devex-web")
    probe = web["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["path"] == "/readyz"  # Redis only: see tests/test_k8s_health.py


def test_the_worker_may_only_read_events():
    role = next(d for _, d in deploy_documents() if d["kind"] == "Role"
                and d["metadata"]["name"] == "devex-runtime")
    events = [r for r in role["rules"] if "events" in r["resources"]]
    assert events == [{"apiGroups": [""], "resources": ["events"], "verbs": ["list", "watch"]}]
    assert not any(r.get("resources") == ["*"] or "*" in r.get("verbs", [])
                   for r in role["rules"])


def test_worker_runs_the_scheduler_and_the_warm_worker_class():
    docs = dict(deploy_documents())
    worker = docs["deploy/worker.yaml#0"]["spec"]["template"]["spec"]["containers"][0]
    command = worker["command"]
    assert command[:2] == ["rq", "worker"]
    assert "--with-scheduler" in command  # retry intervals fire
    assert command[command.index("-w") + 1] == "jobs.worker.DevexWorker"  # jobs start warm


def test_periodic_jobs_get_a_fresh_job_id_each_run():
    cronjobs = [d for _, d in deploy_documents() if d["kind"] == "CronJob"]
    assert len(cronjobs) == 2
    for cj in cronjobs:
        command = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
            "command"]
        assert "--job-id" not in command  # a fixed id overwrote the previous run's record
        assert command[-1] in ("jobs.periodic.reconcile", "jobs.periodic.cull_idle")


# -- the CLI -------------------------------------------------------------------------------
@pytest.fixture
def cli(monkeypatch):
    for key in [k for k in os.environ if k.startswith("DEVEX_")]:
        monkeypatch.delenv(key)
    app = Flask(__name__)
    app.cli.add_command(devex_cli)
    return app.test_cli_runner()  # click's CliRunner, bound to the bare app


def test_cli_prints_every_object_as_yaml(cli, monkeypatch):
    monkeypatch.setenv("DEVEX_K8S_INGRESS_CLASS", "traefik")
    result = cli.invoke(args=["devex", "manifests", "--template", "python",
                              "--repl-id", "abcdef012345", "--owner", "alice"])
    assert result.exit_code == 0, result.output
    docs = [d for d in yaml.safe_load_all(result.output) if d]
    assert [d["kind"] for d in docs] == ["Secret", "NetworkPolicy", "Service", "Ingress",
                                         "Deployment"]
    assert docs[3]["spec"]["ingressClassName"] == "traefik"
    assert docs[4]["metadata"]["name"] == "repl-abcdef012345"
    assert containers(docs[4])["sync-down"]["command"][5] == "alice/abcdef012345/"
    for doc in docs:
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)


def test_cli_refuses_an_unknown_template(cli):
    result = cli.invoke(args=["devex", "manifests", "--template", "cobol"])
    assert result.exit_code != 0
    assert "unknown template" in result.output


def test_cli_refuses_a_bad_repl_id(cli):
    result = cli.invoke(args=["devex", "manifests", "--template", "go", "--repl-id", "Bad_Id"])
    assert result.exit_code != 0
    assert "DNS-1123" in result.output
