"""Helpers of the recovery tests: killing an ``rq worker``'s job the hard way, and making a
REPL look as if it had been left alone for long. Its ``cluster`` fixture reaches every test
module as a pytest plugin (``tests/conftest.py``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from devex.config import Settings
from devex.infra import keys
from devex.models import Repl, Status
from devex.services.repls import Actor, ReplService
from devex.wiring import build
from jobs import context, periodic
from tests.support.rq_processes import worker_env
from tests.support.s3_gate import S3Gate
from tests.support.waiting import wait_for

LONG_AGO = "2000-01-01T00:00:00.000000Z"


def backdate(conn: redis.Redis, repl_id: str) -> None:
    """The REPL has not changed for ages (reconcile's grace after a change is over)."""
    conn.hset(keys.repl_meta(repl_id), "updated_at", LONG_AGO)


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def work_horse(worker_pid: int) -> int | None:
    """The work horse a worker forked for its current job: its child that leads a process
    group of its own (rq's horse calls setpgrp; the scheduler process does not)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat(int(entry.name))
        except (OSError, IndexError):
            continue
        if int(fields[1]) == worker_pid and int(fields[2]) == int(entry.name) and fields[0] != "Z":
            return int(entry.name)
    return None


def await_work_horse(worker_pid: int, timeout: float = 30) -> int:
    return wait_for(lambda: work_horse(worker_pid), timeout, f"a work horse of {worker_pid}")


def kill_job(worker_pid: int) -> None:
    """SIGKILL the process group of the worker's running job (the horse and anything of
    its group); the worker survives and sees its horse die."""
    os.killpg(await_work_horse(worker_pid), signal.SIGKILL)


def kill_worker_and_job(worker) -> None:
    """SIGKILL a ``tests.support.rq_processes.WorkerProcess`` and its job's process group
    at once: a node lost mid-job. Runner processes (sessions of their own) live on."""
    horse = await_work_horse(worker.pid)
    worker.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(horse, signal.SIGKILL)


# -- the redis-server + rq worker wiring, with S3 behind a gate ---------------------------
ADA = Actor(id="7", login="ada")
LEASE = "2"  # seconds: a killed job's REPL is free again this soon


class Cluster:
    """redis-server, moto S3 (the workers reach it through ``gate``, so a test can hold an
    upload where it wants to kill), ``rq worker`` processes started on demand, and the
    test's own ``Components`` (S3 directly) to act as the web does and to look."""

    def __init__(self, env: dict[str, str], direct_s3: str, gate: S3Gate, bucket: str,
                 start_worker, runners_may_start: Path):
        self.env = env
        self.gate = gate
        self.bucket = bucket
        self._start_worker = start_worker
        self.runners_may_start = runners_may_start
        self.comps = build(Settings.from_env({**env, "DEVEX_S3_ENDPOINT_URL": direct_s3}))
        self.service = ReplService(self.comps)
        self.store = self.comps.store

    def worker(self, **settings: str):
        return self._start_worker({**self.env, **settings})

    def events(self, repl_id: str) -> str:
        return "\n".join(f"{e.kind}: {e.message}" for e in self.store.events(repl_id))

    def status(self, repl_id: str) -> str | None:
        repl = self.store.get(repl_id)
        return None if repl is None else repl.status.value

    def wait_status(self, repl_id: str, status: str, timeout: float = 90) -> Repl:
        wait_for(lambda: self.status(repl_id) == status, timeout,
                 f"REPL {repl_id} to be {status} (events:\n{self.events(repl_id)})")
        return self.store.require(repl_id)

    def running_repl(self, name: str = "r") -> Repl:
        """A running python REPL (a worker must run), its autosave done with its first
        scan, so that only changes made from now on are left to save."""
        repl_id = self.service.create(ADA, name, "python", start=True).repl.id
        self.wait_status(repl_id, "running")
        record = self.runner_record(repl_id)
        wait_for(lambda: _autosave_state(record["autosave_port"]) == "saved", 30,
                 "autosave's first save")
        return self.store.require(repl_id)

    def runner_record(self, repl_id: str) -> dict:
        path = self.comps.settings.data_dir / "runners" / f"{repl_id}.json"
        return json.loads(wait_for(lambda: path.exists() and path.read_text(), 30,
                                   f"the runner record of {repl_id}"))

    def workspace(self, repl_id: str) -> Path:
        return self.comps.settings.data_dir / "workspaces" / repl_id

    def managed(self) -> set[str]:
        return {o.repl_id for o in self.comps.runtime.list_managed()}

    def settle(self, repl_id: str, status: str | None, timeout: float = 90) -> list[dict]:
        """Run reconcile, as the periodic job would, until the REPL is ``status`` (None:
        gone) with no job on it and its runner alive exactly when it is running. Returns
        what every reconcile run reported."""
        runs: list[dict] = []

        def consistent() -> bool:
            runs.append(periodic.reconcile())
            repl = self.store.get(repl_id)
            if status is None:
                return repl is None and repl_id not in self.managed()
            if repl is None or repl.status.value != status:
                return False
            if self.store.lock_holder(repl_id) is not None:
                return False  # a job still works on it
            return self.comps.runtime.is_running(repl) == (repl.status == Status.RUNNING)

        wait_for(consistent, timeout, f"REPL {repl_id} to settle as {status}: "
                 f"{self.status(repl_id)}, events:\n{self.events(repl_id)}")
        return runs

    def assert_nothing_orphaned(self) -> None:
        """Every runner and workspace belongs to a running REPL whose runner is alive."""
        running = {r.id: r for r in self.store.list_all() if r.status == Status.RUNNING}
        assert self.managed() <= set(running), (self.managed(), set(running))
        for repl in running.values():
            assert self.comps.runtime.is_running(repl), repl.id

    def close(self) -> None:
        self.comps.redis.close()


def _autosave_state(port: int) -> str | None:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                f"http://127.0.0.1:{port}/status", timeout=5) as resp:
            return json.loads(resp.read())["state"]
    except (OSError, ValueError):
        return None


def _runner_python(path: Path, gate_file: Path) -> Path:
    """An interpreter for runner processes that starts them only once ``gate_file``
    exists: a test can kill a start between the launch and the runner's answer."""
    path.write_text(f"#!/bin/sh\nwhile [ ! -e '{gate_file}' ]; do sleep 0.05; done\n"
                    f"exec '{sys.executable}' \"$@\"\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def cluster(redis_url, s3_settings, moto_server, data_dir, tmp_path, start_worker
            ) -> Iterator[Cluster]:
    gate = S3Gate(moto_server)
    may_start = tmp_path / "runners-may-start"
    may_start.touch()
    env = worker_env(redis_url, data_dir, **{
        **s3_settings,
        "DEVEX_S3_ENDPOINT_URL": gate.url,
        "DEVEX_LOCK_LEASE": LEASE,
        "DEVEX_JOB_RETRY_INTERVALS": "0,0",
        "DEVEX_AUTOSAVE_SECONDS": "3600",  # only a stop's last save uploads
        "DEVEX_PERIODIC_INTERVAL": "3600",  # the test runs reconcile itself
        "DEVEX_RUNNER_PYTHON": str(_runner_python(tmp_path / "runner-python", may_start)),
    })
    made = Cluster(env, moto_server, gate, s3_settings["DEVEX_S3_BUCKET"], start_worker,
                   may_start)
    context.bind_thread(made.comps)
    try:
        yield made
    finally:
        context.bind_thread(None)
        gate.close()
        made.close()
