"""What the app keeps in ``app.extensions['devex']``: clients, services, the worker."""

from __future__ import annotations

import atexit
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import current_app

from devex.config import Settings
from devex.services.repls import ReplService
from devex.wiring import Components
from jobs.embedded_worker import EmbeddedWorker


@dataclass
class DevexExtension:
    components: Components
    repls: ReplService
    worker: EmbeddedWorker | None = None
    closers: list[Callable[[], object]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        """The settings the clients and services use: one source, ``components.settings``
        (tests change settings there)."""
        return self.components.settings

    def close_at_exit(self) -> None:
        """Close at interpreter exit unless closed before: a Ctrl-C of ``flask run`` lets
        the worker finish its job and stops the embedded Redis server cleanly."""
        atexit.register(self.close)

    def close(self) -> None:
        """Stop the embedded worker, then the embedded Redis server; let go of the data
        dir. Safe to call twice."""
        atexit.unregister(self.close)  # a closed app is not kept alive until exit
        if self.worker is not None:
            self.worker.stop()
        for close in self.closers:
            close()
        self.closers.clear()


def extension() -> DevexExtension:
    """The current app's clients and services (``app.extensions['devex']``)."""
    return current_app.extensions["devex"]
