"""Wires authentication into the app: server-side sessions (flask-session in Redis), GitHub
OAuth2 (flask-dance, GitHub Enterprise hosts configurable), personal API tokens, rate limits
on create/start (limits), CORS for the IDE frontend (flask-cors).

``init_auth(app, settings, components)`` is called once by the app factory.
"""

from __future__ import annotations

from dataclasses import dataclass

from apiflask import APIFlask
from limits.strategies import RateLimiter

from devex.auth.cors import init_cors
from devex.auth.limits import init_limiter
from devex.auth.prefetch import Owners
from devex.auth.sessions import init_sessions
from devex.config import Settings
from devex.infra.account_store import AccountStore
from devex.infra.token_store import TokenStore
from devex.services.accounts import Accounts
from devex.services.tokens import ApiTokenService


@dataclass
class AuthExtension:
    """What ``app.extensions['devex_auth']`` holds."""

    tokens: ApiTokenService
    limiter: RateLimiter
    settings: Settings
    accounts: Accounts | None = None  # standing and admin rights (devex.services.accounts)
    owners: Owners | None = None  # which user a credential named (devex.auth.prefetch)


def init_auth(app: APIFlask, settings: Settings, components) -> AuthExtension:
    owners = Owners()
    init_sessions(app, settings, components, owners)
    limiter = init_limiter(app, settings)
    ext = AuthExtension(
        tokens=ApiTokenService(TokenStore(components.redis), per_user=settings.api_tokens_per_user),
        limiter=limiter,
        settings=settings,
        accounts=Accounts(
            AccountStore(components.redis),
            admins=settings.admins,
            allowed_logins=settings.github_allowed_logins,
            allowed_orgs=settings.github_allowed_orgs,
            recheck_seconds=settings.github_recheck_seconds,
        ),
        owners=owners,
    )
    app.extensions["devex_auth"] = ext
    if settings.auth_mode == "github":
        from devex.auth.github import init_github  # flask-dance, cryptography: GitHub mode only

        init_github(app, settings, ext.accounts)

    from devex.blueprints import admin, tokens

    app.register_blueprint(tokens.bp)
    app.register_blueprint(admin.bp)
    init_cors(app, settings)
    return ext
