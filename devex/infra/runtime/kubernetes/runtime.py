"""``KubernetesRuntime``: a REPL is a Deployment + Service + Ingress + NetworkPolicy + Secret.

Start creates (or converges) the objects and waits, by watching, for the pod to be Ready.
Stop injects a ``sync-up`` ephemeral container into the running pod, waits for it to exit 0
and only then deletes the objects; any doubt about the files means nothing is deleted.
"""

from __future__ import annotations

import logging
import threading
import time

import urllib3
from kubernetes import client

from devex.config import Settings
from devex.errors import FilesNotSaved, RuntimeFailure
from devex.infra.runtime.base import ManagedObject, Progress, Runtime, StartResult
from devex.infra.runtime.kubernetes import manifests, names
from devex.infra.runtime.kubernetes.client import Kube, KubeError, load_api_client
from devex.models import Repl
from devex.templates_catalog import Template
from devex.tokens import repl_key

log = logging.getLogger(__name__)

# Kinds in deletion order: the way in first, the pod, then the key it read.
DELETE_ORDER = ("Ingress", "Service", "NetworkPolicy", "Deployment", "Secret")
MANAGED_KINDS = ("Deployment", "Service", "Ingress", "NetworkPolicy", "Secret")
_HANDLE_FIELD = {"Deployment": "deployment", "Service": "service", "Ingress": "ingress",
                 "NetworkPolicy": "network_policy", "Secret": "secret"}

# Waiting reasons that never fix themselves: fail at once instead of at the timeout.
FATAL_REASONS = frozenset({"InvalidImageName", "ErrImageNeverPull",
                           "CreateContainerConfigError", "CreateContainerError"})
_API_ERRORS = (KubeError, client.ApiException, urllib3.exceptions.HTTPError)


def explain_pod(pod: dict) -> str | None:
    """The pod's current trouble in words for people, or None when nothing is wrong yet."""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" \
                and cond.get("reason") == "Unschedulable":
            return ("No node has room for this REPL right now (not enough CPU or memory "
                    "in the cluster).")
    statuses = (status.get("initContainerStatuses") or []) + \
        (status.get("containerStatuses") or [])
    for cs in statuses:
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason", "")
        image = cs.get("image", "")
        which = "The file sync" if cs.get("name") == names.SYNC_DOWN_CONTAINER else "The runner"
        if reason in ("ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull"):
            return f"The image {image} could not be pulled."
        if reason == "InvalidImageName":
            return f"The image name {image} is not valid."
        if reason == "CrashLoopBackOff":
            return f"{which} keeps crashing."
        if reason in ("CreateContainerConfigError", "CreateContainerError"):
            return f"{which} could not be created: {waiting.get('message', reason)}"
        term = state.get("terminated") or {}
        if cs.get("name") == names.SYNC_DOWN_CONTAINER and term.get("exitCode", 0) != 0:
            return "Loading the REPL's files from storage failed."
    if status.get("phase") == "Failed":
        return f"The pod failed: {status.get('reason') or status.get('message') or 'unknown'}."
    return None


def _fatal(pod: dict) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        return True
    for cs in (status.get("initContainerStatuses") or []) + \
            (status.get("containerStatuses") or []):
        if ((cs.get("state") or {}).get("waiting") or {}).get("reason") in FATAL_REASONS:
            return True
    return False


def is_ready(pod: dict) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


class KubernetesRuntime(Runtime):
    """Runs each REPL as a pod in ``settings.k8s_namespace``.

    ``api_client`` is a ready ``kubernetes.client.ApiClient`` (tests point one at a fake
    server); without it the configuration is loaded once, on first use.
    """

    def __init__(self, settings: Settings, api_client: client.ApiClient | None = None):
        self.settings = settings
        self._api_client = api_client
        self._kube: Kube | None = None
        self._lock = threading.Lock()

    @property
    def kube(self) -> Kube:
        with self._lock:
            if self._kube is None:
                api = self._api_client or load_api_client(self.settings.kubeconfig)
                self._kube = Kube(api, self.settings.k8s_namespace,
                                  self.settings.k8s_request_timeout)
            return self._kube

    # -- interface ---------------------------------------------------------------------
    def check(self) -> None:
        try:
            self.kube.list("Deployment", names.MANAGED_SELECTOR, limit=1)
        except _API_ERRORS as exc:
            raise RuntimeFailure(f"Kubernetes is not reachable: {exc}") from None

    def objects(self, repl: Repl, template: Template) -> list[dict]:
        if not self.settings.secret_key:
            raise RuntimeFailure("DEVEX_SECRET_KEY is not set; runners cannot get their key")
        key = repl_key(self.settings.secret_key, repl.id)
        try:
            return manifests.all_objects(repl, template, self.settings, key)
        except ValueError as exc:  # a name or label that Kubernetes would refuse
            raise RuntimeFailure(f"Cannot describe this REPL to Kubernetes: {exc}") from None

    def start(self, repl: Repl, template: Template, progress: Progress) -> StartResult:
        objects = self.objects(repl, template)
        n = names.object_names(repl.id)
        progress("start", "Creating the REPL's pod, service and network rules")
        try:
            for obj in objects:
                outcome = self.kube.ensure(obj)
                if outcome == "patched":
                    progress("start", f"Updated the existing {obj['kind']} to the current spec")
            progress("start", "Waiting for the runner to become ready")
            reason = self._wait_ready(repl, progress)
        except _API_ERRORS as exc:
            reason = f"Kubernetes refused to start the REPL: {exc}"
        if reason is not None:
            progress("start", f"Start failed: {reason} Cleaning up.")
            try:
                self._delete_all(repl, progress)
            except _API_ERRORS as exc:
                reason = f"{reason} (cleaning up also failed: {exc})"
            raise RuntimeFailure(reason)
        url = self.settings.repl_url_template.format(repl_id=repl.id)
        progress("start", "The runner is ready")
        return StartResult(url=url, handle=n.as_handle())

    def stop(self, repl: Repl, progress: Progress, *, save: bool = True) -> None:
        try:
            names.object_names(repl.id)
        except ValueError as exc:
            raise RuntimeFailure(f"Cannot describe this REPL to Kubernetes: {exc}") from None
        if save:
            try:
                self._save(repl, progress)
            except _API_ERRORS as exc:
                raise FilesNotSaved(f"files not saved: {exc}") from None
        else:
            progress("stop", "Force stop: the workspace is deleted WITHOUT saving its files")
        try:
            self._delete_all(repl, progress)
        except _API_ERRORS as exc:
            saved = "Files are saved, but r" if save else "R"
            raise RuntimeFailure(f"{saved}emoving the REPL failed: {exc}") from None
        progress("stop", "Removed the REPL's Kubernetes objects")

    def is_running(self, repl: Repl) -> bool:
        try:
            pods = self.kube.list("Pod", names.selector_string(names.selector_labels(repl.id)))
        except _API_ERRORS as exc:
            raise RuntimeFailure(f"Kubernetes is not reachable: {exc}") from None
        return any(is_ready(p) for p in pods)

    def list_managed(self) -> list[ManagedObject]:
        found = []
        try:
            for kind in MANAGED_KINDS:
                for obj in self.kube.list(kind, names.MANAGED_SELECTOR):
                    meta = obj.get("metadata") or {}
                    repl_id = (meta.get("labels") or {}).get(names.REPL_ID, "")
                    found.append(ManagedObject(repl_id=repl_id, kind=kind, name=meta["name"]))
        except _API_ERRORS as exc:
            raise RuntimeFailure(f"Kubernetes is not reachable: {exc}") from None
        return found

    # -- start -------------------------------------------------------------------------
    def _wait_ready(self, repl: Repl, progress: Progress) -> str | None:
        """None once a pod is Ready; otherwise the reason it did not get there in time."""
        selector = names.selector_string(names.selector_labels(repl.id))
        timeout = self.settings.start_timeout
        deadline = time.monotonic() + timeout
        last_said: str | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for _type, pod in self.kube.watch_pods(int(remaining + 0.999),
                                                   label_selector=selector):
                if _type == "DELETED":
                    continue
                if is_ready(pod):
                    return None
                trouble = explain_pod(pod)
                if trouble and trouble != last_said:
                    progress("start", trouble)
                    last_said = trouble
                if trouble and _fatal(pod):
                    return trouble
                if time.monotonic() >= deadline:
                    break
        if last_said:
            return f"{last_said} The REPL was not ready after {timeout} seconds."
        return f"The runner did not become ready within {timeout} seconds."

    # -- stop --------------------------------------------------------------------------
    def _running_pod(self, repl: Repl) -> dict | None:
        pods = self.kube.list("Pod", names.selector_string(names.selector_labels(repl.id)))
        live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
        live.sort(key=lambda p: (p.get("metadata") or {}).get("creationTimestamp", ""))
        return live[-1] if live else None

    def _save(self, repl: Repl, progress: Progress) -> None:
        n = names.object_names(repl.id)
        pod = self._running_pod(repl)
        if pod is None:
            if self.kube.get("Deployment", n.deployment) is None:
                progress("stop", "No pod is running: there are no unsaved files")
                return
            raise FilesNotSaved("files not saved: the REPL's pod is missing, so its files "
                                "cannot be reached; retry the stop or force-stop it")
        phase = (pod.get("status") or {}).get("phase")
        if phase != "Running":
            raise FilesNotSaved(f"files not saved: the REPL's pod is {phase or 'not running'}; "
                                "retry the stop or force-stop it")
        pod_name = pod["metadata"]["name"]
        existing = {c["name"] for c in (pod.get("spec") or {}).get("ephemeralContainers") or []}
        index = len(existing) + 1
        while f"{names.SYNC_UP_PREFIX}-{index}" in existing:
            index += 1
        container_name = f"{names.SYNC_UP_PREFIX}-{index}"
        progress("stop", "Saving files to storage")
        self.kube.patch_ephemeral_containers(
            pod_name, [manifests.sync_up_container(repl, self.settings, container_name)])
        exit_code, detail = self._wait_terminated(pod_name, container_name, progress)
        if exit_code is None:
            raise FilesNotSaved(f"files not saved: {detail}")
        if exit_code != 0:
            raise FilesNotSaved(f"files not saved: saving exited with code {exit_code}"
                                + (f" ({detail})" if detail else ""))
        progress("stop", "Files saved")

    def _wait_terminated(self, pod_name: str, container: str,
                         progress: Progress) -> tuple[int | None, str]:
        timeout = self.settings.k8s_stop_timeout
        deadline = time.monotonic() + timeout
        said = ""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for _type, pod in self.kube.watch_pods(int(remaining + 0.999),
                                                   field_selector=f"metadata.name={pod_name}"):
                if _type == "DELETED":
                    return None, "the pod disappeared while saving"
                for cs in (pod.get("status") or {}).get("ephemeralContainerStatuses") or []:
                    if cs.get("name") != container:
                        continue
                    state = cs.get("state") or {}
                    if "terminated" in state:
                        term = state["terminated"] or {}
                        detail = term.get("message") or term.get("reason") or ""
                        return int(term.get("exitCode", -1)), str(detail).strip()
                    reason = (state.get("waiting") or {}).get("reason", "")
                    if reason in ("ImagePullBackOff", "ErrImagePull") and not said:
                        said = f"the sync image {cs.get('image', '')} could not be pulled"
                        progress("stop", f"Saving is stuck: {said}")
                if time.monotonic() >= deadline:
                    break
        why = f"saving did not finish within {timeout} seconds"
        return None, f"{why} ({said})" if said else why

    def _delete_all(self, repl: Repl, progress: Progress) -> None:
        handle = repl.runtime or {}
        default = names.object_names(repl.id).as_handle()
        for kind in DELETE_ORDER:
            field = _HANDLE_FIELD[kind]
            name = handle.get(field) or default[field]
            self.kube.delete(kind, name)
