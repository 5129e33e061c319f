"""The Flask application class: APIFlask, minus work Flask repeats on every request."""

from __future__ import annotations

from collections.abc import Callable

from apiflask import APIFlask
from flask.ctx import RequestContext


class DevexFlask(APIFlask):
    """Flask asks ``ensure_sync`` about every hook and the view on every request (nine
    times for a plain read), and each answer inspects the function's code flags again.
    The answer for a function never changes: it is kept (hooks and views are few and live
    as long as the app)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._sync_callables: dict[Callable, Callable] = {}

    def ensure_sync(self, func: Callable) -> Callable:
        try:
            return self._sync_callables[func]
        except KeyError:
            sync = self._sync_callables[func] = super().ensure_sync(func)
            return sync
        except TypeError:  # an unhashable callable: asked afresh each time
            return super().ensure_sync(func)

    def request_context(self, environ: dict) -> RequestContext:
        return RoutedOnce(self, environ)


class RoutedOnce(RequestContext):
    """Flask routes a request after opening its session. The session store routes it
    earlier when a session is sent, to read the REPL a read names in the same round trip
    as the session (``devex.web.auth.prefetch``); Flask's own match then finds it done."""

    _routed = False

    def match_request(self) -> None:
        if not self._routed:
            self._routed = True
            super().match_request()
