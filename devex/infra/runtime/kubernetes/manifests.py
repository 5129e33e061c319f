"""Pure builders: the Kubernetes objects of one REPL as plain dicts.

No API calls here. Tests compare the dicts as data and validate them against the official
schemas; the CLI prints them as YAML; ``runtime`` creates them.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from collections.abc import Collection

from devex.config import ConfigError, Settings
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
# Never allowed as storage egress: the metadata service, loopback, "this network".
NEVER_STORAGE = tuple(ipaddress.ip_network(c) for c in (
    "169.254.0.0/16", "127.0.0.0/8", "0.0.0.0/8", "fe80::/10", "::1/128", "::ffff:0:0/96"))
MIN_STORAGE_PREFIX = {4: 8, 6: 8}  # broader than this would undo the fence
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*"
                        r"[A-Za-z0-9])?$")


def parse_pairs(raw: str, what: str) -> dict[str, str]:
    """``{"k": "v"}`` (JSON object) or ``k=v,k=v`` → dict; empty → {}."""
    raw = raw.strip()
    if not raw:
        return {}
    if raw.startswith("{"):
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ConfigError(f"{what}: not a JSON object: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{what}: not a JSON object")
        return {str(k): str(v) for k, v in data.items()}
    pairs = {}
    for part in raw.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what}: expected k=v pairs, got {part!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def parse_cidrs(raw: str, what: str) -> list[str]:
    """``"10.20.0.0/16, fd00:20::/64"`` → normalised CIDRs; refuses host bits, the metadata
    and loopback ranges, and anything broader than /8."""
    cidrs = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            net = ipaddress.ip_network(part, strict=True)
        except ValueError as exc:
            raise ConfigError(f"{what}: {part!r} is not a CIDR: {exc}") from None
        if net.prefixlen < MIN_STORAGE_PREFIX[net.version]:
            raise ConfigError(f"{what}: {part!r} is too broad (at most "
                              f"/{MIN_STORAGE_PREFIX[net.version]})")
        for never in NEVER_STORAGE:
            if net.version == never.version and net.overlaps(never):
                raise ConfigError(f"{what}: {part!r} overlaps {never}, which REPLs may "
                                  "never reach")
        cidrs.append(str(net))
    return cidrs


def parse_dns_cidrs(raw: str, what: str) -> list[str]:
    """CIDRs that DNS (port 53 only) may reach: exact networks, any size. Link-local
    /32s belong here: NodeLocal DNSCache listens on 169.254.20.10."""
    cidrs = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            cidrs.append(str(ipaddress.ip_network(part, strict=True)))
        except ValueError as exc:
            raise ConfigError(f"{what}: {part!r} is not a CIDR: {exc}") from None
    return cidrs


def parse_ports(raw: str, what: str) -> list[int]:
    ports = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        if not part.isdigit() or not 1 <= int(part) <= 65535:
            raise ConfigError(f"{what}: {part!r} is not a TCP port (1-65535)")
        ports.append(int(part))
    return ports


def parse_labels(raw: str, what: str) -> dict[str, str]:
    """``parse_pairs`` plus Kubernetes label syntax, for selectors."""
    labels = parse_pairs(raw, what)
    for key, value in labels.items():
        if len(key) > 316 or not _LABEL_KEY.match(key):
            raise ConfigError(f"{what}: {key!r} is not a label key")
        if len(value) > 63 or not names.LABEL_VALUE.match(value):
            raise ConfigError(f"{what}: {value!r} is not a label value")
    return labels


def storage_egress(settings: Settings) -> dict | None:
    """The egress rule for S3 inside the private ranges, or None when none is configured."""
    cidrs = parse_cidrs(settings.k8s_storage_egress, "DEVEX_K8S_STORAGE_EGRESS")
    namespaces = parse_labels(settings.k8s_storage_namespace_labels,
                              "DEVEX_K8S_STORAGE_NAMESPACE_LABELS")
    pods = parse_labels(settings.k8s_storage_pod_labels, "DEVEX_K8S_STORAGE_POD_LABELS")
    ports = parse_ports(settings.k8s_storage_ports, "DEVEX_K8S_STORAGE_PORTS")
    if pods and not namespaces:
        raise ConfigError("DEVEX_K8S_STORAGE_POD_LABELS needs "
                          "DEVEX_K8S_STORAGE_NAMESPACE_LABELS (which namespace they run in)")
    peers: list[dict] = [{"ipBlock": {"cidr": cidr}} for cidr in cidrs]
    if namespaces:
        peer: dict = {"namespaceSelector": {"matchLabels": namespaces}}
        if pods:
            peer["podSelector"] = {"matchLabels": pods}
        peers.append(peer)
    if not peers:
        if ports:
            raise ConfigError("DEVEX_K8S_STORAGE_PORTS needs DEVEX_K8S_STORAGE_EGRESS or "
                              "DEVEX_K8S_STORAGE_NAMESPACE_LABELS")
        return None
    rule: dict = {"to": peers}
    if ports:
        rule["ports"] = [{"protocol": "TCP", "port": port} for port in ports]
    return rule


def dns_egress(settings: Settings) -> dict | None:
    """The DNS rule (53 UDP+TCP), or None when every DNS setting is empty.

    Peers, like zero-to-jupyterhub's defaults: the DNS pods (``kube-system``), IP blocks
    for resolvers that are no pod a selector could match -- NodeLocal DNSCache on a
    link-local address, or answering on the kube-dns ClusterIP in a private range (its
    packets are never DNAT-ed to a pod), a cloud's metadata DNS.
    """
    cidrs = parse_dns_cidrs(settings.k8s_dns_egress, "DEVEX_K8S_DNS_EGRESS")
    namespaces = parse_labels(settings.k8s_dns_namespace_labels,
                              "DEVEX_K8S_DNS_NAMESPACE_LABELS")
    pods = parse_labels(settings.k8s_dns_pod_labels, "DEVEX_K8S_DNS_POD_LABELS")
    if pods and not namespaces:
        raise ConfigError("DEVEX_K8S_DNS_POD_LABELS needs DEVEX_K8S_DNS_NAMESPACE_LABELS "
                          "(which namespace the DNS pods run in)")
    peers: list[dict] = []
    if namespaces:
        peer: dict = {"namespaceSelector": {"matchLabels": namespaces}}
        if pods:
            peer["podSelector"] = {"matchLabels": pods}
        peers.append(peer)
    peers += [{"ipBlock": {"cidr": cidr}} for cidr in cidrs]
    if not peers:
        return None
    return {"to": peers, "ports": [{"protocol": "UDP", "port": 53},
                                   {"protocol": "TCP", "port": 53}]}


def check_settings(settings: Settings) -> None:
    """Raise ``ConfigError`` at start-up for settings every REPL's objects would trip on."""
    parse_pairs(settings.k8s_ingress_annotations, "DEVEX_K8S_INGRESS_ANNOTATIONS")
    for what in ("INGRESS_NAMESPACE", "INGRESS_POD", "CORE_NAMESPACE", "CORE_POD"):
        parse_labels(getattr(settings, f"k8s_{what.lower()}_labels"),
                     f"DEVEX_K8S_{what}_LABELS")
    storage_egress(settings)
    dns_egress(settings)


