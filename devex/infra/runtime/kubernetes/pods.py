"""Reading pods as the API reports them: which one is current, what is wrong, in words.

Pure functions on pod dicts (the shape ``client`` returns); no API calls here.
"""

from __future__ import annotations

from datetime import datetime

from devex.infra.runtime.kubernetes import names
from devex.templates_catalog import Template
from devex.timestamps import parse_time

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
# What a failing sync container is doing, for "<doing> failed: <its one-line reason>".
_SYNC_DOING = {names.SYNC_DOWN_CONTAINER: "Loading the REPL's files from storage",
               names.AUTOSAVE_CONTAINER: "Autosave"}
FINISHED_PHASES = ("Failed", "Succeeded")
UNSCHEDULABLE = ("No node has room for this REPL right now (not enough CPU or memory in the "
                 "cluster).")


def meta(pod: dict) -> dict:
    return pod.get("metadata") or {}


def status(pod: dict) -> dict:
    return pod.get("status") or {}


def is_terminating(pod: dict) -> bool:
    return bool(meta(pod).get("deletionTimestamp"))


def is_finished(pod: dict) -> bool:
    """Failed or Succeeded: its containers will never run again (an evicted pod, a pod of a
    node that shut down). A Deployment's ReplicaSet makes a replacement beside it."""
    return status(pod).get("phase") in FINISHED_PHASES


def is_live(pod: dict) -> bool:
    return not is_terminating(pod) and not is_finished(pod)


def is_ready(pod: dict) -> bool:
    if not is_live(pod):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status(pod).get("conditions") or [])


def _age_key(pod: dict) -> tuple[str, str]:
    return meta(pod).get("creationTimestamp") or "", meta(pod).get("name") or ""


def current_pod(pods: list[dict]) -> dict | None:
    """The pod that stands for the REPL now: the newest live one; when none is live, the
    newest of all (an evicted pod whose replacement has not come yet). Finished pods left
    beside a live replacement are history, not the REPL's state."""
    live = [p for p in pods if is_live(p)]
    pool = live or [p for p in pods if not is_terminating(p)]
    return max(pool, key=_age_key) if pool else None


def eviction(pod: dict) -> str | None:
    """Words for a pod that was evicted or otherwise stopped for good, else None."""
    if not is_finished(pod):
        return None
    st = status(pod)
    reason = st.get("reason") or st.get("phase")
    detail = (st.get("message") or "").strip()
    if reason == "Evicted":
        said = "The REPL's pod was evicted"
    else:
        said = f"The REPL's pod stopped ({reason})"
    return f"{said}: {detail}" if detail else f"{said}."


def last_line(text: str, limit: int = 300) -> str:
    """The last non-empty line of a termination message (the end of the log, on failure)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""


def sync_reason(message: str) -> str:
    """The one line a sync command printed on failure, without its ``runner: X failed:``
    prefix (the words around it already say what failed)."""
    line = last_line(message)
    head, sep, rest = line.partition(" failed: ")
    if sep and head.startswith("runner: ") and " " not in head[len("runner: "):]:
        return rest.strip()
    return line


def _failed_run(cs: dict) -> dict:
    """The container's last failed run (``terminated`` now, or in ``lastState`` while it
    waits to be restarted), or {}."""
    for state in (cs.get("state") or {}, cs.get("lastState") or {}):
        term = state.get("terminated") or {}
        if term and term.get("exitCode", 0) != 0:
            return term
    return {}


def _sync_trouble(cs: dict) -> str | None:
    """Words for a sync container that failed, with the reason it printed (its log's end,
    which the kubelet keeps as the termination message: FallbackToLogsOnError)."""
    doing = _SYNC_DOING.get(cs.get("name", ""))
    term = _failed_run(cs)
    if doing is None or not term:
        return None
    reason = sync_reason(str(term.get("message") or ""))
    if not reason:
        reason = f"exit code {term.get('exitCode')}"
    return f"{doing} failed: {reason}"


def diagnose(pod: dict) -> tuple[str | None, bool]:
    """(the pod's current trouble in words for people or None, whether it is fatal).

    One pass over ``WAITING_REASONS``: the words are those of the first trouble found; the
    pod is fatal when any container waits for a fatal reason. A finished pod (evicted) is
    not fatal: its Deployment replaces it, and ``eviction`` says what happened.
    """
    st = status(pod)
    said: str | None = None
    fatal = False
    for cond in st.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" \
                and cond.get("reason") == "Unschedulable":
            said = UNSCHEDULABLE
    statuses = (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or [])
    for cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason", "")
        which = _WHICH.get(cs.get("name", ""), "The runner")
        words = _sync_trouble(cs)
        if reason in WAITING_REASONS:
            template, is_fatal = WAITING_REASONS[reason]
            fatal = fatal or is_fatal
            if words is None or is_fatal:
                words = template.format(image=cs.get("image", ""), which=which,
                                        message=waiting.get("message") or reason)
        said = said or words
    if said is None:
        said = eviction(pod)
    return said, fatal and said is not None


def runner_port(pod: dict) -> int:
    """The port the pod's runner listens on, as the pod runs it (it may predate a template
    change); the template default when the pod does not say."""
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == names.RUNNER_CONTAINER:
            for port in c.get("ports") or []:
                if port.get("name") == "http" and port.get("containerPort"):
                    return int(port["containerPort"])
    return Template.port  # the dataclass default


def unready_seconds(pod: dict, now: datetime) -> float:
    """How long the pod has not been Ready: since its Ready condition last changed (or,
    without one, since it was made). 0 for a Ready pod."""
    if is_ready(pod):
        return 0.0
    since = None
    for cond in status(pod).get("conditions") or []:
        if cond.get("type") == "Ready":
            since = parse_time(cond.get("lastTransitionTime"))
    since = since or parse_time(meta(pod).get("creationTimestamp"))
    return (now - since).total_seconds() if since else float("inf")


def ephemeral_states(pod: dict) -> dict[str, dict]:
    """Each ephemeral container's state by name; {} for one the kubelet has not reported."""
    states = {c["name"]: {} for c in (pod.get("spec") or {}).get("ephemeralContainers") or []}
    for cs in status(pod).get("ephemeralContainerStatuses") or []:
        states[cs.get("name", "")] = cs.get("state") or {}
    return states


def save_under_way(pod: dict) -> str | None:
    """The name of a ``sync-up-N`` that may still be saving (running, or about to run), or
    None. One that waits for a reason that never heals will never run: not under way."""
    for name, state in ephemeral_states(pod).items():
        if not name.startswith(names.SYNC_UP_PREFIX + "-") or "terminated" in state:
            continue
        if (state.get("waiting") or {}).get("reason") in FATAL_REASONS:
            continue
        return name
    return None
