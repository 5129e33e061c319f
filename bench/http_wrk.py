"""Request rates measured with ``wrk`` (a C client: it does not saturate before the server),
against ``gunicorn`` serving Devex and a bare Flask endpoint with the same settings, in one
run: interleaved rounds, the median of each target, reported as a ratio to bare Flask.

Two controls run in the same rounds: the bare endpoint after one ``Redis.ping()`` (the
price of the one round trip an authenticated read must make: revocation, logout and
suspension act on the next request), and Devex's ``/healthz`` (no credential, no Redis:
its hooks and middleware alone).

Also: Redis round trips per request (counted in-process: one ``send_packed_command`` is one
round trip, a pipeline included), whether a plain read answers with ``Set-Cookie``, and the
RSS of the web (all gunicorn processes) plus one ``rq worker``.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import requests

from devex import create_app
from devex.config import Settings
from devex.infra.api_token_store import ApiTokenStore
from devex.models import Desired, Repl, Status, User
from devex.services.api_tokens import ApiTokenService
from devex.wiring import build
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = os.environ.get("BENCH_SECONDS", "5")
WRK = ["-t2", "-c16", f"-d{SECONDS}s"]
# --reuse-port: as devex/gunicorn_conf.py deploys it (per-worker sockets: wrk's 16
# keep-alive connections spread over both workers, for both apps alike).
GUNICORN = ["--workers", "2", "--threads", "4", "--worker-class", "gthread",
            "--reuse-port", "--log-level", "warning"]
LIST_SIZES = (1, 100, 1000)


def serve(app_spec: str, env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), *GUNICORN,
         "--bind", f"127.0.0.1:{port}", app_spec],
        cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
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


def wrk(url: str, headers: dict[str, str]) -> float:
    args = ["wrk", *WRK]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"{url}: non-2xx answers under load:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def wrk_p50_ms(url: str, headers: dict[str, str]) -> float:
    """Median latency with one connection (nothing queued behind other requests)."""
    args = ["wrk", "-t1", "-c1", f"-d{SECONDS}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    value, unit = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
    return round(float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit], 3)


def seed(settings: Settings) -> dict:
    """Users with 1, 100 and 1,000 REPLs, a personal token each, straight into Redis."""
    c = build(settings)
    tokens = ApiTokenService(ApiTokenStore(c.redis), per_user=50)
    seeded = {}
    for size in LIST_SIZES:
        user = c.store.upsert_user(User(id=f"bench{size}", login=f"bench{size}"))
        for i in range(size):
            repl = Repl(id=f"b{size}x{i:05d}", name=f"repl-{i}", template="bash",
                        owner_id=user.id, owner_login=user.login,
                        storage_prefix=f"{user.login}/b{size}x{i:05d}/",
                        status=Status.STOPPED, desired=Desired.STOPPED)
            c.store.create(repl)
        seeded[size] = {"token": tokens.create(user.id, "bench").plaintext,
                        "repl": f"b{size}x00000"}
    return seeded


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return round(total / 1024, 1)


def gunicorn_pids(master: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True)
    return [master, *map(int, children.stdout.split())]


def round_trips(env: dict, targets: dict[str, tuple[str, dict]]) -> dict:
    """Redis round trips of one request to each target, after a warm-up request."""
    counted = [0]
    original = redis.connection.Connection.send_packed_command

    def counting(self, command, check_health=True):
        counted[0] += 1
        return original(self, command, check_health)

    app = create_app({**env, "TESTING": False})
    out = {}
    redis.connection.Connection.send_packed_command = counting
    try:
        for name, (path, headers) in targets.items():
            if name.startswith("bare_flask"):
                continue
            client = app.test_client()
            headers = dict(headers)
            for pair in filter(None, headers.pop("Cookie", "").split("; ")):
                client.set_cookie(*pair.split("=", 1))
            client.get(path, headers=headers)
            counted[0] = 0
            resp = client.get(path, headers=headers)
            assert resp.status_code == 200, (name, resp.status_code, resp.data[:200])
            out[name] = {"redis_round_trips": counted[0],
                         "set_cookie": "Set-Cookie" in resp.headers}
    finally:
        redis.connection.Connection.send_packed_command = original
        app.extensions["devex"].close()
    return out


def run(redis_url: str) -> dict:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (scripts/ensure-test-tools installs it)")
    data_dir = tempfile.mkdtemp()
    env = {"DEVEX_REDIS_URL": redis_url, "DEVEX_SECRET_KEY": "bench",
           "DEVEX_DATA_DIR": data_dir, "DEVEX_AUTH": "local", "DEVEX_EMBEDDED_WORKER": "false"}
    seeded = seed(Settings.from_env(env))
    devex_proc, devex_url = serve("wsgi:app", env)
    bare_proc, bare_url = serve("bench.bare_app:app", env)
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "rq"), "worker", "-w", "jobs.worker.DevexWorker",
         "--url", redis_url, "devex"],
        cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        s = requests.Session()
        me = s.post(devex_url + "/auth/local", timeout=10).json()
        created = s.post(devex_url + "/api/repl/create", timeout=10,
                         json={"name": "bench", "template": "bash", "start": False},
                         headers={"X-CSRF-Token": me["csrf_token"]}).json()
        cookie = {"Cookie": "; ".join(f"{c.name}={c.value}" for c in s.cookies)}
        one = seeded[1]
        targets = {
            "bare_flask": (bare_url + "/hello", {}),
            # Controls: one Redis round trip in a bare Flask view; Devex's own /healthz
            # (no credential, no Redis): what the hooks and middleware cost alone.
            "bare_flask_one_redis_ping": (bare_url + "/hello-after-ping", {}),
            "devex_healthz": ("/healthz", {}),
            "get_repl_bearer": (f"/api/repl/{one['repl']}",
                                {"Authorization": f"Bearer {one['token']}"}),
            "get_repl_cookie": (f"/api/repl/{created['repl']['id']}", cookie),
            **{f"list_{n}": ("/api/repl/?limit=100" if n > 100 else "/api/repl/",
                             {"Authorization": f"Bearer {seeded[n]['token']}"})
               for n in LIST_SIZES},
            "dashboard": ("/", cookie),
        }
        runs: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(ROUNDS):  # interleaved: a slow moment hurts every target alike
            for name, (path, headers) in targets.items():
                url = path if path.startswith("http") else devex_url + path
                runs[name].append(wrk(url, headers))
        page_path, page_headers = targets["list_1000"]
        page_p50 = [wrk_p50_ms(devex_url + page_path, page_headers) for _ in range(ROUNDS)]
        worker_rss = rss_mib([worker.pid])
        web_rss = rss_mib(gunicorn_pids(devex_proc.pid))
    finally:
        for p in (devex_proc, bare_proc, worker):
            p.terminate()
            p.wait(10)
    bare = statistics.median(runs["bare_flask"])
    # Also each round's ratio to the bare endpoint measured in the same round, then their
    # median: a slow spell of the machine hits both sides of a round alike.
    rates = {name: {"rps": round(statistics.median(r)),
                    "rounds": [round(x) for x in r],
                    "x_bare": round(statistics.median(r) / bare, 3),
                    "x_bare_same_round": round(statistics.median(
                        x / b for x, b in zip(r, runs["bare_flask"], strict=True)), 3)}
             for name, r in runs.items()}
    trips = round_trips(env, {name: (path.replace(bare_url, ""), headers)
                              for name, (path, headers) in targets.items()})
    for name, t in trips.items():
        rates[name].update(t)
    return {
        "http_wrk": rates,
        "list_page_of_100_of_1000_p50_ms": round(statistics.median(page_p50), 3),
        "wrk": " ".join(WRK),
        "gunicorn": " ".join(GUNICORN),
        "rss_mib": {"web_2_workers": web_rss, "rq_worker": worker_rss,
                    "total": round(web_rss + worker_rss, 1)},
    }


if __name__ == "__main__":
    import json

    from tests.support.redis_server import running_redis

    with running_redis() as url:
        print(json.dumps(run(url), indent=2))
