"""Pure builders: the Kubernetes objects of one REPL as plain dicts.

No API calls and no parsing here: the settings arrive parsed (``settings.kubernetes``,
devex/config_kubernetes.py). Tests compare the dicts as data and validate them against the
official schemas; the CLI prints them as YAML; ``runtime`` creates them.
"""

from __future__ import annotations

import base64
from collections.abc import Collection, Mapping

from devex.config import Settings
from devex.infra.runtime.kubernetes import names
from devex.models import Repl
from devex.templates_catalog import Template

WORKSPACE = "/workspace"
WORKSPACE_VOLUME = "workspace"
TMP_VOLUME = "tmp"  # the runner's /tmp (user code writes there)
# Only the containers that hold storage credentials (sync-down, autosave, sync-up) mount
# these: the runner, and so the user's code, can never plant anything they read or run.
STATE = "/devex-state"
STATE_VOLUME = "devex-state"  # the sync lock
SYNC_TMP_VOLUME = "sync-tmp"  # their /tmp, HOME and working directory
SYNC_LOCK = f"{STATE}/sync.lock"
AUTOSAVE_PORT = 8081  # the autosave companion, on the pod's loopback only
TERMINATION_GRACE = 60  # seconds: the runner's SIGTERM, then autosave's last save
RUNNER_UID = 1000

# Where a REPL may not send packets: cluster-private ranges, CGNAT, link-local (the cloud
# metadata address 169.254.169.254 among them) and loopback; IPv6 private/link-local too.
DENIED_V4 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
             "100.64.0.0/10", "127.0.0.0/8", "0.0.0.0/8")
DENIED_V6 = ("fc00::/7", "fe80::/10", "::1/128", "::ffff:0:0/96")


def _labels_peer(namespaces: Mapping[str, str], pods: Mapping[str, str]) -> dict:
    """A namespace selector, narrowed to some pods there when ``pods`` are given. Fresh
    dicts each time: an object shared between manifests would be dumped as a YAML alias."""
    peer: dict = {"namespaceSelector": {"matchLabels": dict(namespaces)}}
    if pods:
        peer["podSelector"] = {"matchLabels": dict(pods)}
    return peer


def storage_egress(settings: Settings) -> dict | None:
    """The egress rule for S3 inside the private ranges, or None when none is configured."""
    k = settings.kubernetes
    peers: list[dict] = [{"ipBlock": {"cidr": cidr}} for cidr in k.storage_egress]
    if k.storage_namespace_labels:
        peers.append(_labels_peer(k.storage_namespace_labels, k.storage_pod_labels))
    if not peers:
        return None
    rule: dict = {"to": peers}
    if k.storage_ports:
        rule["ports"] = [{"protocol": "TCP", "port": port} for port in k.storage_ports]
    return rule


def dns_egress(settings: Settings) -> dict | None:
    """The DNS rule (53 UDP+TCP), or None when every DNS setting is empty.

    Peers, like zero-to-jupyterhub's defaults: the DNS pods (``kube-system``), IP blocks
    for resolvers that are no pod a selector could match -- NodeLocal DNSCache on a
    link-local address, or answering on the kube-dns ClusterIP in a private range (its
    packets are never DNAT-ed to a pod), a cloud's metadata DNS.
    """
    k = settings.kubernetes
    peers: list[dict] = []
    if k.dns_namespace_labels:
        peers.append(_labels_peer(k.dns_namespace_labels, k.dns_pod_labels))
    peers += [{"ipBlock": {"cidr": cidr}} for cidr in k.dns_egress]
    if not peers:
        return None
    return {"to": peers, "ports": [{"protocol": "UDP", "port": 53},
                                   {"protocol": "TCP", "port": 53}]}


def _meta(name: str, settings: Settings, labels: dict[str, str], **extra) -> dict:
    return {"name": names.dns_label(name), "namespace": settings.kubernetes.namespace,
            "labels": dict(labels), **extra}


def _labels(repl: Repl, template: Template) -> dict[str, str]:
    return names.repl_labels(repl.id, repl.owner_id, template.id)


