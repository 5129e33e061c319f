"""What the app keeps in ``app.extensions['devex']``: clients, services, the worker."""

from __future__ import annotations

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

    def close(self) -> None:
        """Stop the embedded worker, write the last snapshot, let go of the data dir."""
        if self.worker is not None:
            self.worker.stop()
        for close in self.closers:
            close()
        self.closers.clear()
