"""The Kubernetes runtime's settings (``DEVEX_K8S_*``, ``DEVEX_KUBECONFIG``), parsed once.

``KubernetesSettings.from_env`` turns the environment's strings into plain values -- label
dicts, normalised CIDRs, port numbers -- and refuses what no REPL's objects could use,
naming the setting. The manifest builders take these values as they are, as kubespawner's
``make_pod`` takes its arguments. Imports nothing of Kubernetes: the web loads it too.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from devex.errors import ConfigError

LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*"
                       r"[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
# Never allowed as storage egress: the metadata service, loopback, "this network".
NEVER_STORAGE = tuple(ipaddress.ip_network(c) for c in (
    "169.254.0.0/16", "127.0.0.0/8", "0.0.0.0/8", "fe80::/10", "::1/128", "::ffff:0:0/96"))
MIN_STORAGE_PREFIX = {4: 8, 6: 8}  # broader than this would undo the fence
# Where REPL pods may send DNS (53 UDP/TCP) by default: kube-dns pods, a NodeLocal
# DNSCache (169.254.20.10, kubespray's 169.254.25.10), a cache that answers on the
# kube-dns ClusterIP (private ranges) and GKE's metadata DNS.
DEFAULT_DNS_EGRESS = ("169.254.20.10/32", "169.254.25.10/32", "169.254.169.254/32",
                      "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


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


def parse_labels(raw: str, what: str) -> dict[str, str]:
    """``parse_pairs`` plus Kubernetes label syntax, for selectors."""
    labels = parse_pairs(raw, what)
    for key, value in labels.items():
        if len(key) > 316 or not LABEL_KEY.match(key):
            raise ConfigError(f"{what}: {key!r} is not a label key")
        if len(value) > 63 or not LABEL_VALUE.match(value):
            raise ConfigError(f"{what}: {value!r} is not a label value")
    return labels


def _parts(raw: str) -> list[str]:
    return [p for p in (part.strip() for part in raw.split(",")) if p]


def parse_storage_cidrs(raw: str, what: str) -> tuple[str, ...]:
    """``"10.20.0.0/16, fd00:20::/64"`` → normalised CIDRs; refuses host bits, the metadata
    and loopback ranges, and anything broader than /8."""
    cidrs = []
    for part in _parts(raw):
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
    return tuple(cidrs)


def parse_dns_cidrs(raw: str, what: str) -> tuple[str, ...]:
    """CIDRs that DNS (port 53 only) may reach: exact networks, any size. Link-local
    /32s belong here: NodeLocal DNSCache listens on 169.254.20.10."""
    cidrs = []
    for part in _parts(raw):
        try:
            cidrs.append(str(ipaddress.ip_network(part, strict=True)))
        except ValueError as exc:
            raise ConfigError(f"{what}: {part!r} is not a CIDR: {exc}") from None
    return tuple(cidrs)


def parse_ports(raw: str, what: str) -> tuple[int, ...]:
    ports = []
    for part in _parts(raw):
        if not part.isdigit() or not 1 <= int(part) <= 65535:
            raise ConfigError(f"{what}: {part!r} is not a TCP port (1-65535)")
        ports.append(int(part))
    return tuple(ports)


def parse_int(raw: str, what: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{what} must be an integer") from None


def parse_bool(raw: str, what: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on")


def _text(raw: str, what: str) -> str:
    return raw


def _setting(default: Any, parse: Callable[[str, str], Any] = _text, env: str = "") -> Any:
    """A field read from ``env`` (default ``DEVEX_K8S_<NAME>``) through ``parse``."""
    meta = {"parse": parse, "env": env}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class KubernetesSettings:
    """Plain values; built by ``from_env`` (which checks them), or directly in tests."""

    namespace: str = _setting("devex-repls")
    kubeconfig: str = _setting("", env="DEVEX_KUBECONFIG")  # empty: in-cluster, ~/.kube
    request_timeout: int = _setting(15, parse_int)  # seconds for every single API call
    stop_timeout: int = _setting(120, parse_int)
    runner_image: str = _setting("ghcr.io/devex/runner:0.1.0")
    image_pull_secret: str = _setting("")
    s3_secret: str = _setting("devex-s3")  # keys: access-key-id, secret-access-key
    workspace_size: str = _setting("2Gi")  # emptyDir sizeLimit of the workspace
    read_only_root: bool = _setting(True, parse_bool)  # HOME and /tmp are emptyDirs
    ingress_host: str = _setting("repl.example.com")
    ingress_class: str = _setting("")
    tls_secret: str = _setting("")
    ingress_annotations: Mapping[str, str] = _setting({}, parse_pairs)  # JSON or k=v,k=v
    # Who may reach REPL pods (the ingress controller) and whom they may call (the core).
    ingress_namespace_labels: Mapping[str, str] = _setting(
        {"kubernetes.io/metadata.name": "ingress-nginx"}, parse_labels)
    ingress_pod_labels: Mapping[str, str] = _setting(  # empty: any pod there
        {"app.kubernetes.io/name": "ingress-nginx"}, parse_labels)
    core_namespace_labels: Mapping[str, str] = _setting(
        {"kubernetes.io/metadata.name": "devex"}, parse_labels)
    core_pod_labels: Mapping[str, str] = _setting(
        {"app.kubernetes.io/name": "devex", "app.kubernetes.io/component": "web"},
        parse_labels)
    core_port: int = _setting(8000, parse_int)
    # Extra egress for the sync containers' S3 when it lies in a denied private range
    # (in-cluster MinIO, a private VPC endpoint); the REPL's own code can reach it too.
    storage_egress: tuple[str, ...] = _setting((), parse_storage_cidrs)
    storage_namespace_labels: Mapping[str, str] = _setting({}, parse_labels)
    storage_pod_labels: Mapping[str, str] = _setting({}, parse_labels)  # needs namespaces
    storage_ports: tuple[int, ...] = _setting((), parse_ports)  # empty: any port
    # Where REPL pods may send DNS; all three empty: no DNS rule.
    dns_egress: tuple[str, ...] = _setting(DEFAULT_DNS_EGRESS, parse_dns_cidrs)
    dns_namespace_labels: Mapping[str, str] = _setting(
        {"kubernetes.io/metadata.name": "kube-system"}, parse_labels)
    dns_pod_labels: Mapping[str, str] = _setting({}, parse_labels)  # needs the namespace

    @staticmethod
    def env_name(name: str) -> str:
        """The environment variable of field ``name``."""
        meta = KubernetesSettings.__dataclass_fields__[name].metadata
        return meta["env"] or f"DEVEX_K8S_{name.upper()}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> KubernetesSettings:
        values = {}
        for f in fields(cls):
            what = cls.env_name(f.name)
            raw = environ.get(what)
            if raw is not None:
                values[f.name] = f.metadata["parse"](raw, what)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """What single settings cannot say: the ones that need each other."""
        if self.storage_pod_labels and not self.storage_namespace_labels:
            raise ConfigError("DEVEX_K8S_STORAGE_POD_LABELS needs "
                              "DEVEX_K8S_STORAGE_NAMESPACE_LABELS (which namespace they run in)")
        if self.storage_ports and not (self.storage_egress or self.storage_namespace_labels):
            raise ConfigError("DEVEX_K8S_STORAGE_PORTS needs DEVEX_K8S_STORAGE_EGRESS or "
                              "DEVEX_K8S_STORAGE_NAMESPACE_LABELS")
        if self.dns_pod_labels and not self.dns_namespace_labels:
            raise ConfigError("DEVEX_K8S_DNS_POD_LABELS needs DEVEX_K8S_DNS_NAMESPACE_LABELS "
                              "(which namespace the DNS pods run in)")
