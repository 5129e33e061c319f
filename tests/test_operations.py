"""What operators see (issue 12, deliverable 6 and D8): /metrics with job histograms recorded
by real ``rq worker`` work horses through Redis, queue depth and age, reconcile repairs and
request durations (summed over gunicorn workers in multiprocess mode); JSON log lines from
gunicorn and from rq workers with request, user, REPL and job ids and no secrets; request
ids; and runner logs that go with their REPL."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue, get_current_job

from devex import create_app, metrics
from devex.logs import ContextFilter, JsonFormatter
from tests.conftest import ROOT, login_local
from tests.support.gunicorn_server import gunicorn

SECRET = "very-secret-key-value"


# -- jobs the rq worker runs in its work horses (imported there by dotted path) -------------


def timed_job(kind: str, outcome: str, seconds: float) -> str:
    """Records a job's end as the lifecycle jobs do, from a forked work horse."""
    metrics.observe_job(get_current_job().connection, kind, outcome, seconds)
    return outcome


def repairing_job(kind: str, n: int) -> None:
    metrics.count_repair(get_current_job().connection, kind, n)


def leaky_job() -> None:
    """Logs what a careless library might: the secret key, a URL with a password."""
    logging.getLogger("tests.leaky").warning(
        "connecting with %s to https://user:hunter22@s3.example.com/b", os.environ[
            "DEVEX_SECRET_KEY"])


# -- helpers ------------------------------------------------------------------------------


def scrape(client, **kw) -> dict[str, list]:
    """Samples by metric family name from ``/metrics``."""
    resp = client.get("/metrics", **kw)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    text = resp.get_data(as_text=True)
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def sample(families: dict, name: str, suffix: str = "", **labels) -> float | None:
    family = name.removesuffix("_total") if name.endswith("_total") else name
    for s in families.get(family, []):
        if s.name == name + suffix and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def run_worker_burst(env: dict[str, str], log: Path) -> None:
    """A real ``rq worker`` (JSON logging through ``-c devex.rq_config``) that runs every
    queued job in forked work horses, then exits."""
    rq = Path(sys.executable).parent / "rq"
    full = {k: v for k, v in os.environ.items() if not k.startswith("DEVEX_")}
    full.update(env, PYTHONPATH=str(ROOT))
    with log.open("ab") as out:
        proc = subprocess.run(
            [str(rq), "worker", "-w", "jobs.worker.DevexWorker", "-c", "devex.rq_config",
             "--burst", "devex"],
            cwd=ROOT, env=full, stdout=out, stderr=subprocess.STDOUT, timeout=120,
        )
    assert proc.returncode == 0, log.read_text()


@pytest.fixture
def cluster_env(redis_url, data_dir) -> dict[str, str]:
    return {"DEVEX_REDIS_URL": redis_url, "DEVEX_DATA_DIR": str(data_dir),
            "DEVEX_SECRET_KEY": SECRET, "DEVEX_AUTH": "local"}


@pytest.fixture
def cluster_app(cluster_env):
    app = create_app({"TESTING": True, "DEVEX_EMBEDDED_WORKER": "false", **cluster_env})
    yield app
    app.extensions["devex"].close()


# -- metrics ------------------------------------------------------------------------------


def test_job_and_repair_metrics_from_worker_processes_and_the_queue_reach_metrics(
        cluster_app, cluster_env, tmp_path):
    conn = redis.Redis.from_url(cluster_env["DEVEX_REDIS_URL"])
    queue = Queue("devex", connection=conn)
    first = queue.enqueue(timed_job, "start", "running", 3.0)
    queue.enqueue(timed_job, "start", "running", 0.2)
    queue.enqueue(timed_job, "start", "failed", 700)
    queue.enqueue(timed_job, "stop", "stopped", 12)
    queue.enqueue(repairing_job, "resumed", 2)
    first.enqueued_at = datetime.now(UTC) - timedelta(seconds=120)  # it has waited 2 min
    first.save()
    client = cluster_app.test_client()

    waiting = scrape(client)
    assert sample(waiting, "devex_queue_depth", queue="devex") == 5
    assert sample(waiting, "devex_queue_oldest_job_age_seconds", queue="devex") >= 120
    assert sample(waiting, "devex_redis_up") == 1

    run_worker_burst(cluster_env, tmp_path / "worker.log")

    done = scrape(client)
    assert sample(done, "devex_queue_depth", queue="devex") == 0
    assert sample(done, "devex_queue_oldest_job_age_seconds", queue="devex") == 0
    hist = "devex_job_duration_seconds"
    running = {"kind": "start", "outcome": "running"}
    assert sample(done, hist, "_bucket", le="0.25", **running) == 1
    assert sample(done, hist, "_bucket", le="2.5", **running) == 1
    assert sample(done, hist, "_bucket", le="5.0", **running) == 2
    assert sample(done, hist, "_bucket", le="+Inf", **running) == 2
    assert sample(done, hist, "_count", **running) == 2
    assert sample(done, hist, "_sum", **running) == pytest.approx(3.2)
    failed = {"kind": "start", "outcome": "failed"}
    assert sample(done, hist, "_bucket", le="600.0", **failed) == 0
    assert sample(done, hist, "_bucket", le="+Inf", **failed) == 1
    assert sample(done, hist, "_count", kind="stop", outcome="stopped") == 1
    assert sample(done, "devex_job_failures_total", kind="start") == 1
    assert sample(done, "devex_job_failures_total", kind="stop") is None
    assert sample(done, "devex_reconcile_repairs_total", kind="resumed") == 2
    conn.close()


