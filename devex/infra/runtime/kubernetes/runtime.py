"""``KubernetesRuntime``: a REPL is a Deployment + Service + Ingress + NetworkPolicy + Secret.

Start creates what is missing (converging the Secret, Service, Ingress and NetworkPolicy,
never touching a Deployment that is already there: its pod may hold unsaved files) and
waits, by watching, for the pod to be Ready; on failure it removes only what it created.
Stop injects a ``sync-up`` ephemeral container into the running pod (it quiesces the runner,
then saves under the lock the autosave sidecar takes too), waits for it to exit 0 and only
then deletes the objects, returning once the pod is gone (until then autosave may still
upload); any doubt about the files means nothing is deleted.
"""

from __future__ import annotations

import logging
import threading
import time

import urllib3
from kubernetes import client

from devex.config import Settings
from devex.errors import FilesNotSaved, RuntimeFailure, RuntimeUnavailable
from devex.infra.runtime.base import ManagedObject, Progress, Runtime, StartResult
from devex.infra.runtime.kubernetes import manifests, names
from devex.infra.runtime.kubernetes.client import (
    Kube,
    KubeError,
    is_transient,
    load_api_client,
)
from devex.models import Repl
from devex.templates_catalog import Template
from devex.tokens import CONTROL_SCOPE, repl_key, sign

log = logging.getLogger(__name__)

# Kinds in deletion order: the way in first, the pod, then the key it read.
DELETE_ORDER = ("Ingress", "Service", "NetworkPolicy", "Deployment", "Secret")
MANAGED_KINDS = ("Deployment", "Service", "Ingress", "NetworkPolicy", "Secret")
REUSED = "An earlier runner is still there; reusing it as it is"
REUSED_OLDER = ("An earlier runner is still there; reusing it as it is (it was made from an "
                "older spec: stop it, saving its files, then start again to update it)")
_HANDLE_FIELD = {"Deployment": "deployment", "Service": "service", "Ingress": "ingress",
                 "NetworkPolicy": "network_policy", "Secret": "secret"}

# Why a container waits -> (words for people, fatal). Fatal reasons never fix themselves:
# start fails at once instead of at the timeout. ``{image}``, ``{which}`` ("The runner" or
# "The file sync") and ``{message}`` (the kubelet's own words) are filled in.
WAITING_REASONS: dict[str, tuple[str, bool]] = {
    "ImagePullBackOff": ("The image {image} could not be pulled.", False),
    "ErrImagePull": ("The image {image} could not be pulled.", False),
    "ErrImageNeverPull": ("The image {image} could not be pulled.", True),
    "InvalidImageName": ("The image name {image} is not valid.", True),
    "CrashLoopBackOff": ("{which} keeps crashing.", False),
    "CreateContainerConfigError": ("{which} could not be created: {message}", True),
    "CreateContainerError": ("{which} could not be created: {message}", True),
}
FATAL_REASONS = frozenset(r for r, (_, fatal) in WAITING_REASONS.items() if fatal)
_WHICH = {names.SYNC_DOWN_CONTAINER: "The file sync", names.AUTOSAVE_CONTAINER: "Autosave"}
_API_ERRORS = (KubeError, client.ApiException, urllib3.exceptions.HTTPError, TimeoutError,
               ConnectionError)


def diagnose(pod: dict) -> tuple[str | None, bool]:
    """(the pod's current trouble in words for people or None, whether it is fatal).

    One pass over ``WAITING_REASONS``: the words are those of the first trouble found; the
    pod is fatal when it failed or any container waits for a fatal reason.
    """
    status = pod.get("status") or {}
    said: str | None = None
    fatal = status.get("phase") == "Failed"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" \
                and cond.get("reason") == "Unschedulable":
            said = ("No node has room for this REPL right now (not enough CPU or memory "
                    "in the cluster).")
    statuses = (status.get("initContainerStatuses") or []) + \
        (status.get("containerStatuses") or [])
    for cs in statuses:
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason", "")
        which = _WHICH.get(cs.get("name", ""), "The runner")
        words = None
        if reason in WAITING_REASONS:
            template, is_fatal = WAITING_REASONS[reason]
            fatal = fatal or is_fatal
            words = template.format(image=cs.get("image", ""), which=which,
                                    message=waiting.get("message") or reason)
        term = state.get("terminated") or {}
        if words is None and cs.get("name") == names.SYNC_DOWN_CONTAINER \
                and term.get("exitCode", 0) != 0:
            words = "Loading the REPL's files from storage failed."
        said = said or words
    if said is None and status.get("phase") == "Failed":
        said = f"The pod failed: {status.get('reason') or status.get('message') or 'unknown'}."
    return said, fatal and said is not None


