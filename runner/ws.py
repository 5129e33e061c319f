"""The IDE's WebSocket at ``{base}ws``: the protocol in ``docs/RUNNER_PROTOCOL.md``.

``Hub`` holds every open connection of the runner (for pushes to other tabs, the autosave
state and the stop); ``Connection`` is one socket: authentication, dispatch, its terminals.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web

from devex_shared import access_tokens
from runner import heartbeat
from runner.terminals import Terminal, child_env, shell_argv
from runner.workspace import MAX_READ_BYTES, Workspace, WorkspaceError, as_text

log = logging.getLogger("runner.ws")

FRAME_LIMIT = 6 * 1024 * 1024  # larger frames are answered with an error
HARD_FRAME_LIMIT = 16 * 1024 * 1024  # larger ones close the socket (1009)
MAX_TERMINALS = 10
STOPPING_MESSAGE = "This REPL is stopping; your files are being saved."


@dataclass
class IdeConfig:
    workspace: Path
    repl_id: str | None
    key: str | None
    token_max_age: int
    auth_timeout: float = 5.0
    allowed_origins: tuple[str, ...] = ()
    shell: str | None = None
    run_command: str | None = None


class Refused(Exception):
    """A request the protocol answers with a failure reply."""


@dataclass
class Hub:
    config: IdeConfig
    workspace: Workspace
    activity: heartbeat.Activity
    save_now: Callable[[], Awaitable[dict]] | None = None
    connections: set[Connection] = field(default_factory=set)
    stopping: bool = False
    save_status: dict = field(default_factory=lambda: {"state": "off", "savedAt": None,
                                                       "error": None})

    def running_programs(self) -> int:
        return sum(1 for c in self.connections for t in c.terminals.values()
                   if t.run and t.alive)

    async def broadcast(self, event: str, data: dict, skip: Connection | None = None) -> None:
        for conn in list(self.connections):
            if conn is not skip and conn.authenticated:
                await conn.send(event, data)

    async def set_save_status(self, status: dict) -> None:
        if status != self.save_status:
            self.save_status = status
            await self.broadcast("saveStatus", status)

    async def quiesce(self) -> None:
        """Stop edits before the final save: refuse writes, tell and close every socket,
        end every terminal."""
        self.stopping = True
        await asyncio.gather(*(c.shut(STOPPING_MESSAGE) for c in list(self.connections)),
                             return_exceptions=True)


def origin_allowed(request: web.Request, allowed: tuple[str, ...]) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser: the token is what authenticates
    if origin in allowed:
        return True
    return urlsplit(origin).netloc.lower() == request.host.lower()


class Connection:
    def __init__(self, hub: Hub, ws: web.WebSocketResponse) -> None:
        self.hub = hub
        self.ws = ws
        self.authenticated = False
        self.terminals: dict[str, Terminal] = {}
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()

    # -- sending -------------------------------------------------------------------------
    async def send(self, event: str, data=None, **top) -> None:
        frame = {"event": event, **({"data": data} if data is not None else {}), **top}
        if self.ws.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            async with self._send_lock:
                await self.ws.send_str(json.dumps(frame))

    async def error(self, message: str, event: str | None) -> None:
        await self.send("error", {"message": message, "event": event})

    # -- life ----------------------------------------------------------------------------
    def check_token(self, token: object) -> str | None:
        """None when the token opens this REPL, else why not."""
        cfg = self.hub.config
        if cfg.key is None:
            return None  # --no-auth
        try:
            access_tokens.verify(cfg.key, cfg.repl_id, access_tokens.IDE_SCOPE,
                          token if isinstance(token, str) else None, cfg.token_max_age)
        except access_tokens.TokenError as exc:
            return str(exc)
        return None

    async def refuse(self, message: str, event: str | None) -> None:
        await self.error(message, event)
        await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=message.encode()[:120])

    async def welcome(self) -> None:
        self.authenticated = True
        entries, _ = await asyncio.to_thread(self.hub.workspace.list_dir, "")
        await self.send("Loaded", {"rootContents": entries})
        await self.send("saveStatus", self.hub.save_status)

    async def serve(self, query_token: str | None) -> None:
        if query_token is not None or self.hub.config.key is None:
            problem = self.check_token(query_token)
            if problem:
                return await self.refuse(problem, "auth")
            await self.welcome()
        else:
            try:
                msg = await self.ws.receive(timeout=self.hub.config.auth_timeout)
            except TimeoutError:
                await self.ws.close(code=WSCloseCode.POLICY_VIOLATION,
                                    message=b"authentication timeout")
                return
            frame = parse(msg)
            if frame is None or frame[0] != "auth":
                return await self.refuse("authenticate first",
                                         frame[0] if frame else None)
            problem = self.check_token((frame[1] or {}).get("token"))
            if problem:
                return await self.refuse(problem, "auth")
            await self.send("authResponse", {"success": True})
            await self.welcome()
        async for msg in self.ws:
            if msg.type != WSMsgType.TEXT:
                if msg.type == WSMsgType.BINARY:
                    await self.error("frames are JSON text", None)
                continue
            self.hub.activity.touch()
            if len(msg.data) > FRAME_LIMIT:
                await self.error("frame too large", None)
                continue
            frame = parse(msg)
            if frame is None:
                await self.error("a frame is a JSON object with a string 'event'", None)
            elif frame[0] == "auth":  # already in (or --no-auth): nothing more to check
                await self.send("authResponse", {"success": True})
            elif frame[0] in BACKGROUND_EVENTS:
                # Slow and independent of file order: must not hold up typing and writes.
                task = asyncio.create_task(self.dispatch(*frame))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                await self.dispatch(*frame)

    async def dispatch(self, event: str, data) -> None:
        handler = HANDLERS.get(event)
        if handler is None:
            return await self.error("unknown event", event)
        reply_event, echo = REPLIES.get(event, (None, ()))
        if not isinstance(data, dict):
            data = {} if data is None else {"_": data}
        try:
            await handler(self, data)
        except (Refused, WorkspaceError, OSError, ValueError, TypeError, KeyError) as exc:
            message = str(exc) if not isinstance(exc, KeyError) else f"missing field {exc}"
            if isinstance(exc, OSError) and not isinstance(exc, WorkspaceError):
                message = exc.strerror or "file system error"
            if event in TERMINAL_EVENTS:
                extra = {"sessionId": data["sessionId"]} if "sessionId" in data else {}
                if event in ("run", "stopRun"):
                    extra["run"] = True
                await self.send("terminalError", {"error": message, **extra})
            elif reply_event:
                fields = {k: data.get(k) for k in echo}
                if event == "fetchDir":
                    fields["path"] = data.get("Dir", data.get("dir", ""))
                await self.send(reply_event, {"success": False, **fields, "error": message})
            else:
                await self.error(message, event)

    async def shut(self, message: str | None) -> None:
        """Close this socket and end its terminals."""
        if message and not self.ws.closed:
            await self.send("stopping", {"message": message})
            await self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"stopping")
        await self.end_terminals()

    async def end_terminals(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        terminals, self.terminals = list(self.terminals.values()), {}
        await asyncio.gather(*(t.close() for t in terminals), return_exceptions=True)

    # -- helpers for handlers ------------------------------------------------------------
    def writable(self) -> None:
        if self.hub.stopping:
            raise Refused("the REPL is stopping")

    async def in_thread(self, func, *args):
        return await asyncio.to_thread(func, *args)

    async def changed(self, kind: str, path: str, **extra) -> None:
        await self.hub.broadcast("fileChanged", {"kind": kind, "path": path, **extra},
                                 skip=self)

    async def open_terminal(self, argv: list[str], data: dict, *, run: bool) -> Terminal:
        if self.hub.stopping:
            raise Refused("the REPL is stopping")
        if len(self.terminals) >= MAX_TERMINALS:
            raise Refused(f"at most {MAX_TERMINALS} terminals per connection")
        cols, rows = _size(data.get("cols", 80), data.get("rows", 24))
        cfg = self.hub.config
        term = Terminal(argv, cfg.workspace, child_env(os.environ, cfg.workspace), run=run)

        async def output(text: str) -> None:
            self.hub.activity.touch()
            await self.send("terminalResponse", text, sessionId=term.id)

        async def exited(code: int | None) -> None:
            self.terminals.pop(term.id, None)
            await self.send("terminalClosed", {"sessionId": term.id, **exit_status(code)})

        await term.start(cols, rows, output, exited)
        self.terminals[term.id] = term
        return term

    def terminal(self, data: dict) -> Terminal:
        session_id = data["sessionId"]
        term = self.terminals.get(session_id) if isinstance(session_id, str) else None
        if term is None:
            raise Refused("no such terminal session")
        return term


def exit_status(code: int | None) -> dict:
    """A shell's way to say it: a process ended by signal N exits with 128 + N."""
    if code is not None and code < 0:
        return {"exitCode": 128 - code, "signal": -code}
    return {"exitCode": code}


