"""What the app keeps in ``app.extensions['devex']``: clients, services, the worker."""

from __future__ import annotations

from dataclasses import dataclass

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
