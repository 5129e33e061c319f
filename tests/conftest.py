from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from devex import create_app
from tests.support.ide_client import IdeClient
from tests.support.waiting import wait_for

pytest_plugins = [
    "tests.support.redis_server",
    "tests.support.moto_server",
    "tests.support.browser",
    "tests.support.fake_github",
    "tests.support.k8s_env",
    "tests.support.auth_helpers",
    "tests.support.rq_processes",
    "tests.support.recovery",
]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def _home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, _home: Path) -> None:
    """No DEVEX_* setting of the developer's shell leaks into a test, and the shells of
    REPL terminals do not run the developer's ~/.bashrc."""
    for key in list(os.environ):
        if key.startswith("DEVEX_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(_home))


@pytest.fixture(autouse=True)
def _close_apps(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every app a test builds is closed after it (its embedded redis-server and worker
    stopped), whether or not its fixture does so: closing twice is harmless."""
    import devex.app

    made = []
    build = devex.app.create_app

    def tracked(*args, **kwargs):
        app = build(*args, **kwargs)
        made.append(app)
        return app

    monkeypatch.setattr(devex.app, "create_app", tracked)
    yield
    for app in made:
        app.extensions["devex"].close()


def kill_runners(data_dir: Path) -> None:
    """Stop runner processes a test left behind (a failing test must not leak them)."""
    for record in (data_dir / "runners").glob("*.json"):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        for pid in (data.get("pid"), data.get("autosave_pid")):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (OSError, TypeError):
                pass


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data"
    yield path
    kill_runners(path)


@pytest.fixture
def app(data_dir: Path):
    """Embedded mode: in-process Redis, worker thread, local storage and runners."""
    app = create_app(
        {"TESTING": True, "DEVEX_DATA_DIR": data_dir, "DEVEX_SECRET_KEY": "test-secret"}
    )
    yield app
    app.extensions["devex"].close()


@pytest.fixture
def client(app):
    return app.test_client()


class Api:
    """A logged-in API caller: sends the CSRF header like the IDE frontend does."""

    def __init__(self, client, csrf: str):
        self.client = client
        self.csrf = csrf

    def _h(self, headers=None):
        return {"X-CSRF-Token": self.csrf, **(headers or {})}

    def get(self, path, **kw):
        return self.client.get(path, **kw)

    def post(self, path, json=None, **kw):
        return self.client.post(path, json=json, headers=self._h(kw.pop("headers", None)), **kw)

    def delete(self, path, **kw):
        return self.client.delete(path, headers=self._h(kw.pop("headers", None)), **kw)

    def repl(self, repl_id):
        return self.get(f"/api/repl/{repl_id}")

    def wait_status(self, repl_id, *statuses, timeout=60):
        def check():
            r = self.repl(repl_id)
            return r.json if r.status_code == 200 and r.json["status"] in statuses else None

        return wait_for(check, timeout, f"REPL {repl_id} to be {statuses}")

    def create_running(self, name, template="python", timeout=60) -> str:
        """A new REPL, once it runs; its id."""
        r = self.post("/api/repl/create", json={"name": name, "template": template})
        assert r.status_code == 202, r.json
        self.wait_status(r.json["repl"]["id"], "running", timeout=timeout)
        return r.json["repl"]["id"]

    def ide(self, repl_id) -> IdeClient:
        """A socket to the REPL's runner, as the IDE opens it (first frame: the token)."""
        session = self.post(f"/api/repl/{repl_id}/session").json
        return IdeClient(session["url"] + "ws", session["token"])

    def wait_gone(self, repl_id, timeout=60):
        wait_for(lambda: self.repl(repl_id).status_code == 404, timeout, f"{repl_id} deleted")


def login_local(client) -> Api:
    r = client.post("/auth/local")
    assert r.status_code == 200, r.json
    return Api(client, r.json["csrf_token"])


@pytest.fixture
def api(client) -> Api:
    return login_local(client)
