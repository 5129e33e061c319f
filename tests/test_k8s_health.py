"""Behind an ingress, a web pod stays in service while Kubernetes or S3 blink: ``/readyz``
checks only Redis (what the web itself needs); the dependencies are reported to
administrators by ``GET /api/admin/health``."""

from __future__ import annotations

import pytest

from devex import create_app
from devex.config import KubernetesSettings, Settings
from devex.infra.runtime.kubernetes import KubernetesRuntime
from devex_shared.storage.s3 import S3Storage
from tests.conftest import kill_runners, login_local
from tests.support.ports import free_port


@pytest.fixture
def app(tmp_path, fake):
    app = create_app({"TESTING": True, "DEVEX_DATA_DIR": tmp_path / "data",
                      "DEVEX_SECRET_KEY": "health", "DEVEX_ADMINS": "local",
                      "DEVEX_EMBEDDED_WORKER": "false"})
    components = app.extensions["devex"].components
    settings = Settings(secret_key="health", runtime="kubernetes", storage="s3",
                        s3_bucket="repls",
                        kubernetes=KubernetesSettings(request_timeout=2))
    # The real runtime talks to the fake API server; storage is S3 on a port that refuses.
    components.runtime = KubernetesRuntime(settings, api_client=fake.api_client())
    components.storage = S3Storage("repls", endpoint_url=f"http://127.0.0.1:{free_port()}",
                                   access_key_id="x", secret_access_key="y", path_style=True)
    yield app
    app.extensions["devex"].close()
    kill_runners(tmp_path / "data")


def test_readyz_stays_ready_while_kubernetes_and_s3_are_down(app, fake):
    fake.fail[("GET", "deployments")] = 503  # the API server blinks

    r = app.test_client().get("/readyz")

    assert r.status_code == 200 and r.json == {"redis": "ok"}
    assert fake.count() == 0  # not even asked: a slow API server cannot time the probe out


def test_admins_see_each_dependency_with_its_error(app, fake):
    api = login_local(app.test_client())
    fake.fail[("GET", "deployments")] = 503

    r = api.get("/api/admin/health")

    assert r.status_code == 503
    assert r.json["redis"] == "ok"
    assert r.json["runtime"].startswith("error: RuntimeFailure: Kubernetes is not reachable")
    assert r.json["storage"].startswith("error: StorageError")
    del fake.fail[("GET", "deployments")]
    assert api.get("/api/admin/health").json["runtime"] == "ok"


def test_the_dependency_report_is_for_administrators_only(tmp_path):
    app = create_app({"TESTING": True, "DEVEX_DATA_DIR": tmp_path / "data",
                      "DEVEX_SECRET_KEY": "health", "DEVEX_EMBEDDED_WORKER": "false"})
    try:
        client = app.test_client()
        assert client.get("/api/admin/health").status_code == 401
        api = login_local(client)
        r = api.get("/api/admin/health")
        assert r.status_code == 403 and r.json["error"]["code"] == "admin_only"
    finally:
        app.extensions["devex"].close()
