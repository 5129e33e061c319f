"""Tell the core, now and then, whether the IDE was used, and when the REPL went idle.

Activity is WebSocket traffic, terminal output, file API requests and a running program.
Every ``heartbeat_seconds`` the runner POSTs ``{"active", "autosave"}`` to the core; after
``idle_timeout`` seconds without activity it calls the core's idle endpoint, which stops the
REPL with its files saved. Failures are logged and retried; they never stop the runner. The
token is the REPL's runner token (``devex_shared.access_tokens.RUNNER_SCOPE``), signed fresh
for each call, and never appears in a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import aiohttp

from devex_shared import access_tokens

if TYPE_CHECKING:
    from aiohttp import web

    from runner.server import ServerSettings

log = logging.getLogger("runner.heartbeat")

TIMEOUT_SECONDS = 10.0


class Activity:
    """When the REPL was last used; the heartbeat reads and clears the flag."""

    def __init__(self) -> None:
        self._active = False
        self.last = time.monotonic()

    def touch(self) -> None:
        self._active = True
        self.last = time.monotonic()

    def take(self) -> bool:
        active, self._active = self._active, False
        return active

    def idle_for(self) -> float:
        return time.monotonic() - self.last


def heartbeat_url(core_url: str, repl_id: str) -> str:
    return f"{core_url.rstrip('/')}/api/runner/{repl_id}/heartbeat"


def idle_url(core_url: str, repl_id: str) -> str:
    return f"{core_url.rstrip('/')}/api/runner/{repl_id}/idle"


async def _post(session: aiohttp.ClientSession, url: str, token: str, body: dict | None,
                what: str) -> bool:
    """POST to the core; True when it accepted (2xx)."""
    try:
        async with session.post(
            url, json=body, headers={"Authorization": f"Bearer {token}"}, allow_redirects=False
        ) as resp:
            if resp.status // 100 == 2:
                return True
            log.warning("%s rejected by the core: HTTP %s", what, resp.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("%s failed: %s: %s", what, type(exc).__name__, exc)
    return False


async def beat_once(session: aiohttp.ClientSession, url: str, token: str, active: bool,
                    autosave: dict | None = None) -> bool:
    body: dict = {"active": active}
    if autosave is not None:
        body["autosave"] = autosave
    return await _post(session, url, token, body, "heartbeat")


def _token(settings: ServerSettings) -> str:
    assert settings.key and settings.repl_id
    return access_tokens.sign(settings.key, settings.repl_id, access_tokens.RUNNER_SCOPE)


async def run(settings: ServerSettings, activity: Activity,
              autosave_status: Callable[[], dict | None] = lambda: None) -> None:
    assert settings.core_url and settings.repl_id
    url = heartbeat_url(settings.core_url, settings.repl_id)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            await asyncio.sleep(settings.heartbeat_seconds)
            active = activity.take()
            ok = await beat_once(session, url, _token(settings), active, autosave_status())
            if not ok and active:
                activity.touch()  # keep the activity for the next attempt


async def watch_idle(settings: ServerSettings, activity: Activity,
                     busy: Callable[[], bool]) -> None:
    """Ask the core to stop this REPL once nothing happened for ``idle_timeout`` seconds."""
    assert settings.core_url and settings.repl_id and settings.idle_timeout > 0
    url = idle_url(settings.core_url, settings.repl_id)
    period = max(0.2, min(15.0, settings.idle_timeout / 4))
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            await asyncio.sleep(period)
            if busy():
                activity.touch()  # a running program is activity
                continue
            if activity.idle_for() < settings.idle_timeout:
                continue
            log.info("idle for %.0fs: asking the core to stop this REPL", activity.idle_for())
            if await _post(session, url, _token(settings), None, "idle call"):
                return  # the core stops us; nothing more to ask


def cleanup_ctx(
    settings: ServerSettings,
    activity: Activity,
    autosave_status: Callable[[], dict | None],
    busy: Callable[[], bool],
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(run(settings, activity, autosave_status),
                                     name="runner-heartbeat")]
        log.info("heartbeat every %ss to the core", settings.heartbeat_seconds)
        if settings.idle_timeout > 0:
            tasks.append(asyncio.create_task(watch_idle(settings, activity, busy),
                                             name="runner-idle"))
            log.info("idle stop after %ss without activity", settings.idle_timeout)
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return ctx