def container_security(settings: Settings) -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNNER_UID,
        "runAsGroup": RUNNER_UID,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": settings.kubernetes.read_only_root,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _mounts() -> list[dict]:
    """The runner's mounts: the workspace and its own /tmp."""
    return [
        {"name": WORKSPACE_VOLUME, "mountPath": WORKSPACE},
        {"name": TMP_VOLUME, "mountPath": "/tmp"},
    ]


def _sync_mounts(state: bool = True, tmp: str = SYNC_TMP_VOLUME) -> list[dict]:
    """The credential-holding containers' mounts: the workspace, a /tmp of their own (their
    HOME: a shared one would let user code plant ``.local/.../*.pth`` files that Python runs
    at start-up) and, for autosave and sync-up, the state volume holding the sync lock."""
    mounts = [
        {"name": WORKSPACE_VOLUME, "mountPath": WORKSPACE},
        {"name": tmp, "mountPath": "/tmp"},
    ]
    if state:
        mounts.append({"name": STATE_VOLUME, "mountPath": STATE})
    return mounts


def _sync_container(name: str, settings: Settings, command: list[str],
                    state: bool = True, tmp: str = SYNC_TMP_VOLUME) -> dict:
    """A container running ``python -m runner …`` with the storage credentials.

    Its working directory is its private /tmp, never the workspace: ``python -m`` puts the
    working directory first on ``sys.path``, so a ``runner/`` folder in the user's files
    would otherwise be imported in place of the real one.
    """
    return {
        "name": names.dns_label(name),
        "image": settings.kubernetes.runner_image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "workingDir": "/tmp",
        "env": s3_env(settings),
        "volumeMounts": _sync_mounts(state, tmp),
        "securityContext": container_security(settings),
        # On failure the kubelet keeps the end of the log as the termination message: the
        # one-line reason the sync command prints becomes the REPL's failure reason.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def s3_env(settings: Settings) -> list[dict]:
    """Storage configuration for the sync containers only; credentials from the Secret."""
    secret = settings.kubernetes.s3_secret
    env = [
        {"name": "DEVEX_STORAGE", "value": "s3"},
        {"name": "DEVEX_S3_BUCKET", "value": settings.s3_bucket},
        {"name": "DEVEX_S3_REGION", "value": settings.s3_region},
        {"name": "DEVEX_S3_PATH_STYLE", "value": "true" if settings.s3_path_style else "false"},
        {"name": "DEVEX_S3_ACCESS_KEY_ID",
         "valueFrom": {"secretKeyRef": {"name": secret, "key": "access-key-id"}}},
        {"name": "DEVEX_S3_SECRET_ACCESS_KEY",
         "valueFrom": {"secretKeyRef": {"name": secret, "key": "secret-access-key"}}},
        {"name": "HOME", "value": "/tmp"},
    ]
    if settings.s3_endpoint_url:
        env.insert(2, {"name": "DEVEX_S3_ENDPOINT_URL", "value": settings.s3_endpoint_url})
    return env


def runner_secret(repl: Repl, template: Template, settings: Settings, runner_key: str) -> dict:
    """The per-REPL Secret holding the runner's key (never inline in the pod spec)."""
    n = names.object_names(repl.id)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(n.secret, settings, _labels(repl, template)),
        "type": "Opaque",
        "data": {names.RUNNER_KEY_ENTRY: base64.b64encode(runner_key.encode()).decode()},
    }


def runner_env(repl: Repl, template: Template, settings: Settings) -> list[dict]:
    """The runner's environment: its own REPL's key (from the Secret) and plain settings;
    never a storage setting or credential."""
    n = names.object_names(repl.id)
    env = [
        {"name": "RUNNER_REPL_ID", "value": repl.id},
        {"name": "RUNNER_KEY", "valueFrom": {"secretKeyRef": {
            "name": n.secret, "key": names.RUNNER_KEY_ENTRY}}},
        {"name": "RUNNER_CORE_URL", "value": settings.core_url},
        {"name": "RUNNER_HEARTBEAT_SECONDS", "value": str(settings.heartbeat_seconds)},
        {"name": "RUNNER_IDLE_TIMEOUT", "value": str(settings.idle_timeout)},
        {"name": "RUNNER_AUTOSAVE_URL", "value": f"http://127.0.0.1:{AUTOSAVE_PORT}/"},
    ]
    if template.run:
        env.append({"name": "RUNNER_RUN_COMMAND", "value": template.run})
    if template.shell:
        env.append({"name": "RUNNER_SHELL", "value": template.shell})
    env.append({"name": "HOME", "value": "/tmp"})
    return env


