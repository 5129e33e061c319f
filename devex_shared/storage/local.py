"""``LocalStorage``: objects are plain files under a root directory (embedded mode).

A key ``alice/r1/main.py`` is the file ``<root>/alice/r1/main.py``. Unlike S3, a key cannot
be both a file and a "directory" of other keys (``a`` and ``a/b``); writing such a pair fails
with ``StorageError``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import BinaryIO

from devex_shared.storage.base import ObjectInfo, StorageError
from devex_shared.storage.sync import (
    TMP_MARKER,
    SyncingStorage,
    atomic_target,
    atomic_write,
    file_md5,
    validate_key,
    validate_prefix,
)


class LocalStorage(SyncingStorage):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def check(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"storage directory {self.root} is missing or not writable")

    def list(self, prefix: str) -> list[ObjectInfo]:
        validate_prefix(prefix)
        base = self.root / prefix
        if not base.is_dir():
            return []
        found: list[ObjectInfo] = []
        try:
            for dirpath, _dirnames, filenames in os.walk(base):
                for name in filenames:
                    if name.startswith(TMP_MARKER):  # a write in progress, not an object yet
                        continue
                    path = Path(dirpath) / name
                    key = path.relative_to(self.root).as_posix()
                    found.append(ObjectInfo(key, path.stat().st_size, file_md5(path)))
        except OSError as exc:
            raise StorageError(f"list {prefix!r}: {exc.strerror or exc}") from exc
        return sorted(found, key=lambda o: o.key)

    def read(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StorageError(f"no such object {key!r}") from None
        except OSError as exc:
            raise StorageError(f"read {key!r}: {exc.strerror or exc}") from exc

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, data)
        except OSError as exc:
            raise StorageError(f"write {key!r}: {exc.strerror or exc}") from exc

    def copy_prefix(self, src: str, dst: str) -> int:
        validate_prefix(src)
        validate_prefix(dst)
        objects = self.list(src)
        try:
            for obj in objects:
                target = self._path(dst + obj.key[len(src) :])
                target.parent.mkdir(parents=True, exist_ok=True)
                with atomic_target(target) as tmp:
                    shutil.copyfile(self.root / obj.key, tmp)
        except OSError as exc:
            raise StorageError(f"copy {src!r} to {dst!r}: {exc.strerror or exc}") from exc
        return len(objects)

    def delete_keys(self, keys: list[str]) -> None:
        parents: set[Path] = set()
        try:
            for key in keys:
                path = self._path(key)
                path.unlink(missing_ok=True)
                parents.add(path.parent)
            for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
                self._prune(parent)
        except OSError as exc:
            raise StorageError(f"delete: {exc.strerror or exc}") from exc

    def _prune(self, directory: Path) -> None:
        """Remove directories left empty, up to (not including) the root."""
        while directory != self.root and directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
            directory = directory.parent

    # Stream files instead of holding them in memory.
    def fetch_to_file(self, key: str, path: Path) -> None:
        try:
            shutil.copyfile(self._path(key), path)
        except FileNotFoundError:
            raise StorageError(f"no such object {key!r}") from None

    def store_from_fileobj(self, fh: BinaryIO, key: str) -> None:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_target(target) as tmp, tmp.open("wb") as out:
                shutil.copyfileobj(fh, out)
        except OSError as exc:
            raise StorageError(f"write {key!r}: {exc.strerror or exc}") from exc
