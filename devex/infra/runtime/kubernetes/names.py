"""Object names and labels of a REPL's Kubernetes objects, validated before use."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from devex.config_kubernetes import LABEL_VALUE

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "devex"
REPL_ID = "devex.io/repl-id"
OWNER_ID = "devex.io/owner-id"
TEMPLATE = "devex.io/template"
MANAGED_SELECTOR = f"{MANAGED_BY}={MANAGED_BY_VALUE}"

RUNNER_CONTAINER = "runner"
SYNC_DOWN_CONTAINER = "sync-down"
AUTOSAVE_CONTAINER = "autosave"  # native sidecar
SYNC_UP_PREFIX = "sync-up"
RUNNER_KEY_ENTRY = "runner-key"  # key inside the per-REPL Secret


def dns_label(name: str) -> str:
    """Return ``name`` if it is a DNS-1123 label (what every object name here must be)."""
    if len(name) > 63 or not DNS1123_LABEL.match(name):
        raise ValueError(f"{name!r} is not a DNS-1123 label (a-z, 0-9, '-', at most 63)")
    return name


def label_value(value: str) -> str:
    if len(value) > 63 or not LABEL_VALUE.match(value):
        raise ValueError(f"{value!r} is not a valid Kubernetes label value")
    return value


@dataclass(frozen=True)
class ObjectNames:
    deployment: str
    service: str
    ingress: str
    network_policy: str
    secret: str

    def as_handle(self) -> dict[str, str]:
        """The names as stored in ``replMeta`` (``StartResult.handle``)."""
        return asdict(self)


def object_names(repl_id: str) -> ObjectNames:
    dns_label(repl_id)  # the id itself also appears in labels and the URL path
    base = dns_label(f"repl-{repl_id}")
    return ObjectNames(
        deployment=base,
        service=base,
        ingress=base,
        network_policy=base,
        secret=dns_label(f"{base}-runner"),
    )


def repl_labels(repl_id: str, owner_id: str, template_id: str) -> dict[str, str]:
    return {
        MANAGED_BY: MANAGED_BY_VALUE,
        REPL_ID: label_value(repl_id),
        OWNER_ID: label_value(owner_id),
        TEMPLATE: label_value(template_id),
    }


def selector_labels(repl_id: str) -> dict[str, str]:
    """The labels that select a REPL's pod (a subset of ``repl_labels``, never changes)."""
    return {MANAGED_BY: MANAGED_BY_VALUE, REPL_ID: label_value(repl_id)}


def selector_string(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())
