"""Tell the core, now and then, whether the IDE was used since the last beat.

Failures are logged and retried on the next beat; they never stop the runner. The token is
the REPL's runner token (``devex.tokens.RUNNER_SCOPE``) and never appears in a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import aiohttp

from devex import tokens

if TYPE_CHECKING:
    from aiohttp import web

    from runner.server import ServerSettings

log = logging.getLogger("runner.heartbeat")

TIMEOUT_SECONDS = 10.0


class Activity:
    """A flag the API sets on each request and the heartbeat reads and clears."""

    def __init__(self) -> None:
        self._active = False

    def touch(self) -> None:
        self._active = True

    def take(self) -> bool:
        active, self._active = self._active, False
        return active


def heartbeat_url(core_url: str, repl_id: str) -> str:
    return f"{core_url.rstrip('/')}/api/runner/{repl_id}/heartbeat"


async def beat_once(session: aiohttp.ClientSession, url: str, token: str, active: bool) -> bool:
    """POST one heartbeat; True when the core accepted it (2xx)."""
    try:
        async with session.post(
            url,
            json={"active": active},
            headers={"Authorization": f"Bearer {token}"},
            allow_redirects=False,
        ) as resp:
            if resp.status // 100 == 2:
                return True
            log.warning("heartbeat rejected by the core: HTTP %s", resp.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("heartbeat failed: %s: %s", type(exc).__name__, exc)
    return False


async def run(settings: ServerSettings, activity: Activity) -> None:
    assert settings.core_url and settings.repl_id and settings.key
    url = heartbeat_url(settings.core_url, settings.repl_id)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            await asyncio.sleep(settings.heartbeat_seconds)
            active = activity.take()
            # Signed fresh for each beat, so the core can verify with a short max age.
            token = tokens.sign(settings.key, settings.repl_id, tokens.RUNNER_SCOPE)
            if not await beat_once(session, url, token, active) and active:
                activity.touch()  # keep the activity for the next attempt


def cleanup_ctx(
    settings: ServerSettings, activity: Activity
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run(settings, activity), name="runner-heartbeat")
        log.info("heartbeat every %ss to the core", settings.heartbeat_seconds)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx
