"""Credentials never reach people: an object-storage endpoint configured with
``user:password@`` fails with the endpoint in botocore's message, and neither the REPL's
error, its events, the autosave report, nor any health answer shows the password; anonymous
health answers say only whether, never why."""

from __future__ import annotations

import boto3
import pytest
import redis as redis_lib

from devex import create_app
from devex.config import Settings
from devex.models import Desired, Repl, Status
from devex.timestamps import utcnow
from devex.wiring import build
from devex_shared.redact import redact
from devex_shared.storage import StorageError
from devex_shared.storage.s3 import S3Storage, client_config
from jobs import context
from jobs import repl as repl_jobs
from tests.support.auth_helpers import (
    ADMIN,
    OWNER,
    create_repl,
    session_api,
    store,
)
from tests.support.ports import free_port

PASSWORD = "s3cr3t-pass"
BUCKET = "team-bucket"


@pytest.fixture
def app(users_app):
    """Without a worker, with the three users: states are set in the store."""
    return users_app


def endpoint_with_credentials() -> str:
    """An endpoint with credentials in its URL where nothing listens: every call fails."""
    return f"http://minio-user:{PASSWORD}@127.0.0.1:{free_port()}"


def failing_storage(endpoint: str) -> S3Storage:
    config = client_config(path_style=True).merge(
        boto3.session.Config(retries={"max_attempts": 1, "mode": "standard"}))
    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="AKIDTEST",
        aws_secret_access_key="sk-test", config=config)
    return S3Storage(BUCKET, endpoint_url=endpoint, client=client)


def test_storage_errors_and_repr_name_no_credentials():
    endpoint = endpoint_with_credentials()
    storage = failing_storage(endpoint)
    with pytest.raises(StorageError) as failed:
        storage.check()
    message = str(failed.value)
    assert "Could not connect" in message and "127.0.0.1" in message  # still useful
    assert PASSWORD not in message and "minio-user" not in message
    assert PASSWORD not in repr(storage)


@pytest.fixture
def components(redis_url, data_dir):
    settings = Settings.from_env({}, redis_url=redis_url, data_dir=data_dir, secret_key="s",
                                 job_retry_intervals=(0,), lock_wait=0)
    comps = build(settings)
    comps.storage = failing_storage(endpoint_with_credentials())
    context.bind_thread(comps)
    yield comps
    context.bind_thread(None)
    comps.redis.close()


def test_a_failed_job_shows_its_reason_without_credentials(components):
    now = utcnow()
    repl = Repl(id="abc123def456", name="r", template="python", owner_id="7",
                owner_login="ada", storage_prefix="ada/abc123def456/", status=Status.CREATING,
                desired=Desired.STOPPED, created_at=now, updated_at=now)
    components.store.create(repl)
    assert repl_jobs.create(repl.id) == "failed"  # not under RQ: the final attempt
    failed = components.store.require(repl.id)
    assert failed.status == Status.FAILED and "Could not connect" in failed.error
    raw = components.redis.hget(f"replMeta:{repl.id}", "error").decode()
    events = [e.message for e in components.store.events(repl.id)]
    for text in (failed.error, raw, *events):
        assert PASSWORD not in text and "minio-user" not in text, text


def test_messages_written_before_redaction_are_shown_redacted(app):
    repl_id = create_repl(app, OWNER[0], status=Status.FAILED)
    leaked = f'S3 list failed: Could not connect to "http://u:{PASSWORD}@minio:9000/b"'
    app.extensions["devex"].components.redis.hset(f"replMeta:{repl_id}", "error", leaked)
    store(app).add_event(repl_id, "failed", leaked)
    owner = session_api(app, OWNER[0])
    shown = [owner.get(f"/api/repl/{repl_id}").get_data(as_text=True),
             owner.get(f"/api/repl/{repl_id}/events").get_data(as_text=True),
             owner.get(f"/repls/{repl_id}").get_data(as_text=True)]
    for text in shown:
        assert PASSWORD not in text and "http://***@minio:9000/b" in text


def test_an_autosave_failure_reported_by_the_runner_is_redacted(app):
    from devex_shared import access_tokens

    repl_id = create_repl(app, OWNER[0], status=Status.RUNNING)
    key = access_tokens.repl_key("test-secret", repl_id)
    token = access_tokens.sign(key, repl_id, access_tokens.RUNNER_SCOPE)
    error = f'S3 put failed: Could not connect to the endpoint URL: "http://u:{PASSWORD}@m/x"'
    resp = app.test_client().post(
        f"/api/runner/{repl_id}/heartbeat", json={"active": False, "autosave": {
            "state": "error", "error": error}}, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.json
    raw = [e.message for e in store(app).events(repl_id)]
    assert any("Autosave failed" in m for m in raw)
    assert not [m for m in raw if PASSWORD in m]


def test_health_answers_hide_credentials_and_anonymous_ones_every_detail(data_dir):
    """A Redis URL with a password that cannot be reached, storage with credentials in
    its endpoint: the anonymous probe says "unavailable"; administrators see the reasons,
    without the credentials."""
    redis_url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    app = create_app({"TESTING": True, "DEVEX_DATA_DIR": data_dir, "DEVEX_SECRET_KEY": "s",
                      "DEVEX_EMBEDDED_WORKER": "false", "DEVEX_REDIS_URL": redis_url})
    anonymous = app.test_client().get("/readyz")
    assert anonymous.status_code == 503
    assert set(anonymous.json.values()) == {"unavailable"}
    assert PASSWORD not in anonymous.get_data(as_text=True)


def test_administrators_see_dependency_errors_without_credentials(app):
    app.extensions["devex"].components.storage = failing_storage(endpoint_with_credentials())
    admin = session_api(app, ADMIN[0])
    resp = admin.get("/api/admin/health")
    assert resp.status_code == 503
    assert "Could not connect" in resp.json["storage"]
    assert PASSWORD not in resp.get_data(as_text=True)
    anonymous = app.test_client().get("/readyz").get_data(as_text=True)
    assert BUCKET not in anonymous and "Could not connect" not in anonymous


@pytest.mark.parametrize("text, secret", [
    ("redis://:pw1234@redis:6379/0 refused", "pw1234"),
    ('endpoint URL: "https://AKIA:wJalr@s3.example.com/b?x=1"', "wJalr"),
    ("aws_secret_access_key=abcd1234 in the environment", "abcd1234"),
    ("password: hunter2x", "hunter2x"),
])
def test_redact_removes_url_credentials_and_named_secrets(text, secret):
    assert secret not in redact(text)
    assert redact("nothing secret: http://host/path?a=1") == "nothing secret: http://host/path?a=1"
    assert redact("key is topsecret", ["topsecret"]) == "key is ***"


def test_a_redis_error_names_no_password():
    """What redis-py says when a password-protected Redis is unreachable."""
    client = redis_lib.Redis.from_url(f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0",
                                      socket_connect_timeout=2)
    with pytest.raises(redis_lib.RedisError) as failed:
        client.ping()
    assert PASSWORD not in redact(str(failed.value))
