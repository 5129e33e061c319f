"""``S3Storage``: an S3 bucket (AWS, or Cloudflare R2 / MinIO through ``endpoint_url``).

The boto3 client is built in the constructor, never at import, and can be handed in by tests.
Every botocore/boto3 error becomes a ``StorageError`` whose message names the operation, the
key and the S3 error code - never the credentials (``devex_shared.redact`` takes the user-info out
of the endpoint URLs that botocore quotes).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from devex_shared.redact import redact
from devex_shared.storage.base import ObjectInfo, StorageError
from devex_shared.storage.sync import (
    SyncingStorage,
    is_md5,
    validate_key,
    validate_prefix,
)

DELETE_BATCH = 1000  # the DeleteObjects limit
COPY_OBJECT_LIMIT = 5 * 1024**3  # larger objects need a (still server-side) multipart copy
# Objects uploaded in one part keep an MD5 ETag, which lets sync skip unchanged files; only
# files above this size become multipart (ETag "<hex>-<n>", always re-transferred by sync).
TRANSFER = TransferConfig(
    multipart_threshold=64 * 1024**2,
    multipart_chunksize=64 * 1024**2,
    preferred_transfer_client="classic",
)


def client_config(path_style: bool) -> Config:
    return Config(
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        s3={"addressing_style": "path" if path_style else "auto"},
        signature_version="s3v4",
    )


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "unknown"))


@contextmanager
def _errors(action: str) -> Iterator[None]:
    """Turn boto errors into ``StorageError`` built from the S3 error code and message only."""
    try:
        yield
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", "")
        text = f"S3 {action} failed: {_error_code(exc)} {message}".rstrip()
        raise StorageError(redact(text)) from exc
    except (BotoCoreError, Boto3Error) as exc:
        # botocore quotes the endpoint URL, user-info (user:password@) included.
        raise StorageError(redact(f"S3 {action} failed: {exc}")) from exc


def _etag(raw: str) -> str:
    """The hex MD5 from an ETag, or "" when it is not one (multipart or encrypted objects)."""
    etag = raw.strip('"').lower()
    return etag if is_md5(etag) else ""


class S3Storage(SyncingStorage):
    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str = "",
        secret_access_key: str = "",
        path_style: bool = False,
        client: Any = None,
    ) -> None:
        if not bucket:
            raise StorageError("S3 storage needs a bucket name")
        self.bucket = bucket
        self.endpoint_url = endpoint_url or None
        if client is None:
            # A session of our own: boto3's default session is shared and not thread-safe.
            # Empty credentials fall through to the default chain (env, IRSA, instance role).
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=region or None,
                aws_access_key_id=access_key_id or None,
                aws_secret_access_key=secret_access_key or None,
                config=client_config(path_style),
            )
        self.client = client

    def __repr__(self) -> str:  # no credentials here, ever
        endpoint = redact(self.endpoint_url) if self.endpoint_url else None
        return f"S3Storage(bucket={self.bucket!r}, endpoint_url={endpoint!r})"

    def check(self) -> None:
        with _errors(f"head bucket {self.bucket!r}"):
            self.client.head_bucket(Bucket=self.bucket)

    def list(self, prefix: str) -> list[ObjectInfo]:
        validate_prefix(prefix)
        found: list[ObjectInfo] = []
        with _errors(f"list {prefix!r}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    found.append(ObjectInfo(item["Key"], item["Size"], _etag(item["ETag"])))
        return sorted(found, key=lambda o: o.key)

    def read(self, key: str) -> bytes:
        validate_key(key)
        with _errors(f"read {key!r}"):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except ClientError as exc:
                if _error_code(exc) in ("NoSuchKey", "404"):
                    raise StorageError(f"no such object {key!r}") from None
                raise

    def write(self, key: str, data: bytes) -> None:
        validate_key(key)
        with _errors(f"write {key!r}"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def copy_prefix(self, src: str, dst: str) -> int:
        validate_prefix(src)
        validate_prefix(dst)
        objects = self.list(src)
        for obj in objects:
            target = validate_key(dst + obj.key[len(src) :])
            source = {"Bucket": self.bucket, "Key": obj.key}
            with _errors(f"copy {obj.key!r} to {target!r}"):
                if obj.size <= COPY_OBJECT_LIMIT:
                    self.client.copy_object(Bucket=self.bucket, Key=target, CopySource=source)
                else:  # UploadPartCopy: still server-side, no bytes pass through us
                    self.client.copy(source, self.bucket, target, Config=TRANSFER)
        return len(objects)

    def delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            with _errors("delete objects"):
                response = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
            # DeleteObjects answers 200 even when single keys fail; the failures are listed.
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise StorageError(
                    f"S3 delete failed for {len(errors)} key(s), e.g. {first.get('Key')!r}: "
                    f"{first.get('Code', 'unknown')} {first.get('Message', '')}".rstrip()
                )

    # Streaming, multipart-capable transfers for sync (files never held in memory whole).
    def fetch_to_file(self, key: str, path: Path) -> None:
        with _errors(f"download {key!r}"):
            self.client.download_file(self.bucket, key, str(path), Config=TRANSFER)

    def store_from_fileobj(self, fh: BinaryIO, key: str) -> None:
        validate_key(key)
        with _errors(f"upload {key!r}"):
            self.client.upload_fileobj(fh, self.bucket, key, Config=TRANSFER)