def parse(msg) -> tuple[str, object] | None:
    if msg.type != WSMsgType.TEXT:
        return None
    try:
        frame = json.loads(msg.data)
    except ValueError:
        return None
    if not isinstance(frame, dict) or not isinstance(frame.get("event"), str):
        return None
    return frame["event"], frame.get("data")


def _str(data: dict, name: str) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise Refused(f"'{name}' must be a string")
    return value


def _size(cols: object, rows: object) -> tuple[int, int]:
    if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1000
               for v in (cols, rows)):
        raise Refused("cols and rows must be whole numbers from 1 to 1000")
    return cols, rows  # type: ignore[return-value]


# -- handlers --------------------------------------------------------------------------------
async def fetch_dir(conn: Connection, data: dict) -> None:
    path = data.get("Dir", data.get("dir", ""))
    if not isinstance(path, str):
        raise Refused("'Dir' must be a string")
    entries, truncated = await conn.in_thread(conn.hub.workspace.list_dir, path)
    body = {"contents": entries, "path": path}
    if truncated:
        body["truncated"] = True
    await conn.send("fetchDirResponse", body)


async def fetch_content(conn: Connection, data: dict) -> None:
    path = _str(data, "path")
    content = await conn.in_thread(conn.hub.workspace.read_file, path, MAX_READ_BYTES)
    text = as_text(content.data)
    if text is None:
        body = {"content": base64.b64encode(content.data).decode("ascii"),
                "binary": True, "encoding": "base64"}
    else:
        body = {"content": text, "binary": False, "encoding": "utf-8"}
    await conn.send("fetchContentResponse", {"path": path, "size": content.size, **body})


