"""The workspace directory as the IDE sees it: safe listing, reading and writing.

Every path from a request is relative to the workspace root and must stay inside it. Reads
never follow a symlink, at any depth: each component is opened with ``O_NOFOLLOW`` relative
to its parent's descriptor, so a symlink swapped in while we read cannot lead us outside
either. A resolved-path check (``Path.is_relative_to`` on the resolved root) runs first, as
a second, independent guard.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

MAX_READ_BYTES = 5 * 1024 * 1024
MAX_WRITE_BYTES = MAX_READ_BYTES
MAX_LIST_ENTRIES = 20_000
MAX_DIR_ENTRIES = 5_000
TMP_PREFIX = ".devex-tmp-"  # storage syncs leave these out (devex_shared.storage.sync)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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


class Exists(WorkspaceError):
    code = "exists"


class PatchFailed(WorkspaceError):
    code = "patch_failed"


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

    def parts(self, rel: str, *, follow_last: bool = True) -> tuple[str, ...]:
        """Validate a request path and split it into components (no ``.``/``..``/empty).

        ``follow_last=False``: the last component may be a symlink (to delete or move the
        link itself); only its parent must resolve inside the workspace.
        """
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
        target = self.root.joinpath(*(parts if follow_last else parts[:-1]))
        # Defence in depth: the resolved target must still be under the resolved root.
        try:
            resolved = target.resolve(strict=False)
        except RuntimeError:  # symlink loop (RuntimeError before Python 3.13)
            raise BadPath("path goes through a symlink") from None
        except OSError as exc:
            raise os_error(exc) from None
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
            raise os_error(exc) from None
        finally:
            os.close(dir_fd)

    # -- directories and writes ------------------------------------------------------------
    # Every change opens the parent directory component by component with O_NOFOLLOW and
    # then works relative to that descriptor (the *at() calls), like reads do.

    def _parent_fd(self, parts: tuple[str, ...]) -> int:
        fd = os.open(self.root, _DIR_FLAGS)
        for name in parts[:-1]:
            fd = self._openat(fd, name, _DIR_FLAGS)
        return fd

    def list_dir(self, rel: str) -> tuple[list[dict], bool]:
        """The entries of one directory (``""`` is the root), directories first."""
        if rel.strip("/") in ("", "."):
            prefix, fd = "", os.open(self.root, _DIR_FLAGS)
        else:
            parts = self.parts(rel)
            prefix = "/".join(parts) + "/"
            fd = self._openat(self._parent_fd(parts), parts[-1], _DIR_FLAGS)
        entries: list[dict] = []
        truncated = False
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    if entry.name.startswith(TMP_PREFIX):
                        continue
                    if len(entries) >= MAX_DIR_ENTRIES:
                        truncated = True
                        break
                    try:
                        if entry.is_symlink():
                            kind = "symlink"
                        elif entry.is_dir(follow_symlinks=False):
                            kind = "dir"
                        elif entry.is_file(follow_symlinks=False):
                            kind = "file"
                        else:
                            continue  # fifos, sockets, devices
                    except OSError:
                        continue  # vanished while listing
                    entries.append({"name": entry.name, "path": prefix + entry.name,
                                    "isDir": kind == "dir", "type": kind})
        finally:
            os.close(fd)
        entries.sort(key=lambda e: (not e["isDir"], e["name"]))
        return entries, truncated

    def write_file(self, rel: str, data: bytes) -> None:
        """Replace (or create) a file atomically, keeping its permission bits."""
        if len(data) > MAX_WRITE_BYTES:
            raise TooLarge(f"files written here may be at most {MAX_WRITE_BYTES} bytes")
        parts = self.parts(rel)
        fd = self._parent_fd(parts)
        name = parts[-1]
        try:
            mode = 0o644
            st = _lstat_at(fd, name)
            if st is not None:
                if not stat.S_ISREG(st.st_mode):
                    raise BadPath("not a regular file")
                mode = stat.S_IMODE(st.st_mode)
            tmp = f"{TMP_PREFIX}{secrets.token_hex(6)}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            out = _call(os.open, tmp, flags, mode, dir_fd=fd)
            try:
                with os.fdopen(out, "wb") as fh:
                    fh.write(data)
                os.chmod(tmp, mode, dir_fd=fd)  # the umask may have narrowed it
                os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=fd)
                raise
        finally:
            os.close(fd)

    def patch_file(self, rel: str, patch_text: str) -> None:
        """Apply diff-match-patch patch text; refuse unless every hunk applies."""
        from diff_match_patch import diff_match_patch

        content = self.read_file(rel, MAX_WRITE_BYTES)
        text = as_text(content.data)
        if text is None:
            raise PatchFailed("binary files cannot be patched")
        dmp = diff_match_patch()
        try:
            patches = dmp.patch_fromText(patch_text)
        except (ValueError, IndexError) as exc:
            raise PatchFailed(f"not a valid patch: {exc}") from None
        new, applied = dmp.patch_apply(patches, text)
        if not all(applied):
            raise PatchFailed("the patch does not apply to the file as it is now")
        self.write_file(rel, new.encode("utf-8"))

    def create_file(self, rel: str) -> None:
        parts = self.parts(rel)
        fd = self._parent_fd(parts)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            os.close(_call(os.open, parts[-1], flags, 0o644, dir_fd=fd))
        finally:
            os.close(fd)

    def create_folder(self, rel: str) -> None:
        parts = self.parts(rel)
        fd = self._parent_fd(parts)
        try:
            _call(os.mkdir, parts[-1], 0o755, dir_fd=fd)
        finally:
            os.close(fd)

    def delete(self, rel: str) -> None:
        """A file, a symlink (never its target) or a whole directory."""
        parts = self.parts(rel, follow_last=False)
        fd = self._parent_fd(parts)
        try:
            st = _lstat_at(fd, parts[-1])
            if st is None:
                raise NotFound("no such file or folder")
            if stat.S_ISDIR(st.st_mode):
                _call(shutil.rmtree, parts[-1], dir_fd=fd)  # symlink-attack resistant
            else:
                _call(os.unlink, parts[-1], dir_fd=fd)
        finally:
            os.close(fd)

    def rename(self, old: str, new: str) -> None:
        src, dst = self.parts(old, follow_last=False), self.parts(new)
        if dst[: len(src)] == src:
            raise BadPath("cannot move a folder into itself")
        src_fd = self._parent_fd(src)
        try:
            dst_fd = self._parent_fd(dst)
            try:
                if _lstat_at(src_fd, src[-1]) is None:
                    raise NotFound("no such file or folder")
                if _lstat_at(dst_fd, dst[-1]) is not None:
                    raise Exists(f"{'/'.join(dst)} already exists")
                _call(os.rename, src[-1], dst[-1], src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)

    def copy(self, source: str, target: str) -> None:
        """Copy a file or a whole folder; symlinks are copied as links, never followed."""
        src, dst = self.parts(source, follow_last=False), self.parts(target)
        if dst[: len(src)] == src:
            raise BadPath("cannot copy a folder into itself")
        fd = self._parent_fd(src)
        try:
            st = _lstat_at(fd, src[-1])
        finally:
            os.close(fd)
        if st is None:
            raise NotFound("no such file or folder")
        fd = self._parent_fd(dst)
        try:
            if _lstat_at(fd, dst[-1]) is not None:
                raise Exists(f"{'/'.join(dst)} already exists")
        finally:
            os.close(fd)
        # parts() checked both resolve inside the root and the walks above refused symlinks
        # on the way; copytree(symlinks=True) never follows the links it finds inside.
        src_path, dst_path = self.root.joinpath(*src), self.root.joinpath(*dst)
        if stat.S_ISDIR(st.st_mode):
            _call(shutil.copytree, src_path, dst_path, symlinks=True)
        elif stat.S_ISLNK(st.st_mode):
            _call(os.symlink, os.readlink(src_path), dst_path)
        else:
            self.write_file("/".join(dst), self.read_file("/".join(src), MAX_WRITE_BYTES).data)


def as_text(data: bytes) -> str | None:
    """The text of a file, or None when it is binary (a NUL byte, or not UTF-8)."""
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def os_error(exc: OSError) -> WorkspaceError:
    """An OS error on a path as one of ours, with a message that names no host path."""
    if exc.errno == errno.ENAMETOOLONG:
        return BadPath("name too long")
    if exc.errno == errno.EEXIST:
        return Exists("already exists")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return NotFound("no such file or folder")
    if exc.errno == errno.ELOOP:
        return BadPath("path goes through a symlink")
    if exc.errno in (errno.EISDIR, errno.ENOTEMPTY):
        return BadPath("is a folder")
    if exc.errno == errno.ENOSPC:
        return WorkspaceError("the workspace is full")
    err = WorkspaceError(exc.strerror or "file system error")
    return err


def _call(func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except OSError as exc:
        raise os_error(exc) from None


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise os_error(exc) from None
