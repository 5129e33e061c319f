"""How the dashboard shows a REPL in each status: its badge, and the actions offered (with
their labels, routes and confirmation questions)."""

from __future__ import annotations

from devex.models import TRANSITIONAL, Repl, Status

BADGE_TONE = {
    Status.RUNNING: "ok",
    Status.STOPPED: "idle",
    Status.FAILED: "bad",
}

# The actions a person may take in each status, in the order they are shown. Every one is a
# POST route of the dashboard; the service layer still decides (409 when a race moved on).
ACTIONS: dict[Status, tuple[str, ...]] = {
    Status.CREATING: ("delete",),
    Status.STOPPED: ("start", "delete"),
    Status.STARTING: ("stop", "delete"),
    Status.RUNNING: ("open", "stop", "delete"),
    Status.STOPPING: ("force-stop", "delete"),
    Status.DELETING: (),
    Status.FAILED: ("retry", "force-stop", "delete"),
}

ACTION_LABELS = {
    "open": "Open",
    "start": "Start",
    "retry": "Retry",
    "stop": "Stop",
    "force-stop": "Force stop",
    "delete": "Delete",
}

# Actions that lose something: asked about first (hx-confirm, or a page without JavaScript).
CONFIRM = {
    "delete": "Delete “{name}”? Its files are removed for good.",
    "force-stop": "Force stop “{name}”? Unsaved files in the workspace are lost.",
}


def is_transitional(repl: Repl) -> bool:
    return repl.status in TRANSITIONAL


def badge_tone(repl: Repl) -> str:
    return "busy" if is_transitional(repl) else BADGE_TONE.get(repl.status, "idle")


# What an administrator may do to another user's REPL (the service answers 404 to the rest).
ADMIN_ACTIONS = frozenset({"stop"})


def actions_for(repl: Repl, actor=None) -> tuple[str, ...]:
    """The actions to offer ``actor`` (None: the owner) for ``repl`` in its status."""
    actions = ACTIONS.get(repl.status, ())
    if "open" in actions and not repl.url:
        actions = tuple(a for a in actions if a != "open")
    if actor is not None and actor.id != repl.owner_id:
        actions = tuple(a for a in actions if a in ADMIN_ACTIONS)
    return actions


def action_endpoint(action: str) -> str:
    """The dashboard route an action posts to (Retry is a start)."""
    return {
        "open": "dashboard.open_repl",
        "start": "dashboard.start",
        "retry": "dashboard.start",
        "stop": "dashboard.stop",
        "force-stop": "dashboard.force_stop",
        "delete": "dashboard.delete",
    }[action]


def confirm_text(action: str, repl: Repl) -> str | None:
    template = CONFIRM.get(action)
    return template.format(name=repl.name) if template else None
