"""The application factory."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from apiflask import APIFlask

from devex.config import Settings
from devex.extension import DevexExtension
from devex.infra.embedded_worker import EmbeddedWorker
from devex.services.repls import ReplService
from devex.wiring import build

log = logging.getLogger(__name__)


def create_app(test_config: dict[str, Any] | None = None) -> APIFlask:
    """Build the app. ``test_config`` may hold Flask config keys and ``DEVEX_*`` settings,
    which then override the environment."""
    test_config = dict(test_config or {})
    overrides = {k: str(v) for k, v in test_config.items() if k.startswith("DEVEX_")}
    settings = Settings.from_env({**os.environ, **overrides}).with_secret()

    app = APIFlask(
        __name__,
        title="Devex",
        version="0.1.0",
        spec_path="/api/openapi.json",
        docs_path="/api/docs",
        template_folder="templates_html",
    )
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        PERMANENT_SESSION_LIFETIME=timedelta(days=7),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.auth_mode == "github",
        VALIDATION_ERROR_STATUS_CODE=400,
        AUTO_404_RESPONSE=True,
        DOCS_FAVICON=None,
        INFO={"description": "Control plane for cloud-IDE workspaces (REPLs)."},
    )
    app.config.update({k: v for k, v in test_config.items() if not k.startswith("DEVEX_")})

    components = build(settings, connection=test_config.get("REDIS_CONNECTION"))
    ext = DevexExtension(settings=settings, components=components, repls=ReplService(components))
    app.extensions["devex"] = ext
    from devex.auth_setup import init_auth; init_auth(app, settings, components)  # noqa: E702, I001

    from devex import errorhandlers
    from devex.blueprints import api, auth, health

    errorhandlers.register(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(health.bp)
    _register_optional(app)

    if settings.run_embedded_worker:
        ext.worker = EmbeddedWorker(components.jobs, components)
        ext.worker.start()
    return app


def _register_optional(app: APIFlask) -> None:
    """Pieces that live in their own modules (dashboard, CLI)."""
    from devex.blueprints import dashboard

    app.register_blueprint(dashboard.bp)
    try:
        from devex.cli import devex_cli
    except ImportError:  # pragma: no cover - the CLI module is optional while it is built
        return
    app.cli.add_command(devex_cli)