def explain_pod(pod: dict) -> str | None:
    """The pod's current trouble in words for people, or None when nothing is wrong yet."""
    return diagnose(pod)[0]


def runner_port(pod: dict) -> int:
    """The port the pod's runner listens on, as the pod runs it (it may predate a template
    change); the template default when the pod does not say."""
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == names.RUNNER_CONTAINER:
            for port in c.get("ports") or []:
                if port.get("name") == "http" and port.get("containerPort"):
                    return int(port["containerPort"])
    return Template.port  # the dataclass default


def last_line(text: str, limit: int = 300) -> str:
    """The last non-empty line of a termination message (the end of the log, on failure)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""


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
        manifests.check_settings(settings)  # ConfigError at start-up, not at each start
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
        """Create what is missing and wait for a Ready pod.

        A Deployment that already exists is never patched: its pod's emptyDir may hold the
        only copy of files an earlier stop could not save, and a changed template would
        replace that pod. On failure only the objects this call created are deleted.
        Transient API trouble raises ``RuntimeUnavailable`` and removes nothing (the job is
        retried; start is idempotent).
        """
        objects = self.objects(repl, template)
        n = names.object_names(repl.id)
        created: list[tuple[str, str]] = []
        progress("start", "Creating the REPL's pod, service and network rules")
        try:
            for obj in objects:
                kind = obj["kind"]
                outcome = self.kube.ensure(obj, patch=kind != "Deployment")
                if outcome == "created":
                    created.append((kind, obj["metadata"]["name"]))
                elif outcome == "patched":
                    progress("start", f"Updated the existing {kind} to the current spec")
                elif kind == "Deployment":
                    progress("start", REUSED if outcome == "unchanged" else REUSED_OLDER)
            progress("start", "Waiting for the runner to become ready")
            reason = self._wait_ready(repl, progress)
        except _API_ERRORS as exc:
            if is_transient(exc):
                progress("start", f"The Kubernetes API is unavailable; retrying later: {exc}")
                raise RuntimeUnavailable(f"the Kubernetes API is unavailable: {exc}") from None
            reason = f"Kubernetes refused to start the REPL: {exc}"
        if reason is not None:
            if not created:
                cleanup = "Nothing was removed: every object was there before this start."
            elif len(created) < len(objects):
                cleanup = "Removing what this start created; the earlier objects are kept."
            else:
                cleanup = "Cleaning up."
            progress("start", f"Start failed: {reason} {cleanup}")
            try:
                self._delete(sorted(created, key=lambda kn: DELETE_ORDER.index(kn[0])))
            except _API_ERRORS as exc:
                reason = f"{reason} (cleaning up also failed: {exc})"
            raise RuntimeFailure(reason)
        url = self.settings.repl_url_template.format(repl_id=repl.id)
        progress("start", "The runner is ready")
        return StartResult(url=url, handle=n.as_handle())

    def stop(self, repl: Repl, progress: Progress, *, save: bool = True) -> None:
        """Save, then delete. Nothing is deleted unless saving succeeded (or ``save`` is
        False). Transient API trouble raises ``RuntimeUnavailable`` (the job is retried:
        a fresh sync-up runs again); a failed or impossible save raises ``FilesNotSaved``.
        """
        try:
            names.object_names(repl.id)
        except ValueError as exc:
            raise RuntimeFailure(f"Cannot describe this REPL to Kubernetes: {exc}") from None
        if save:
            try:
                self._save(repl, progress)
            except _API_ERRORS as exc:
                if is_transient(exc):
                    progress("stop", f"The Kubernetes API is unavailable; nothing was "
                                     f"removed, retrying later: {exc}")
                    raise RuntimeUnavailable(
                        f"files not saved yet (nothing was removed): the Kubernetes API is "
                        f"unavailable: {exc}") from None
                raise FilesNotSaved(f"files not saved: {exc}") from None
        else:
            progress("stop", "Force stop: the workspace is deleted WITHOUT saving its files")
        saved = "Files are saved, but r" if save else "R"
        try:
            self._delete_all(repl, progress)
            gone = self._wait_pods_gone(repl, progress)
        except _API_ERRORS as exc:
            if is_transient(exc):
                raise RuntimeUnavailable(
                    f"{saved}emoving the REPL failed: the Kubernetes API is unavailable: "
                    f"{exc}") from None
            raise RuntimeFailure(f"{saved}emoving the REPL failed: {exc}") from None
        if not gone:
            raise RuntimeUnavailable(
                f"{saved}emoving the REPL is not finished: its pod is still shutting down "
                f"after {self.settings.k8s_stop_timeout} seconds")
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
                trouble, fatal = diagnose(pod)
                if trouble and trouble != last_said:
                    progress("start", trouble)
                    last_said = trouble
                if trouble and fatal:
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
        if not self.settings.secret_key:
            raise FilesNotSaved("files not saved: DEVEX_SECRET_KEY is not set, so the runner "
                                "cannot be told to stop edits")
        token = sign(repl_key(self.settings.secret_key, repl.id), repl.id, CONTROL_SCOPE)
        volumes = [v.get("name") for v in (pod.get("spec") or {}).get("volumes") or []]
        sync_up = manifests.sync_up_container(repl, self.settings, container_name, token,
                                              runner_port(pod), volumes)
        progress("stop", "Saving files to storage")
        self.kube.patch_ephemeral_containers(pod_name, [sync_up])
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
                        return int(term.get("exitCode", -1)), last_line(str(detail))
                    waiting = state.get("waiting") or {}
                    reason = waiting.get("reason", "")
                    if reason in FATAL_REASONS:  # e.g. the S3 Secret is missing
                        return None, (f"saving could not start: {reason}: "
                                      f"{waiting.get('message') or ''}".rstrip(": "))
                    if reason in ("ImagePullBackOff", "ErrImagePull") and not said:
                        said = f"the sync image {cs.get('image', '')} could not be pulled"
                        progress("stop", f"Saving is stuck: {said}")
                if time.monotonic() >= deadline:
                    break
        why = f"saving did not finish within {timeout} seconds"
        return None, f"{why} ({said})" if said else why

    def _wait_pods_gone(self, repl: Repl, progress: Progress) -> bool:
        """True once no pod of the REPL is left, False after ``k8s_stop_timeout``.

        Until its pod is gone, the autosave companion may still upload (on SIGTERM it saves
        what changed since its last save): a delete that removes the files next must not
        race it, and a stop is not over before nothing can write to storage any more.
        """
        selector = names.selector_string(names.selector_labels(repl.id))
        pods, version = self.kube.list_pods(selector)
        left = {p["metadata"]["name"] for p in pods}
        if not left:
            return True
        progress("stop", "Waiting for the REPL's pod to shut down")
        deadline = time.monotonic() + self.settings.k8s_stop_timeout
        while left:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for type_, pod in self.kube.watch_pods(int(remaining + 0.999),
                                                   label_selector=selector,
                                                   resource_version=version):
                meta = pod.get("metadata") or {}
                version = meta.get("resourceVersion") or version
                if type_ == "DELETED":
                    left.discard(meta.get("name"))
                else:  # a replacement made before the ReplicaSet went away counts too
                    left.add(meta.get("name"))
                if not left or time.monotonic() >= deadline:
                    break
        return True

    def _delete_all(self, repl: Repl, progress: Progress) -> None:
        handle = repl.runtime or {}
        default = names.object_names(repl.id).as_handle()
        self._delete([(kind, handle.get(_HANDLE_FIELD[kind]) or default[_HANDLE_FIELD[kind]])
                      for kind in DELETE_ORDER])

    def _delete(self, objects: list[tuple[str, str]]) -> None:
        for kind, name in objects:
            self.kube.delete(kind, name)
