"""Where a job finds its clients: the embedded worker binds its own, an ``rq worker``
process builds them once from the environment (and ``.env``) on first use."""

from __future__ import annotations

import threading

_local = threading.local()
_process_components = None
_lock = threading.Lock()


def bind_thread(components) -> None:
    _local.components = components


def get():
    bound = getattr(_local, "components", None)
    if bound is not None:
        return bound
    global _process_components
    with _lock:
        if _process_components is None:
            from devex.config import Settings
            from devex.startup import load_env_file
            from devex.wiring import build

            load_env_file()  # as `flask` does: .env, variables already set winning
            settings = Settings.from_env().with_secret()
            _process_components = build(settings)
    return _process_components
