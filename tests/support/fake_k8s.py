"""A stateful fake Kubernetes API server, in-process on 127.0.0.1, for the real client.

It speaks the REST protocol the official ``kubernetes`` client uses for the kinds Devex
touches: create / get / list (label and field selectors, limit) / patch (JSON merge and
strategic merge) / delete for Deployments (apps/v1), Services, Secrets, Pods (v1), Ingresses
and NetworkPolicies (networking.k8s.io/v1); list/watch of core/v1 Events; 404 and 409 as
real ``Status`` objects; watches (``?watch=true``, chunked JSON lines, ``timeoutSeconds``);
and the ``pods/{name}/ephemeralcontainers`` subresource. Field selectors are checked like
the API server does: only the fields each resource supports (400 otherwise).

It plays the controllers too: creating a Deployment creates its Pod (labels and spec from the
template) and "kubelet" sets the pod's status at once according to ``pod_mode``
(``set_pod_mode`` changes a running pod's), with the Kubernetes Events a scheduler and
kubelet would record (Scheduled, Pulling, Pulled, Created, Started, BackOff,
FailedScheduling, ...); changing a Deployment's template replaces its pod; deleting a
Deployment deletes its pods. ``evict_pod`` is the kubelet's node-pressure eviction: the pod
stays, ``Failed``/``Evicted``, and its Deployment gets a replacement. An injected ephemeral
container terminates at once with ``sync_exit_code`` (None: it keeps running until
``finish_ephemeral``) -- unless it sets ``targetContainerName`` and that container is not
running: containerd refuses to create it ("invalid target container"), so it stays waiting
with ``CreateContainerError`` and never runs; in a finished pod nothing runs at all. A
container's termination message is kept only with ``terminationMessagePolicy:
FallbackToLogsOnError`` (nothing writes /dev/termination-log here).

With ``kubelet=ProcessKubelet(...)`` (``tests/support/process_kubelet.py``) pods really run
instead: init containers, native sidecars, containers and ephemeral containers become local
processes, pod deletion is graceful (``deletionTimestamp``, SIGTERM, then the pod goes).

Watches honour ``resourceVersion`` (only the changes after it; without it, ADDED for what
exists first). Every request is logged in ``requests`` so tests can count API calls. With
``rbac`` (the rules of a Role, e.g. from ``deploy/rbac.yaml``) every request is authorized
first and refused 403 like the API server does when the Role does not grant it.

Failure knobs: ``fail[(method, resource)] = status`` answers that status (a real ``Status``
body; method "WATCH" targets only watches, "GET" both reads and watches), for
``fail_times[(method, resource)]`` requests if set, else until removed; ``hang`` holds the
matching requests unanswered until the server closes, so the client's timeout fires.

Usage::

    with FakeKube() as kube:
        api_client = kube.api_client()
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from kubernetes import client

# resource plural -> (group/version prefix, kind)
RESOURCES = {
    "deployments": ("/apis/apps/v1", "Deployment", "apps/v1"),
    "services": ("/api/v1", "Service", "v1"),
    "secrets": ("/api/v1", "Secret", "v1"),
    "pods": ("/api/v1", "Pod", "v1"),
    "ingresses": ("/apis/networking.k8s.io/v1", "Ingress", "networking.k8s.io/v1"),
    "networkpolicies": ("/apis/networking.k8s.io/v1", "NetworkPolicy", "networking.k8s.io/v1"),
    "events": ("/api/v1", "Event", "v1"),
}
_GROUPS = {"/api/v1": "", "/apis/apps/v1": "apps",
           "/apis/networking.k8s.io/v1": "networking.k8s.io"}
# The field selectors the API server supports for each resource (anything else: 400).
FIELDS = {
    "pods": {"metadata.name", "metadata.namespace", "spec.nodeName", "spec.restartPolicy",
             "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork",
             "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName"},
    "events": {"metadata.name", "metadata.namespace", "involvedObject.kind",
               "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
               "involvedObject.apiVersion", "involvedObject.resourceVersion",
               "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"},
    "secrets": {"metadata.name", "metadata.namespace", "type"},
}
NODE = "node-1"
_PATH = re.compile(
    r"^(?P<prefix>/api/v1|/apis/apps/v1|/apis/networking\.k8s\.io/v1)"
    r"/namespaces/(?P<ns>[^/]+)/(?P<res>[a-z]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[a-z]+))?$"
)

# What the fake kubelet reports. "pulling": the runner's image is being pulled (a slow, cold
# pull: Pending until ``set_pod_mode(..., "ready")``); "sync-down-fails": the init container
# that loads the files keeps failing with ``sync_down_message`` as its log's last line.
POD_MODES = ("ready", "never-ready", "image-pull", "unschedulable", "crashloop",
             "invalid-image", "pulling", "sync-down-fails")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    content_type: str = ""

    @property
    def verb(self) -> str:
        q = parse_qs(self.query)
        m = _PATH.match(self.path)
        named = bool(m and m.group("name"))
        sub = m.group("sub") if m else None
        if self.method == "GET":
            if q.get("watch", [""])[0].lower() == "true":
                return "watch"
            return "get" if named else "list"
        base = {"POST": "create", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}[
            self.method]
        return f"{base}/{sub}" if sub else base

    @property
    def resource(self) -> str:
        """What the request is about: ``services``, ``pods``..."""
        m = _PATH.match(self.path)
        return m.group("res") if m else self.path


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str, kind: str = "", name: str = "") -> dict:
    return {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "details": {"name": name, "kind": kind},
        "code": code,
    }


def json_merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target, patch):
    """Enough of strategic merge for our kinds: lists of named dicts merge by ``name``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and value and all(
                isinstance(v, dict) and "name" in v for v in value):
            current = list(result.get(key) or [])
            index = {item.get("name"): i for i, item in enumerate(current)}
            for item in value:
                if item["name"] in index:
                    current[index[item["name"]]] = strategic_merge_patch(
                        current[index[item["name"]]], item)
                else:
                    current.append(copy.deepcopy(item))
            result[key] = current
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _match_labels(labels: dict, selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.split("==", 1) if "==" in term else term.split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _field(obj: dict, path: str) -> str:
    value = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def _match_fields(obj: dict, selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if _field(obj, k.strip()) == v.strip():
                return False
            continue
        k, _, v = term.partition("==") if "==" in term else term.partition("=")
        if _field(obj, k.strip()) != v.strip():
            return False
    return True


def _bad_field(resource: str, selector: str) -> str:
    """The first field the API server would refuse in ``selector`` for ``resource``."""
    allowed = FIELDS.get(resource, {"metadata.name", "metadata.namespace"})
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key = re.split(r"!=|==|=", term, maxsplit=1)[0].strip()
        if key not in allowed:
            return key
    return ""


class FakeKube:
    """The fake API server. Knobs: ``pod_mode``, ``sync_exit_code``, ``sync_message``,
    ``sync_down_message``, ``watch_cap`` (longest a watch stays open, seconds), ``rbac``;
    ``kubelet`` runs pods for real."""

    def __init__(self, kubelet=None, rbac: list[dict] | None = None,
                 user: str = "system:serviceaccount:devex:devex-worker"):
        self.kubelet = kubelet
        self.rbac = rbac  # a Role's rules; None: every request is allowed
        self.user = user
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.requests: list[Request] = []
        self.pod_mode = "ready"
        self.sync_exit_code: int | None = 0
        self.sync_message = ""
        self.sync_down_message = ("runner: sync-down failed: S3 list 'alice/' failed: "
                                  "AccessDenied Access Denied")
        self.watch_cap = 30.0
        self.fail: dict[tuple[str, str], int] = {}  # (method, resource) -> status to answer
        self.fail_times: dict[tuple[str, str], int] = {}  # how many more times; absent: all
        self.hang: set[tuple[str, str]] = set()  # (method, resource) left unanswered
        self._released = threading.Event()
        self._rv = itertools.count(1)
        self._last_ns = 0  # the last Event's time (names must stay in order)
        self._events: list[tuple[int, str, str, dict]] = []  # (rv, type, resource, obj)
        self._cond = threading.Condition()
        self._closing = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> FakeKube:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        fake = self
        if self.kubelet is not None:
            self.kubelet.attach(self)

        class Handler(_Handler):
            kube = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self.kubelet is not None:
            self.kubelet.close()
        self._released.set()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def api_client(self) -> client.ApiClient:
        cfg = client.Configuration(host=self.url)
        return client.ApiClient(cfg)

    # -- helpers for tests ---------------------------------------------------------------
    def names(self, resource: str, namespace: str | None = None) -> list[str]:
        with self._cond:
            return sorted(n for (r, ns, n) in self.objects
                          if r == resource and (namespace is None or ns == namespace))

    def get(self, resource: str, namespace: str, name: str) -> dict | None:
        with self._cond:
            obj = self.objects.get((resource, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def put(self, resource: str, namespace: str, obj: dict) -> dict:
        """Create an object directly (as if someone else made it)."""
        with self._cond:
            return self._create(resource, namespace, copy.deepcopy(obj))

    def set_pod_mode(self, namespace: str, name: str, mode: str) -> None:
        """What the kubelet reports for a pod from now on (e.g. its runner starts crashing)."""
        assert mode in POD_MODES, mode
        with self._cond:
            pod = self.objects[("pods", namespace, name)]
            ephemeral = pod["status"].get("ephemeralContainerStatuses")
            saved, self.pod_mode = self.pod_mode, mode
            try:
                self._kubelet(pod, fresh=False)
            finally:
                self.pod_mode = saved
            if ephemeral:
                pod["status"]["ephemeralContainerStatuses"] = ephemeral
            self._emit("MODIFIED", "pods", pod)

    def evict_pod(self, namespace: str, name: str, message: str = "The node was low on "
                  "resource: memory. Threshold quantity: 100Mi, available: 64Mi. ",
                  grace: float | None = None, replace: bool = True) -> None:
        """The kubelet's node-pressure eviction: the containers are stopped (SIGTERM, then
        the grace period; the process kubelet really stops them), the pod stays in the API
        as ``Failed``/``Evicted``, and its Deployment's ReplicaSet makes a replacement
        (``replace=False``: the moment before it does)."""
        with self._cond:
            pod = self.objects[("pods", namespace, name)]
            self._event(namespace, pod, "Warning", "Evicted", message)
            if self.kubelet is not None and self.kubelet.runs(name):
                if grace is None:
                    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
                self.kubelet.pod_evicted(namespace, name, grace, message)
                return
            self._evicted(namespace, name, message, replace)

    def _evicted(self, namespace: str, name: str, message: str, replace: bool = True) -> None:
        """The evicted pod's containers are gone (lock held)."""
        pod = self.objects.get(("pods", namespace, name))
        if pod is None:
            return
        st = pod["status"]

        def dead(cs: dict) -> dict:
            state = cs.get("state") or {}
            if "running" in state or "waiting" in state:
                cs = {**cs, "ready": False, "state": {"terminated": {
                    "exitCode": 137, "reason": "ContainerStatusUnknown",
                    "message": "The container could not be located when the pod was "
                               "terminated"}}}
            return cs

        for field in ("initContainerStatuses", "containerStatuses"):
            if st.get(field):
                st[field] = [dead(cs) for cs in st[field]]
        st.update(phase="Failed", reason="Evicted", message=message)
        self._set_conditions(pod, {"Ready": "False", "ContainersReady": "False",
                                   "DisruptionTarget": "True"})
        self._emit("MODIFIED", "pods", pod)
        owner = next((o["name"] for o in pod["metadata"].get("ownerReferences") or []
                      if o.get("kind") == "Deployment"), None)
        deployment = self.objects.get(("deployments", namespace, owner or ""))
        if deployment is not None and replace:  # the ReplicaSet counts live pods: one more
            self._new_pod(namespace, deployment)

    def finish_ephemeral(self, namespace: str, pod_name: str, container: str, code: int,
                         message: str = "") -> None:
        """An ephemeral container left running (``sync_exit_code = None``) ends now."""
        with self._cond:
            pod = self.objects[("pods", namespace, pod_name)]
            spec = next(c for c in pod["spec"]["ephemeralContainers"] if c["name"] == container)
            for entry in pod["status"].get("ephemeralContainerStatuses") or []:
                if entry["name"] == container:
                    entry["state"] = {"terminated": {
                        "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                        **_kept_message(spec, code, message)}}
            self._emit("MODIFIED", "pods", pod)

    def backdate_ready(self, namespace: str, name: str, seconds: float) -> None:
        """As if the pod's Ready condition had last changed ``seconds`` ago."""
        with self._cond:
            pod = self.objects[("pods", namespace, name)]
            when = datetime.now(UTC) - timedelta(seconds=seconds)
            for cond in pod["status"].get("conditions") or []:
                if cond["type"] == "Ready":
                    cond["lastTransitionTime"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
            self._emit("MODIFIED", "pods", pod)

    def events_of(self, namespace: str, pod: str) -> list[dict]:
        with self._cond:
            return [copy.deepcopy(o) for (r, ns, _), o in sorted(self.objects.items())
                    if r == "events" and ns == namespace
                    and o["involvedObject"]["name"] == pod]

    def count(self, verb: str | None = None) -> int:
        return sum(1 for r in self.requests if verb is None or r.verb == verb)

    def resources(self, verb: str) -> set[str]:
        """The kinds of object requested with ``verb`` since the log was reset."""
        return {r.resource for r in self.requests if r.verb == verb}

    def reset_log(self) -> None:
        self.requests.clear()

    # -- store (call with self._cond held) ------------------------------------------------
    def _emit(self, type_: str, resource: str, obj: dict) -> None:
        rv = next(self._rv)
        obj["metadata"]["resourceVersion"] = str(rv)
        self._events.append((rv, type_, resource, copy.deepcopy(obj)))
        self._cond.notify_all()

    def _create(self, resource: str, namespace: str, obj: dict) -> dict:
        prefix, kind, api_version = RESOURCES[resource]
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise _Error(_status(422, "Invalid", f"{kind}: metadata.name: Required", kind))
        key = (resource, namespace, name)
        if key in self.objects:
            raise _Error(_status(409, "AlreadyExists",
                                 f'{resource} "{name}" already exists', resource, name))
        obj["apiVersion"], obj["kind"] = api_version, kind
        meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now(),
                    generation=1)
        if resource == "services":
            obj.setdefault("spec", {}).setdefault("clusterIP", "10.96.0.10")
        self.objects[key] = obj
        self._emit("ADDED", resource, obj)
        if resource == "deployments":
            self._new_pod(namespace, obj)
        return obj

    def _update(self, resource: str, namespace: str, name: str, new: dict) -> dict:
        key = (resource, namespace, name)
        old = self.objects[key]
        new["metadata"]["name"] = name
        new["metadata"]["uid"] = old["metadata"]["uid"]
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        self.objects[key] = new
        self._emit("MODIFIED", resource, new)
        if resource == "deployments" and \
                new["spec"].get("template") != old["spec"].get("template"):
            self._delete_pods_of(namespace, name)  # Recreate: old pod goes, new pod comes
            self._new_pod(namespace, new)
        return new

    def _delete(self, resource: str, namespace: str, name: str) -> dict:
        key = (resource, namespace, name)
        if key not in self.objects:
            raise _Error(_status(404, "NotFound", f'{resource} "{name}" not found',
                                 resource, name))
        finished = self.objects[key].get("status", {}).get("phase") in ("Failed", "Succeeded")
        if resource == "pods" and self.kubelet is not None and self.kubelet.runs(name) \
                and not finished:  # a finished pod has nothing left to stop: gone at once
            # Graceful: marked now, gone once the kubelet has stopped its processes.
            pod = self.objects[key]
            if not pod["metadata"].get("deletionTimestamp"):
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
                pod["metadata"].update(deletionTimestamp=_now(),
                                       deletionGracePeriodSeconds=grace)
                self._emit("MODIFIED", "pods", pod)
                self.kubelet.pod_deleted(namespace, name, grace)
            return pod
        return self._remove(resource, namespace, name)

    def remove_pod(self, namespace: str, name: str) -> None:
        """The kubelet is done with a pod: it leaves the API (a DELETED event)."""
        with self._cond:
            if ("pods", namespace, name) in self.objects:
                self._remove("pods", namespace, name)

    def _remove(self, resource: str, namespace: str, name: str) -> dict:
        key = (resource, namespace, name)
        obj = self.objects.pop(key)
        self._emit("DELETED", resource, obj)
        if resource == "deployments":
            self._delete_pods_of(namespace, name)
        return obj

    def _delete_pods_of(self, namespace: str, deployment: str) -> None:
        for (res, ns, name), pod in list(self.objects.items()):
            owners = pod["metadata"].get("ownerReferences") or []
            if res == "pods" and ns == namespace and any(
                    o.get("name") == deployment for o in owners):
                self._delete("pods", ns, name)

    def _new_pod(self, namespace: str, deployment: dict) -> None:
        template = deployment["spec"]["template"]
        dname = deployment["metadata"]["name"]
        pod = {
            "metadata": {
                "name": f"{dname}-{uuid.uuid4().hex[:10]}-{uuid.uuid4().hex[:5]}",
                "labels": copy.deepcopy(template["metadata"].get("labels", {})),
                # The real chain is Deployment -> ReplicaSet -> Pod; one hop is enough here.
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": dname, "uid": deployment["metadata"]["uid"],
                                     "controller": True}],
            },
            "spec": copy.deepcopy(template["spec"]),
            "status": {"phase": "Pending"},
        }
        pod = self._create("pods", namespace, pod)
        if self.kubelet is not None:
            self.kubelet.pod_created(namespace, pod)  # statuses follow as processes run
            return
        self._kubelet(pod, fresh=True)
        self._emit("MODIFIED", "pods", pod)

    # -- what a scheduler and a kubelet report (lock held) ----------------------------------
    def _event(self, namespace: str, pod: dict, type_: str, reason: str, message: str,
               container: str = "", source: str = "kubelet") -> None:
        """Record a core/v1 Event about ``pod``; a repeat raises ``count`` (MODIFIED), as the
        kubelet's event aggregation does."""
        name = pod["metadata"]["name"]
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        for (r, ns, _), ev in self.objects.items():
            if r == "events" and ns == namespace and ev["involvedObject"]["name"] == name \
                    and ev["reason"] == reason and ev["message"] == message:
                ev["count"] += 1
                ev["lastTimestamp"] = _now()
                self._emit("MODIFIED", "events", ev)
                return
        involved = {"kind": "Pod", "namespace": namespace, "name": name, "apiVersion": "v1",
                    "uid": pod["metadata"].get("uid", "")}
        if container:
            involved["fieldPath"] = f"spec.containers{{{container}}}"
        self._create("events", namespace, {
            # as the kubelet names them: the time in ns, so a list comes in time order
            "metadata": {"name": f"{name}.{self._last_ns:x}"},
            "involvedObject": involved, "type": type_, "reason": reason, "message": message,
            "source": {"component": source, **({"host": NODE} if source == "kubelet" else {})},
            "firstTimestamp": _now(), "lastTimestamp": _now(), "count": 1,
            "reportingComponent": source, "reportingInstance": NODE if source == "kubelet"
            else ""})

    def _set_conditions(self, pod: dict, wanted: dict[str, str]) -> None:
        """Set condition statuses; ``lastTransitionTime`` moves only when one changes."""
        conditions = {c["type"]: c for c in pod["status"].get("conditions") or []}
        for type_, value in wanted.items():
            cond = conditions.get(type_)
            if cond is None or cond["status"] != value:
                conditions[type_] = {"type": type_, "status": value,
                                     "lastTransitionTime": _now()}
        pod["status"]["conditions"] = list(conditions.values())

    def _started(self, ns: str, pod: dict, c: dict, pulled: str = "") -> None:
        image = c["image"]
        self._event(ns, pod, "Normal", "Pulled", pulled or
                    f'Container image "{image}" already present on machine', c["name"])
        self._event(ns, pod, "Normal", "Created", f"Created container: {c['name']}", c["name"])
        self._event(ns, pod, "Normal", "Started", f"Started container {c['name']}", c["name"])

    def _kubelet(self, pod: dict, fresh: bool) -> None:
        """The pod's status for ``pod_mode``, and the Events that go with it (``fresh``: the
        pod was just made, so it is scheduled and its init containers run first)."""
        spec, mode, ns = pod["spec"], self.pod_mode, pod["metadata"]["namespace"]
        name = pod["metadata"]["name"]
        was_pulling = any((cs.get("state") or {}).get("waiting", {}).get("reason") ==
                          "ContainerCreating"
                          for cs in pod["status"].get("containerStatuses") or [])
        sync_down_fails = mode == "sync-down-fails"
        init = []
        for c in spec.get("initContainers", []):
            entry = {"name": c["name"], "image": c["image"], "ready": False, "restartCount": 0,
                     "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
            if c.get("restartPolicy") == "Always":  # a native sidecar keeps running
                entry.update(ready=True, started=True,
                             state={"running": {"startedAt": _now()}})
            if sync_down_fails and c["name"] == "sync-down":
                entry.update(restartCount=3, state={"waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off 40s restarting failed container={c['name']}"}},
                    lastState={"terminated": {
                        "exitCode": 1, "reason": "Error",
                        **_kept_message(c, 1, self.sync_down_message)}})
            init.append(entry)
            if sync_down_fails and c["name"] == "sync-down":
                init += [{"name": o["name"], "image": o["image"], "ready": False,
                          "restartCount": 0, "state": {"waiting": {
                              "reason": "PodInitializing"}}}
                         for o in spec["initContainers"][len(init):]]
                break

        def containers(state, ready, restarts=0):
            return [{"name": c["name"], "image": c["image"], "ready": ready,
                     "restartCount": restarts, "state": copy.deepcopy(state)}
                    for c in spec.get("containers", [])]

        if fresh and mode == "unschedulable":
            self._event(ns, pod, "Warning", "FailedScheduling",
                        "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 "
                        "nodes are available: 3 No preemption victims found for incoming pod.",
                        source="default-scheduler")
        elif fresh:
            self._event(ns, pod, "Normal", "Scheduled",
                        f"Successfully assigned {ns}/{name} to {NODE}",
                        source="default-scheduler")
            for c in spec.get("initContainers", []):
                self._started(ns, pod, c)
                if sync_down_fails and c["name"] == "sync-down":
                    self._event(ns, pod, "Warning", "BackOff",
                                f"Back-off restarting failed container {c['name']} in pod "
                                f"{name}_{ns}({pod['metadata']['uid']})", c["name"])
                    break
        if mode == "unschedulable":
            pod["status"] = {"phase": "Pending",
                             "conditions": pod["status"].get("conditions") or []}
            self._set_conditions(pod, {"PodScheduled": "False"})
            for cond in pod["status"]["conditions"]:
                if cond["type"] == "PodScheduled":
                    cond.update(reason="Unschedulable",
                                message="0/3 nodes are available: 3 Insufficient memory.")
            return
        runners = spec.get("containers", [])
        if sync_down_fails:
            status = {"phase": "Pending", "initContainerStatuses": init,
                      "containerStatuses": containers(
                          {"waiting": {"reason": "PodInitializing"}}, False)}
            ready, initialized = "False", "False"
        elif mode == "invalid-image":
            status = {"phase": "Pending", "initContainerStatuses": init,
                      "containerStatuses": containers(
                          {"waiting": {"reason": "InvalidImageName",
                                       "message": "couldn't parse image reference"}}, False)}
            for c in runners:
                self._event(ns, pod, "Warning", "InspectFailed", f'Failed to apply default '
                            f'image tag "{c["image"]}": couldn\'t parse image reference',
                            c["name"])
            ready, initialized = "False", "True"
        elif mode == "image-pull":
            status = {"phase": "Pending", "initContainerStatuses": init,
                      "containerStatuses": containers(
                          {"waiting": {"reason": "ImagePullBackOff",
                                       "message": "Back-off pulling image"}}, False)}
            for c in runners:
                self._event(ns, pod, "Normal", "Pulling", f'Pulling image "{c["image"]}"',
                            c["name"])
                self._event(ns, pod, "Warning", "Failed", f'Failed to pull image '
                            f'"{c["image"]}": not found', c["name"])
                self._event(ns, pod, "Warning", "BackOff",
                            f'Back-off pulling image "{c["image"]}"', c["name"])
            ready, initialized = "False", "True"
        elif mode == "pulling":
            status = {"phase": "Pending", "initContainerStatuses": init,
                      "containerStatuses": containers(
                          {"waiting": {"reason": "ContainerCreating"}}, False)}
            for c in runners:
                self._event(ns, pod, "Normal", "Pulling", f'Pulling image "{c["image"]}"',
                            c["name"])
            ready, initialized = "False", "True"
        elif mode == "crashloop":
            status = {"phase": "Running", "initContainerStatuses": init,
                      "containerStatuses": containers(
                          {"waiting": {"reason": "CrashLoopBackOff"}}, False, 4)}
            for c in runners:
                self._event(ns, pod, "Warning", "BackOff", f"Back-off restarting failed "
                            f"container {c['name']} in pod {name}_{ns}", c["name"])
            ready, initialized = "False", "True"
        else:
            ok = mode == "ready"
            status = {"phase": "Running", "initContainerStatuses": init,
                      "containerStatuses": containers({"running": {"startedAt": _now()}}, ok)}
            for c in runners:
                if fresh or was_pulling:
                    self._started(ns, pod, c, f'Successfully pulled image "{c["image"]}" in '
                                  "2m4.5s (2m4.5s including waiting)" if was_pulling else "")
                if not ok:
                    self._event(ns, pod, "Warning", "Unhealthy", "Readiness probe failed: "
                                'Get "http://10.244.0.7:8080/healthz": dial tcp '
                                "10.244.0.7:8080: connect: connection refused", c["name"])
            ready, initialized = ("True" if ok else "False"), "True"
        kept = pod["status"].get("conditions")
        pod["status"] = {**status, "conditions": kept or []}
        self._set_conditions(pod, {"PodScheduled": "True", "Initialized": initialized,
                                   "ContainersReady": ready, "Ready": ready})

    def _ephemeral(self, namespace: str, name: str, body: dict, content_type: str) -> dict:
        key = ("pods", namespace, name)
        if key not in self.objects:
            raise _Error(_status(404, "NotFound", f'pods "{name}" not found', "pods", name))
        pod = self.objects[key]
        merge = json_merge_patch if content_type.startswith("application/merge-patch") \
            else strategic_merge_patch
        before = {c["name"] for c in pod["spec"].get("ephemeralContainers", [])}
        patched = merge({"spec": pod["spec"]}, body)
        after = patched.get("spec", {}).get("ephemeralContainers", [])
        volumes = {v["name"] for v in pod["spec"].get("volumes") or []}
        for i, c in enumerate(after):
            for field in ("resources", "ports", "readinessProbe", "livenessProbe"):
                if field in c:
                    raise _Error(_status(422, "Invalid",
                                         f"ephemeralContainers.{field}: Forbidden", "Pod", name))
            for j, mount in enumerate(c.get("volumeMounts") or []):
                if mount.get("name") not in volumes:
                    raise _Error(_status(
                        422, "Invalid", f'Pod "{name}" is invalid: spec.ephemeralContainers'
                        f'[{i}].volumeMounts[{j}].name: Not found: "{mount.get("name")}"',
                        "Pod", name))
        pod["spec"]["ephemeralContainers"] = after
        if pod["status"].get("phase") in ("Failed", "Succeeded"):
            # The API takes it, but no kubelet starts anything in a finished pod.
            self._emit("MODIFIED", "pods", pod)
            return pod
        statuses = pod["status"].setdefault("ephemeralContainerStatuses", [])
        for c in after:
            if c["name"] in before:
                continue
            entry = {"name": c["name"], "image": c["image"], "ready": False,
                     "restartCount": 0, "state": {"running": {"startedAt": _now()}}}
            statuses.append(entry)
            refused = _target_refusal(pod, c)
            if refused:  # containerd will not create it (a kubelet retries; here it stays so)
                entry["state"] = {"waiting": {"reason": "CreateContainerError",
                                              "message": refused}}
                self._emit("MODIFIED", "pods", pod)
                continue
            if self.kubelet is not None:
                self.kubelet.ephemeral_added(namespace, name, c)
                continue
            self._emit("MODIFIED", "pods", pod)
            if self.sync_exit_code is not None:
                code = self.sync_exit_code
                entry["state"] = {"terminated": {
                    "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                    **_kept_message(c, code, self.sync_message)}}
                self._emit("MODIFIED", "pods", pod)
        return pod

    # -- dispatch ----------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict, body, content_type: str):
        """(status, json) for plain requests; ("watch", args) for watches."""
        m = _PATH.match(path)
        if not m or m.group("res") not in RESOURCES or \
                RESOURCES[m.group("res")][0] != m.group("prefix"):
            return 404, _status(404, "NotFound", f"the server could not find {path}")
        res, ns, name, sub = m.group("res"), m.group("ns"), m.group("name"), m.group("sub")
        q = {k: v[0] for k, v in query.items()}
        watching = method == "GET" and name is None and q.get("watch", "").lower() == "true"
        refused = self._authorize(method, m.group("prefix"), res, ns, name, sub, watching)
        if refused:
            return 403, refused
        if method == "GET" and name is None:
            bad = _bad_field(res, q.get("fieldSelector", ""))
            if bad:
                return 400, _status(400, "BadRequest",
                                    f'field label not supported: {bad}', RESOURCES[res][1])
        keys = [("WATCH", res)] if watching else []
        keys.append((method, res))
        if any(k in self.hang for k in keys):
            self._released.wait()
            return 503, _status(503, "ServiceUnavailable", "the server is shutting down")
        with self._cond:
            key = next((k for k in keys if k in self.fail), None)
            if key is not None:
                code = self.fail[key]
                if key in self.fail_times:
                    self.fail_times[key] -= 1
                    if self.fail_times[key] <= 0:
                        del self.fail[key], self.fail_times[key]
                reason = {429: "TooManyRequests", 403: "Forbidden", 422: "Invalid"}.get(
                    code, "InternalError")
                return code, _status(code, reason, "injected failure")
        with self._cond:
            try:
                if method == "GET" and name is None:
                    if q.get("watch", "").lower() == "true":
                        return "watch", (res, ns, q)
                    items = [copy.deepcopy(o) for (r, n_, _), o in sorted(self.objects.items())
                             if r == res and n_ == ns
                             and _match_labels(o["metadata"].get("labels") or {},
                                               q.get("labelSelector", ""))
                             and _match_fields(o, q.get("fieldSelector", ""))]
                    if q.get("limit"):
                        items = items[: int(q["limit"])]
                    kind = RESOURCES[res][1]
                    return 200, {"kind": f"{kind}List", "apiVersion": RESOURCES[res][2],
                                 "metadata": {"resourceVersion": str(next(self._rv))},
                                 "items": items}
                if method == "POST" and name is None:
                    return 201, copy.deepcopy(self._create(res, ns, body))
                if name is None:
                    return 405, _status(405, "MethodNotAllowed", "method not allowed")
                if sub == "ephemeralcontainers" and res == "pods":
                    if method == "PATCH":
                        return 200, copy.deepcopy(self._ephemeral(ns, name, body, content_type))
                    if method != "GET":
                        return 405, _status(405, "MethodNotAllowed", "method not allowed")
                elif sub:
                    return 404, _status(404, "NotFound", f"no subresource {sub}")
                key = (res, ns, name)
                if method == "DELETE":
                    self._delete(res, ns, name)
                    return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                 "status": "Success",
                                 "details": {"name": name, "kind": res}}
                if key not in self.objects:
                    return 404, _status(404, "NotFound", f'{res} "{name}" not found', res, name)
                if method == "GET":
                    return 200, copy.deepcopy(self.objects[key])
                if method == "PATCH":
                    if "json-patch" in content_type:
                        return 415, _status(415, "UnsupportedMediaType", "json-patch unused")
                    merge = json_merge_patch if content_type.startswith("application/merge-patch") \
                        else strategic_merge_patch
                    new = merge(self.objects[key], body)
                    return 200, copy.deepcopy(self._update(res, ns, name, new))
                return 405, _status(405, "MethodNotAllowed", "method not allowed")
            except _Error as err:
                return err.status["code"], err.status

    def _authorize(self, method: str, prefix: str, res: str, ns: str, name: str | None,
                   sub: str | None, watching: bool) -> dict | None:
        """None when ``rbac`` allows the request, else the API server's 403 ``Status``."""
        if self.rbac is None:
            return None
        if method == "GET":
            verb = "watch" if watching else ("get" if name else "list")
        else:
            verb = {"POST": "create", "PATCH": "patch", "DELETE": "delete",
                    "PUT": "update"}[method]
        group, resource = _GROUPS[prefix], f"{res}/{sub}" if sub else res
        for rule in self.rbac:
            if group in rule.get("apiGroups", []) and resource in rule.get("resources", []) \
                    and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", [])):
                names_ = rule.get("resourceNames")
                if not names_ or name in names_:
                    return None
        what = f'{res} "{name}"' if name else res
        return _status(403, "Forbidden", f'{what} is forbidden: User "{self.user}" cannot '
                       f'{verb} resource "{resource}" in API group "{group}" in the namespace '
                       f'"{ns}"', RESOURCES[res][1], name or "")

    def watch(self, res: str, ns: str, q: dict, write) -> None:
        """Stream events until the timeout: with ``resourceVersion``, the changes after it;
        without, ADDED for what exists now, then the changes."""
        timeout = min(float(q.get("timeoutSeconds") or self.watch_cap), self.watch_cap)
        deadline = time.monotonic() + timeout

        def wanted(obj):
            return (obj["metadata"].get("namespace") == ns
                    and _match_labels(obj["metadata"].get("labels") or {},
                                      q.get("labelSelector", ""))
                    and _match_fields(obj, q.get("fieldSelector", "")))

        with self._cond:
            since = q.get("resourceVersion", "")
            if since not in ("", "0"):
                start_rv, initial = int(since), []
            else:
                start_rv = self._events[-1][0] if self._events else 0
                initial = [copy.deepcopy(o) for (r, _, _), o in sorted(self.objects.items())
                           if r == res and wanted(o)]
        for obj in initial:
            write({"type": "ADDED", "object": obj})
        seen = start_rv
        while True:
            with self._cond:
                pending = [e for e in self._events if e[0] > seen]
                while not pending and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self._cond.wait(left)
                    pending = [e for e in self._events if e[0] > seen]
                if self._closing:
                    return
            for rv, type_, r, obj in pending:
                seen = rv
                if r == res and wanted(obj):
                    write({"type": type_, "object": obj})
            if time.monotonic() >= deadline:
                return


def _kept_message(container: dict, code: int, log_tail: str) -> dict:
    """The termination message the kubelet keeps: the end of the log, for a failed run of a
    container with ``FallbackToLogsOnError``; nothing otherwise (no process here writes
    /dev/termination-log)."""
    if code == 0 or not log_tail or \
            container.get("terminationMessagePolicy") != "FallbackToLogsOnError":
        return {}
    return {"message": log_tail}


def _target_refusal(pod: dict, container: dict) -> str:
    """containerd's refusal when an ephemeral container's target is not running, or ""."""
    target = container.get("targetContainerName")
    if not target:
        return ""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == target and "running" in (cs.get("state") or {}):
            return ""
    return (f'failed to generate container "{uuid.uuid4().hex}" spec: invalid target '
            f'container: container "{uuid.uuid4().hex}" is not running - in state '
            "CONTAINER_EXITED")


class _Error(Exception):
    def __init__(self, status: dict):
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    kube: FakeKube
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = -1  # headers and body leave in one write; watches flush per event

    def log_message(self, format, *args):  # noqa: A002 - quiet test output
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):  # the client hung up (ended a watch)
            self.close_connection = True

    def finish(self) -> None:
        try:
            super().finish()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        content_type = self.headers.get("Content-Type", "")
        self.kube.requests.append(Request(self.command, parts.path, parts.query, content_type))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send(400, _status(400, "BadRequest", "body is not JSON"))
            return
        status, payload = self.kube.handle(self.command, parts.path, parse_qs(parts.query),
                                           body, content_type)
        if status == "watch":
            self._stream(*payload)
        else:
            self._send(status, payload)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _dispatch

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _stream(self, res: str, ns: str, q: dict) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()  # the API server answers a watch at once, events follow

        def write(event: dict) -> None:
            line = json.dumps(event).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()

        self.kube.watch(res, ns, q, write)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
