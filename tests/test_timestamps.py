"""The one timestamp format of records, events and tokens (devex/timestamps.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from devex.timestamps import format_time, parse_time, utcnow


def test_what_utcnow_writes_reads_back_to_the_microsecond():
    written = utcnow()
    assert written.endswith("Z") and len(written) == len("2025-01-01T12:00:00.123456Z")
    assert abs(datetime.now(UTC) - parse_time(written)) < timedelta(seconds=5)
    moment = datetime(2025, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert format_time(moment) == "2025-01-01T12:00:00.123456Z"
    assert parse_time(format_time(moment)) == moment


def test_times_in_another_zone_are_written_in_utc():
    paris = timezone(timedelta(hours=1))
    assert format_time(datetime(2025, 1, 1, 13, 0, tzinfo=paris)) == "2025-01-01T12:00:00.000000Z"


def test_whole_seconds_are_read_too():
    # Kubernetes' times and the runner's autosave times have no fraction.
    assert parse_time("2025-01-01T12:00:00Z") == datetime(2025, 1, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize("value", [None, "", "yesterday", "2025-01-01 12:00:00", "1735732800"])
def test_what_is_not_a_timestamp_reads_as_none(value):
    assert parse_time(value) is None
