"""Wires authentication into the app: server-side sessions (flask-session in Redis), GitHub
OAuth2 (flask-dance, GitHub Enterprise hosts configurable), personal API tokens, rate limits
on create/start (limits), CORS for the IDE frontend (flask-cors).

``init_auth(app, settings, components)`` is called once by the app factory, which then
registers every blueprint (GitHub's login, from ``AuthExtension.github_login``, among them).
"""

from __future__ import annotations

from dataclasses import dataclass

from apiflask import APIFlask
from flask import Blueprint
from limits.strategies import RateLimiter

from devex.config import Settings
from devex.infra.account_store import AccountStore
from devex.infra.api_token_store import ApiTokenStore
from devex.services.accounts import Accounts
from devex.services.api_tokens import ApiTokenService
from devex.web.auth.cors import init_cors
from devex.web.auth.limits import init_limiter
from devex.web.auth.prefetch import Owners
from devex.web.auth.sessions import init_sessions


@dataclass
class AuthExtension:
    """What ``app.extensions['devex_auth']`` holds."""

    api_tokens: ApiTokenService
    limiter: RateLimiter
    settings: Settings
    accounts: Accounts | None = None  # standing and admin rights (devex.services.accounts)
    owners: Owners | None = None  # which user a credential named (devex.web.auth.prefetch)
    github_login: Blueprint | None = None  # flask-dance's OAuth routes, GitHub mode only


def init_auth(app: APIFlask, settings: Settings, components) -> AuthExtension:
    owners = Owners()
    init_sessions(app, settings, components, owners)
    limiter = init_limiter(app, settings)
    ext = AuthExtension(
        api_tokens=ApiTokenService(
            ApiTokenStore(components.redis), per_user=settings.api_tokens_per_user
        ),
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
        from devex.web.auth.github import init_github  # flask-dance, cryptography: GitHub mode only

        ext.github_login = init_github(app, settings, ext.accounts)
    init_cors(app, settings)
    return ext
