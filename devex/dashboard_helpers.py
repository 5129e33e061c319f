"""Small helpers for the HTMX dashboard: the ``HX-*`` request headers (after flask-htmx),
and the display rules for a REPL — its status badge and the actions allowed in its status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote

from flask import request

from devex.models import TRANSITIONAL, Repl, Status

# htmx stops a polling element when its response has this status (htmx 2 still swaps it).
STOP_POLLING = 286


@dataclass(frozen=True)
class Htmx:
    """What htmx says about the current request; all empty for a plain browser request."""

    request: bool
    boosted: bool
    target: str | None
    trigger: str | None
    trigger_name: str | None
    current_url: str | None
    prompt: str | None

    def __bool__(self) -> bool:
        # A boosted request wants a whole page, exactly like a plain one.
        return self.request and not self.boosted


def htmx() -> Htmx:
    """The one place that reads the ``HX-*`` request headers."""
    h = request.headers

    def text(name: str) -> str | None:
        value = h.get(name)
        if value is None:
            return None
        # htmx URI-encodes a header value that is not plain ASCII and says so.
        return unquote(value) if h.get(f"{name}-URI-AutoEncoded") == "true" else value

    return Htmx(
        request=h.get("HX-Request") == "true",
        boosted=h.get("HX-Boosted") == "true",
        target=text("HX-Target"),
        trigger=text("HX-Trigger"),
        trigger_name=text("HX-Trigger-Name"),
        current_url=text("HX-Current-URL"),
        prompt=text("HX-Prompt"),
    )


# -- status badge and actions -----------------------------------------------------------

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


# -- login errors -----------------------------------------------------------------------

# The OAuth callback sends browsers to ``/login?error=<code>``; the page shows only these
# fixed texts, never what the query string says.
LOGIN_ERRORS = {
    "login_failed": "GitHub did not confirm the sign-in. Please try again.",
    "login_denied": "The sign-in was cancelled on GitHub.",
    "not_allowed": "This GitHub account may not use this Devex. "
    "Ask an administrator to be added.",
    "unavailable": "GitHub cannot be reached right now; try again shortly.",
    "suspended": "This account is suspended. Ask an administrator.",
}
LOGIN_ERROR_UNKNOWN = "Signing in did not work. Please try again."


def login_error_message(code: str | None) -> str | None:
    if not code:
        return None
    return LOGIN_ERRORS.get(code, LOGIN_ERROR_UNKNOWN)


# -- time ----------------------------------------------------------------------------------


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def ago(value: str | None, now: datetime | None = None) -> str:
    """``"just now"``, ``"5 min ago"``, ``"3 h ago"``, ``"2 days ago"``, or the date."""
    when = parse_time(value)
    if when is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    if seconds < 7 * 86400:
        days = int(seconds // 86400)
        return f"{days} day{'s' if days > 1 else ''} ago"
    return when.strftime("%Y-%m-%d")


def exact_time(value: str | None) -> str:
    when = parse_time(value)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else ""

