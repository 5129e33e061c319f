"""Embedded mode survives ``kill -9``: ``flask --app devex run`` (as ``make run`` starts it)
is killed at chosen steps and started again on the same data dir; every accepted REPL is
there, statuses match the runner processes, no runner is orphaned, saved files are kept."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from rq.registry import StartedJobRegistry

from devex.config import Settings
from devex.infra.embedded_redis import connect
from devex.infra.storage_factory import build_storage
from tests.support.ports import free_port
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
FINAL = ("running", "stopped", "failed")


class Served:
    """``flask --app devex run`` in a subprocess, on one port for its whole life (runners
    report to it by URL), with a short reconcile interval."""

    def __init__(self, data_dir: Path, log_path: Path, **env: str):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DEVEX_DATA_DIR": str(data_dir), "DEVEX_CORE_URL": self.url,
                    "DEVEX_PERIODIC_INTERVAL": "2", "PYTHONUNBUFFERED": "1", **env}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "devex", "run",
                 "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT)
        wait_for(self._answers, 60, "flask run to answer")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"flask run exited:\n{self.log()}")
        try:
            return requests.get(self.url + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def interrupt(self) -> None:
        """Ctrl-C: the app closes, its Redis server shuts down cleanly."""
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


class HttpApi:
    """The local user over HTTP, like the dashboard's scripts."""

    def __init__(self, url: str):
        self.url = url
        self.http = requests.Session()
        self.csrf = ""

    def login(self) -> HttpApi:
        r = self.http.post(self.url + "/auth/local", timeout=30)
        assert r.status_code == 200, r.text
        self.csrf = r.json()["csrf_token"]
        return self

    def get(self, path: str) -> requests.Response:
        return self.http.get(self.url + path, timeout=30)

    def post(self, path: str, json: dict | None = None) -> requests.Response:
        return self.http.post(self.url + path, json=json, timeout=30,
                              headers={"X-CSRF-Token": self.csrf})

    def create(self, name: str) -> str:
        r = self.post("/api/repl/create", json={"name": name, "template": "bash"})
        assert r.status_code == 202, r.text
        return r.json()["repl"]["id"]

    def repls(self) -> dict[str, dict]:
        r = self.get("/api/repl/")
        assert r.status_code == 200, r.text
        return {repl["id"]: repl for repl in r.json()["repls"]}

    def status(self, repl_id: str) -> str:
        return self.get(f"/api/repl/{repl_id}").json()["status"]


def runner_processes(data_dir: Path) -> dict[str, dict[str, int]]:
    """Live runner processes of this data dir by REPL id, then role (``serve``,
    ``autosave``) → pid. Found by command line, so one without a record counts too;
    zombies have none."""
    workspaces = str(data_dir.resolve() / "workspaces") + "/"
    found: dict[str, dict[str, int]] = {}
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if args[1:3] != ["-m", "runner"]:  # python -m runner ROLE ... WORKSPACE ...
            continue
        for arg in args:
            if arg.startswith(workspaces):
                repl_id = arg[len(workspaces):].split("/")[0]
                found.setdefault(repl_id, {})[args[3]] = int(proc.name)
    return found


def settled(api: HttpApi, data_dir: Path) -> dict[str, dict] | None:
    """Every REPL final, running exactly when its runner and autosave run, and no runner
    process for anything else; None until then."""
    repls = api.repls()
    processes = runner_processes(data_dir)
    for repl_id, repl in repls.items():
        roles = sorted(processes.pop(repl_id, {}))
        if repl["status"] not in FINAL:
            return None
        if roles != (["autosave", "serve"] if repl["status"] == "running" else []):
            return None
    return repls if not processes else None


def started_jobs(data_dir: Path) -> list[str]:
    conn = connect(data_dir)
    try:
        return StartedJobRegistry("devex", connection=conn).get_job_ids(cleanup=False)
    finally:
        conn.close()


def server_left(data_dir: Path) -> bool:
    """A redis-server still runs on the data dir: it holds its lock until it exits."""
    try:
        fd = os.open(data_dir / "redis" / "server.lock", os.O_RDWR)
    except FileNotFoundError:
        return False  # none ever started
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@pytest.fixture
def served(data_dir, tmp_path):
    server = Served(data_dir, tmp_path / "flask.log")
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.interrupt()
        wait_for(lambda: not server_left(data_dir), 30, "the Redis server to stop")


