"""Server-side sessions: flask-session in Redis (the in-process one when embedded)."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from apiflask import APIFlask
from flask_session import Session
from flask_session.redis import RedisSessionInterface
from redis import RedisError

from devex.config import Settings
from devex.infra import keys
from devex.web.auth import prefetch

log = logging.getLogger(__name__)


def init_sessions(app: APIFlask, settings: Settings, components,
                  owners: prefetch.Owners) -> None:
    """Sessions live in Redis (the in-process one in embedded mode); the cookie holds only a
    random id. Cookie flags (Secure in github mode, HttpOnly, SameSite=Lax) come from the
    factory's ``SESSION_COOKIE_*`` settings."""
    app.config.update(
        SESSION_TYPE="redis",
        SESSION_REDIS=components.redis,
        SESSION_KEY_PREFIX=keys.SESSION_PREFIX,
        SESSION_PERMANENT=True,
        SESSION_USE_SIGNER=False,  # the id is 256 random bits; signing is deprecated upstream
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_lifetime_hours),
        # Reads write nothing: the session is saved when it changes, and its expiry slides
        # forward at most once per refresh interval (RefreshingSessions), not per request.
        SESSION_REFRESH_EACH_REQUEST=False,
    )
    Session(app)
    app.session_interface = RefreshingSessions(
        app, client=components.redis, key_prefix=keys.SESSION_PREFIX, use_signer=False
    )
    app.session_interface.refresh_seconds = refresh_interval(settings)
    app.session_interface.store = components.store
    app.session_interface.owners = owners


def refresh_interval(settings: Settings) -> int:
    """How often a used session's expiry moves forward: a 24th of its lifetime, at most an
    hour. A session then ends between ``lifetime - interval`` and ``lifetime`` after its
    last use, never later."""
    return max(1, min(3600, settings.session_lifetime_hours * 3600 // 24))


class RefreshingSessions(RedisSessionInterface):
    """Sessions in Redis that cost reads nothing and survive a Redis outage.

    A session is stored (and its cookie sent) only when it changed or when its expiry is
    due to move forward. The session is opened for every request, before any view or error
    handler: a Redis outage there would be a 500 on everything, ``/healthz`` included.
    Instead the request gets an empty session marked ``store_down``;
    ``security.current_actor`` answers 503 to a caller who sent a session cookie, and
    nothing is saved."""

    def open_session(self, app, request):
        if not request.cookies.get(app.config["SESSION_COOKIE_NAME"]):
            # No cookie: an empty session whose id is drawn only if it is ever saved
            # (flask-session draws one here, a system call on every anonymous or bearer
            # request).
            return self.session_class(sid="", permanent=self.permanent)
        try:
            return super().open_session(app, request)
        except RedisError as exc:
            log.error("Session store unavailable: %s", exc)
            fresh = self.session_class(sid=self._generate_sid(self.sid_length))
            fresh.store_down = True
            return fresh

    refresh_seconds = 3600
    store = None  # ReplStore: the session is read with its user's records (devex.web.auth.prefetch)
    owners: prefetch.Owners | None = None

    def _retrieve_session_data(self, store_id: str) -> dict | None:
        if self.store is None or self.owners is None:
            return super()._retrieve_session_data(store_id)
        guess = self.owners.get(store_id)
        wanted = prefetch.repl_ids_ahead() if guess else []
        raw, found = self.store.read_with_user(store_id, "string", guess, wanted)
        if found is not None:
            prefetch.keep(prefetch.Prefetched(guess, *found))
        return self.serializer.decode(raw) if raw else None

    def remember_owner(self, session, user_id: str) -> None:
        """The session just named ``user_id``: fetch that user with it next time."""
        if self.owners is not None and getattr(session, "sid", None):
            self.owners.remember(self._get_store_id(session.sid), user_id)

    REFRESHED = "_refreshed"  # when the session's expiry last moved forward (epoch s)

    def regenerate(self, session) -> None:
        if session and not session.sid:
            session.sid = self._generate_sid(self.sid_length)  # nothing stored to delete
            session.modified = True
            return
        super().regenerate(session)

    def save_session(self, app, session, response) -> None:
        if getattr(session, "store_down", False):
            return
        if not session.sid:
            if not session:
                return  # never stored, never sent: nothing to store or delete
            session.sid = self._generate_sid(self.sid_length)
        if session and time.time() - session.get(self.REFRESHED, 0) >= self.refresh_seconds:
            session[self.REFRESHED] = int(time.time())  # modified: stored again, new cookie
        if not session.modified:  # the common read: nothing to store, no cookie to send
            if session.accessed:
                response.vary.add("Cookie")
            return
        try:
            super().save_session(app, session, response)
        except RedisError as exc:
            log.error("Session store unavailable, session not saved: %s", exc)
