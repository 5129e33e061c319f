"""Behaviour of both storage backends: a local directory and S3 (moto's server over HTTP)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from devex.infra.template_seed import publish_templates, template_prefix
from devex.templates_catalog import Catalog, Template
from devex_shared.storage import (
    LocalStorage,
    ObjectInfo,
    S3Storage,
    StorageError,
    SyncingStorage,
    storage_from_env,
)
from devex_shared.storage import sync as sync_module
from devex_shared.storage.s3 import _etag, client_config
from devex_shared.storage.sync import same_content
from tests.support.moto_server import s3_client

MANY = 1005  # more than one S3 page (1,000 keys) and one DeleteObjects batch


@pytest.fixture(scope="session")
def storage_client(moto_server: str) -> Any:
    """A client configured exactly as S3Storage builds one, shared to keep tests quick."""
    return s3_client(moto_server, client_config(path_style=True))


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> SyncingStorage:
    if request.param == "local":
        return LocalStorage(tmp_path / "objects")
    # storage_from_env's own client construction is covered by the tests at the end.
    bucket = request.getfixturevalue("s3_bucket")
    return S3Storage(bucket, client=request.getfixturevalue("storage_client"))


class CallCounter:
    """Counts the S3 API calls a client makes, through botocore's event hooks."""

    def __init__(self, storage: SyncingStorage) -> None:
        self.calls: Counter[str] = Counter()
        if isinstance(storage, S3Storage):
            storage.client.meta.events.register("before-call.s3", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1


def fill(storage: SyncingStorage, prefix: str, count: int) -> set[str]:
    keys = {f"{prefix}f{i:04d}.txt" for i in range(count)}
    # boto3 clients are thread-safe; parallel PUTs keep the S3 variant quick.
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda k: storage.write(k, k.encode()), sorted(keys)))
    return keys


def make_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def contents(storage: SyncingStorage, prefix: str) -> dict[str, bytes]:
    return {o.key[len(prefix) :]: storage.read(o.key) for o in storage.list(prefix)}


# --- basic operations -------------------------------------------------------------------


def test_write_read_list(storage: SyncingStorage) -> None:
    storage.write("alice/r1/main.py", b"print('hi')\n")
    storage.write("alice/r1/pkg/util.py", b"")
    storage.write("alice/r2/other.py", b"x")

    assert storage.read("alice/r1/main.py") == b"print('hi')\n"
    listed = storage.list("alice/r1/")
    assert [o.key for o in listed] == ["alice/r1/main.py", "alice/r1/pkg/util.py"]
    assert listed[0] == ObjectInfo("alice/r1/main.py", 12, "587de76529284d0daf8eb02b14b10712")
    assert listed[1].size == 0
    assert storage.list("bob/") == []


def test_write_replaces_content(storage: SyncingStorage) -> None:
    storage.write("a/b.txt", b"one")
    storage.write("a/b.txt", b"two!")
    assert storage.read("a/b.txt") == b"two!"
    assert [o.size for o in storage.list("a/")] == [4]


def test_read_missing_key_raises(storage: SyncingStorage) -> None:
    with pytest.raises(StorageError, match="no such object"):
        storage.read("nobody/nothing.txt")


@pytest.mark.parametrize(
    "key", ["../etc/passwd", "a/../../b", "/abs/path", "a//b", "a/./b", "", "a/\x00b"]
)
def test_unsafe_keys_are_refused(storage: SyncingStorage, key: str) -> None:
    with pytest.raises(StorageError, match="invalid key"):
        storage.write(key, b"x")
    with pytest.raises(StorageError, match="invalid key"):
        storage.read(key)


def test_prefix_must_end_with_slash(storage: SyncingStorage) -> None:
    with pytest.raises(StorageError, match="ends with '/'"):
        storage.list("alice/r1")


def test_whole_storage_is_never_deleted_or_synced_over(
    storage: SyncingStorage, tmp_path: Path
) -> None:
    storage.write("alice/r1/main.py", b"x")
    with pytest.raises(StorageError, match="whole storage"):
        storage.delete_prefix("")
    with pytest.raises(StorageError, match="whole storage"):
        storage.sync_up(tmp_path, "")
    assert storage.read("alice/r1/main.py") == b"x"


def test_check_passes(storage: SyncingStorage) -> None:
    storage.check()


def test_list_returns_every_key_across_pages(storage: SyncingStorage) -> None:
    keys = fill(storage, "big/", MANY)
    counter = CallCounter(storage)

    listed = storage.list("big/")

    assert [o.key for o in listed] == sorted(keys)
    if isinstance(storage, S3Storage):
        assert counter.calls["ListObjectsV2"] >= 2


