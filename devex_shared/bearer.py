"""The one reader of ``Authorization: Bearer <token>`` headers, for the core and the runner."""

from __future__ import annotations


def parse_bearer(header: str | None) -> str | None:
    """The token of a Bearer header (the scheme in any case, spaces around the token
    ignored); ``""`` for a Bearer header without one; None without a header or for another
    scheme. Callers tell ``""`` from None where an empty token must not count as none."""
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip()