def test_request_durations_by_endpoint_and_the_repl_gauge(app, api):
    for _ in range(3):
        assert api.get("/healthz").status_code == 200
    assert app.test_client().get("/api/repl/").status_code == 401
    assert api.post("/api/repl/create", json={"name": "m", "template": "bash",
                                              "start": False}).status_code == 202
    families = scrape(app.test_client())
    name = "devex_http_request_duration_seconds"
    assert sample(families, name, "_count", endpoint="health.healthz", method="GET",
                  status="200") == 3
    assert sample(families, name, "_count", endpoint="api.list_repls", method="GET",
                  status="401") == 1
    assert sample(families, name, "_count", endpoint="api.create", method="POST",
                  status="202") == 1
    assert sum(s.value for s in families["devex_repls"]) == 1  # today's gauge is kept


def test_metrics_ask_for_the_bearer_token_when_one_is_set(data_dir):
    app = create_app({"TESTING": True, "DEVEX_DATA_DIR": data_dir, "DEVEX_SECRET_KEY": "m",
                      "DEVEX_METRICS_TOKEN": "scrape-token", "DEVEX_EMBEDDED_WORKER": "false"})
    try:
        client = app.test_client()
        refused = client.get("/metrics")
        assert refused.status_code == 401 and refused.json["error"]["code"] == "unauthorized"
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code \
            == 401
        scrape(client, headers={"Authorization": "Bearer scrape-token"})
    finally:
        app.extensions["devex"].close()


# -- request ids and JSON logs --------------------------------------------------------------


def test_request_ids_are_kept_when_sane_and_made_otherwise(client):
    kept = client.get("/healthz", headers={"X-Request-ID": "edge-7f3a.42"})
    assert kept.headers["X-Request-ID"] == "edge-7f3a.42"
    for insane in ("two words", "x" * 200, "<script>"):
        made = client.get("/healthz", headers={"X-Request-ID": insane}).headers["X-Request-ID"]
        assert made != insane and len(made) == 32
    ids = {client.get("/api/repl/").headers["X-Request-ID"] for _ in range(3)}
    assert len(ids) == 3  # one each, errors too