def test_copy_prefix_copies_server_side(storage: SyncingStorage) -> None:
    files = {"main.py": b"print(1)\n", "lib/a.py": b"A", "lib/deep/b.txt": b"B" * 1000}
    for rel, data in files.items():
        storage.write("_templates/python/" + rel, data)
    counter = CallCounter(storage)

    copied = storage.copy_prefix("_templates/python/", "alice/r1/")
    during_copy = dict(counter.calls)

    assert copied == 3
    assert contents(storage, "alice/r1/") == files
    assert contents(storage, "_templates/python/") == files
    if isinstance(storage, S3Storage):
        assert during_copy.get("CopyObject") == 3
        assert "PutObject" not in during_copy and "GetObject" not in during_copy


def test_delete_prefix_batches_and_empties_the_prefix(storage: SyncingStorage) -> None:
    fill(storage, "doomed/", MANY)
    storage.write("doomed-not/keep.txt", b"k")  # shares the string prefix, not the "folder"
    counter = CallCounter(storage)

    assert storage.delete_prefix("doomed/") == MANY

    assert storage.list("doomed/") == []
    assert storage.read("doomed-not/keep.txt") == b"k"
    if isinstance(storage, S3Storage):
        assert counter.calls["DeleteObjects"] == 2


# --- sync ---------------------------------------------------------------------------------


def test_sync_down_then_up_mirrors_edits_additions_and_deletions(
    storage: SyncingStorage, tmp_path: Path
) -> None:
    initial = {"main.py": b"v1", "src/a.py": b"a", "src/old/gone.py": b"g", "keep.txt": b"k"}
    for rel, data in initial.items():
        storage.write("alice/r1/" + rel, data)
    work = tmp_path / "workspace"

    down = storage.sync_down("alice/r1/", work)
    assert sorted(down.downloaded) == sorted(initial)
    assert tree(work) == initial

    (work / "main.py").write_bytes(b"v2")  # edit
    (work / "src/new.py").write_bytes(b"new")  # add
    (work / "src/old/gone.py").unlink()  # delete (leaves src/old empty)
    (work / "src/old").rmdir()

    up = storage.sync_up(work, "alice/r1/")

    assert sorted(up.uploaded) == ["main.py", "src/new.py"]
    assert up.deleted == ["src/old/gone.py"]
    assert up.unchanged == 2
    assert contents(storage, "alice/r1/") == tree(work)

    again = storage.sync_up(work, "alice/r1/")
    assert (again.uploaded, again.deleted, again.unchanged) == ([], [], 4)


def test_sync_down_removes_local_extras_and_emptied_directories(
    storage: SyncingStorage, tmp_path: Path
) -> None:
    storage.write("p/keep.txt", b"remote")
    storage.write("p/changed.txt", b"remote version")
    work = tmp_path / "w"
    make_tree(work, {"keep.txt": b"remote", "changed.txt": b"local", "extra/x/y.txt": b"e"})

    report = storage.sync_down("p/", work)

    assert report.downloaded == ["changed.txt"]
    assert report.unchanged == 1
    assert "extra" in report.deleted
    assert tree(work) == {"keep.txt": b"remote", "changed.txt": b"remote version"}
    assert sorted(p.name for p in work.iterdir()) == ["changed.txt", "keep.txt"]
    assert not any(p.name.startswith(".devex-tmp-") for p in work.rglob("*"))