async def update_content(conn: Connection, data: dict) -> None:
    conn.writable()
    path = _str(data, "path")
    ws = conn.hub.workspace
    if "patch" in data:
        await conn.in_thread(ws.patch_file, path, _str(data, "patch"))
    else:
        await conn.in_thread(ws.write_file, path, _str(data, "content").encode("utf-8"))
    await conn.send("updateContentResponse", {"success": True, "path": path})
    await conn.changed("update", path)


def _simple(event: str, op: str, kind: str):
    async def handler(conn: Connection, data: dict) -> None:
        conn.writable()
        path = _str(data, "path")
        await conn.in_thread(getattr(conn.hub.workspace, op), path)
        await conn.send(event + "Response", {"success": True, "path": path})
        await conn.changed(kind, path)

    return handler


async def rename(conn: Connection, data: dict) -> None:
    conn.writable()
    old, new = _str(data, "oldPath"), _str(data, "newPath")
    await conn.in_thread(conn.hub.workspace.rename, old, new)
    await conn.send("renameResponse", {"success": True, "oldPath": old, "newPath": new})
    await conn.changed("rename", old, newPath=new)


async def copy(conn: Connection, data: dict) -> None:
    conn.writable()
    src, dst = _str(data, "sourcePath"), _str(data, "targetPath")
    await conn.in_thread(conn.hub.workspace.copy, src, dst)
    await conn.send("copyResponse", {"success": True, "sourcePath": src, "targetPath": dst})
    await conn.changed("copy", dst, sourcePath=src)


