"""A ``python -m runner serve`` process for tests, on a free port."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
START_DEADLINE = 20.0




def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNER_", "DEVEX_"))}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


class Runner:
    """A ``python -m runner serve`` subprocess on a free port, ready when ``healthz`` is 200."""

    def __init__(self, workspace: Path, logdir: Path, base_path: str = "/r1/", **env: str):
        self.base_path = base_path
        self.log_path = logdir / f"runner-{time.monotonic_ns()}.log"
        for _attempt in range(3):  # the free port may be taken between probe and bind
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}{base_path}"
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "runner",
                        "serve",
                        "--workspace",
                        str(workspace),
                        "--port",
                        str(self.port),
                        "--base-path",
                        base_path,
                        *([] if "RUNNER_KEY" in env else ["--no-auth"]),
                    ],
                    cwd=REPO,
                    env=clean_env(**env),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_ready():
                return
        raise AssertionError(f"runner did not start:\n{self.log()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if requests.get(self.url + "healthz", timeout=1).status_code == 200:
                    return True
            except requests.RequestException:  # not up yet, or slow to answer
                pass
            time.sleep(0.05)  # poll interval inside a bounded deadline
        self.proc.kill()
        self.proc.wait(timeout=10)
        raise AssertionError(f"runner not ready within {START_DEADLINE}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def raw_get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        """GET a path exactly as written (no client-side ``..`` normalization)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"runner ignored SIGTERM:\n{self.log()}") from None