def test_forked_workers_make_their_own_request_ids():
    """gunicorn forks its workers after loading the app: ids made in two workers must not
    repeat each other's (each draws its own random part)."""
    from devex.logs import request_id_from

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one id, then out without running any cleanup
        os.write(write, ",".join(request_id_from({}) for _ in range(2)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    os.close(write)
    child = os.read(read, 200).decode().split(",")
    parent = [request_id_from({}) for _ in range(2)]
    assert child[0][:16] != parent[0][:16]  # another process, another random part
    assert len(set(child + parent)) == 4 and all(len(i) == 32 for i in child + parent)


def test_a_log_line_names_its_request_user_and_repl_and_hides_secrets(app):
    """The filter and format the web installs, on a real request of a logged-in user."""
    from devex.web.security import require_actor

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter(["test-secret"]))
    handler.addFilter(ContextFilter())
    probe = logging.getLogger("tests.probe")
    probe.addHandler(handler)

    @app.get("/api/repl/<repl_id>/log-probe")
    def log_probe(repl_id):
        require_actor()
        probe.warning("looked at %s with key %s via https://u:pw123@s3.example.com/b",
                      repl_id, "test-secret")
        return {"ok": True}

    try:
        api = login_local(app.test_client())
        api.get("/api/repl/0123456789ab/log-probe", headers={"X-Request-ID": "req-77"})
    finally:
        probe.removeHandler(handler)
    line = json.loads(out.getvalue())
    assert line["request_id"] == "req-77" and line["user_id"] == "local"
    assert line["repl_id"] == "0123456789ab"
    assert line["level"] == "WARNING" and line["logger"] == "tests.probe"
    assert "test-secret" not in line["message"] and "pw123" not in line["message"]
    assert line["time"].endswith("Z")


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line: a JSON object or a failure


def test_gunicorn_logs_json_and_sums_request_metrics_over_its_workers(tmp_path, redis_url):
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    settings = {"DEVEX_REDIS_URL": redis_url, "DEVEX_DATA_DIR": str(tmp_path / "data"),
                "DEVEX_SECRET_KEY": SECRET, "DEVEX_AUTH": "local"}
    with gunicorn(tmp_path, settings, "-c", "python:devex.gunicorn_conf", "--workers", "2",
                  "--access-logfile", "-",
                  env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}) as web:
        answers = [web.get("/healthz", headers={"X-Request-ID": f"probe-{i}"})
                   for i in range(20)]
        assert [a.headers["X-Request-ID"] for a in answers] == [f"probe-{i}" for i in
                                                                range(20)]
        login = requests.post(web.url + "/auth/local?code=SECRET-CODE", timeout=5)
        assert login.status_code == 200
        text = web.get("/metrics").text
    families = {f.name: f.samples for f in text_string_to_metric_families(text)}
    # Each worker counts its own requests in the shared directory; the scrape sums them.
    assert sample(families, "devex_http_request_duration_seconds", "_count",
                  endpoint="health.healthz", method="GET", status="200") >= 20
    assert len(list(multiproc.glob("histogram_*.db"))) >= 1
    log = web.log.read_text()
    lines = json_lines(log)
    access = [e for e in lines if e["logger"] == "gunicorn.access"]
    assert {f"probe-{i}" for i in range(20)} <= {e.get("request_id") for e in access}
    first = next(e for e in access if e.get("request_id") == "probe-0")
    assert first["method"] == "GET" and first["path"] == "/healthz" and first["status"] == 200
    assert any(e["message"].startswith("Starting gunicorn") for e in lines)  # the master too
    assert SECRET not in log and "SECRET-CODE" not in log


def test_rq_worker_logs_json_with_job_and_repl_ids_and_no_secrets(cluster_app, cluster_env,
                                                                    tmp_path):
    api = login_local(cluster_app.test_client())
    repl_id = api.post("/api/repl/create", json={"name": "logged", "template": "bash",
                                                 "start": False}).json["repl"]["id"]
    Queue("devex", connection=cluster_app.extensions["devex"].components.redis).enqueue(
        leaky_job)
    log = tmp_path / "worker.log"
    run_worker_burst(cluster_env, log)  # the create job, and the leaky one
    assert api.delete(f"/api/repl/{repl_id}").status_code == 202
    run_worker_burst(cluster_env, log)  # the delete job

    text = log.read_text()
    lines = json_lines(text)
    deleted = next(e for e in lines if e["message"].startswith(f"REPL {repl_id} deleted"))
    assert deleted["repl_id"] == repl_id and deleted["job_id"]
    assert deleted["logger"] == "jobs.repl"
    rq_own = [e for e in lines if e["logger"].startswith("rq.")]
    assert any("Job OK" in e["message"] for e in rq_own)  # rq's own lines, as JSON
    leaked = next(e for e in lines if e["logger"] == "tests.leaky")
    assert leaked["job_id"] and "repl_id" not in leaked  # not a REPL's job
    assert SECRET not in text and "hunter22" not in text
    # The lifecycle jobs themselves timed their work for /metrics, from the work horses.
    families = scrape(cluster_app.test_client())
    kinds = {s.labels["kind"] for s in families["devex_job_duration_seconds"]
             if s.name.endswith("_count")}
    assert {"create", "delete"} <= kinds


# -- D8: runner logs go with their REPL -------------------------------------------------------


def test_a_deleted_repls_runner_log_and_records_are_removed(app, api, data_dir):
    repl_id = api.create_running("short-lived", template="bash")
    runners = data_dir / "runners"
    assert (runners / f"{repl_id}.log").exists()
    other = api.create_running("stays", template="bash")

    assert api.delete(f"/api/repl/{repl_id}").status_code == 202
    api.wait_gone(repl_id)

    assert sorted(p.name for p in runners.glob(f"{repl_id}*")) == []
    assert not (data_dir / "workspaces" / repl_id).exists()
    assert (runners / f"{other}.log").exists()  # only the deleted REPL's