async def request_terminal(conn: Connection, data: dict) -> None:
    term = await conn.open_terminal(shell_argv(conn.hub.config.shell), data, run=False)
    await conn.send("terminalConnected", {"sessionId": term.id})


async def terminal_input(conn: Connection, data: dict) -> None:
    conn.terminal(data).write(_str(data, "data"))


async def terminal_resize(conn: Connection, data: dict) -> None:
    cols, rows = _size(data.get("cols"), data.get("rows"))
    conn.terminal(data).resize(cols, rows)


async def close_terminal(conn: Connection, data: dict) -> None:
    term = conn.terminal(data)
    conn.terminals.pop(term.id, None)
    code = await term.close()
    await conn.send("terminalClosed", {"sessionId": term.id, **exit_status(code)})


async def run(conn: Connection, data: dict) -> None:
    command = conn.hub.config.run_command
    if not command:
        raise Refused("this REPL's template has no run command")
    argv = [*shell_argv(conn.hub.config.shell), "-c", command]
    term = await conn.open_terminal(argv, data, run=True)
    await conn.send("terminalConnected", {"sessionId": term.id, "run": True,
                                          "command": command})


async def stop_run(conn: Connection, data: dict) -> None:
    term = conn.terminal(data)
    if not term.run:
        raise Refused("that session is a terminal, not a run")
    await close_terminal(conn, data)


async def save(conn: Connection, data: dict) -> None:
    if conn.hub.save_now is None:
        raise Refused("autosave is not configured for this REPL")
    result = await conn.hub.save_now()
    body = {"success": bool(result.get("success")), "savedAt": result.get("savedAt")}
    if result.get("error"):
        body["error"] = result["error"]
    await conn.send("saveResponse", body)


HANDLERS: dict[str, Callable[[Connection, dict], Awaitable[None]]] = {
    "fetchDir": fetch_dir,
    "fetchContent": fetch_content,
    "updateContent": update_content,
    "createFile": _simple("createFile", "create_file", "create"),
    "createFolder": _simple("createFolder", "create_folder", "create"),
    "delete": _simple("delete", "delete", "delete"),
    "rename": rename,
    "copy": copy,
    "requestTerminal": request_terminal,
    "terminalInput": terminal_input,
    "terminalResize": terminal_resize,
    "closeTerminal": close_terminal,
    "run": run,
    "stopRun": stop_run,
    "save": save,
}
# The reply a failure is reported in, and the request fields it echoes.
REPLIES = {
    "fetchDir": ("fetchDirResponse", ("path",)),
    "fetchContent": ("fetchContentResponse", ("path",)),
    "updateContent": ("updateContentResponse", ("path",)),
    "createFile": ("createFileResponse", ("path",)),
    "createFolder": ("createFolderResponse", ("path",)),
    "delete": ("deleteResponse", ("path",)),
    "rename": ("renameResponse", ("oldPath", "newPath")),
    "copy": ("copyResponse", ("sourcePath", "targetPath")),
    "save": ("saveResponse", ()),
}
BACKGROUND_EVENTS = {"save", "closeTerminal", "stopRun"}
TERMINAL_EVENTS = {"requestTerminal", "terminalInput", "terminalResize", "closeTerminal",
                   "run", "stopRun"}


async def handle(request: web.Request, hub: Hub) -> web.StreamResponse:
    if not origin_allowed(request, hub.config.allowed_origins):
        raise web.HTTPForbidden(reason="origin not allowed")
    if hub.stopping:
        raise web.HTTPServiceUnavailable(reason="the REPL is stopping")
    ws = web.WebSocketResponse(max_msg_size=HARD_FRAME_LIMIT, heartbeat=30)
    await ws.prepare(request)
    conn = Connection(hub, ws)
    hub.connections.add(conn)
    try:
        await conn.serve(request.query.get("token"))
    finally:
        hub.connections.discard(conn)
        await conn.end_terminals()
        if not ws.closed:
            await ws.close()
    return ws
