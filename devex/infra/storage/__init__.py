"""Storage: one interface (``Storage``), two backends (``S3Storage``, ``LocalStorage``).

Imports only the standard library and boto3 - never Flask or Redis - so the runner image
can use ``storage_from_env`` for its ``sync-down`` / ``sync-up`` commands.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from devex.config import Settings
from devex.infra.storage.base import ObjectInfo, Storage, StorageError, SyncReport
from devex.infra.storage.local import LocalStorage
from devex.infra.storage.seed import publish_templates, template_prefix
from devex.infra.storage.sync import SyncingStorage

__all__ = [
    "LocalStorage",
    "ObjectInfo",
    "S3Storage",
    "Storage",
    "StorageError",
    "SyncReport",
    "SyncingStorage",
    "build_storage",
    "local_storage_root",
    "publish_templates",
    "storage_from_env",
    "template_prefix",
]


def local_storage_root(settings: Settings) -> Path:
    """Where embedded mode keeps objects: beside (not inside) the workspaces."""
    return settings.data_dir / "storage"


def build_storage(settings: Settings) -> SyncingStorage:
    if settings.storage == "s3":
        from devex.infra.storage.s3 import S3Storage  # boto3 only where S3 is used

        return S3Storage(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            path_style=settings.s3_path_style,
        )
    return LocalStorage(local_storage_root(settings))


def storage_from_env(environ: Mapping[str, str] | None = None) -> SyncingStorage:
    """The backend configured by ``DEVEX_STORAGE`` / ``DEVEX_S3_*`` / ``DEVEX_DATA_DIR``."""
    return build_storage(Settings.from_env(None if environ is None else dict(environ)))


def __getattr__(name: str):
    # ``S3Storage`` on demand: importing boto3 costs ~25 MB a process that never uses it.
    if name == "S3Storage":
        from devex.infra.storage.s3 import S3Storage

        return S3Storage
    raise AttributeError(name)
