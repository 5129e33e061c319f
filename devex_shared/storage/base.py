"""The storage interface: one set of operations, two backends (S3 and a local directory).

Keys are ``/``-separated and relative to the backend's root (the bucket, or the data
directory). A *prefix* always ends with ``/``. Nothing here imports Flask, so the runner's
``sync-down``/``sync-up`` commands can use it without the web stack.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path


class StorageError(Exception):
    """A storage operation failed; the message is safe to show (no credentials)."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # hex MD5 of the content where the backend knows it, else ""


@dataclass
class SyncReport:
    """What a sync did. ``skipped`` names every entry not copied, with the reason."""

    uploaded: list[str] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


class Storage(ABC):
    @abstractmethod
    def check(self) -> None:
        """Raise ``StorageError`` unless the backend is reachable and usable."""

    @abstractmethod
    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object under ``prefix`` (all pages), sorted by key."""

    @abstractmethod
    def read(self, key: str) -> bytes: ...

    @abstractmethod
    def write(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def copy_prefix(self, src: str, dst: str) -> int:
        """Copy every object under ``src`` to ``dst`` (server-side on S3); returns the count."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` (batched on S3); returns the count."""

    @abstractmethod
    def sync_down(self, prefix: str, directory: Path) -> SyncReport:
        """Make ``directory`` mirror ``prefix``: fetch new/changed, remove local extras."""

    @abstractmethod
    def sync_up(self, directory: Path, prefix: str) -> SyncReport:
        """Make ``prefix`` mirror ``directory``: upload new/changed, then delete remote extras."""
