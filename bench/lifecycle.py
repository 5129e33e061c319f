"""Start -> running and stop -> stopped of a bash REPL, sequentially, p50 and max, in both
wirings: embedded (in-process Redis, worker thread) and redis-server + a real ``rq worker``.
Time is taken from the API call to the status as the API reports it, polled every 10 ms."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devex import create_app

ROOT = Path(__file__).resolve().parent.parent
CYCLES = int(os.environ.get("BENCH_CYCLES", "10"))


def _wait(client, repl_id: str, status: str) -> None:
    deadline = time.monotonic() + 120
    while client.get(f"/api/repl/{repl_id}").json["status"] != status:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{repl_id} never became {status}")
        time.sleep(0.01)


def _cycles(app) -> dict:
    client = app.test_client()
    csrf = {"X-CSRF-Token": client.post("/auth/local").json["csrf_token"]}
    repl_id = client.post("/api/repl/create", json={"name": "cycle", "template": "bash",
                                                    "start": False}, headers=csrf).json[
        "repl"]["id"]
    _wait(client, repl_id, "stopped")
    starts, stops = [], []
    try:
        for _ in range(CYCLES):
            t0 = time.perf_counter()
            client.post(f"/api/repl/{repl_id}/start", headers=csrf)
            _wait(client, repl_id, "running")
            starts.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            client.post(f"/api/repl/{repl_id}/stop", headers=csrf)
            _wait(client, repl_id, "stopped")
            stops.append(time.perf_counter() - t0)
    finally:
        client.delete(f"/api/repl/{repl_id}", headers=csrf)

    def summary(xs):
        return {"p50_s": round(statistics.median(xs), 3), "max_s": round(max(xs), 3)}

    return {"start_to_running": summary(starts), "stop_to_stopped": summary(stops),
            "cycles": CYCLES}


def run(redis_url: str) -> dict:
    results = {}
    embedded = create_app({"DEVEX_DATA_DIR": tempfile.mkdtemp(), "DEVEX_SECRET_KEY": "bench"})
    try:
        results["embedded"] = _cycles(embedded)
    finally:
        embedded.extensions["devex"].close()
    env = {"DEVEX_REDIS_URL": redis_url, "DEVEX_SECRET_KEY": "bench", "DEVEX_AUTH": "local",
           "DEVEX_DATA_DIR": tempfile.mkdtemp()}
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "rq"), "worker", "-w", "jobs.worker.DevexWorker",
         "--url", redis_url, "--with-scheduler", "devex"],
        cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    app = create_app(env)
    try:
        results["redis_rq_worker"] = _cycles(app)
    finally:
        app.extensions["devex"].close()
        worker.terminate()
        worker.wait(30)
    return {"lifecycle_bash": results}


if __name__ == "__main__":
    import json

    from tests.support.redis_server import running_redis

    with running_redis() as url:
        print(json.dumps(run(url), indent=2))
