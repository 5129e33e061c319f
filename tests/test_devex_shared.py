"""``devex_shared``: what the core and the runner both use stays free of the core's stack, and
its storage variables read as the core's settings read them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devex.config import ConfigError, Settings
from devex.infra.storage_factory import storage_settings
from devex_shared.bearer import parse_bearer
from devex_shared.storage import StorageConfigError, StorageSettings
from tests.support.runner_process import REPO, clean_env

# Imported by every module of devex_shared in a process where these cannot be imported.
IMPORT_ALL_WITH_THE_CORE_BLOCKED = """
import importlib, pkgutil, sys

BLOCKED = {"devex", "flask", "apiflask", "flask_session", "flask_dance", "redis", "rq",
           "kubernetes", "yaml", "marshmallow"}

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"devex_shared must not import {name}")
        return None

sys.meta_path.insert(0, Block())
import devex_shared
names = [m.name for m in pkgutil.walk_packages(devex_shared.__path__, "devex_shared.")]
for name in names:
    importlib.import_module(name)
print(",".join(sorted(names)))
"""


def test_devex_shared_imports_nothing_of_the_core():
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL_WITH_THE_CORE_BLOCKED], cwd=REPO,
                          env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    imported = done.stdout.strip().split(",")
    assert {"devex_shared.access_tokens", "devex_shared.storage.s3",
            "devex_shared.storage.sync"} <= set(imported)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"DEVEX_DATA_DIR": "/srv/devex"},
        {"DEVEX_STORAGE": "local", "DEVEX_DATA_DIR": ""},
        {
            "DEVEX_STORAGE": "s3",
            "DEVEX_S3_BUCKET": "repls",
            "DEVEX_S3_ENDPOINT_URL": "https://u:p@minio:9000",
            "DEVEX_S3_REGION": "eu-west-3",
            "DEVEX_S3_ACCESS_KEY_ID": "AKIA",
            "DEVEX_S3_SECRET_ACCESS_KEY": "hunter2",
            "DEVEX_S3_PATH_STYLE": " Yes ",
        },
        {"DEVEX_STORAGE": "s3", "DEVEX_S3_BUCKET": "b", "DEVEX_S3_PATH_STYLE": "0"},
    ],
)
def test_the_runner_reads_storage_variables_as_the_core_does(env: dict[str, str]):
    assert StorageSettings.from_env(env) == storage_settings(Settings.from_env(env))


def test_storage_settings_from_the_environment():
    built = StorageSettings.from_env({"DEVEX_DATA_DIR": "/srv/devex", "DEVEX_STORAGE": "s3",
                                      "DEVEX_S3_BUCKET": "b", "DEVEX_S3_PATH_STYLE": "on",
                                      "DEVEX_S3_SECRET_ACCESS_KEY": "hunter2"})
    assert built.local_root == Path("/srv/devex/storage")
    assert (built.kind, built.s3_bucket, built.s3_region, built.s3_path_style) == (
        "s3", "b", "us-east-1", True)
    assert "hunter2" not in repr(built)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEVEX_STORAGE": "gcs"}, "DEVEX_STORAGE must be 'local' or 's3'"),
        ({"DEVEX_STORAGE": "s3"}, "DEVEX_STORAGE=s3 needs DEVEX_S3_BUCKET"),
    ],
)
def test_bad_storage_variables_are_refused_in_the_same_words(env: dict[str, str], message: str):
    with pytest.raises(StorageConfigError, match=message):
        StorageSettings.from_env(env)
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),  # the scheme in any case, spaces around the token ignored
        ("Bearer", ""),  # a Bearer header without a token is not "no header"
        ("Bearer   ", ""),
        ("Basic dXNlcjpwdw==", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_bearer(header: str | None, token: str | None):
    assert parse_bearer(header) == token
