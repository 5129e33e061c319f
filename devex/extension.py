"""What the app keeps in ``app.extensions['devex']``: clients, services, the worker."""

from __future__ import annotations

import atexit
from collections.abc import Callable
from dataclasses import dataclass, field

from devex.config import Settings
from devex.infra.embedded_worker import EmbeddedWorker
from devex.services.repls import ReplService
from devex.wiring import Components


@dataclass
class DevexExtension:
    settings: Settings
    components: Components
    repls: ReplService
    worker: EmbeddedWorker | None = None
    closers: list[Callable[[], object]] = field(default_factory=list)

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
