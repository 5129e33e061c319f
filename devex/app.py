"""The application factory."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from apiflask.schema_adapters.marshmallow import parser as json_parser
from werkzeug.middleware.proxy_fix import ProxyFix

from devex.blueprints import (
    admin,
    admin_pages,
    api,
    api_token_pages,
    api_tokens,
    auth,
    dashboard,
    health,
)
from devex.cli import devex_cli
from devex.config import Settings
from devex.extension import DevexExtension
from devex.infra.embedded_state import EmbeddedState
from devex.services.repls import ReplService
from devex.web import errorhandlers, jsonbody, weblogs
from devex.web.auth import init_auth
from devex.web.flask_app import DevexFlask
from devex.web.headers import init_headers
from devex.web.hosts import init_hosts
from devex.web.openapi import init_openapi
from devex.web.operations import init_operations
from devex.web.pages import init_pages
from devex.wiring import build
from jobs.embedded_worker import EmbeddedWorker

log = logging.getLogger(__name__)


def create_app(test_config: dict[str, Any] | None = None) -> DevexFlask:
    """Build the app. ``test_config`` may hold Flask config keys and ``DEVEX_*`` settings,
    which then override the environment."""
    test_config = dict(test_config or {})
    overrides = {k: str(v) for k, v in test_config.items() if k.startswith("DEVEX_")}
    settings = Settings.from_env({**os.environ, **overrides}).with_secret()

    app = DevexFlask(
        __name__,
        title="Devex",
        version="0.1.0",
        spec_path="/api/openapi.json",
        docs_path=None,  # the bundled docs UI loads from a CDN; the service works offline
        template_folder="templates_html",
    )
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        PERMANENT_SESSION_LIFETIME=timedelta(days=7),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        VALIDATION_ERROR_STATUS_CODE=400,
        AUTO_404_RESPONSE=True,
        DOCS_FAVICON=None,
        INFO={"description": "Control plane for cloud-IDE workspaces (REPLs)."},
    )
    app.config.update({k: v for k, v in test_config.items() if not k.startswith("DEVEX_")})

    connection = test_config.get("REDIS_CONNECTION")
    embedded = None
    if settings.embedded and connection is None:
        # Before any client is used: the data dir's lock, and its holder's Redis server.
        embedded = EmbeddedState.open(settings)
    components = build(settings, connection=connection)
    ext = DevexExtension(components=components, repls=ReplService(components))
    app.extensions["devex"] = ext
    if settings.trusted_proxies:
        # Behind the ingress: scheme and host come from X-Forwarded-* (OAuth callback URLs).
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)

    init_hosts(app, settings)  # first: no hook runs for a request to an unknown host
    init_operations(app)  # logs, request ids, metrics, Redis outages: before other hooks
    jsonbody.install(json_parser)  # bounded JSON bodies, every failure a 400
    weblogs.install()  # no OAuth code/state in access logs
    init_headers(app)
    init_openapi(app, components.catalog)
    auth_ext = init_auth(app, settings, components)
    errorhandlers.register(app)
    init_pages(app)  # what the dashboard's templates show with
    # Every blueprint, in one place: GitHub's login (GitHub mode), the JSON routes (the
    # OpenAPI document lists them in this order), then the dashboard's page families.
    github_login = () if auth_ext.github_login is None else (auth_ext.github_login,)
    for blueprint in (*github_login, api_tokens.bp, admin.bp, api.bp, auth.bp, health.bp,
                      dashboard.bp, api_token_pages.bp, admin_pages.bp):
        app.register_blueprint(blueprint)
    app.cli.add_command(devex_cli)

    run_worker = settings.run_embedded_worker
    if embedded is not None and embedded.owner:
        ext.closers.append(embedded.close)  # last: after the worker and other closers
        # What the previous process left: its jobs were cut short by its end.
        found = embedded.recover(components)
        resumed = ext.repls.resume_interrupted()
        components.jobs.enqueue("jobs.periodic.reconcile")  # runners vs statuses, now
        log.info("embedded state: %s; %d interrupted jobs resumed", found, len(resumed))
    elif embedded is not None:
        log.warning(
            "another Devex process holds %s: this one shares its Redis but runs no jobs "
            "(they run in that process)",
            settings.data_dir,
        )
        run_worker = False
    if run_worker:
        ext.worker = EmbeddedWorker(components.jobs, components)
        ext.worker.start()
    if embedded is not None and embedded.owner:
        ext.close_at_exit()
    return app
