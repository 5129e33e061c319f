"""Requests/s of ``GET /api/repl/<id>`` against a bare Flask endpoint, same gunicorn
settings, same run, reported as a ratio (machine speed cancels out)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 2000
ROUNDS = 3
CLIENTS = 8
GUNICORN = [
    "--workers",
    "2",
    "--threads",
    "4",
    "--worker-class",
    "gthread",
    "--log-level",
    "warning",
]


def serve(app_spec: str, env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            *GUNICORN,
            "--bind",
            f"127.0.0.1:{port}",
            app_spec,
        ],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(url + "/healthz", timeout=1)
            return proc, url
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{app_spec} did not start")


def load(url: str, path: str, headers: dict) -> float:
    def worker(n):
        with requests.Session() as s:
            for _ in range(n):
                r = s.get(url + path, headers=headers, timeout=10)
                assert r.status_code == 200, r.text

    per = REQUESTS // CLIENTS
    worker(20)  # warm-up
    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(worker, [per] * CLIENTS))
    return (per * CLIENTS) / (time.perf_counter() - start)


def run(redis_url: str) -> dict:
    data_dir = tempfile.mkdtemp()
    env = {
        "DEVEX_REDIS_URL": redis_url,
        "DEVEX_SECRET_KEY": "bench",
        "DEVEX_DATA_DIR": data_dir,
        "DEVEX_AUTH": "local",
    }
    devex_proc, devex_url = serve("wsgi:app", env)
    bare_proc, bare_url = serve("bench.bare_app:app", env)
    try:
        s = requests.Session()
        me = s.post(devex_url + "/auth/local", timeout=10).json()
        created = s.post(
            devex_url + "/api/repl/create",
            timeout=10,
            json={"name": "bench", "template": "bash", "start": False},
            headers={"X-CSRF-Token": me["csrf_token"]},
        ).json()
        path = f"/api/repl/{created['repl']['id']}"
        cookie = {"Cookie": "; ".join(f"{c.name}={c.value}" for c in s.cookies)}
        # Interleaved rounds, median of each: a busy moment hurts both sides alike.
        devex_runs, bare_runs = [], []
        for _ in range(ROUNDS):
            devex_runs.append(load(devex_url, path, cookie))
            bare_runs.append(load(bare_url, "/hello", {}))
        devex_rps, bare_rps = statistics.median(devex_runs), statistics.median(bare_runs)
    finally:
        for p in (devex_proc, bare_proc):
            p.terminate()
            p.wait(10)
    return {
        "get_repl_rps": round(devex_rps),
        "bare_flask_rps": round(bare_rps),
        "ratio_get_repl_to_bare": round(devex_rps / bare_rps, 3),
        "requests_per_round": REQUESTS,
        "rounds": ROUNDS,
        "clients": CLIENTS,
        "gunicorn": " ".join(GUNICORN),
    }
