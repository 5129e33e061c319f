"""Timestamps as records, events and tokens keep them: UTC, ISO 8601 with microseconds
(``2025-01-01T12:00:00.123456Z``, what ``utcnow()`` writes). Written and read here only."""

from __future__ import annotations

import re
from datetime import UTC, datetime

FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# What is read: that, and whole seconds (Kubernetes' and the runner's autosave times).
_SHAPE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z\Z")


def utcnow() -> str:
    return datetime.now(UTC).strftime(FORMAT)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(FORMAT)


def parse_time(value: str | None) -> datetime | None:
    """``value`` as an aware UTC datetime; None when it is empty or not such a timestamp."""
    if not value or not _SHAPE.match(value):
        return None
    try:  # fromisoformat: a tenth of strptime's cost (a token's times are read per request)
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:  # the right shape, an impossible date (month 13, say)
        return None
