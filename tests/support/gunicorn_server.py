"""Production's web server for tests: ``gunicorn wsgi:app`` on a free port, with the given
``DEVEX_*`` settings and nothing else of the developer's environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.ports import free_port
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    url: str
    proc: subprocess.Popen
    log: Path  # gunicorn's stderr: its own lines and the app's logs

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, timeout=kw.pop("timeout", 5), **kw)


@contextmanager
def gunicorn(tmp_path: Path, settings: dict[str, str], *args: str,
             env: dict[str, str] | None = None) -> Iterator[Served]:
    """Serve until the block ends; ``args`` are extra gunicorn options."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("DEVEX_")}
    base.update(settings)
    base.update(env or {})
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")]))
    log = tmp_path / f"gunicorn-{port}.log"
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would block the server
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("gunicorn")), "wsgi:app",
             "--bind", f"127.0.0.1:{port}", *args],
            cwd=ROOT, env=base, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    served = Served(f"http://127.0.0.1:{port}", proc, log)
    try:
        def up() -> bool:
            try:
                return served.get("/healthz", timeout=2).status_code == 200
            except (requests.ConnectionError, requests.Timeout):  # still booting
                return proc.poll() is not None  # exited: said below
        wait_for(up, 60, "gunicorn to serve")
        assert proc.poll() is None, log.read_text()
        yield served
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
