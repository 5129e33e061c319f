"""The core's storage, built from its settings: ``devex_shared.storage`` takes plain values."""

from __future__ import annotations

from devex.config import Settings
from devex_shared.storage import StorageSettings, SyncingStorage, open_storage


def storage_settings(settings: Settings) -> StorageSettings:
    return StorageSettings(
        kind=settings.storage,
        # Embedded mode keeps objects beside (not inside) the workspaces.
        local_root=settings.data_dir / "storage",
        s3_bucket=settings.s3_bucket,
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_region=settings.s3_region,
        s3_access_key_id=settings.s3_access_key_id,
        s3_secret_access_key=settings.s3_secret_access_key,
        s3_path_style=settings.s3_path_style,
    )


def build_storage(settings: Settings) -> SyncingStorage:
    return open_storage(storage_settings(settings))
