"""Times as the dashboard shows them: ``"5 min ago"``, or exactly in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from devex.timestamps import parse_time


def ago(value: str | None, now: datetime | None = None) -> str:
    """``"just now"``, ``"5 min ago"``, ``"3 h ago"``, ``"2 days ago"``, or the date."""
    when = parse_time(value)
    if when is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    if seconds < 7 * 86400:
        days = int(seconds // 86400)
        return f"{days} day{'s' if days > 1 else ''} ago"
    return when.strftime("%Y-%m-%d")


def exact_time(value: str | None) -> str:
    when = parse_time(value)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else ""
