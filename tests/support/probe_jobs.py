"""Job functions the tests enqueue into real ``rq worker`` processes (importable there:
the workers run with the checkout on PYTHONPATH)."""

from __future__ import annotations

from pathlib import Path

from rq import get_current_job

from tests.support.waiting import wait_for


def fail_first(key: str) -> int:
    """Fails its first attempt (a passing problem), succeeds on the next: RQ must retry it,
    and with ``Retry(interval=...)`` only a running scheduler brings the retry back."""
    attempt = get_current_job().connection.incr(f"probe:attempts:{key}")
    if attempt == 1:
        raise RuntimeError("a passing problem: try again later")
    return attempt


def wait_for_file(path: str, timeout: float = 180) -> str:
    """Runs until the test creates ``path``, without touching Redis meanwhile: a job in
    progress across a Redis outage."""
    wait_for(lambda: Path(path).exists(), timeout, f"{path} to appear")
    return "done"
