"""Per-user rate limits on create and start, with ``limits`` (flask-limiter's own engine:
its storage and moving-window strategy) called only where a limit applies, so other
requests pay nothing for it."""

from __future__ import annotations

import math
import time

from apiflask import APIFlask
from flask import request
from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter, RateLimiter

from devex.config import ConfigError, Settings
from devex.errors import DevexError
from devex.infra import keys
from devex.web import security

RATE_LIMITED = {
    "api.create": "rate_limit_create",
    "api.start": "rate_limit_start",
    "dashboard.create": "rate_limit_create",
    "dashboard.start": "rate_limit_start",
}


class RateLimited(DevexError):
    status = 429
    code = "rate_limited"


def init_limiter(app: APIFlask, settings: Settings) -> RateLimiter:
    """The limiter's storage (Redis in cluster mode, memory when embedded), checked per user
    for the endpoints in ``RATE_LIMITED``. The check runs as an app hook (the REPL views are
    registered after this), after authentication and CSRF, and before the view parses or
    changes anything; anonymous calls are left to the views' own auth."""
    storage = settings.rate_limit_storage_url or settings.redis_url or "memory://"
    # endpoint -> (bucket, limits): the API and the dashboard share one bucket per action.
    limits: dict[str, tuple[str, list[RateLimitItem]]] = {}
    for endpoint, name in RATE_LIMITED.items():
        value = getattr(settings, name)
        if value:
            try:
                limits[endpoint] = (name, parse_many(value))
            except ValueError as exc:
                raise ConfigError(f"DEVEX_{name.upper()}: {exc}") from None
    options = {"socket_timeout": 5} if storage.startswith("redis") else {}
    limiter = MovingWindowRateLimiter(storage_from_string(storage, **options))

    @app.before_request
    def _rate_limit():
        bucket, items = limits.get(request.endpoint or "", ("", []))
        if not items or request.method == "OPTIONS":
            return None
        if security.current_actor() is None:
            # Nobody (or a refused token): the view's own auth answers (the API with 401,
            # the dashboard with the login redirect), and the call costs nothing.
            return None
        actor = security.require_actor()  # CSRF first: refused calls cost nothing
        for item in items:
            parts = (keys.RATE_LIMIT_PREFIX, f"user:{actor.id}", bucket)
            if not limiter.hit(item, *parts):
                reset = limiter.get_window_stats(item, *parts).reset_time
                wait = max(1, math.ceil(reset - time.time()))
                raise RateLimited(
                    f"Too many requests: at most {item}. Try again in {wait} seconds.",
                    headers={"Retry-After": str(wait)},
                )
        return None

    return limiter
