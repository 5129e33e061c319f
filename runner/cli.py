"""``python -m runner {serve,sync-down,sync-up,autosave}``.

Settings come from flags, falling back to ``RUNNER_*`` environment variables. Storage for the
sync commands comes from ``devex_shared.storage.storage_from_env(os.environ)`` (``DEVEX_*``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger("runner")


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "")
    if not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"runner: {name} must be an integer, got {raw!r}") from None


def _env_float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "")
    if not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"runner: {name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise SystemExit(f"runner: {name} must be positive")
    return value


def _prefix(value: str) -> str:
    """A storage prefix as storage itself checks it (one rule), ending with ``/``."""
    from devex_shared.storage.base import StorageError
    from devex_shared.storage.sync import validate_scoped_prefix

    try:
        return validate_scoped_prefix(value.strip().rstrip("/") + "/", "sync")
    except StorageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runner", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default=environ.get("RUNNER_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the IDE page, health check and file API")
    serve.add_argument(
        "--workspace",
        default=environ.get("RUNNER_WORKSPACE"),
        help="workspace directory (env RUNNER_WORKSPACE)",
    )
    serve.add_argument("--host", default=environ.get("RUNNER_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=_env_int(environ, "RUNNER_PORT", 8080))
    serve.add_argument("--base-path", default=environ.get("RUNNER_BASE_PATH", "/"))
    serve.add_argument(
        "--no-auth",
        action="store_true",
        help="serve without RUNNER_REPL_ID/RUNNER_KEY: anyone who can reach the port can use "
        "the workspace (tests and local debugging only)",
    )

    down = sub.add_parser("sync-down", help="make a directory mirror a storage prefix")
    down.add_argument("--prefix", required=True, type=_prefix)
    down.add_argument("--dest", required=True, type=Path)

    up = sub.add_parser("sync-up", help="make a storage prefix mirror a directory")
    up.add_argument("--src", required=True, type=Path)
    up.add_argument("--prefix", required=True, type=_prefix)
    up.add_argument("--lock", type=Path, help="lock file shared with autosave")
    up.add_argument(
        "--quiesce-url",
        help="the runner's _control/quiesce URL, called first (token in RUNNER_CONTROL_TOKEN)",
    )

    auto = sub.add_parser("autosave", help="save a running workspace's changes periodically")
    auto.add_argument("--src", required=True, type=Path)
    auto.add_argument("--prefix", required=True, type=_prefix)
    auto.add_argument(
        "--interval", type=float, default=_env_float(environ, "RUNNER_AUTOSAVE_SECONDS", 30.0)
    )
    auto.add_argument("--listen", default="127.0.0.1:8081", help="HOST:PORT for /status, /save")
    auto.add_argument("--lock", type=Path, help="lock file shared with the stop's sync-up")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=str(args.log_level).upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "serve":
        return _serve(parser, args, environ)
    if args.command == "autosave":
        return _autosave(parser, args, environ)
    return _sync(args, environ)


def _serve(parser: argparse.ArgumentParser, args: argparse.Namespace, environ) -> int:
    from runner.server import ServerSettings, normalize_base_path, serve

    if not args.workspace:
        parser.error("--workspace (or RUNNER_WORKSPACE) is required")
    workspace = Path(args.workspace)
    if not workspace.is_dir():
        parser.error(f"workspace is not a directory: {workspace}")
    try:
        base_path = normalize_base_path(args.base_path)
    except ValueError as exc:
        parser.error(str(exc))
    repl_id = environ.get("RUNNER_REPL_ID") or None
    key = environ.get("RUNNER_KEY") or None
    if args.no_auth:
        if key:
            parser.error("--no-auth and RUNNER_KEY contradict each other")
    elif not (repl_id and key):
        # Fail closed: a runner without its key would serve the workspace to anyone.
        parser.error("RUNNER_REPL_ID and RUNNER_KEY are required (--no-auth for local "
                     "debugging only)")
    if isinstance(environ, os._Environ):
        # Whatever the runner starts later (a terminal) must not inherit the signing key.
        os.environ.pop("RUNNER_KEY", None)
    core_url = environ.get("RUNNER_CORE_URL") or None
    if core_url and not core_url.startswith(("http://", "https://")):
        parser.error("RUNNER_CORE_URL must be an http(s) URL")
    settings = ServerSettings(
        workspace=workspace,
        host=args.host,
        port=args.port,
        base_path=base_path,
        repl_id=repl_id,
        key=key,
        token_max_age=_env_int(environ, "RUNNER_TOKEN_MAX_AGE", 3600),
        core_url=core_url,
        heartbeat_seconds=_env_float(environ, "RUNNER_HEARTBEAT_SECONDS", 60.0),
        idle_timeout=_env_seconds(environ, "RUNNER_IDLE_TIMEOUT"),
        autosave_url=environ.get("RUNNER_AUTOSAVE_URL") or None,
        allowed_origins=tuple(o.strip() for o in environ.get("RUNNER_ALLOWED_ORIGINS", "")
                              .split(",") if o.strip()),
        shell=environ.get("RUNNER_SHELL") or None,
        run_command=environ.get("RUNNER_RUN_COMMAND") or None,
        auth_timeout=_env_float(environ, "RUNNER_AUTH_TIMEOUT", 5.0),
    )
    if core_url and not settings.auth_enabled:
        log.warning("RUNNER_CORE_URL is set without RUNNER_REPL_ID/RUNNER_KEY: no heartbeat")
    try:
        asyncio.run(serve(settings))
    except OSError as exc:  # e.g. port in use
        print(f"runner: cannot serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _env_seconds(environ: Mapping[str, str], name: str) -> float:
    """A duration where 0 means off."""
    raw = environ.get(name, "").strip()
    if not raw or raw == "0":
        return 0.0
    return _env_float(environ, name, 0.0)


def _storage(op: str, environ: Mapping[str, str]):
    from devex_shared.storage import StorageError, storage_from_env

    try:
        return storage_from_env(environ)
    except (StorageError, ValueError) as exc:  # StorageConfigError is a ValueError
        print(f"runner: {op} failed: invalid storage configuration: {exc}", file=sys.stderr)
        return None


def _autosave(parser: argparse.ArgumentParser, args: argparse.Namespace, environ) -> int:
    from runner.autosave import Autosaver, serve

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        parser.error("--listen is HOST:PORT")
    if args.interval <= 0:
        parser.error("--interval must be positive")
    if not args.src.is_dir():
        parser.error(f"not a directory: {args.src}")
    storage = _storage("autosave", environ)
    if storage is None:
        return 1
    saver = Autosaver(storage, args.src, args.prefix, args.interval, args.lock)
    try:
        asyncio.run(serve(saver, host, int(port)))
    except OSError as exc:  # e.g. port in use
        print(f"runner: autosave cannot serve: {exc}", file=sys.stderr)
        return 1
    return 0


class QuiesceRefused(Exception):
    """The runner is alive and refused to stop edits: saving now could race them."""


def quiesce(url: str, token: str | None) -> str:
    """Ask the runner to stop edits before the final save; what happened, in words. A
    runner that does not answer (crashed, OOM-killed) cannot edit either: the save goes on.
    One that answers but refuses (a wrong token) raises ``QuiesceRefused``."""
    import urllib.error
    import urllib.request

    # Straight to the loopback runner: never through a proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, method="POST", data=b"",
                                     headers={"Authorization": f"Bearer {token or ''}"})
    try:
        with opener.open(request, timeout=15) as resp:
            return f"runner quiesced (HTTP {resp.status})"
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise QuiesceRefused(f"the runner refused to stop edits: HTTP {exc.code}") from None
        return f"runner could not quiesce (HTTP {exc.code}), saving anyway"
    except (OSError, ValueError) as exc:
        return f"runner not reachable, saving anyway: {exc}"


def _sync(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from devex_shared.storage import StorageError
    from devex_shared.storage.sync import sync_lock

    op = args.command
    storage = _storage(op, environ)
    if storage is None:
        return 1
    try:
        if op == "sync-down":
            args.dest.mkdir(parents=True, exist_ok=True)
            report = storage.sync_down(args.prefix, args.dest)
        else:
            if not args.src.is_dir():
                print(f"runner: {op} failed: not a directory: {args.src}", file=sys.stderr)
                return 1
            if args.quiesce_url:
                try:
                    log.info(quiesce(args.quiesce_url, environ.get("RUNNER_CONTROL_TOKEN")))
                except QuiesceRefused as exc:
                    print(f"runner: {op} failed: {exc}", file=sys.stderr)
                    return 1
            with sync_lock(args.lock):
                report = storage.sync_up(args.src, args.prefix)
    except StorageError as exc:
        print(f"runner: {op} failed: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # local side: permissions, disk full
        print(f"runner: {op} failed: {exc}", file=sys.stderr)
        return 1
    summary = {
        "command": op,
        "prefix": args.prefix,
        "downloaded": len(report.downloaded),
        "uploaded": len(report.uploaded),
        "deleted": len(report.deleted),
        "unchanged": report.unchanged,
        "skipped": [{"path": path, "reason": reason} for path, reason in report.skipped],
    }
    print(json.dumps(summary, sort_keys=True))
    return 0
