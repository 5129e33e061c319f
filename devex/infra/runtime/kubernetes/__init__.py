"""Kubernetes runtime: one Deployment, Service, Ingress, NetworkPolicy and Secret per REPL.

``manifests`` holds pure builders, ``client`` the small layer that talks to the API,
``runtime`` the ``KubernetesRuntime`` that ties them together.
"""

from devex.infra.runtime.kubernetes.runtime import KubernetesRuntime

__all__ = ["KubernetesRuntime"]
