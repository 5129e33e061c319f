"""Mirroring between a storage prefix and a local directory, written once for every backend.

Backends inherit :class:`SyncingStorage`, which implements ``sync_down`` and ``sync_up``
on top of the abstract operations plus three primitives (``delete_keys``,
``fetch_to_file``, ``store_from_fileobj``). The file primitives default to ``read``/``write``;
the S3 backend overrides them with boto3's streaming transfers.

Change detection compares size and MD5. Where the backend cannot give an MD5 (an S3 multipart
ETag such as ``"<hex>-3"``, reported as ``etag=""``), the file counts as changed and is
transferred again: correct, only slower, and the S3 backend raises the multipart threshold so
that ordinary workspace files keep plain MD5 ETags.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import stat
import tempfile
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from devex_shared.storage.base import ObjectInfo, Storage, StorageError, SyncReport

log = logging.getLogger(__name__)

# Temporary files of atomic writes start with this; listings and syncs leave them out.
TMP_MARKER = ".devex-tmp-"
MAX_KEY_BYTES = 1024  # the S3 limit; R2 and MinIO accept at least as much
_MD5 = re.compile(r"^[0-9a-f]{32}$")
# Control characters survive S3 but not its XML listings or most tools: refuse them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CHUNK = 1024 * 1024

EMPTY_DIR = "empty directory: object storage keeps files only"
SYMLINK = "symbolic link: not uploaded (it could point outside the workspace)"
SPECIAL = "not a regular file (socket, fifo or device)"
BAD_NAME = "name cannot be represented as a storage key"
TMP_FILE = "temporary file of an interrupted sync"
MARKER = "directory marker object: holds no file content"


def key_problem(key: str) -> str | None:
    """Why ``key`` is not a safe relative key, or None when it is."""
    if not key:
        return "empty key"
    if key.startswith("/") or "\\" in key:
        return "keys are relative and '/'-separated"
    if _CONTROL.search(key):
        return "control character in key"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:  # surrogate-escaped bytes from a non-UTF-8 file name
        return "key is not valid UTF-8"
    if size > MAX_KEY_BYTES:
        return f"key longer than {MAX_KEY_BYTES} bytes"
    for part in key.split("/"):
        if part in ("", ".", ".."):
            return "empty, '.' or '..' path segment"
        if part.startswith(TMP_MARKER):
            return "segment uses the reserved temporary-file prefix"
    return None


def validate_key(key: str) -> str:
    problem = key_problem(key)
    if problem:
        raise StorageError(f"invalid key {key!r}: {problem}")
    return key


def validate_prefix(prefix: str) -> str:
    """``""`` (everything) or a valid key followed by ``/``."""
    if prefix == "":
        return prefix
    if not prefix.endswith("/"):
        raise StorageError(f"invalid prefix {prefix!r}: a prefix ends with '/'")
    validate_key(prefix[:-1])
    return prefix


def validate_scoped_prefix(prefix: str, action: str) -> str:
    """A non-empty prefix: destructive operations never apply to the whole storage."""
    if prefix == "":
        raise StorageError(f"refusing to {action} the whole storage: give a prefix")
    return validate_prefix(prefix)


def is_md5(etag: str) -> bool:
    return bool(_MD5.match(etag))


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def file_md5(source: Path | BinaryIO) -> str:
    """MD5 of a file, by path or of an open file from its start (left at its start)."""
    digest = hashlib.md5(usedforsecurity=False)
    with contextlib.ExitStack() as stack:
        fh = stack.enter_context(source.open("rb")) if isinstance(source, Path) else source
        fh.seek(0)
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
        fh.seek(0)
    return digest.hexdigest()


def same_content(source: Path | BinaryIO, size: int, info: ObjectInfo) -> bool:
    """True when the local file is known to equal the object (size and MD5 match)."""
    if info.size != size or not is_md5(info.etag):
        return False
    return file_md5(source) == info.etag


def open_no_follow(directory: Path, rel: str) -> BinaryIO:
    """Open ``directory/rel`` for reading without following a symlink anywhere on the way.

    The process that uploads holds storage credentials while user code can change the
    workspace under it: a file swapped for a link to ``/proc/self/environ`` between the scan
    and the upload must fail to open, never be uploaded.
    """
    dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(directory, dir_flags)
    try:
        *parents, name = rel.split("/")
        for part in parents:
            parent, fd = fd, -1
            try:
                fd = os.open(part, dir_flags, dir_fd=parent)
            finally:
                os.close(parent)
        parent, fd = fd, -1
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=parent)
        finally:
            os.close(parent)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{rel}: no longer a regular file")
        fh = os.fdopen(fd, "rb")
        fd = -1
        return fh
    finally:
        if fd >= 0:
            os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A temp path next to ``path``; on success it replaces ``path`` in one rename.

    Readers never see a half-written file, and a crash leaves only a marked temp file.
    """
    fd, name = tempfile.mkstemp(prefix=TMP_MARKER, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def sync_lock(path: Path | None) -> Iterator[None]:
    """An exclusive lock shared by every save of one workspace (autosave and the stop's
    final save), so that an older save can never land after a newer one."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class SyncingStorage(Storage):
    """A backend whose sync operations come from this module."""

    @abstractmethod
    def delete_keys(self, keys: list[str]) -> None:
        """Delete exactly these keys (batched where the backend can); missing keys are fine."""

    def delete_prefix(self, prefix: str) -> int:
        objects = self.list(validate_scoped_prefix(prefix, "delete"))
        self.delete_keys([obj.key for obj in objects])
        return len(objects)

    def fetch_to_file(self, key: str, path: Path) -> None:
        """Write the object's content to ``path`` (a fresh temporary file)."""
        path.write_bytes(self.read(key))

    def store_from_fileobj(self, fh: BinaryIO, key: str) -> None:
        """Store an open file's content, read from its current position."""
        self.write(key, fh.read())

    def sync_down(self, prefix: str, directory: Path) -> SyncReport:
        return sync_down(self, prefix, directory)

    def sync_up(self, directory: Path, prefix: str) -> SyncReport:
        return sync_up(self, directory, prefix)


def _ancestors(rels: set[str]) -> set[str]:
    """Every directory that must exist for these relative paths ("a/b/c" gives a, a/b)."""
    out: set[str] = set()
    for rel in rels:
        parts = rel.split("/")[:-1]
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return out


def _relative_keys(
    objects: list[ObjectInfo], prefix: str
) -> tuple[dict[str, ObjectInfo], list[str]]:
    """Map keys to paths relative to ``prefix``, refusing any that would escape it.

    Also returns the "directory marker" keys (ending in ``/``, made by S3 consoles), which
    hold no file content.
    """
    found: dict[str, ObjectInfo] = {}
    markers: list[str] = []
    for obj in objects:
        rel = obj.key[len(prefix) :]
        if rel == "" or rel.endswith("/"):
            if rel and key_problem(rel[:-1]):
                raise StorageError(f"refusing remote key {obj.key!r}: {key_problem(rel[:-1])}")
            markers.append(rel)
            continue
        problem = key_problem(rel)
        if problem:
            raise StorageError(f"refusing remote key {obj.key!r}: {problem}")
        found[rel] = obj
    # S3 can hold both "a" and "a/b"; a directory cannot. Fail before touching anything.
    clash = sorted(_ancestors(set(found)) & found.keys())
    if clash:
        raise StorageError(f"remote key {prefix + clash[0]!r} is both a file and a directory")
    return found, markers


def _make_parents(directory: Path, rel: str) -> Path:
    """Create the directories for ``rel`` as real directories, never through a symlink."""
    current = directory
    for part in rel.split("/")[:-1]:
        current = current / part
        try:
            mode = current.lstat().st_mode
        except FileNotFoundError:
            current.mkdir()
            continue
        if not stat.S_ISDIR(mode):  # a symlink or file where the mirror needs a directory
            current.unlink()
            current.mkdir()
    return directory / rel


def _remove(path: Path) -> None:
    """Remove a local extra: files and links are unlinked, real directories emptied first."""
    mode = path.lstat().st_mode
    if stat.S_ISDIR(mode):
        for child in path.iterdir():
            _remove(child)
        path.rmdir()
    else:
        path.unlink()


def sync_down(storage: SyncingStorage, prefix: str, directory: Path) -> SyncReport:
    validate_prefix(prefix)
    remote, markers = _relative_keys(storage.list(prefix), prefix)
    report = SyncReport()
    for rel in markers:
        log.warning("sync down of %s: skipping %s (%s)", prefix, rel or ".", MARKER)
        report.skipped.append((rel or ".", MARKER))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for rel, info in sorted(remote.items()):
            target = _make_parents(directory, rel)
            try:
                st = target.lstat()
            except FileNotFoundError:
                st = None
            if st is not None and stat.S_ISREG(st.st_mode):
                if same_content(target, st.st_size, info):
                    report.unchanged += 1
                    continue
            elif st is not None:  # a directory, link or special file where a file belongs
                _remove(target)
            with atomic_target(target) as tmp:
                storage.fetch_to_file(info.key, tmp)
            report.downloaded.append(rel)
        report.deleted = _delete_local_extras(directory, set(remote))
    except OSError as exc:
        raise StorageError(f"sync down to {directory}: {exc.strerror or exc}") from exc
    return report


def _delete_local_extras(directory: Path, wanted: set[str]) -> list[str]:
    wanted_dirs = _ancestors(wanted)
    deleted: list[str] = []
    touched: set[Path] = set()
    for root, dirnames, filenames in os.walk(directory, onerror=_raise):
        base = Path(root)
        rel_root = base.relative_to(directory).as_posix()
        for name in [*filenames, *dirnames]:
            rel = name if rel_root == "." else f"{rel_root}/{name}"
            path = base / name
            if rel in wanted or (rel in wanted_dirs and path.is_dir() and not path.is_symlink()):
                continue
            if name in dirnames:
                dirnames.remove(name)  # don't descend into what we remove
            _remove(path)
            deleted.append(rel)
            touched.add(base)
    # Remove the directories our deletions emptied, bottom-up, never the sync root itself.
    for parent in sorted(touched, key=lambda p: len(p.parts), reverse=True):
        while parent != directory and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    return sorted(deleted)


def _raise(exc: OSError) -> None:
    # An unreadable directory must stop the sync: its files would otherwise look deleted.
    raise exc


def _scan_local(directory: Path, report: SyncReport) -> dict[str, Path]:
    """Regular files under ``directory`` by relative key; everything else goes to skipped."""
    files: dict[str, Path] = {}

    def skip(rel: str, reason: str) -> None:
        log.warning("sync up of %s: skipping %s (%s)", directory, rel, reason)
        report.skipped.append((rel, reason))

    for root, dirnames, filenames in os.walk(directory, onerror=_raise):
        base = Path(root)
        rel_root = base.relative_to(directory).as_posix()
        prefix = "" if rel_root == "." else rel_root + "/"
        if rel_root != "." and not dirnames and not filenames:
            skip(rel_root, EMPTY_DIR)
        for name in list(dirnames):
            if (base / name).is_symlink():  # os.walk lists links to directories here
                dirnames.remove(name)
                skip(prefix + name, SYMLINK)
            elif key_problem(prefix + name):
                dirnames.remove(name)
                skip(prefix + name, BAD_NAME)
        for name in filenames:
            rel = prefix + name
            mode = (base / name).lstat().st_mode
            if stat.S_ISLNK(mode):
                skip(rel, SYMLINK)
            elif not stat.S_ISREG(mode):
                skip(rel, SPECIAL)
            elif name.startswith(TMP_MARKER):
                skip(rel, TMP_FILE)
            elif key_problem(rel):
                skip(rel, BAD_NAME)
            else:
                files[rel] = base / name
    return files


def sync_up(storage: SyncingStorage, directory: Path, prefix: str) -> SyncReport:
    """Upload new/changed files; delete remote extras only once every upload succeeded.

    Remote keys whose local counterpart was skipped (now a symlink, say) are kept: a sync
    must never lose file content, and the skip is reported.
    """
    validate_scoped_prefix(prefix, "sync up to")
    if not directory.is_dir():
        raise StorageError(f"sync up: {directory} is not a directory")
    report = SyncReport()
    try:
        local = _scan_local(directory, report)
    except OSError as exc:
        raise StorageError(f"sync up of {directory}: {exc.strerror or exc}") from exc
    # Directory markers ("…/") are left alone: they hold no content and no local file maps to them.
    remote = {
        obj.key[len(prefix) :]: obj for obj in storage.list(prefix) if not obj.key.endswith("/")
    }
    failures: list[str] = []
    for rel in sorted(local):
        try:
            with open_no_follow(directory, rel) as fh:
                info = remote.get(rel)
                if info is not None and same_content(fh, os.fstat(fh.fileno()).st_size, info):
                    report.unchanged += 1
                    continue
                storage.store_from_fileobj(fh, prefix + rel)
        except (StorageError, OSError) as exc:
            # Keep going so that as much as possible is saved, but delete nothing afterwards.
            log.error("sync up of %s: could not upload %s: %s", directory, rel, exc)
            failures.append(f"{rel}: {exc}")
            continue
        report.uploaded.append(rel)
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise StorageError(f"sync up incomplete, nothing deleted: {failures[0]}{more}")
    # An empty directory protects nothing; a skipped link or odd name keeps its old content.
    kept = {rel for rel, reason in report.skipped if reason != EMPTY_DIR}
    extras = sorted(
        rel for rel in remote if rel not in local and rel not in kept and not _under_any(rel, kept)
    )
    if extras:
        storage.delete_keys([prefix + rel for rel in extras])
    report.deleted = extras
    return report


def _under_any(rel: str, dirs: set[str]) -> bool:
    return any(rel.startswith(d + "/") for d in dirs)

