"""What htmx says about the current request: the one place that reads the ``HX-*`` request
headers (after flask-htmx), and the status that stops a polling element."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from flask import request

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
