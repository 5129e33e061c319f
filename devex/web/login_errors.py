"""The login page's error texts.

The OAuth callback sends browsers to ``/login?error=<code>``; the page shows only these
fixed texts, never what the query string says.
"""

from __future__ import annotations

LOGIN_ERRORS = {
    "login_failed": "GitHub did not confirm the sign-in. Please try again.",
    "login_denied": "The sign-in was cancelled on GitHub.",
    "not_allowed": "This GitHub account may not use this Devex. "
    "Ask an administrator to be added.",
    "unavailable": "GitHub cannot be reached right now; try again shortly.",
    "suspended": "This account is suspended. Ask an administrator.",
}
LOGIN_ERROR_UNKNOWN = "Signing in did not work. Please try again."


def login_error_message(code: str | None) -> str | None:
    if not code:
        return None
    return LOGIN_ERRORS.get(code, LOGIN_ERROR_UNKNOWN)
