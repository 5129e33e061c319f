"""A WebSocket client of the runner's IDE protocol (docs/RUNNER_PROTOCOL.md), as a test
drives it: real sockets through aiohttp, every wait bounded by a deadline.

Synchronous on the outside (tests stay plain functions): the client runs its own event
loop in a thread.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable

import aiohttp

DEADLINE = 30.0
# Frames the runner pushes on its own; ``call`` collects them instead of returning them.
PUSHED = {"saveStatus", "fileChanged", "terminalResponse", "terminalClosed", "stopping"}


class IdeClient:
    def __init__(self, ws_url: str, token: str | None = None, *, auth: str = "frame",
                 headers: dict[str, str] | None = None) -> None:
        self.url = ws_url
        self.frames: list[dict] = []  # everything received, in order
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._queue: asyncio.Queue | None = None
        self._unread: list[dict] = []
        self.closed_code: int | None = None
        self.loaded: dict | None = None
        self._run(self._connect(token, auth, headers or {}))

    # -- plumbing ----------------------------------------------------------------------
    def _run(self, coro, timeout: float = DEADLINE):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout + 5)

    async def _connect(self, token, auth, headers) -> None:
        self._session = aiohttp.ClientSession()
        url = self.url + (f"?token={token}" if auth == "query" and token else "")
        self._ws = await self._session.ws_connect(url, headers=headers, max_msg_size=0)
        self._queue = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())
        if auth == "frame" and token is not None:
            await self._ws.send_str(json.dumps({"event": "auth", "data": {"token": token}}))

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                frame = json.loads(msg.data)
                self.frames.append(frame)
                await self._queue.put(frame)
        self.closed_code = self._ws.close_code
        await self._queue.put(None)

    async def _next(self, deadline: float) -> dict | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no frame in time; got so far: {self.frames[-5:]!r}")
        return await asyncio.wait_for(self._queue.get(), remaining)

    # -- API ---------------------------------------------------------------------------
    def send_raw(self, text: str) -> None:
        """Send a frame; one sent to a socket the runner already closed goes nowhere."""
        try:
            self._run(self._ws.send_str(text))
        except aiohttp.ClientConnectionResetError:
            pass

    def send(self, event: str, data=None) -> None:
        frame = {"event": event} if data is None else {"event": event, "data": data}
        self.send_raw(json.dumps(frame))

    def expect(self, match: Callable[[dict], bool] | str, timeout: float = DEADLINE) -> dict:
        """The next frame (read before or after this call) that matches."""
        if isinstance(match, str):
            name = match
            match = lambda f: f.get("event") == name  # noqa: E731

        async def go():
            for i, frame in enumerate(self._unread):
                if match(frame):
                    return self._unread.pop(i)
            deadline = time.monotonic() + timeout
            while True:
                frame = await self._next(deadline)
                if frame is None:
                    raise AssertionError(f"socket closed ({self.closed_code}) while waiting; "
                                         f"last frames: {self.frames[-5:]!r}")
                if match(frame):
                    return frame
                self._unread.append(frame)

        return self._run(go(), timeout)

    def call(self, event: str, data=None, reply: str | None = None) -> dict:
        """Send a request and return the data of its reply (``<event>Response`` by default)."""
        self.send(event, data)
        return self.expect(reply or event + "Response")["data"]

    def welcome(self) -> dict:
        self.loaded = self.expect("Loaded")["data"]
        return self.loaded

    def wait_closed(self, timeout: float = DEADLINE) -> int | None:
        async def go():
            deadline = time.monotonic() + timeout
            while await self._next(deadline) is not None:
                pass
            return self.closed_code

        return self._run(go(), timeout)

    def terminal_output(self, session_id: str, contains: str, timeout: float = DEADLINE) -> str:
        """All output of a terminal up to the frame in which ``contains`` shows up."""
        seen = []

        def match(frame: dict) -> bool:
            if frame.get("event") == "terminalResponse" and frame.get("sessionId") == session_id:
                seen.append(frame["data"])
                return contains in "".join(seen)
            return False

        self.expect(match, timeout)
        return "".join(seen)

    def terminal_match(self, session_id: str, pattern: str, timeout: float = DEADLINE) -> re.Match:
        """The first match of ``pattern`` in a terminal's output (the echo of what was typed
        is output too: write patterns that only the command's result can match)."""
        regex = re.compile(pattern)
        seen = []

        def match(frame: dict) -> bool:
            if frame.get("event") == "terminalResponse" and frame.get("sessionId") == session_id:
                seen.append(frame["data"])
                return regex.search("".join(seen)) is not None
            return False

        self.expect(match, timeout)
        return regex.search("".join(seen))

    def close(self) -> None:
        async def go():
            await self._ws.close()
            await self._session.close()

        try:
            self._run(go(), 10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> IdeClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