def test_kill_9_while_a_start_runs_loses_no_accepted_repl(served, data_dir):
    served.start()
    api = HttpApi(served.url).login()
    first = api.create("first")
    wait_for(lambda: api.status(first) == "starting" and started_jobs(data_dir), 60,
             "the first REPL's start job to run")
    second = api.create("second")  # accepted (202) while the start runs ...
    conn = connect(data_dir)
    redis_pid = conn.info("server")["process_id"]
    conn.close()
    os.kill(redis_pid, signal.SIGKILL)  # ... then everything dies at once, Redis too
    served.kill9()

    served.start()
    assert set(api.repls()) == {first, second}  # the old session is still good, too
    repls = wait_for(lambda: settled(api, data_dir), 90,
                     f"statuses to match the runners\n{served.log()}")
    assert {r["status"] for r in repls.values()} == {"running"}  # both asked to run


def test_kill_9_mid_stop_finishes_the_stop_and_keeps_the_files(served, data_dir):
    served.start()
    api = HttpApi(served.url).login()
    repl_id = api.create("keeper")
    wait_for(lambda: api.status(repl_id) == "running", 60, "running")
    workspace = data_dir / "workspaces" / repl_id
    (workspace / "precious.txt").write_text("typed before the stop")
    serve_pid = runner_processes(data_dir)[repl_id]["serve"]
    os.kill(serve_pid, signal.SIGSTOP)  # the stop job now waits for it: a chosen step
    try:
        assert api.post(f"/api/repl/{repl_id}/stop").status_code == 202
        wait_for(lambda: api.status(repl_id) == "stopping" and started_jobs(data_dir), 30,
                 "the stop job to be under way")
        served.kill9()
        # The Redis server ends with its parent, cleanly (PR_SET_PDEATHSIG).
        wait_for(lambda: not server_left(data_dir), 30, "the orphaned Redis server to end")
    finally:
        os.kill(serve_pid, signal.SIGCONT)

    served.start()
    repls = wait_for(lambda: settled(api, data_dir), 90,
                     f"statuses to match the runners\n{served.log()}")
    assert repls[repl_id]["status"] == "stopped"
    storage = build_storage(Settings(data_dir=data_dir))
    assert storage.read(f"local/{repl_id}/precious.txt") == b"typed before the stop"
    assert api.post(f"/api/repl/{repl_id}/start").status_code == 202
    wait_for(lambda: api.status(repl_id) == "running", 60, "running again")
    assert (workspace / "precious.txt").read_text() == "typed before the stop"


def test_a_runner_that_died_while_the_server_was_down_is_noticed_at_start_up(data_dir,
                                                                             tmp_path):
    # Reconciling only at start-up here: the next periodic run is an hour away.
    served = Served(data_dir, tmp_path / "flask.log", DEVEX_PERIODIC_INTERVAL="3600")
    served.start()
    try:
        api = HttpApi(served.url).login()
        repl_id = api.create("lost")
        wait_for(lambda: api.status(repl_id) == "running", 60, "running")
        served.interrupt()
        assert not server_left(data_dir)  # Ctrl-C stopped the Redis server cleanly
        for pid in runner_processes(data_dir)[repl_id].values():
            os.killpg(pid, signal.SIGKILL)  # each runs in its own session
        wait_for(lambda: not runner_processes(data_dir), 30, "the runner to die")

        served.start()
        repls = wait_for(lambda: settled(api, data_dir), 60,
                         f"statuses to match the runners\n{served.log()}")
        assert repls[repl_id]["status"] != "running"
    finally:
        if served.proc.poll() is None:
            served.interrupt()


def test_a_flask_devex_command_works_on_the_running_servers_state(served, data_dir):
    served.start()
    api = HttpApi(served.url).login()  # makes the local user
    command = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "devex", "devex", "suspend", "local",
         "--reason", "from the command line"],
        cwd=ROOT, env=served.env, capture_output=True, text=True, timeout=60)
    assert command.returncode == 0, command.stderr
    assert "suspended local" in command.stdout
    assert api.get("/api/repl/").status_code in (401, 403)  # the server sees it at once
    assert served.proc.poll() is None and server_left(data_dir)  # its server is untouched
