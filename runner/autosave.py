"""``python -m runner autosave``: keep storage in step with a running workspace.

The runner's companion, and the only process of a REPL that holds storage credentials (a
native sidecar on Kubernetes, a second local process in embedded mode): user code runs in
the runner, which never sees them. It scans the workspace a few times per interval and,
when anything changed, runs the same mirroring ``sync_up`` as a stop (changed files only,
uploads first, deletions after). Saves take the sync lock that the stop's final save takes
too, so an older autosave can never land after it.

It answers on loopback: ``GET /status`` and ``POST /save`` (a save now), for the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from devex_shared.storage.sync import sync_lock
from runner.workspace import TMP_PREFIX

log = logging.getLogger("runner.autosave")

# Within the pod's grace period (terminationGracePeriodSeconds, 60) with room to exit.
SHUTDOWN_SAVE_SECONDS = 45.0


def scan_signature(root: Path) -> str:
    """A digest of every file's path, size, mtime and mode: changes when anything does."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(filenames + [d for d in dirnames if (base / d).is_symlink()]):
            if name.startswith(TMP_PREFIX):
                continue
            try:
                st = (base / name).lstat()
            except OSError:
                continue
            rel = (base / name).relative_to(root).as_posix()
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_mode}\n".encode())
        digest.update(f"dir\0{base.relative_to(root).as_posix()}\n".encode())
    return digest.hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Autosaver:
    storage: object  # devex_shared.storage.base.Storage: sync_up(directory, prefix)
    src: Path
    prefix: str
    interval: float
    lock_path: Path | None = None
    state: str = "pending"
    saved_at: str | None = None
    error: str | None = None
    _saved_signature: str | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def status(self) -> dict:
        return {"state": self.state, "savedAt": self.saved_at, "error": self.error}

    def _save_sync(self) -> dict:
        with sync_lock(self.lock_path):
            # Scanned before the upload: a change made during it is saved next time.
            signature = scan_signature(self.src)
            report = self.storage.sync_up(self.src, self.prefix)
        self._saved_signature = signature
        return {"uploaded": len(report.uploaded), "deleted": len(report.deleted),
                "skipped": len(report.skipped)}

    async def save(self, reason: str) -> dict:
        async with self._lock:
            self.state = "saving"
            try:
                counts = await asyncio.to_thread(self._save_sync)
            except Exception as exc:  # storage down, disk trouble: report, retry next tick
                self.state, self.error = "error", _reason(exc)
                log.warning("autosave (%s) failed: %s", reason, self.error)
                return {"success": False, "error": self.error, "savedAt": self.saved_at}
            self.state, self.error, self.saved_at = "saved", None, _now()
            if counts["uploaded"] or counts["deleted"]:
                log.info("autosave (%s): %s uploaded, %s deleted", reason,
                         counts["uploaded"], counts["deleted"])
            return {"success": True, "savedAt": self.saved_at, **counts}

    async def changed(self) -> bool:
        signature = await asyncio.to_thread(scan_signature, self.src)
        return signature != self._saved_signature

    async def tick(self) -> None:
        if self._lock.locked():
            return
        if await self.changed():
            if self.state != "error":
                self.state = "pending"
            await self.save("changes")

    async def run(self, stop: asyncio.Event) -> None:
        # A few scans per interval, so a change reaches storage within one interval.
        period = max(0.2, self.interval / 3)
        await self.save("start")  # a workspace kept from a failed stop is saved first
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period)
            if not stop.is_set():
                await self.tick()


async def _last_save(saver: Autosaver) -> None:
    if await saver.changed():
        await saver.save("shutdown")


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def create_app(saver: Autosaver) -> web.Application:
    async def status(request: web.Request) -> web.Response:
        return web.json_response(saver.status())

    async def save_now(request: web.Request) -> web.Response:
        return web.json_response(await saver.save("asked"))

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_post("/save", save_now)
    return app


async def serve(saver: Autosaver, host: str, port: int) -> None:
    """Save on schedule and on request until SIGTERM/SIGINT; then save once more if needed
    (an eviction or a pod deletion gives us the grace period) and exit."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(create_app(saver), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("autosave of %s to %s every %ss; listening on %s:%s",
             saver.src, saver.prefix, saver.interval, host, port)
    try:
        await saver.run(stop)
    finally:
        await runner.cleanup()
        try:
            await asyncio.wait_for(_last_save(saver), SHUTDOWN_SAVE_SECONDS)
        except TimeoutError:
            log.warning("gave up the last save after %ss", SHUTDOWN_SAVE_SECONDS)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
