"""Timestamps as records, events and tokens keep them: UTC, ISO 8601 with microseconds
(``2025-01-01T12:00:00.123456Z``, what ``utcnow()`` writes). Written and read here only."""

from __future__ import annotations

from datetime import UTC, datetime

FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# Whole seconds, read too: Kubernetes' times and the runner's autosave times look like this.
_WHOLE_SECONDS = "%Y-%m-%dT%H:%M:%SZ"


def utcnow() -> str:
    return datetime.now(UTC).strftime(FORMAT)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(FORMAT)


def parse_time(value: str | None) -> datetime | None:
    """``value`` as an aware UTC datetime; None when it is empty or not such a timestamp."""
    if not value:
        return None
    for fmt in (FORMAT, _WHOLE_SECONDS):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None