def _meta(name: str, settings: Settings, labels: dict[str, str], **extra) -> dict:
    return {"name": names.dns_label(name), "namespace": settings.k8s_namespace,
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
        "readOnlyRootFilesystem": settings.k8s_read_only_root,
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
        "image": settings.k8s_runner_image,
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
    secret = settings.k8s_s3_secret
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
            {"name": WORKSPACE_VOLUME, "emptyDir": {"sizeLimit": settings.k8s_workspace_size}},
            {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": SYNC_TMP_VOLUME, "emptyDir": {"sizeLimit": "256Mi"}},
            {"name": STATE_VOLUME, "emptyDir": {"sizeLimit": "16Mi"}},
        ],
    }
    if settings.k8s_image_pull_secret:
        pod_spec["imagePullSecrets"] = [{"name": settings.k8s_image_pull_secret}]
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
    annotations = parse_pairs(settings.k8s_ingress_annotations, "DEVEX_K8S_INGRESS_ANNOTATIONS")
    meta = _meta(n.ingress, settings, _labels(repl, template))
    if annotations:
        meta["annotations"] = annotations
    spec: dict = {
        "rules": [{
            "host": settings.k8s_ingress_host,
            "http": {"paths": [{
                "path": f"/{repl.id}/",
                "pathType": "Prefix",
                "backend": {"service": {"name": n.service, "port": {"number": template.port}}},
            }]},
        }],
    }
    if settings.k8s_ingress_class:
        spec["ingressClassName"] = settings.k8s_ingress_class
    if settings.k8s_tls_secret:
        spec["tls"] = [{"hosts": [settings.k8s_ingress_host],
                        "secretName": settings.k8s_tls_secret}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta,
            "spec": spec}


def _peer(namespace_labels: str, pod_labels: str, what: str) -> dict:
    peer: dict = {"namespaceSelector": {
        "matchLabels": parse_pairs(namespace_labels, f"{what}_NAMESPACE_LABELS")}}
    pods = parse_pairs(pod_labels, f"{what}_POD_LABELS")
    if pods:
        peer["podSelector"] = {"matchLabels": pods}
    return peer


def network_policy(repl: Repl, template: Template, settings: Settings) -> dict:
    n = names.object_names(repl.id)
    ingress_from = _peer(settings.k8s_ingress_namespace_labels, settings.k8s_ingress_pod_labels,
                         "DEVEX_K8S_INGRESS")
    core = _peer(settings.k8s_core_namespace_labels, settings.k8s_core_pod_labels,
                 "DEVEX_K8S_CORE")
    egress = [
        {"to": [core], "ports": [{"protocol": "TCP", "port": settings.k8s_core_port}]},
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