def autosave_container(repl: Repl, settings: Settings) -> dict:
    """The autosave companion: a native sidecar (an init container with ``restartPolicy:
    Always``) that starts after sync-down, runs beside the runner, restarts when it exits,
    and is stopped only after the runner (so it can save once more on its way out)."""
    container = _sync_container(names.AUTOSAVE_CONTAINER, settings, [
        "python", "-m", "runner", "autosave", "--src", WORKSPACE,
        "--prefix", repl.storage_prefix, "--interval", str(settings.autosave_seconds),
        "--listen", f"127.0.0.1:{AUTOSAVE_PORT}", "--lock", SYNC_LOCK])
    container["restartPolicy"] = "Always"
    container["resources"] = {"requests": {"cpu": "20m", "memory": "64Mi"},
                              "limits": {"cpu": "500m", "memory": "256Mi"}}
    return container


def deployment(repl: Repl, template: Template, settings: Settings) -> dict:
    n = names.object_names(repl.id)
    labels = _labels(repl, template)
    base_path = f"/{repl.id}/"
    if template.port == AUTOSAVE_PORT:
        raise ValueError(f"template port {template.port} is the autosave companion's port")
    sync_down = _sync_container(names.SYNC_DOWN_CONTAINER, settings, [
        "python", "-m", "runner", "sync-down", "--prefix", repl.storage_prefix,
        "--dest", WORKSPACE], state=False)
    sync_down["resources"] = {"requests": {"cpu": "50m", "memory": "64Mi"},
                              "limits": {"cpu": "500m", "memory": "256Mi"}}
    runner = {
        "name": names.RUNNER_CONTAINER,
        "image": template.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "runner", "serve", "--workspace", WORKSPACE,
                    "--host", "0.0.0.0", "--port", str(template.port),
                    "--base-path", base_path],
        "workingDir": WORKSPACE,
        "ports": [{"name": "http", "containerPort": template.port, "protocol": "TCP"}],
        "env": runner_env(repl, template, settings),
        "volumeMounts": _mounts(),
        "securityContext": container_security(settings),
        "resources": {
            "requests": {"cpu": template.resources.cpu_request,
                         "memory": template.resources.memory_request},
            "limits": {"cpu": template.resources.cpu_limit,
                       "memory": template.resources.memory_limit},
        },
        "readinessProbe": {
            "httpGet": {"path": f"{base_path}healthz", "port": "http"},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
    }
    pod_spec = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "fsGroup": RUNNER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # The runner stops first, then autosave saves what changed since its last save
        # (an eviction): that upload needs the time (runner.autosave.SHUTDOWN_SAVE_SECONDS).
        "terminationGracePeriodSeconds": TERMINATION_GRACE,
        "initContainers": [sync_down, autosave_container(repl, settings)],
        "containers": [runner],
        "volumes": [
            {"name": WORKSPACE_VOLUME,
             "emptyDir": {"sizeLimit": settings.kubernetes.workspace_size}},
            {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": SYNC_TMP_VOLUME, "emptyDir": {"sizeLimit": "256Mi"}},
            {"name": STATE_VOLUME, "emptyDir": {"sizeLimit": "16Mi"}},
        ],
    }
    if settings.kubernetes.image_pull_secret:
        pod_spec["imagePullSecrets"] = [{"name": settings.kubernetes.image_pull_secret}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(n.deployment, settings, labels),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # one workspace, never two pods writing it
            "selector": {"matchLabels": names.selector_labels(repl.id)},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }


def service(repl: Repl, template: Template, settings: Settings) -> dict:
    n = names.object_names(repl.id)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(n.service, settings, _labels(repl, template)),
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector_labels(repl.id),
            "ports": [{"name": "http", "port": template.port, "targetPort": "http",
                       "protocol": "TCP"}],
        },
    }


