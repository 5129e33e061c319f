"""``LocalRuntime``: a workspace directory plus a runner process per REPL, on 127.0.0.1.

The files move with the same mirroring sync the runner's ``sync-down``/``sync-up`` commands
run in Kubernetes' init and ephemeral containers (``devex_shared.storage.sync``), here called
in the worker's own process. Beside
each runner runs its autosave companion (``python -m runner autosave``, the Kubernetes
sidecar's twin): it alone gets the storage settings, the runner never does.
Runner processes live in their own session so that a worker restart does not kill them;
a small JSON record per REPL (pids, ports) lets any worker find them again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from devex.config import Settings
from devex.errors import FilesNotSaved, RuntimeFailure
from devex.infra.runtime.base import ManagedObject, Progress, Runtime, StartResult
from devex.infra.storage_factory import build_storage
from devex.models import Repl
from devex.templates_catalog import Template
from devex_shared import access_tokens
from devex_shared.storage import StorageError, SyncingStorage
from devex_shared.storage.sync import sync_lock

log = logging.getLogger(__name__)
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))
ROOT = Path(__file__).resolve().parents[3]  # the checkout: ``python -m runner`` runs from here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRuntime(Runtime):
    def __init__(self, settings: Settings):
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.workspaces = self.data_dir / "workspaces"
        self.records = self.data_dir / "runners"
        self.python = settings.runner_python or sys.executable
        self._storage: SyncingStorage | None = None

    # -- helpers ---------------------------------------------------------------------
    def workspace(self, repl_id: str) -> Path:
        return self.workspaces / repl_id

    def _record_path(self, repl_id: str) -> Path:
        return self.records / f"{repl_id}.json"

    def _lock_path(self, repl_id: str) -> Path:
        return self.records / f"{repl_id}.sync.lock"

    def _record(self, repl_id: str) -> dict | None:
        try:
            return json.loads(self._record_path(repl_id).read_text())
        except (OSError, ValueError):
            return None

    def _storage_env(self) -> dict[str, str]:
        s = self.settings
        env = {
            "DEVEX_STORAGE": s.storage,
            "DEVEX_DATA_DIR": str(self.data_dir),
        }
        if s.storage == "s3":
            env.update(
                DEVEX_S3_BUCKET=s.s3_bucket,
                DEVEX_S3_ENDPOINT_URL=s.s3_endpoint_url,
                DEVEX_S3_REGION=s.s3_region,
                DEVEX_S3_ACCESS_KEY_ID=s.s3_access_key_id,
                DEVEX_S3_SECRET_ACCESS_KEY=s.s3_secret_access_key,
                DEVEX_S3_PATH_STYLE="true" if s.s3_path_style else "false",
            )
        return env

    def _base_env(self) -> dict[str, str]:
        # Only what the runner needs: never the core's own secrets.
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        return env

    @property
    def storage(self) -> SyncingStorage:
        if self._storage is None:
            self._storage = build_storage(self.settings)
        return self._storage

    def _alive(self, record: dict | None, role: str = "serve") -> bool:
        if not record:
            return False
        pid = record.get("pid" if role == "serve" else "autosave_pid")
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return role.encode() in cmdline and record.get("workspace", "").encode() in cmdline

    def _spawn(self, args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
        with open(log_path, "ab") as log_file:
            return subprocess.Popen(
                [self.python, "-m", "runner", *args],
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _start_autosave(self, repl: Repl, workspace: Path, port: int) -> subprocess.Popen:
        return self._spawn(
            ["autosave", "--src", str(workspace), "--prefix", repl.storage_prefix,
             "--interval", str(self.settings.autosave_seconds),
             "--listen", f"127.0.0.1:{port}", "--lock", str(self._lock_path(repl.id))],
            {**self._base_env(), **self._storage_env()},
            self.records / f"{repl.id}.log",
        )

    def _healthy(self, url: str) -> bool:
        return self._answers(url + "healthz")

    @staticmethod
    def _answers(url: str) -> bool:
        # The standard library, straight to loopback (no proxy): ``requests`` would cost
        # every web and worker process ~5 MB for this one call.
        try:
            with _LOOPBACK.open(url, timeout=2) as resp:
                return resp.status == 200
        except (OSError, ValueError):  # URLError and HTTPError are OSErrors
            return False

    # -- interface -------------------------------------------------------------------
    def check(self) -> None:
        self.workspaces.mkdir(parents=True, exist_ok=True)
        self.records.mkdir(parents=True, exist_ok=True)

    def start(self, repl: Repl, template: Template, progress: Progress) -> StartResult:
        self.check()
        record = self._record(repl.id)
        if self._alive(record) and self._healthy(record["url"]):
            if not self._alive(record, "autosave") and record.get("autosave_port"):
                proc = self._start_autosave(repl, Path(record["workspace"]),
                                            record["autosave_port"])
                record["autosave_pid"] = proc.pid
                self._record_path(repl.id).write_text(json.dumps(record))
            progress("runtime", "The runner was already up.")
            return StartResult(url=record["url"], handle={"pid": str(record["pid"])})
        if self._alive(record, "autosave"):
            self._kill(record["autosave_pid"])  # the runner is gone; a new pair starts
        workspace = self.workspace(repl.id)
        if workspace.exists():
            # Only a successful save removes a workspace, so one that is still here holds
            # files at least as new as storage: never overwrite it with older ones.
            progress("files", "Reusing the workspace kept from the last run.")
        else:
            tmp = workspace.with_name(workspace.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                report = self.storage.sync_down(repl.storage_prefix, tmp)
            except (StorageError, OSError) as exc:  # worth a retry: storage may be back soon
                raise StorageError(f"could not fetch the files: {exc}") from None
            tmp.rename(workspace)
            progress("files", f"Fetched {len(report.downloaded)} files.")
        port, autosave_port = free_port(), free_port()
        url = f"http://127.0.0.1:{port}/"
        env = {
            **self._base_env(),
            "RUNNER_REPL_ID": repl.id,
            "RUNNER_KEY": access_tokens.repl_key(self.settings.secret_key, repl.id),
            "RUNNER_AUTOSAVE_URL": f"http://127.0.0.1:{autosave_port}/",
        }
        if template.run:
            env["RUNNER_RUN_COMMAND"] = template.run
        if template.shell:
            env["RUNNER_SHELL"] = template.shell
        if self.settings.core_url:
            env["RUNNER_CORE_URL"] = self.settings.core_url
            env["RUNNER_HEARTBEAT_SECONDS"] = str(self.settings.heartbeat_seconds)
            env["RUNNER_IDLE_TIMEOUT"] = str(self.settings.idle_timeout)
        log_path = self.records / f"{repl.id}.log"
        autosave = self._start_autosave(repl, workspace, autosave_port)
        proc = self._spawn(
            ["serve", "--workspace", str(workspace), "--host", "127.0.0.1",
             "--port", str(port), "--base-path", "/"],
            env,
            log_path,
        )
        record = {"pid": proc.pid, "port": port, "url": url, "workspace": str(workspace),
                  "autosave_pid": autosave.pid, "autosave_port": autosave_port}
        self._record_path(repl.id).write_text(json.dumps(record))
        progress("runtime", "Runner process launched; waiting for it to answer.")
        deadline = time.monotonic() + self.settings.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._kill(autosave.pid)
                self._record_path(repl.id).unlink(missing_ok=True)
                raise RuntimeFailure(
                    f"the runner exited with code {proc.returncode}; see {log_path.name}"
                )
            if autosave.poll() is not None:
                self._kill(proc.pid)
                self._record_path(repl.id).unlink(missing_ok=True)
                raise RuntimeFailure(
                    f"autosave exited with code {autosave.returncode}; see {log_path.name}"
                )
            # Ready when both answer: the IDE's first save must find its companion.
            if self._healthy(url) and self._answers(f"http://127.0.0.1:{autosave_port}/status"):
                return StartResult(url=url, handle={"pid": str(proc.pid)})
            time.sleep(0.02)  # polling a local process: nothing to watch
        self._kill(proc.pid)
        self._kill(autosave.pid)
        self._record_path(repl.id).unlink(missing_ok=True)
        raise RuntimeFailure(f"the runner did not answer within {self.settings.start_timeout}s")

    def stop(self, repl: Repl, progress: Progress, *, save: bool = True) -> None:
        record = self._record(repl.id)
        # The runner first: on SIGTERM it refuses writes, closes the IDE's sockets and ends
        # every terminal. Then autosave (it finishes the save under way). Only then the
        # final save, under the same lock: nothing typed before the stop is lost.
        if not save and self._alive(record, "autosave"):
            self._kill(record["autosave_pid"], hard=True)  # no last save on the way out
        if self._alive(record):
            self._kill(record["pid"])
            progress("runtime", "Runner stopped.")
        if self._alive(record, "autosave"):
            self._kill(record["autosave_pid"])
        self._record_path(repl.id).unlink(missing_ok=True)
        workspace = self.workspace(repl.id)
        if not workspace.exists():
            return  # nothing running and nothing unsaved
        if save:
            # The same mirroring sync as the runner's sync-up, in this process (a new
            # interpreter would cost more than the save), under autosave's lock.
            try:
                with sync_lock(self._lock_path(repl.id)):
                    report = self.storage.sync_up(workspace, repl.storage_prefix)
            except (StorageError, OSError) as exc:
                progress("files", f"Files not saved; the workspace is kept: {exc}")
                raise FilesNotSaved(f"files not saved: {exc}") from None
            progress(
                "files",
                f"Saved files: {len(report.uploaded)} uploaded, {len(report.deleted)} removed, "
                f"{report.unchanged} unchanged.",
            )
            for path, reason in report.skipped:
                progress("files", f"Not saved: {path} ({reason})")
        shutil.rmtree(workspace)
        self._lock_path(repl.id).unlink(missing_ok=True)

    def is_running(self, repl: Repl) -> bool:
        return self._alive(self._record(repl.id))

    def discard(self, repl_id: str) -> None:
        """The runner's log, record and sync lock, and a half-fetched workspace: nothing
        of a deleted REPL stays in the data dir."""
        for path in (self.records / f"{repl_id}.log", self._record_path(repl_id),
                     self._lock_path(repl_id)):
            path.unlink(missing_ok=True)
        partial = self.workspace(repl_id)
        shutil.rmtree(partial.with_name(partial.name + ".partial"), ignore_errors=True)

    def list_managed(self) -> list[ManagedObject]:
        found = []
        if self.records.exists():
            for path in sorted(self.records.glob("*.json")):
                found.append(ManagedObject(repl_id=path.stem, kind="process", name=path.stem))
        if self.workspaces.exists():
            for path in sorted(p for p in self.workspaces.iterdir() if p.is_dir()):
                found.append(ManagedObject(repl_id=path.name, kind="workspace", name=path.name))
        return found

    @staticmethod
    def _kill(pid: int, *, hard: bool = False) -> None:
        try:
            os.killpg(pid, signal.SIGKILL if hard else signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not our child (another worker's job started it)
                done = pid if _exited(pid) else 0
            if done:
                return
            time.sleep(0.01)  # polling a process we did not start: nothing to wait on
        os.killpg(pid, signal.SIGKILL)


def _exited(pid: int) -> bool:
    """Gone, or a zombie: it has exited and only waits for its parent (often init, which
    may take seconds) to reap it."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat_line.rsplit(")", 1)[-1].split()[0] in ("Z", "X")
