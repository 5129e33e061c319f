"""Pytest fixtures for a real S3 endpoint: moto's server on 127.0.0.1, one bucket per test.

Use with ``pytest_plugins = ["tests.support.moto_server"]``. The server speaks HTTP, so the
code under test runs exactly as against AWS, R2 or MinIO (signing, paging, retries).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.support.ports import free_port

CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
REGION = "us-east-1"
START_TIMEOUT = 30.0  # seconds; moto imports Flask and its backends before answering




def _answers(url: str) -> bool:
    # An empty ProxyHandler: never route the probe through a proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1):
            return True
    except urllib.error.HTTPError:  # any HTTP answer means the server is up
        return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a moto S3 server running for the whole test session."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "server.log"
    with log_path.open("wb") as log:  # a file, not a pipe: a full pipe would block the server
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-p", str(port), "-H", "127.0.0.1"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(url + "/"):
            if proc.poll() is not None:
                pytest.fail(f"moto server exited early:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"moto server did not answer within {START_TIMEOUT}s")
            time.sleep(0.1)  # poll interval, bounded by the deadline above
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@functools.cache
def _boto_session() -> boto3.session.Session:
    # One session for all test clients: a new session re-reads the S3 model (~0.5 s each).
    return boto3.session.Session()


def s3_client(endpoint_url: str, config: Config | None = None) -> Any:
    """A boto3 client for the test server (path-style, test credentials)."""
    return _boto_session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        config=config or Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        **CREDENTIALS,
    )


@pytest.fixture
def s3_bucket(moto_server: str) -> str:
    """A fresh, uniquely named bucket on the moto server (left for the server to discard)."""
    name = f"devex-test-{uuid.uuid4().hex[:16]}"
    s3_client(moto_server).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_settings(moto_server: str, s3_bucket: str) -> dict[str, str]:
    """``DEVEX_*`` environment values that point the app at the test bucket."""
    return {
        "DEVEX_STORAGE": "s3",
        "DEVEX_S3_BUCKET": s3_bucket,
        "DEVEX_S3_ENDPOINT_URL": moto_server,
        "DEVEX_S3_REGION": REGION,
        "DEVEX_S3_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "DEVEX_S3_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        "DEVEX_S3_PATH_STYLE": "true",
    }
