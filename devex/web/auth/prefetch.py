"""One Redis round trip for an authenticated read.

A request needs its credential's record (the session, or the personal token), then the
user's record and, for a read of one REPL, that REPL's record. The user is known only once
the credential is read: two round trips. But a credential never changes owner while it
lives (a login makes a new session id; a token belongs to one user for good), so each
process remembers which user a credential named last time, and fetches that user's records
in the same pipeline as the credential. They are used only when the credential just read
names that very user; otherwise the caller reads again (a second round trip).

Only the pairing is remembered, never a record: logout, suspension, revocation and expiry
are read fresh on every request, exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import g
from flask.globals import _cv_request

from devex.models import Repl, User
from devex.services.repls import plausible_id
from devex.web.bounded import BoundedMap

MAX_REMEMBERED = 10_000  # credentials per process; forgotten all at once when exceeded
READS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Prefetched:
    user_id: str
    user: User | None
    repls: dict[str, Repl | None]


class Owners(BoundedMap[str, str]):
    """credential key -> the user id it named. A miss costs a second round trip."""

    def __init__(self, limit: int = MAX_REMEMBERED):
        super().__init__(limit)


def repl_ids_read(view_args: dict | None, method: str) -> list[str]:
    """The REPL a read names in its URL (``/api/repl/<repl_id>`` and the like)."""
    if method not in READS or not view_args:
        return []
    repl_id = view_args.get("repl_id")
    return [repl_id] if isinstance(repl_id, str) and plausible_id(repl_id) else []


def repl_ids_ahead() -> list[str]:
    """Like ``repl_ids_read``, before Flask has routed the request (the session is opened
    first): the request is routed here, and Flask's own routing then finds it done
    (``devex.web.flask_app.RoutedOnce``)."""
    ctx = _cv_request.get(None)
    if ctx is None or ctx.url_adapter is None or ctx.request.method not in READS:
        return []
    ctx.match_request()  # no such route, a redirect, a wrong method: no view_args
    return repl_ids_read(ctx.request.view_args, ctx.request.method)


def keep(found: Prefetched | None) -> None:
    """Hand what a pipeline fetched to ``take`` later in this request."""
    if found is not None:
        g.prefetched = found


def take(user_id: str) -> Prefetched | None:
    """What was fetched ahead for ``user_id`` in this request, if anything."""
    found = g.pop("prefetched", None)
    return found if found is not None and found.user_id == user_id else None
