"""The small layer that talks to the Kubernetes API: config loading, timeouts, statuses.

Every call carries ``_request_timeout``. Responses are read as plain dicts (the same shape
as the manifests), so the runtime compares and inspects data, not generated models.
``ApiException`` is handled by status: 409 on create means "exists" (read, compare, patch),
404 on delete means "already gone"; anything else propagates as ``KubeError`` with context.
``is_transient`` tells failures that may pass (5xx, 429, timeouts, connection trouble) from
those a retry would only repeat (403 RBAC, 422 invalid, ...).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


class KubeError(Exception):
    """An API call failed for a reason other than the expected 404/409."""

    def __init__(self, action: str, exc: ApiException):
        self.status = exc.status
        detail = _status_message(exc)
        super().__init__(f"Kubernetes API: {action} failed ({exc.status} {detail})")


# Statuses worth another try: the server is overloaded, restarting or throttling us.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """True when the API call failed in a way that may pass: 5xx, 429, 408, a timeout or a
    connection problem (refused, reset, DNS). False for answers that will not change on
    their own (403 forbidden by RBAC, 422 invalid, 404, ...)."""
    if isinstance(exc, KubeError | ApiException):
        status = exc.status or 0
        return status == 0 or status in TRANSIENT_STATUSES or status >= 500
    return isinstance(exc, urllib3.exceptions.HTTPError | TimeoutError | ConnectionError
                      | socket.timeout)


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    return str(body.get("message") or exc.reason or "").strip()


_config_lock = threading.Lock()


def load_api_client(kubeconfig: str = "") -> client.ApiClient:
    """A client from an explicit kubeconfig, else in-cluster, else ``~/.kube/config``.

    Builds its own ``Configuration`` (the library's global default is left alone).
    """
    cfg = client.Configuration()
    with _config_lock:
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        else:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except ConfigException:
                config.load_kube_config(client_configuration=cfg)
    return client.ApiClient(cfg)


# kind -> (api attribute, method suffix, model used to send a create body)
_KINDS: dict[str, tuple[str, str, str]] = {
    "Deployment": ("apps", "namespaced_deployment", "V1Deployment"),
    "Service": ("core", "namespaced_service", "V1Service"),
    "Secret": ("core", "namespaced_secret", "V1Secret"),
    "Pod": ("core", "namespaced_pod", "V1Pod"),
    "Ingress": ("net", "namespaced_ingress", "V1Ingress"),
    "NetworkPolicy": ("net", "namespaced_network_policy", "V1NetworkPolicy"),
    "Event": ("core", "namespaced_event", "CoreV1Event"),  # read only: list and watch
}


class Kube:
    """Namespaced CRUD on the kinds Devex uses, every call with a timeout, dicts out."""

    def __init__(self, api_client: client.ApiClient, namespace: str, timeout: float):
        self.api_client = api_client
        self.namespace = namespace
        self.timeout = timeout
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.net = client.NetworkingV1Api(api_client)

    def _method(self, verb: str, kind: str):
        api, suffix, _ = _KINDS[kind]
        return getattr(getattr(self, api), f"{verb}_{suffix}")

    def _call(self, method, *args, **kwargs) -> dict:
        resp = method(*args, _request_timeout=self.timeout, _preload_content=False, **kwargs)
        try:
            data = resp.data
        finally:
            resp.release_conn()
        return json.loads(data) if data else {}

    # -- plain verbs -------------------------------------------------------------------
    def create(self, obj: dict) -> dict:
        kind = obj["kind"]
        model = getattr(client, _KINDS[kind][2]).from_dict(obj)
        return self._call(self._method("create", kind), self.namespace, model)

    def get(self, kind: str, name: str) -> dict | None:
        """The object, or None when it does not exist."""
        try:
            return self._call(self._method("read", kind), name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"read {kind} {name}", exc) from None

    def list(self, kind: str, label_selector: str, limit: int | None = None) -> list[dict]:
        kwargs: dict[str, Any] = {"label_selector": label_selector}
        if limit:
            kwargs["limit"] = limit
        try:
            return self._call(self._method("list", kind), self.namespace, **kwargs)["items"]
        except ApiException as exc:
            raise KubeError(f"list {kind}", exc) from None

    def list_pods(self, label_selector: str) -> tuple[list[dict], str]:
        """The pods and the list's ``resourceVersion`` (to watch from exactly there)."""
        try:
            data = self._call(self.core.list_namespaced_pod, self.namespace,
                              label_selector=label_selector)
        except ApiException as exc:
            raise KubeError("list Pod", exc) from None
        return data["items"], str((data.get("metadata") or {}).get("resourceVersion") or "")

    def patch(self, kind: str, name: str, body: dict, content_type: str = MERGE_PATCH) -> dict:
        try:
            return self._call(self._method("patch", kind), name, self.namespace, body,
                              _content_type=content_type)
        except ApiException as exc:
            raise KubeError(f"patch {kind} {name}", exc) from None

    def delete(self, kind: str, name: str) -> bool:
        """Delete; False when it was already gone (404)."""
        try:
            self._call(self._method("delete", kind), name, self.namespace,
                       propagation_policy="Background")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise KubeError(f"delete {kind} {name}", exc) from None
        return True

    # -- create-or-converge ------------------------------------------------------------
    def ensure(self, obj: dict, *, patch: bool = True) -> str:
        """Create ``obj``; if it exists (409), patch it when it differs.

        Returns "created", "unchanged" or "patched"; with ``patch=False`` an existing object
        that differs is left exactly as it is and "kept" is returned.
        """
        kind, name = obj["kind"], obj["metadata"]["name"]
        try:
            self.create(obj)
            return "created"
        except ApiException as exc:
            if exc.status != 409:
                raise KubeError(f"create {kind} {name}", exc) from None
        live = self.get(kind, name)
        if live is None:  # deleted between our create and read: try once more
            try:
                self.create(obj)
                return "created"
            except ApiException as exc:
                raise KubeError(f"create {kind} {name}", exc) from None
        wanted = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
        wanted["metadata"] = {k: v for k, v in obj["metadata"].items()
                              if k in ("labels", "annotations")}
        if is_subset(wanted, live):
            return "unchanged"
        if not patch:
            return "kept"
        # JSON merge patch: maps merge, lists are replaced whole, so lists converge exactly.
        self.patch(kind, name, wanted, MERGE_PATCH)
        return "patched"

    # -- pods ----------------------------------------------------------------------------
    def patch_ephemeral_containers(self, pod: str, containers: list[dict]) -> dict:
        body = {"spec": {"ephemeralContainers": containers}}
        try:
            return self._call(self.core.patch_namespaced_pod_ephemeralcontainers, pod,
                              self.namespace, body, _content_type=STRATEGIC_PATCH)
        except ApiException as exc:
            raise KubeError(f"add ephemeral container to pod {pod}", exc) from None

    def watch_pods(self, timeout: int, *, label_selector: str = "", field_selector: str = "",
                   resource_version: str = "") -> Iterator[tuple[str, dict]]:
        """(event type, pod dict) until the server ends the watch after ``timeout`` s.

        Without ``resource_version`` the server first sends ADDED for every matching pod;
        with it, only the changes after that version.
        """
        stream = self.watch("Pod", time.monotonic() + max(1, int(timeout)),
                            label_selector=label_selector, field_selector=field_selector,
                            resource_version=resource_version, once=True)
        try:
            yield from stream
        finally:
            stream.close()

    def watch(self, kind: str, deadline: float, *, label_selector: str = "",
              field_selector: str = "", resource_version: str = "", list_first: bool = False,
              once: bool = False) -> WatchStream:
        """A watch of ``kind`` until ``deadline`` (``time.monotonic()``), see ``WatchStream``."""
        return WatchStream(self, kind, deadline, label_selector=label_selector,
                           field_selector=field_selector, resource_version=resource_version,
                           list_first=list_first, once=once)


class WatchStream:
    """Changes of one kind as ``(type, object)``, read lazily; ``close()`` ends it at once,
    from any thread (the reading thread may be blocked in a read: the socket is shut down).

    ``list_first``: a list comes first (ADDED for each item, then ``("SYNCED", {})``) and the
    watch goes on from its ``resourceVersion``, so the first picture is one consistent
    snapshot. The server ends each watch after its ``timeoutSeconds``; unless ``once``, the
    watch is opened again from the last ``resourceVersion`` until ``deadline``.
    """

    def __init__(self, kube: Kube, kind: str, deadline: float, *, label_selector: str,
                 field_selector: str, resource_version: str, list_first: bool, once: bool):
        self.kube, self.kind, self.deadline = kube, kind, deadline
        self.selectors = {k: v for k, v in (("label_selector", label_selector),
                                            ("field_selector", field_selector)) if v}
        self.version = resource_version
        self.list_first, self.once = list_first, once
        self._lock = threading.Lock()
        self._resp = None
        self._closed = False

    def _open(self, **kwargs):
        method = self.kube._method("list", self.kind)
        with self._lock:
            if self._closed:
                return None
        resp = method(self.kube.namespace, _preload_content=False, **self.selectors, **kwargs)
        with self._lock:
            if self._closed:  # closed while the request was on its way
                _end(resp)
                return None
            self._resp = resp
        return resp

    def _done(self, resp) -> None:
        with self._lock:
            self._resp = None
        _end(resp)

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        try:
            if self.list_first:
                resp = self._open(_request_timeout=self.kube.timeout)
                if resp is None:
                    return
                try:
                    data = json.loads(resp.data or b"{}")
                finally:
                    self._done(resp)
                self.version = str((data.get("metadata") or {}).get("resourceVersion") or "")
                for item in data.get("items") or []:
                    yield "ADDED", item
                yield "SYNCED", {}
            while not self._closed:
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    return
                timeout = max(1, int(remaining + 0.999))
                kwargs: dict[str, Any] = {"watch": True, "timeout_seconds": timeout,
                                          "_request_timeout": (self.kube.timeout, timeout + 5)}
                if self.version:
                    kwargs["resource_version"] = self.version
                resp = self._open(**kwargs)
                if resp is None:
                    return
                try:
                    for line in iter_resp_lines(resp):
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":  # e.g. 410 Gone
                            raise KubeError(f"watch {self.kind}", ApiException(
                                status=obj.get("code", 500), reason=obj.get("message", "")))
                        self.version = (obj.get("metadata") or {}).get(
                            "resourceVersion") or self.version
                        yield event["type"], obj
                except (urllib3.exceptions.HTTPError, OSError, ValueError):
                    if self._closed:
                        return  # our own close() shut the socket down
                    raise
                finally:
                    self._done(resp)
                if self.once:
                    return
        except ApiException as exc:
            raise KubeError(f"watch {self.kind}", exc) from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            resp = self._resp
        if resp is not None:
            try:
                resp.shutdown()  # wakes a read blocked in another thread
            except (ValueError, RuntimeError, OSError):
                pass  # already released: nothing is blocked on it


def _end(resp) -> None:
    try:
        resp.close()
    finally:
        resp.release_conn()


def is_subset(wanted: Any, live: Any) -> bool:
    """True if every field in ``wanted`` is present and equal in ``live``.

    Fields the server adds (defaults, status, clusterIP, ...) are ignored; lists must have
    the same length and match element by element.
    """
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(
            k in live and is_subset(v, live[k]) for k, v in wanted.items())
    if isinstance(wanted, list):
        return (isinstance(live, list) and len(wanted) == len(live)
                and all(is_subset(w, v) for w, v in zip(wanted, live, strict=True)))
    return wanted == live