def ingress(repl: Repl, template: Template, settings: Settings) -> dict:
    n = names.object_names(repl.id)
    k = settings.kubernetes
    meta = _meta(n.ingress, settings, _labels(repl, template))
    if k.ingress_annotations:
        meta["annotations"] = dict(k.ingress_annotations)
    spec: dict = {
        "rules": [{
            "host": k.ingress_host,
            "http": {"paths": [{
                "path": f"/{repl.id}/",
                "pathType": "Prefix",
                "backend": {"service": {"name": n.service, "port": {"number": template.port}}},
            }]},
        }],
    }
    if k.ingress_class:
        spec["ingressClassName"] = k.ingress_class
    if k.tls_secret:
        spec["tls"] = [{"hosts": [k.ingress_host], "secretName": k.tls_secret}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta,
            "spec": spec}


def network_policy(repl: Repl, template: Template, settings: Settings) -> dict:
    n = names.object_names(repl.id)
    k = settings.kubernetes
    ingress_from = _labels_peer(k.ingress_namespace_labels, k.ingress_pod_labels)
    core = _labels_peer(k.core_namespace_labels, k.core_pod_labels)
    egress = [
        {"to": [core], "ports": [{"protocol": "TCP", "port": k.core_port}]},
        {"to": [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(DENIED_V4)}},
            {"ipBlock": {"cidr": "::/0", "except": list(DENIED_V6)}},
        ]},
    ]
    dns = dns_egress(settings)
    if dns is not None:  # first: without names nothing else works
        egress.insert(0, dns)
    storage = storage_egress(settings)
    if storage is not None:  # rules add up: this opens a hole in the private ranges
        egress.append(storage)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(n.network_policy, settings, _labels(repl, template)),
        "spec": {
            "podSelector": {"matchLabels": names.selector_labels(repl.id)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [ingress_from],
                         "ports": [{"protocol": "TCP", "port": template.port}]}],
            "egress": egress,
        },
    }


def quiesce_url(repl: Repl, runner_port: int) -> str:
    """Where sync-up tells the runner to stop edits (the pod's loopback, no Service)."""
    return f"http://127.0.0.1:{runner_port}/{repl.id}/_control/quiesce"


def sync_up_container(repl: Repl, settings: Settings, name: str, control_token: str,
                      runner_port: int, pod_volumes: Collection[str] | None = None) -> dict:
    """The ephemeral container that saves the workspace (``pods/ephemeralcontainers``).

    No ``targetContainerName``: it needs only the shared volumes and the pod's network, and
    containerd refuses to start a container whose target is not running, so a crash-looping
    runner would block every save. It quiesces the runner (``control_token``, a ``control``
    token for this REPL, and the runner's port as the pod runs it), then saves under the
    lock autosave takes too. On failure the kubelet reports the end of its log.

    ``pod_volumes`` names the volumes the pod has (default: those of the current spec). A
    pod made before the autosave sidecar has neither ``devex-state`` nor ``sync-tmp``, and
    the API refuses mounts of volumes a pod lacks: there the container uses the pod's
    ``tmp`` and no lock (nothing else saves in such a pod).
    """
    volumes = {STATE_VOLUME, SYNC_TMP_VOLUME} if pod_volumes is None else set(pod_volumes)
    state = STATE_VOLUME in volumes
    command = ["python", "-m", "runner", "sync-up", "--src", WORKSPACE,
               "--prefix", repl.storage_prefix]
    if state:
        command += ["--lock", SYNC_LOCK]
    command += ["--quiesce-url", quiesce_url(repl, runner_port)]
    container = _sync_container(
        name, settings, command, state,
        SYNC_TMP_VOLUME if SYNC_TMP_VOLUME in volumes else TMP_VOLUME)
    container["env"].append({"name": "RUNNER_CONTROL_TOKEN", "value": control_token})
    return container


def all_objects(repl: Repl, template: Template, settings: Settings, runner_key: str) -> list[dict]:
    """Every object of a REPL, in creation order (the Secret before the pod that reads it)."""
    return [
        runner_secret(repl, template, settings, runner_key),
        network_policy(repl, template, settings),
        service(repl, template, settings),
        ingress(repl, template, settings),
        deployment(repl, template, settings),
    ]
