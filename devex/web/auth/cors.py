"""CORS for the IDE frontend's origins (flask-cors), and credential-less preflights."""

from __future__ import annotations

from apiflask import APIFlask
from flask import request
from flask_cors import CORS

from devex.config import Settings
from devex.web import security


def init_cors(app: APIFlask, settings: Settings) -> None:
    @app.before_request
    def _preflight():
        # A CORS preflight carries no credentials: answer it before any login check.
        if request.method == "OPTIONS" and request.path.startswith("/api/"):
            return app.make_default_options_response()
        return None

    if not settings.cors_origins:
        return
    CORS(
        app,
        resources={r"/api/*": {}, r"/auth/me": {}},
        origins=list(settings.cors_origins),
        supports_credentials=True,
        allow_headers=["Content-Type", "Authorization", security.CSRF_HEADER],
        expose_headers=["Retry-After"],
        methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        max_age=600,
    )
