"""Where a ``next`` parameter may send a browser: a path on this site, nothing else."""

from __future__ import annotations

from urllib.parse import urlsplit


def safe_next(target: str | None, default: str = "/") -> str:
    """``target`` if it is a local path (``/repls/abc?x=1``), else ``default``.

    Refused: anything with a scheme or host (``https://evil``, ``//evil``), a path not
    starting with exactly one ``/``, backslashes (browsers read ``/\\evil`` as ``//evil``)
    and control characters: Werkzeug strips a tab from ``Location`` (``/\\t/evil`` became
    ``//evil``) and a newline there is a 500.
    """
    if not isinstance(target, str) or not target:
        return default
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c == "\\" for c in target):
        return default
    try:
        parts = urlsplit(target)
    except ValueError:  # e.g. an unbalanced "[" in what would be the host
        return default
    if parts.scheme or parts.netloc:
        return default
    # urlsplit("///evil") has no netloc, yet browsers read it as "//evil": check the text too.
    for path in (target, parts.path):
        if not path.startswith("/") or path.startswith("//"):
            return default
    return target
