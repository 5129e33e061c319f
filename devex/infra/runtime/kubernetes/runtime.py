"""``KubernetesRuntime``: a REPL is a Deployment + Service + Ingress + NetworkPolicy + Secret.

Start creates what is missing (converging the Secret, Service, Ingress and NetworkPolicy,
never touching a Deployment that is already there: its pod may hold unsaved files) and
waits, by watching, for the current pod to be Ready, copying the pod's Kubernetes Events
into the REPL's events meanwhile; an evicted pod is reported and its replacement awaited;
on failure it removes only what it created. Stop injects a ``sync-up`` ephemeral container
into the running pod (it quiesces the runner, then saves under the lock the autosave
sidecar takes too) -- or waits for one an earlier stop left running -- waits for it to
exit 0 and only then deletes the objects, returning once the pod is gone (until then
autosave may still upload); any doubt about the files means nothing is deleted.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

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
from devex.infra.runtime.kubernetes.feed import END, ERROR, EventCopier, Feed
from devex.infra.runtime.kubernetes.pods import (
    FATAL_REASONS,
    current_pod,
    diagnose,
    eviction,
    is_live,
    is_ready,
    runner_port,
    save_under_way,
    sync_reason,
    unready_seconds,
)
from devex.models import Repl
from devex.templates_catalog import Template
from devex_shared.access_tokens import CONTROL_SCOPE, repl_key, sign

log = logging.getLogger(__name__)

# Kinds in deletion order: the way in first, the pod, then the key it read.
DELETE_ORDER = ("Ingress", "Service", "NetworkPolicy", "Deployment", "Secret")
MANAGED_KINDS = ("Deployment", "Service", "Ingress", "NetworkPolicy", "Secret")
REUSED = "An earlier runner is still there; reusing it as it is"
REUSED_OLDER = ("An earlier runner is still there; reusing it as it is (it was made from an "
                "older spec: stop it, saving its files, then start again to update it)")
_HANDLE_FIELD = {"Deployment": "deployment", "Service": "service", "Ingress": "ingress",
                 "NetworkPolicy": "network_policy", "Secret": "secret"}

_API_ERRORS = (KubeError, client.ApiException, urllib3.exceptions.HTTPError, TimeoutError,
               ConnectionError)


class KubernetesRuntime(Runtime):
    """Runs each REPL as a pod in ``settings.kubernetes.namespace``.

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
                k = self.settings.kubernetes
                api = self._api_client or load_api_client(k.kubeconfig)
                self._kube = Kube(api, k.namespace, k.request_timeout)
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
                f"after {self.settings.kubernetes.stop_timeout} seconds")
        progress("stop", "Removed the REPL's Kubernetes objects")

    def is_running(self, repl: Repl) -> bool:
        """True while the REPL's current pod is Ready -- or has not been for less than
        ``start_timeout`` seconds: a readiness probe that fails for a while (a busy runner,
        a restart) or a replacement still starting after an eviction is not a dead REPL.
        False when no pod is left, or it stays unready for longer than that."""
        try:
            pods = self.kube.list("Pod", names.selector_string(names.selector_labels(repl.id)))
        except _API_ERRORS as exc:
            raise RuntimeFailure(f"Kubernetes is not reachable: {exc}") from None
        pod = current_pod(pods)
        if pod is None:
            return False
        return unready_seconds(pod, datetime.now(UTC)) < self.settings.start_timeout

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
        """None once the current pod is Ready; otherwise the reason it did not get there in
        time. Lists the REPL's pods, then watches from there; the current pod's Kubernetes
        Events are copied into the REPL's events as they come (see ``feed``)."""
        selector = names.selector_string(names.selector_labels(repl.id))
        timeout = self.settings.start_timeout
        deadline = time.monotonic() + timeout
        listed, version = self.kube.list_pods(selector)
        pods = {p["metadata"]["name"]: p for p in listed}
        followed: set[str] = set()
        evicted: set[str] = set()
        copy_event = EventCopier(progress)
        said: list[str] = []  # the last trouble told, so each is told once

        def look(feed: Feed) -> tuple[bool, str | None]:
            """(done, the reason it failed): done when the current pod is Ready (no
            reason) or in trouble that never heals."""
            pod = current_pod(list(pods.values()))
            if pod is None:
                return False, None
            name = pod["metadata"]["name"]
            if is_ready(pod):
                return True, None
            if name not in followed:  # what Kubernetes says about it, from now on
                followed.add(name)
                feed.follow(name, self.kube.watch(
                    "Event", deadline, list_first=True,
                    field_selector=f"involvedObject.kind=Pod,involvedObject.name={name}"))
            gone = eviction(pod)
            if gone and name not in evicted:  # its own event; the replacement is awaited
                evicted.add(name)
                progress("evicted", f"{gone} Waiting for its replacement.")
                said.append(gone)
                return False, None
            trouble, fatal = diagnose(pod)
            if trouble and trouble != (said[-1] if said else None):
                progress("start", trouble)
                said.append(trouble)
            return bool(trouble and fatal), trouble if fatal else None

        with Feed() as feed:
            done, reason = look(feed)
            if done:
                return reason
            feed.follow("pods", self.kube.watch("Pod", deadline, label_selector=selector,
                                                resource_version=version))
            while (item := feed.get(deadline)) is not None:
                key, type_, obj = item
                if key != "pods":  # the Kubernetes Events of one of the pods
                    if type_ == ERROR:  # e.g. RBAC without events: progress only, go on
                        log.warning("REPL %s: cannot read Kubernetes events: %s", repl.id, obj)
                    elif type_ != END:
                        copy_event(type_, obj)
                    continue
                if type_ == ERROR:
                    raise obj
                if type_ == END:
                    break  # the deadline passed
                if type_ == "DELETED":
                    pods.pop(obj["metadata"]["name"], None)
                else:
                    pods[obj["metadata"]["name"]] = obj
                done, reason = look(feed)
                if done:
                    for key, type_, obj in feed.pending():  # what came with the last change
                        if key != "pods" and type_ not in (END, ERROR):
                            copy_event(type_, obj)
                    return reason
        if said:
            return f"{said[-1]} The REPL was not ready after {timeout} seconds."
        return f"The runner did not become ready within {timeout} seconds."

    # -- stop --------------------------------------------------------------------------
    def _save(self, repl: Repl, progress: Progress) -> None:
        n = names.object_names(repl.id)
        pods = self.kube.list("Pod", names.selector_string(names.selector_labels(repl.id)))
        pod = current_pod(pods)
        if pod is None:
            if self.kube.get("Deployment", n.deployment) is None:
                progress("stop", "No pod is running: there are no unsaved files")
                return
            raise FilesNotSaved("files not saved: the REPL's pod is missing, so its files "
                                "cannot be reached; retry the stop or force-stop it")
        if not is_live(pod):  # evicted, and no replacement yet: its files cannot be reached
            raise FilesNotSaved(f"files not saved: {eviction(pod) or 'the pod has stopped'} "
                                "Retry the stop once its replacement runs, or force-stop it")
        phase = (pod.get("status") or {}).get("phase")
        if phase != "Running":
            raise FilesNotSaved(f"files not saved: the REPL's pod is {phase or 'not running'}; "
                                "retry the stop or force-stop it")
        pod_name = pod["metadata"]["name"]
        earlier = save_under_way(pod)
        if earlier is not None:
            # An earlier stop's save still runs (its job gave up waiting): two at once would
            # only queue on the lock, and each could time out; wait for that one instead.
            progress("stop", f"A save started by an earlier stop ({earlier}) is still "
                             "running; waiting for it instead of starting another")
            exit_code, detail = self._wait_terminated(pod_name, earlier, progress)
            if exit_code == 0:
                progress("stop", "Files saved")
                return
            why = detail or (f"exit code {exit_code}" if exit_code is not None else "")
            if exit_code is None:
                raise FilesNotSaved(f"files not saved: the earlier save ({earlier}): {why}")
            progress("stop", f"The earlier save failed ({why}); saving again")
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
            # The one line sync-up printed (the end of its log, kept by the kubelet).
            reason = detail or f"saving exited with code {exit_code}"
            progress("stop", f"Saving failed: {reason}")
            raise FilesNotSaved(f"files not saved: {reason}")
        progress("stop", "Files saved")

    def _wait_terminated(self, pod_name: str, container: str,
                         progress: Progress) -> tuple[int | None, str]:
        """(exit code, its one-line reason) once ``container`` has ended; (None, why) when
        it cannot end well (the pod went, it cannot be created, the timeout passed)."""
        timeout = self.settings.kubernetes.stop_timeout
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
                if not is_live(pod):
                    return None, f"{eviction(pod) or 'the pod stopped'} (while saving)"
                for cs in (pod.get("status") or {}).get("ephemeralContainerStatuses") or []:
                    if cs.get("name") != container:
                        continue
                    state = cs.get("state") or {}
                    if "terminated" in state:
                        term = state["terminated"] or {}
                        return int(term.get("exitCode", -1)), sync_reason(
                            str(term.get("message") or ""))
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
        """True once no pod of the REPL is left, False after ``stop_timeout``.

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
        deadline = time.monotonic() + self.settings.kubernetes.stop_timeout
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
