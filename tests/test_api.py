"""The JSON contract: bad input gets the contract's error and changes nothing."""

from __future__ import annotations

import pytest

from devex.models import User
from tests.support.redis_contents import redis_contents


def state(app) -> dict:
    """Everything a refused request must leave untouched: every key but RQ's, with its
    contents."""
    return redis_contents(app.extensions["devex"].components.redis)


def error_of(resp, status, code=None):
    assert resp.status_code == status, resp.get_json()
    body = resp.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    return body["error"]


def test_factory_reads_settings_from_test_config(app):
    settings = app.extensions["devex"].settings
    assert settings.secret_key == "test-secret"
    assert settings.embedded and settings.auth_mode == "local"
    assert app.config["MAX_CONTENT_LENGTH"] == 64 * 1024


def test_templates_catalogue(api):
    templates = api.get("/api/templates").json["templates"]
    assert {"python", "node", "go", "bash"} <= {t["id"] for t in templates}
    assert all(set(t) == {"id", "name", "language", "description"} for t in templates)


@pytest.mark.parametrize(
    "body, code",
    [
        ({"name": "", "template": "python"}, "invalid_name"),
        ({"name": "   ", "template": "python"}, "invalid_name"),
        ({"name": "x" * 65, "template": "python"}, "invalid_name"),
        ({"name": "bad/name", "template": "python"}, "invalid_name"),
        ({"name": "ok", "template": "cobol"}, "invalid_template"),
        ({"name": "ok"}, "invalid_input"),
        ({"name": 5, "template": "python"}, "invalid_input"),
        ({"name": "ok", "template": "python", "start": "maybe"}, "invalid_input"),
    ],
)
def test_create_rejects_bad_input_and_changes_nothing(app, api, body, code):
    before = state(app)
    error_of(api.post("/api/repl/create", json=body), 400, code)
    assert state(app) == before


def test_malformed_json_is_400(app, api):
    before = state(app)
    resp = api.client.post(
        "/api/repl/create", data="{nope", content_type="application/json",
        headers={"X-CSRF-Token": api.csrf},
    )
    error_of(resp, 400)
    assert state(app) == before


def test_oversize_body_is_413(app, api):
    before = state(app)
    body = {"name": "big", "template": "python", "pad": "x" * (70 * 1024)}
    error_of(api.post("/api/repl/create", json=body), 413, "too_large")
    assert state(app) == before


def test_duplicate_name_ignoring_case_is_409(app, api):
    r = api.post("/api/repl/create", json={"name": "Hello", "template": "bash", "start": False})
    assert r.status_code == 202
    api.wait_status(r.json["repl"]["id"], "stopped")  # its job is done: the state is still
    before = state(app)
    error_of(
        api.post("/api/repl/create", json={"name": " hello ", "template": "bash"}), 409,
        "name_taken",
    )
    assert state(app) == before


def test_names_are_trimmed(api):
    r = api.post("/api/repl/create", json={"name": "  spaced  ", "template": "bash",
                                           "start": False})
    assert r.json["repl"]["name"] == "spaced"


def test_unknown_id_is_404(api):
    error_of(api.get("/api/repl/doesnotexist"), 404, "not_found")
    error_of(api.post("/api/repl/doesnotexist/start"), 404, "not_found")
    error_of(api.delete("/api/repl/doesnotexist"), 404, "not_found")
    error_of(api.get("/api/repl/../../etc"), 404)


def test_other_users_repl_is_404_and_untouched(app, api):
    repl_id = api.post("/api/repl/create", json={"name": "mine", "template": "bash",
                                                 "start": False}).json["repl"]["id"]
    api.wait_status(repl_id, "stopped")
    store = app.extensions["devex"].components.store
    store.upsert_user(User(id="4242", login="mallory"))
    other = app.test_client()
    with other.session_transaction() as s:
        s["uid"], s["csrf"] = "4242", "tok"
    before = state(app)
    h = {"X-CSRF-Token": "tok"}
    error_of(other.get(f"/api/repl/{repl_id}"), 404, "not_found")
    error_of(other.get(f"/api/repl/{repl_id}/events"), 404, "not_found")
    error_of(other.post(f"/api/repl/{repl_id}/start", headers=h), 404, "not_found")
    error_of(other.post(f"/api/repl/{repl_id}/stop", headers=h), 404, "not_found")
    error_of(other.delete(f"/api/repl/{repl_id}", headers=h), 404, "not_found")
    error_of(other.post(f"/api/repl/{repl_id}/session", headers=h), 404, "not_found")
    assert other.get("/api/repl/").json["repls"] == []
    assert state(app) == before


def test_refused_transition_is_409_and_changes_nothing(app, api):
    repl_id = api.post("/api/repl/create", json={"name": "t", "template": "bash",
                                                 "start": False}).json["repl"]["id"]
    api.wait_status(repl_id, "stopped")
    error_of(api.post(f"/api/repl/{repl_id}/session"), 409, "not_running")
    app.extensions["devex"].worker.stop()  # the delete job waits: the REPL stays "deleting"
    assert api.delete(f"/api/repl/{repl_id}").status_code == 202
    store = app.extensions["devex"].components.store
    before = state(app)
    meta = store.redis.hgetall(f"replMeta:{repl_id}")
    error_of(api.post(f"/api/repl/{repl_id}/start"), 409, "invalid_state")
    error_of(api.post(f"/api/repl/{repl_id}/session"), 409, "not_running")
    assert store.redis.hgetall(f"replMeta:{repl_id}") == meta
    assert state(app) == before


