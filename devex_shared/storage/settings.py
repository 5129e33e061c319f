"""Which backend to open, as plain values, and the ``DEVEX_*`` variables that name it.

The core builds ``StorageSettings`` from its own parsed settings
(``devex.infra.storage_factory``); the runner's ``sync-down``/``sync-up``/``autosave``, which
ship without ``devex``, read the same variables with ``StorageSettings.from_env``, with the
same defaults and the same two rules as ``devex.config``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devex_shared.storage.local import LocalStorage
from devex_shared.storage.sync import SyncingStorage

KINDS = ("local", "s3")
_TRUE = ("1", "true", "yes", "on")


class StorageConfigError(ValueError):
    """The storage variables cannot work (an unknown backend, S3 without a bucket)."""


@dataclass(frozen=True)
class StorageSettings:
    kind: str = "local"  # "local" | "s3"
    local_root: Path = Path(".devex") / "storage"  # where ``local`` keeps its objects
    s3_bucket: str = ""
    s3_endpoint_url: str = ""  # empty: AWS itself
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""  # empty (both): boto3's default chain (env, IRSA, role)
    s3_secret_access_key: str = field(default="", repr=False)
    s3_path_style: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> StorageSettings:
        """From ``DEVEX_STORAGE``, ``DEVEX_DATA_DIR`` (objects in its ``storage/``) and
        ``DEVEX_S3_*``."""

        def get(name: str, default: str) -> str:
            raw = environ.get("DEVEX_" + name)
            return default if raw is None else raw

        kind = get("STORAGE", "local")
        if kind not in KINDS:
            raise StorageConfigError("DEVEX_STORAGE must be 'local' or 's3'")
        bucket = get("S3_BUCKET", "")
        if kind == "s3" and not bucket:
            raise StorageConfigError("DEVEX_STORAGE=s3 needs DEVEX_S3_BUCKET")
        return cls(
            kind=kind,
            local_root=Path(get("DATA_DIR", ".devex")) / "storage",
            s3_bucket=bucket,
            s3_endpoint_url=get("S3_ENDPOINT_URL", ""),
            s3_region=get("S3_REGION", "us-east-1"),
            s3_access_key_id=get("S3_ACCESS_KEY_ID", ""),
            s3_secret_access_key=get("S3_SECRET_ACCESS_KEY", ""),
            s3_path_style=get("S3_PATH_STYLE", "").strip().lower() in _TRUE,
        )


def open_storage(settings: StorageSettings) -> SyncingStorage:
    if settings.kind == "s3":
        from devex_shared.storage.s3 import S3Storage  # boto3 only where S3 is used

        return S3Storage(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            path_style=settings.s3_path_style,
        )
    return LocalStorage(settings.local_root)
