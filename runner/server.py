"""The runner's HTTP surface (aiohttp), mounted under a base path.

``{base}healthz``, the IDE page ``{base}`` and its assets ``{base}static/`` are open. The
IDE's WebSocket ``{base}ws`` (``runner.ws``) and every ``{base}api/`` route need an IDE token
for this REPL; ``{base}_control/quiesce`` needs a control token (the stop). Only a runner
started with ``--no-auth`` (tests, local debugging) serves without. Errors are always
``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import secrets
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from devex_shared import access_tokens
from devex_shared.bearer import parse_bearer
from runner import heartbeat, ws
from runner.workspace import MAX_READ_BYTES, Workspace, WorkspaceError, os_error

log = logging.getLogger("runner")
access_log = logging.getLogger("runner.access")

_BASE_PATH_RE = re.compile(r"^/(?:[A-Za-z0-9._~-]+/)*$")
_STATIC = Path(__file__).with_name("static")
_PAGE = _STATIC / "index.html"
CONTROL_TOKEN_MAX_AGE = 600
AUTOSAVE_POLL_SECONDS = 2.0


def render_page(nonce: str) -> str:
    return _PAGE.read_text(encoding="utf-8").replace("__NONCE__", nonce)


@dataclass(frozen=True)
class ServerSettings:
    workspace: Path
    host: str = "127.0.0.1"
    port: int = 8080
    base_path: str = "/"
    repl_id: str | None = None
    key: str | None = None
    token_max_age: int = 3600
    core_url: str | None = None
    heartbeat_seconds: float = 60.0
    idle_timeout: float = 0  # seconds; 0: the runner never asks to be stopped
    autosave_url: str | None = None  # the autosave companion, e.g. http://127.0.0.1:8081/
    allowed_origins: tuple[str, ...] = ()  # IDE frontends besides the runner's own page
    shell: str | None = None
    run_command: str | None = None
    auth_timeout: float = 5.0

    @property
    def auth_enabled(self) -> bool:
        return bool(self.repl_id and self.key)


def normalize_base_path(value: str | None) -> str:
    """``abc`` / ``/abc`` / ``/abc/`` -> ``/abc/``; ``""`` -> ``/``. Rejects odd characters."""
    value = (value or "/").strip()
    if not value.startswith("/"):
        value = "/" + value
    if not value.endswith("/"):
        value += "/"
    value = re.sub(r"/{2,}", "/", value)
    if not _BASE_PATH_RE.match(value) or any(seg in (".", "..") for seg in value.split("/")):
        raise ValueError(f"invalid base path: {value!r}")
    return value


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log without the query string (it may carry ``?token=``) or any header."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %s %.3fs',
            request.remote,
            request.method,
            request.path,
            response.status,
            response.body_length,
            time,
        )


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


# What each workspace error answers over HTTP (a path the caller named: always a 4xx).
_WORKSPACE_STATUS = {"bad_path": 400, "not_found": 404, "too_large": 413, "exists": 409}


def workspace_error_response(exc: WorkspaceError) -> web.Response:
    return error_response(_WORKSPACE_STATUS.get(exc.code, 400), exc.code, str(exc))


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}

SETTINGS = web.AppKey("settings", ServerSettings)
WORKSPACE = web.AppKey("workspace", Workspace)
ACTIVITY = web.AppKey("activity", heartbeat.Activity)
HUB = web.AppKey("hub", ws.Hub)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _bearer(request: web.Request) -> str | None:
    return parse_bearer(request.headers.get("Authorization")) or request.query.get("token") or None


def create_app(settings: ServerSettings) -> web.Application:
    base = normalize_base_path(settings.base_path)
    api_prefix = base + "api/"

    @web.middleware
    async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(api_prefix):
            if settings.auth_enabled:
                try:
                    access_tokens.verify(
                        settings.key,
                        settings.repl_id,
                        access_tokens.IDE_SCOPE,
                        _bearer(request),
                        settings.token_max_age,
                    )
                except access_tokens.TokenError as exc:
                    resp = error_response(401, "unauthorized", str(exc))
                    resp.headers["WWW-Authenticate"] = "Bearer"
                    return resp
            request.app[ACTIVITY].touch()
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _HTTP_CODES.get(exc.status, "http_error")
            return error_response(exc.status, code, exc.reason)
        except WorkspaceError as exc:
            return workspace_error_response(exc)
        except OSError as exc:  # any OS error on a path the request named: ours, in JSON
            if not request.path.startswith(api_prefix):
                raise
            return workspace_error_response(os_error(exc))

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def index(request: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        resp = web.Response(text=render_page(nonce), content_type="text/html")
        # Editor and terminal inject their own <style> elements: styles may be inline,
        # scripts only our own files or the nonce.
        resp.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'self' 'nonce-{nonce}'; "
            "style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; "
            "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        return resp

    async def websocket(request: web.Request) -> web.StreamResponse:
        return await ws.handle(request, request.app[HUB])

    async def quiesce(request: web.Request) -> web.Response:
        if settings.auth_enabled:
            try:
                access_tokens.verify(settings.key, settings.repl_id, access_tokens.CONTROL_SCOPE,
                              _bearer(request), CONTROL_TOKEN_MAX_AGE)
            except access_tokens.TokenError as exc:
                return error_response(401, "unauthorized", str(exc))
        hub = request.app[HUB]
        closed = len(hub.connections)
        await hub.quiesce()
        log.info("quiesced for the stop: %d connection(s) closed", closed)
        return web.json_response({"ok": True, "closed": closed})

    async def redirect_to_base(request: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect(base)

    async def list_files(request: web.Request) -> web.Response:
        ws = request.app[WORKSPACE]
        entries, truncated = await asyncio.to_thread(ws.list_files)
        body: dict = {"files": entries}
        if truncated:
            body["truncated"] = True
        return web.json_response(body)

    async def read_file(request: web.Request) -> web.Response:
        ws = request.app[WORKSPACE]
        rel = request.match_info["path"]
        try:
            content = await asyncio.to_thread(ws.read_file, rel, MAX_READ_BYTES)
        except WorkspaceError as exc:
            return workspace_error_response(exc)
        except OSError as exc:  # ENAMETOOLONG and friends not mapped on the way
            return workspace_error_response(os_error(exc))
        data = content.data
        text: str | None = None
        if b"\x00" not in data:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is not None:
            encoded, encoding = text, "utf-8"
        else:
            encoded, encoding = base64.b64encode(data).decode("ascii"), "base64"
        return web.json_response(
            {"path": content.path, "size": content.size, "content": encoded, "encoding": encoding}
        )

    async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        static = request.path.startswith(base + "static/")
        # Static files revalidate (ETag/Last-Modified): an upgrade never mixes old and new.
        response.headers.setdefault("Cache-Control", "no-cache" if static else "no-store")

    app = web.Application(middlewares=[errors_and_auth], client_max_size=1024 * 1024)
    app[SETTINGS] = settings
    app[WORKSPACE] = Workspace(settings.workspace)
    app[ACTIVITY] = heartbeat.Activity()
    hub = app[HUB] = ws.Hub(
        config=ws.IdeConfig(
            workspace=app[WORKSPACE].root,
            repl_id=settings.repl_id,
            key=settings.key if settings.auth_enabled else None,
            token_max_age=settings.token_max_age,
            auth_timeout=settings.auth_timeout,
            allowed_origins=settings.allowed_origins,
            shell=settings.shell,
            run_command=settings.run_command,
        ),
        workspace=app[WORKSPACE],
        activity=app[ACTIVITY],
    )
    app.on_response_prepare.append(security_headers)
    app.router.add_get(base + "healthz", healthz)
    app.router.add_get(base, index)
    if base != "/":
        app.router.add_get(base.rstrip("/"), redirect_to_base)
    app.router.add_static(base + "static/", _STATIC, follow_symlinks=False)
    app.router.add_get(base + "ws", websocket)
    app.router.add_post(base + "_control/quiesce", quiesce)
    app.router.add_get(api_prefix + "files", list_files)
    app.router.add_get(api_prefix + "files/{path:.*}", read_file)
    if settings.autosave_url:
        app.cleanup_ctx.append(_autosave_ctx(settings.autosave_url, hub))
    if settings.core_url and settings.auth_enabled:
        app.cleanup_ctx.append(heartbeat.cleanup_ctx(
            settings, app[ACTIVITY], lambda: hub.save_status if settings.autosave_url else None,
            lambda: hub.running_programs() > 0))
    app.on_shutdown.append(lambda app: app[HUB].quiesce())  # stop edits before exiting
    return app


def _autosave_ctx(url: str, hub: ws.Hub):
    """Follow the autosave companion's state and let the IDE ask it for a save."""
    base = url.rstrip("/")

    async def ctx(app: web.Application):
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))

        async def save_now() -> dict:
            try:
                async with session.post(f"{base}/save") as resp:
                    result = await resp.json()
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                return {"success": False, "error": f"autosave is unreachable: {exc}"}
            await hub.set_save_status({"state": "saved" if result.get("success") else "error",
                                       "savedAt": result.get("savedAt"),
                                       "error": result.get("error")})
            return result

        async def follow() -> None:
            while True:
                try:
                    async with session.get(f"{base}/status",
                                           timeout=aiohttp.ClientTimeout(total=5)) as resp:
                        status = await resp.json()
                    await hub.set_save_status({k: status.get(k)
                                               for k in ("state", "savedAt", "error")})
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    await hub.set_save_status({"state": "error", "savedAt": None,
                                               "error": f"autosave is unreachable: {exc}"})
                await asyncio.sleep(AUTOSAVE_POLL_SECONDS)

        hub.save_now = save_now
        hub.save_status = {"state": "pending", "savedAt": None, "error": None}
        task = asyncio.create_task(follow(), name="autosave-status")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await session.close()

    return ctx


async def serve(settings: ServerSettings, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set), then shut down gracefully."""
    app = create_app(settings)
    app_runner = web.AppRunner(app, access_log_class=PathOnlyAccessLogger, access_log=access_log)
    await app_runner.setup()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(app_runner, settings.host, settings.port, shutdown_timeout=10)
        await site.start()
        log.info(
            "serving %s on http://%s:%s%s (auth %s)",
            settings.workspace,
            settings.host,
            settings.port,
            normalize_base_path(settings.base_path),
            "on" if settings.auth_enabled else "off",
        )
        if not settings.auth_enabled:
            log.warning("AUTH IS OFF (--no-auth): anyone who can reach %s:%s can read and "
                        "write the workspace and run code in it", settings.host, settings.port)
        await stop.wait()
        log.info("shutting down")
    finally:
        try:
            await app_runner.cleanup()
        finally:
            # Only now: a second signal during cleanup must not kill the process half-way.
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