def test_store_enforces_the_transition_table_whatever_the_caller_allows(app):
    from devex.infra.store_errors import StatusRefused
    from devex.models import Desired, Repl, Status
    from devex.timestamps import utcnow

    store = app.extensions["devex"].components.store
    now = utcnow()
    store.create(Repl(id="aaaaaaaaaaaa", name="x", template="bash", owner_id="1",
                      owner_login="a", storage_prefix="a/aaaaaaaaaaaa/", status=Status.STOPPED,
                      desired=Desired.STOPPED, created_at=now, updated_at=now))
    with pytest.raises(StatusRefused):  # stopped -> running is not in the table
        store.transition("aaaaaaaaaaaa", Status.RUNNING, allowed=[Status.STOPPED])
    with pytest.raises(ValueError):  # and the status cannot be smuggled in as a field
        store.set_fields("aaaaaaaaaaaa", status="running")
    assert store.require("aaaaaaaaaaaa").status == Status.STOPPED


def test_running_quota_counts_repls_about_to_start(app, api):
    """Creates with start, and starts of REPLs still being created, count at once."""
    from dataclasses import replace

    ext = app.extensions["devex"]
    ext.worker.stop()  # nothing gets past "creating": only the records count
    ext.components.settings = replace(ext.components.settings, quota_running=1)
    first = api.post("/api/repl/create", json={"name": "one", "template": "bash"})
    assert first.status_code == 202
    before = state(app)
    second = api.post("/api/repl/create", json={"name": "two", "template": "bash"})
    error_of(second, 429, "quota_exceeded")
    assert second.headers["Retry-After"]
    assert state(app) == before
    idle = api.post("/api/repl/create", json={"name": "three", "template": "bash",
                                              "start": False}).json["repl"]["id"]
    error_of(api.post(f"/api/repl/{idle}/start"), 429, "quota_exceeded")
    assert api.repl(idle).json["desired"] == "stopped"


def test_anonymous_gets_401_and_cookie_without_csrf_gets_403(app, client, api):
    error_of(app.test_client().get("/api/repl/"), 401, "unauthorized")
    before = state(app)
    error_of(client.post("/api/repl/create", json={"name": "x", "template": "bash"}), 403,
             "csrf_failed")
    assert state(app) == before


def test_start_twice_concurrently_makes_one_job(app, api):
    """Two start requests racing for one stopped REPL: exactly one job is enqueued."""
    from concurrent.futures import ThreadPoolExecutor

    repl_id = api.post("/api/repl/create", json={"name": "race", "template": "bash",
                                                 "start": False}).json["repl"]["id"]
    api.wait_status(repl_id, "stopped")
    app.extensions["devex"].worker.stop()  # keep the queue still while we count
    jobs = app.extensions["devex"].components.jobs

    def start(_):
        c = app.test_client()
        with c.session_transaction() as s:
            s["uid"], s["csrf"] = "local", "t"
        return c.post(f"/api/repl/{repl_id}/start", headers={"X-CSRF-Token": "t"}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(start, range(8)))
    assert codes.count(202) == 1 and codes.count(200) == 7
    assert [j.func_name for j in jobs.queue.jobs] == ["jobs.repl.start"]


def test_openapi_document_describes_the_contract(client):
    spec = client.get("/api/openapi.json").json
    paths = spec["paths"]
    for path in ["/api/templates", "/api/repl/create", "/api/repl/", "/api/repl/{repl_id}",
                 "/api/repl/{repl_id}/start", "/api/repl/{repl_id}/stop",
                 "/api/repl/{repl_id}/events", "/api/repl/{repl_id}/session"]:
        assert path in paths, path
    assert "202" in paths["/api/repl/create"]["post"]["responses"]
    assert "delete" in paths["/api/repl/{repl_id}"]


def test_healthz_and_readyz(client):
    assert client.get("/healthz").status_code == 200
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json == {"redis": "ok"}


def test_every_setting_is_documented_in_env_example():
    from dataclasses import fields

    from devex.config import PREFIX, KubernetesSettings, Settings
    from tests.conftest import ROOT

    documented = (ROOT / ".env.example").read_text()
    names = [PREFIX + f.name.upper() for f in fields(Settings) if f.name != "kubernetes"]
    names += [KubernetesSettings.env_name(f.name) for f in fields(KubernetesSettings)]
    assert "DEVEX_K8S_DNS_POD_LABELS" in names and "DEVEX_KUBECONFIG" in names
    assert [name for name in names if name + "=" not in documented] == []


def test_local_login_answers_only_loopback_callers(app):
    remote = app.test_client()
    resp = remote.post("/auth/local", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    error_of(resp, 404, "not_found")
    ok = app.test_client().post("/auth/local", environ_base={"REMOTE_ADDR": "::1"})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DEVEX_RUNTIME": "kubernetes", "DEVEX_SECRET_KEY": "s", "DEVEX_AUTH": "local"},
         "DEVEX_STORAGE=s3"),
        ({"DEVEX_RUNTIME": "kubernetes", "DEVEX_STORAGE": "s3", "DEVEX_S3_BUCKET": "b",
          "DEVEX_SECRET_KEY": "s"}, "DEVEX_AUTH=github"),
        ({"DEVEX_RUNTIME": "kubernetes", "DEVEX_STORAGE": "s3", "DEVEX_S3_BUCKET": "b",
          "DEVEX_AUTH": "local"}, "DEVEX_SECRET_KEY"),
        ({"DEVEX_CORS_ORIGINS": "*"}, "DEVEX_CORS_ORIGINS"),
        ({"DEVEX_CORS_ORIGINS": "https://ide.example.com/"}, "DEVEX_CORS_ORIGINS"),
        ({"DEVEX_AUTH": "github", "DEVEX_GITHUB_CLIENT_ID": "x"}, "CLIENT_SECRET"),
    ],
)
def test_settings_that_cannot_work_are_refused_at_start(env, message):
    from devex.config import ConfigError, Settings

    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)
