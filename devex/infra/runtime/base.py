"""The runtime interface: where a REPL's runner process lives (local process or pod)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from devex.models import Repl
from devex.templates_catalog import Template

# progress(kind, message): the runtime reports steps in words for the REPL's event log.
Progress = Callable[[str, str], None]


@dataclass
class StartResult:
    url: str
    handle: dict[str, str] = field(default_factory=dict)  # names of runtime objects


@dataclass(frozen=True)
class ManagedObject:
    repl_id: str
    kind: str
    name: str


class Runtime(ABC):
    @abstractmethod
    def check(self) -> None:
        """Raise if the runtime cannot be used (for ``/readyz``)."""

    @abstractmethod
    def start(self, repl: Repl, template: Template, progress: Progress) -> StartResult:
        """Bring the REPL's runner up with its files and return how to reach it.

        Safe to call when it is already (partly) up. Raises ``RuntimeFailure`` with a
        readable reason after cleaning up what it created.
        """

    @abstractmethod
    def stop(self, repl: Repl, progress: Progress, *, save: bool = True) -> None:
        """Save the workspace to storage (unless ``save`` is False), then tear down.

        Raises ``FilesNotSaved`` and removes nothing if saving fails. Safe when already gone.
        """

    @abstractmethod
    def is_running(self, repl: Repl) -> bool: ...

    @abstractmethod
    def list_managed(self) -> list[ManagedObject]:
        """Everything this runtime manages, for reconciliation."""

    def discard(self, repl_id: str) -> None:  # noqa: B027 - optional, empty on purpose
        """Remove what is left of a deleted REPL besides its runner (logs, records), once
        it is stopped. Safe when nothing is left. Nothing by default: a pod's logs go with
        the pod."""
