"""Storage: one interface (``Storage``), two backends (``S3Storage``, ``LocalStorage``), and
the sync between a prefix and a directory that both inherit.

Imports only the standard library and boto3 (never Flask, Redis or ``devex``): the runner
image uses ``storage_from_env`` for its ``sync-down`` / ``sync-up`` / ``autosave`` commands.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from devex_shared.storage.base import ObjectInfo, Storage, StorageError, SyncReport
from devex_shared.storage.local import LocalStorage
from devex_shared.storage.settings import StorageConfigError, StorageSettings, open_storage
from devex_shared.storage.sync import SyncingStorage

__all__ = [
    "LocalStorage",
    "ObjectInfo",
    "S3Storage",
    "Storage",
    "StorageConfigError",
    "StorageError",
    "StorageSettings",
    "SyncReport",
    "SyncingStorage",
    "open_storage",
    "storage_from_env",
]


def storage_from_env(environ: Mapping[str, str] | None = None) -> SyncingStorage:
    """The backend configured by ``DEVEX_STORAGE`` / ``DEVEX_S3_*`` / ``DEVEX_DATA_DIR``."""
    return open_storage(StorageSettings.from_env(os.environ if environ is None else environ))


def __getattr__(name: str):
    # ``S3Storage`` on demand: importing boto3 costs ~25 MB a process that never uses it.
    if name == "S3Storage":
        from devex_shared.storage.s3 import S3Storage

        return S3Storage
    raise AttributeError(name)
