"""Dependency checks with a time limit that cannot pile up.

A check of a frozen dependency (S3 that accepts connections and never answers, a stopped
Kubernetes API) would hold the request that runs it for as long as the client library
waits: ~150 s for boto3 with its retries. Here each check runs in its own daemon thread and
callers wait for it at most ``timeout`` seconds from its start. While a check is still under
way, later callers wait on that same check instead of starting another: however often a
probe is asked, at most one thread per dependency is ever stuck on it, and a request is
held at most ``timeout`` seconds per stuck check, not once more per call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from devex_shared.redact import redact

OK = "ok"


class _Attempt:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result = ""
        self.started = time.monotonic()


class BoundedProbe:
    def __init__(self, name: str, check: Callable[[], object]):
        self.name = name
        self.check = check
        self._lock = threading.Lock()
        self._attempt: _Attempt | None = None

    def run(self, timeout: float) -> str:
        """``"ok"``, or ``"error: ..."`` (redacted) if the check failed or gave no answer
        within ``timeout`` seconds of its start."""
        attempt = self.begin()
        return self.result(attempt, timeout)

    def begin(self) -> _Attempt:
        """The check under way, or a new one."""
        with self._lock:
            if self._attempt is None or self._attempt.done.is_set():
                self._attempt = _Attempt()
                threading.Thread(target=self._run, args=(self._attempt,),
                                 name=f"probe-{self.name}", daemon=True).start()
            return self._attempt

    @staticmethod
    def result(attempt: _Attempt, timeout: float) -> str:
        # Counted from the check's start: a caller that finds one stuck for longer than the
        # limit answers at once instead of being held once more.
        left = timeout - (time.monotonic() - attempt.started)
        if attempt.done.wait(max(0.0, left)):
            return attempt.result
        waited = time.monotonic() - attempt.started
        return f"error: no answer within {waited:.1f} s"

    def _run(self, attempt: _Attempt) -> None:
        try:
            self.check()
            attempt.result = OK
        # A health check reports every failure, whatever the client library raises: that
        # is its job, and an exception must not end this thread unreported.
        except Exception as exc:  # noqa: BLE001
            attempt.result = redact(f"error: {type(exc).__name__}: {exc}")[:200]
        finally:
            attempt.done.set()


def run_all(probes: list[BoundedProbe], timeout: float) -> dict[str, str]:
    """Every probe at once, all answered within ``timeout`` seconds."""
    attempts = [(p, p.begin()) for p in probes]
    return {p.name: p.result(a, timeout) for p, a in attempts}