def test_sync_down_never_writes_through_a_local_symlink(
    storage: SyncingStorage, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    work = tmp_path / "w"
    work.mkdir()
    (work / "lib").symlink_to(outside, target_is_directory=True)
    storage.write("p/lib/x.py", b"x")

    storage.sync_down("p/", work)

    assert list(outside.iterdir()) == []
    assert not (work / "lib").is_symlink()
    assert (work / "lib/x.py").read_bytes() == b"x"


def test_sync_up_failure_uploads_what_it_can_and_deletes_nothing(
    storage: SyncingStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.write("p/stale.txt", b"only remote")
    work = tmp_path / "w"
    make_tree(work, {"a.txt": b"a", "bad.txt": b"bad", "c.txt": b"c"})
    real_store = storage.store_from_fileobj

    def flaky_store(fh, key: str) -> None:
        if key.endswith("bad.txt"):
            raise StorageError("injected upload failure")
        real_store(fh, key)

    monkeypatch.setattr(storage, "store_from_fileobj", flaky_store)

    with pytest.raises(StorageError, match="nothing deleted.*bad.txt"):
        storage.sync_up(work, "p/")

    assert contents(storage, "p/") == {"a.txt": b"a", "c.txt": b"c", "stale.txt": b"only remote"}


def test_a_file_swapped_for_a_symlink_after_the_scan_is_never_uploaded(
    storage: SyncingStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The uploader holds credentials while user code changes the workspace: a file turned
    into a link to a secret (``/proc/self/environ``) between scan and upload must fail."""
    secret = tmp_path / "environ"
    secret.write_bytes(b"DEVEX_S3_SECRET_ACCESS_KEY=hunter2")
    work = tmp_path / "w"
    make_tree(work, {"a.txt": b"a", "sub/b.txt": b"b"})
    real_scan = sync_module._scan_local

    def scan_then_swap(directory, report):
        found = real_scan(directory, report)
        (work / "a.txt").unlink()
        (work / "a.txt").symlink_to(secret)
        shutil.rmtree(work / "sub")
        (work / "sub").symlink_to(tmp_path, target_is_directory=True)
        (tmp_path / "b.txt").write_bytes(b"outside")
        return found

    monkeypatch.setattr(sync_module, "_scan_local", scan_then_swap)
    with pytest.raises(StorageError, match="nothing deleted"):
        storage.sync_up(work, "p/")
    stored = contents(storage, "p/")
    assert b"hunter2" not in b"".join(stored.values())
    assert b"outside" not in b"".join(stored.values())


def test_sync_up_reports_symlinks_special_files_and_empty_dirs(
    storage: SyncingStorage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    work = tmp_path / "w"
    make_tree(work, {"real.txt": b"r", "sub/inner.txt": b"i"})
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"outside the workspace")
    (work / "link.txt").symlink_to(secret)
    (work / "linkdir").symlink_to(tmp_path, target_is_directory=True)
    (work / "empty" / "nested").mkdir(parents=True)
    os.mkfifo(work / "pipe")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(work / "sock"))

        with caplog.at_level(logging.WARNING, logger="devex_shared.storage.sync"):
            report = storage.sync_up(work, "p/")

    assert sorted(report.uploaded) == ["real.txt", "sub/inner.txt"]
    # The reasons are shown in the REPL's events, word for word.
    link = "symbolic link: not uploaded (it could point outside the workspace)"
    special = "not a regular file (socket, fifo or device)"
    assert sorted(report.skipped) == [
        ("empty/nested", "empty directory: object storage keeps files only"),
        ("link.txt", link),
        ("linkdir", link),
        ("pipe", special),
        ("sock", special),
    ]
    assert sorted(contents(storage, "p/")) == ["real.txt", "sub/inner.txt"]
    assert sum("skipping" in r.getMessage() for r in caplog.records) == 5


def test_sync_up_skips_names_that_are_not_valid_keys(
    storage: SyncingStorage, tmp_path: Path
) -> None:
    work = tmp_path / "w"
    work.mkdir()
    (work / "ok.txt").write_bytes(b"ok")
    (work / "bad\nname.txt").write_bytes(b"newline in the name")
    bad_utf8 = os.fsdecode(b"latin1-\xe9.txt")
    (work / bad_utf8).write_bytes(b"not utf-8")

    report = storage.sync_up(work, "p/")

    assert report.uploaded == ["ok.txt"]
    assert sorted(rel for rel, _ in report.skipped) == sorted(["bad\nname.txt", bad_utf8])


def test_sync_up_keeps_remote_copy_of_a_file_now_skipped(
    storage: SyncingStorage, tmp_path: Path
) -> None:
    storage.write("p/data.txt", b"precious")
    work = tmp_path / "w"
    work.mkdir()
    (work / "data.txt").symlink_to(tmp_path / "elsewhere")

    report = storage.sync_up(work, "p/")

    assert report.deleted == []
    assert storage.read("p/data.txt") == b"precious"


# --- S3 specifics -------------------------------------------------------------------------


@pytest.fixture
def s3(s3_bucket: str, storage_client: Any) -> S3Storage:
    return S3Storage(s3_bucket, client=storage_client)


def test_sync_down_refuses_remote_keys_that_escape(s3: S3Storage, tmp_path: Path) -> None:
    # Written with the raw client: the storage API itself refuses such keys.
    s3.client.put_object(Bucket=s3.bucket, Key="p/../escape.txt", Body=b"x")
    work = tmp_path / "w"

    with pytest.raises(StorageError, match="refusing remote key"):
        s3.sync_down("p/", work)

    assert not (tmp_path / "escape.txt").exists()


def test_sync_down_refuses_a_key_that_is_both_file_and_directory(
    s3: S3Storage, tmp_path: Path
) -> None:
    s3.write("p/a", b"file")
    s3.write("p/a/b", b"nested")
    with pytest.raises(StorageError, match="both a file and a directory"):
        s3.sync_down("p/", tmp_path / "w")


def test_multipart_etags_are_not_treated_as_md5(tmp_path: Path) -> None:
    assert _etag('"0cc175b9c0f1b6a831c399e269772661"') == "0cc175b9c0f1b6a831c399e269772661"
    assert _etag('"0cc175b9c0f1b6a831c399e269772661-3"') == ""
    local = tmp_path / "a"
    local.write_bytes(b"a")
    # Unknown MD5: the file counts as changed, so sync transfers it again.
    assert not same_content(local, 1, ObjectInfo("k", 1, ""))
    assert same_content(local, 1, ObjectInfo("k", 1, "0cc175b9c0f1b6a831c399e269772661"))


def test_s3_errors_name_the_problem_not_the_credentials(s3_settings: dict[str, str]) -> None:
    env = {**s3_settings, "DEVEX_S3_BUCKET": "no-such-bucket-here"}
    env["DEVEX_S3_SECRET_ACCESS_KEY"] = "sekrit-value-123"
    missing = storage_from_env(env)

    with pytest.raises(StorageError) as excinfo:
        missing.check()

    assert "head bucket" in str(excinfo.value)
    assert "sekrit" not in str(excinfo.value) and "sekrit" not in repr(missing)


class _FailingDeleteClient:
    def delete_objects(self, **_: Any) -> dict[str, Any]:
        return {"Errors": [{"Key": "p/x", "Code": "AccessDenied", "Message": "Access Denied"}]}


def test_delete_reports_per_key_errors() -> None:
    storage = S3Storage("bucket", client=_FailingDeleteClient())
    with pytest.raises(StorageError, match="AccessDenied"):
        storage.delete_keys(["p/x"])


# --- templates and configuration ----------------------------------------------------------


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    files = tmp_path / "templates" / "python" / "files"
    make_tree(files, {"main.py": b"print('hello')\n", "README.md": b"# Python\n"})
    python = Template("python", "Python", "python", "", "img", files_dir=files)
    return Catalog({"python": python})


def test_publish_templates_then_copy_prefix_gives_the_template_files(
    storage: SyncingStorage, catalog: Catalog
) -> None:
    assert template_prefix("python") == "_templates/python/"
    assert publish_templates(storage, catalog) == 2
    assert publish_templates(storage, catalog) == 0  # unchanged: nothing rewritten

    storage.copy_prefix(template_prefix("python"), "alice/r1/")

    assert contents(storage, "alice/r1/") == {
        "main.py": b"print('hello')\n",
        "README.md": b"# Python\n",
    }


def test_publish_templates_updates_and_removes_files(
    storage: SyncingStorage, catalog: Catalog
) -> None:
    publish_templates(storage, catalog)
    files_dir = catalog.get("python").files_dir  # type: ignore[union-attr]
    (files_dir / "README.md").unlink()
    (files_dir / "main.py").write_bytes(b"print('v2')\n")

    assert publish_templates(storage, catalog) == 1
    assert contents(storage, "_templates/python/") == {"main.py": b"print('v2')\n"}


def test_publish_the_real_catalogue(storage: SyncingStorage) -> None:
    root = Path(__file__).resolve().parent.parent / "repl_templates"
    real = Catalog.load(root)
    written = publish_templates(storage, real)
    assert written == sum(len(t.files()) for t in real.all())


def test_storage_from_env_builds_local_storage(tmp_path: Path) -> None:
    built = storage_from_env({"DEVEX_DATA_DIR": str(tmp_path)})
    assert isinstance(built, LocalStorage)
    assert built.root == tmp_path / "storage"
    built.check()


def test_storage_from_env_builds_s3_storage(s3_settings: dict[str, str]) -> None:
    built = storage_from_env(s3_settings)
    assert isinstance(built, S3Storage)
    assert built.bucket == s3_settings["DEVEX_S3_BUCKET"]
    built.check()
    built.write("hello.txt", b"hi")
    raw = s3_client(s3_settings["DEVEX_S3_ENDPOINT_URL"])
    assert raw.get_object(Bucket=built.bucket, Key="hello.txt")["Body"].read() == b"hi"
