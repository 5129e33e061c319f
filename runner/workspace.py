"""The workspace directory as the IDE sees it: safe listing and reading.

Every path from a request is relative to the workspace root and must stay inside it. Reads
never follow a symlink, at any depth: each component is opened with ``O_NOFOLLOW`` relative
to its parent's descriptor, so a symlink swapped in while we read cannot lead us outside
either. A resolved-path check (``Path.is_relative_to`` on the resolved root) runs first, as
a second, independent guard.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

MAX_READ_BYTES = 5 * 1024 * 1024
MAX_LIST_ENTRIES = 20_000


class WorkspaceError(Exception):
    """Base class; ``code`` is the stable machine-readable error code."""

    code = "workspace_error"


class BadPath(WorkspaceError):
    """The path is malformed, escapes the workspace or goes through a symlink."""

    code = "bad_path"


class NotFound(WorkspaceError):
    code = "not_found"


class TooLarge(WorkspaceError):
    code = "too_large"


@dataclass(frozen=True)
class FileContent:
    path: str
    size: int
    data: bytes


def _iso(mtime: float) -> str:
    return datetime.fromtimestamp(mtime, UTC).isoformat().replace("+00:00", "Z")


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve(strict=True)
        if not self.root.is_dir():
            raise NotADirectoryError(str(self.root))

    # -- paths ---------------------------------------------------------------------------

    def parts(self, rel: str) -> tuple[str, ...]:
        """Validate a request path and split it into components (no ``.``/``..``/empty)."""
        if not rel or "\x00" in rel or "\\" in rel:
            raise BadPath("invalid path")
        if rel.startswith("/"):
            raise BadPath("absolute paths are not allowed")
        raw = rel.split("/")
        if any(p in ("..", ".") for p in raw):
            raise BadPath("path escapes the workspace")
        parts = tuple(p for p in raw if p)
        if not parts:
            raise BadPath("invalid path")
        target = self.root.joinpath(*parts)
        # Defence in depth: the resolved target must still be under the resolved root.
        try:
            resolved = target.resolve(strict=False)
        except (OSError, RuntimeError):  # symlink loop (RuntimeError before Python 3.13)
            raise BadPath("path goes through a symlink") from None
        if not resolved.is_relative_to(self.root):
            raise BadPath("path escapes the workspace")
        return parts

    # -- listing -------------------------------------------------------------------------

    def list_files(self) -> tuple[list[dict], bool]:
        """Every regular file and symlink under the root, sorted; symlinks are not followed.

        Returns ``(entries, truncated)``.
        """
        entries: list[dict] = []
        truncated = False
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            base = Path(dirpath)
            # os.walk lists symlinks to directories under dirnames; report them, never descend.
            for name in list(dirnames) + filenames:
                full = base / name
                try:
                    st = full.lstat()
                except OSError:
                    continue  # vanished while walking
                if stat.S_ISLNK(st.st_mode):
                    kind = "symlink"
                elif stat.S_ISREG(st.st_mode):
                    kind = "file"
                else:
                    continue  # directories (walked below), fifos, sockets, devices
                rel = PurePosixPath(full.relative_to(self.root)).as_posix()
                entries.append(
                    {
                        "path": rel,
                        "type": kind,
                        "size": st.st_size if kind == "file" else 0,
                        "modified": _iso(st.st_mtime),
                    }
                )
                if len(entries) >= MAX_LIST_ENTRIES:
                    truncated = True
                    break
            if truncated:
                break
            dirnames[:] = sorted(d for d in dirnames if not (base / d).is_symlink())
        entries.sort(key=lambda e: e["path"])
        return entries, truncated

    # -- reading -------------------------------------------------------------------------

    def read_file(self, rel: str, limit: int = MAX_READ_BYTES) -> FileContent:
        parts = self.parts(rel)
        flags_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        flags_file = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # no FIFO hang
        fd = os.open(self.root, flags_dir)
        try:
            for name in parts[:-1]:
                parent, fd = fd, -1
                fd = self._openat(parent, name, flags_dir)
            parent, fd = fd, -1
            fd = self._openat(parent, parts[-1], flags_file)
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotFound("not a regular file")
            if st.st_size > limit:
                raise TooLarge(f"file is larger than {limit} bytes")
            chunks: list[bytes] = []
            total = 0
            while True:
                chunk = os.read(fd, 1024 * 1024)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:  # grew while reading
                    raise TooLarge(f"file is larger than {limit} bytes")
                chunks.append(chunk)
        finally:
            if fd >= 0:
                os.close(fd)
        return FileContent(path="/".join(parts), size=total, data=b"".join(chunks))

    @staticmethod
    def _openat(dir_fd: int, name: str, flags: int) -> int:
        """Open ``name`` under ``dir_fd``, closing ``dir_fd``; map errors to ours."""
        try:
            return os.open(name, flags, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BadPath("path goes through a symlink") from None
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise NotFound("no such file") from None
            if exc.errno == errno.EISDIR:
                raise NotFound("not a regular file") from None
            if exc.errno == errno.EACCES:
                raise NotFound("not readable") from None
            raise
        finally:
            os.close(dir_fd)
