"""Signed, scoped tokens between the core, the runner and the IDE.

Each REPL gets its own signing key, derived from the core's secret, so a runner holds
the key of its own REPL only: a token for one REPL is useless for another. Not the users'
personal API tokens (``devex.services.api_tokens``), which are stored, not signed.
"""

from __future__ import annotations

import hashlib
import hmac

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

IDE_SCOPE = "ide"  # the browser IDE talking to the runner (short-lived)
RUNNER_SCOPE = "runner"  # the runner talking to the core (a fresh one for every call)
CONTROL_SCOPE = "control"  # the core's stop telling the runner to stop edits (minutes)
# How old a runner token the core accepts (seconds): runners sign one per heartbeat and
# idle call, so this only covers the call's own latency and clock skew between machines.
RUNNER_TOKEN_MAX_AGE = 300


class TokenError(Exception):
    """The token is missing, forged, for another REPL or scope, or expired."""


def repl_key(secret_key: str, repl_id: str) -> str:
    """The per-REPL signing key handed to that REPL's runner."""
    return hmac.new(secret_key.encode(), f"repl:{repl_id}".encode(), hashlib.sha256).hexdigest()


def _serializer(key: str, scope: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(key, salt=f"devex-{scope}")


def sign(key: str, repl_id: str, scope: str) -> str:
    return _serializer(key, scope).dumps({"repl": repl_id, "scope": scope})


def verify(key: str, repl_id: str, scope: str, token: str | None, max_age: int) -> None:
    if not token:
        raise TokenError("missing token")
    try:
        data = _serializer(key, scope).loads(token, max_age=max_age)
    except SignatureExpired:
        raise TokenError("token expired") from None
    except BadSignature:
        raise TokenError("bad token") from None
    if not isinstance(data, dict) or data.get("repl") != repl_id or data.get("scope") != scope:
        raise TokenError("token is not for this REPL")
