"""``python -m runner {serve,sync-down,sync-up}``.

Settings come from flags, falling back to ``RUNNER_*`` environment variables. Storage for the
sync commands comes from ``devex.infra.storage.storage_from_env(os.environ)`` (``DEVEX_*``).
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
    from devex.infra.storage.base import StorageError
    from devex.infra.storage.sync import validate_scoped_prefix

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

    down = sub.add_parser("sync-down", help="make a directory mirror a storage prefix")
    down.add_argument("--prefix", required=True, type=_prefix)
    down.add_argument("--dest", required=True, type=Path)

    up = sub.add_parser("sync-up", help="make a storage prefix mirror a directory")
    up.add_argument("--src", required=True, type=Path)
    up.add_argument("--prefix", required=True, type=_prefix)
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
    if bool(repl_id) != bool(key):
        # Fail closed: half a configuration must not silently turn authentication off.
        parser.error("set both RUNNER_REPL_ID and RUNNER_KEY, or neither")
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
    )
    if core_url and not settings.auth_enabled:
        log.warning("RUNNER_CORE_URL is set without RUNNER_REPL_ID/RUNNER_KEY: no heartbeat")
    try:
        asyncio.run(serve(settings))
    except OSError as exc:  # e.g. port in use
        print(f"runner: cannot serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _sync(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from devex.infra.storage import StorageError, storage_from_env

    op = args.command
    try:
        storage = storage_from_env(environ)
    except (StorageError, ValueError) as exc:  # devex.config.ConfigError is a ValueError
        print(f"runner: {op} failed: invalid storage configuration: {exc}", file=sys.stderr)
        return 1
    try:
        if op == "sync-down":
            args.dest.mkdir(parents=True, exist_ok=True)
            report = storage.sync_down(args.prefix, args.dest)
        else:
            if not args.src.is_dir():
                print(f"runner: {op} failed: not a directory: {args.src}", file=sys.stderr)
                return 1
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
