"""Embedded mode: create -> running latency over 20 REPLs, p50 and p95."""

from __future__ import annotations

import statistics
import tempfile
import time

from devex import create_app

COUNT = 20


def run() -> dict:
    data_dir = tempfile.mkdtemp()
    app = create_app(
        {
            "DEVEX_DATA_DIR": data_dir,
            "DEVEX_SECRET_KEY": "bench",
            "DEVEX_QUOTA_RUNNING": str(COUNT),
            "DEVEX_QUOTA_REPLS": str(COUNT),
        }
    )
    client = app.test_client()
    csrf = client.post("/auth/local").json["csrf_token"]
    h = {"X-CSRF-Token": csrf}
    latencies = []
    ids = []
    try:
        for i in range(COUNT):
            t0 = time.perf_counter()
            r = client.post(
                "/api/repl/create", json={"name": f"b{i}", "template": "python"}, headers=h
            )
            repl_id = r.json["repl"]["id"]
            ids.append(repl_id)
            deadline = time.monotonic() + 60
            while client.get(f"/api/repl/{repl_id}").json["status"] != "running":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{repl_id} did not start")
                time.sleep(0.01)
            latencies.append(time.perf_counter() - t0)
    finally:
        for repl_id in ids:
            client.delete(f"/api/repl/{repl_id}", headers=h)
        deadline = time.monotonic() + 60
        while client.get("/api/repl/").json["repls"] and time.monotonic() < deadline:
            time.sleep(0.05)
        app.extensions["devex"].close()
    q = statistics.quantiles(latencies, n=20)
    return {
        "embedded_create_to_running_s": {
            "p50": round(statistics.median(latencies), 3),
            "p95": round(q[18], 3),
            "n": COUNT,
        }
    }
