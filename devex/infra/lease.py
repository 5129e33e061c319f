"""A REPL's lock as a short lease that names its holder, renewed while it is held.

The lock's value is ``{holder}|{token}``: the holder is the RQ job id of the job working
on the REPL (empty outside RQ), so anyone can ask RQ whether that job still runs; the
token tells this hold from any other of the same job (an RQ retry has the same id).

A background thread renews the lease every fifth of its length. The holder counts its
lease as ended -- and stops acting, ``check`` raising ``LeaseLost`` -- once four fifths
have passed since the last renewal that succeeded (measured from when it was sent), so it
always gives up before Redis lets the key expire and another job can take it: a Redis
outage or a frozen process never lets two jobs act on one REPL at once. A job whose worker
process is gone (``keep`` says so) stops renewing and acting at once: RQ will run it again.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable

import redis

from devex.errors import LeaseLost

log = logging.getLogger(__name__)

SEPARATOR = "|"
RENEWALS_PER_LEASE = 5  # a renewal every fifth of the lease: three may fail in a row
SAFE_PART = 0.8  # the holder stops acting after this part of the lease without renewal


def new_value(holder: str) -> str:
    return f"{holder}{SEPARATOR}{secrets.token_hex(8)}"


def holder_of(value: str) -> str:
    """The job id a lock value names; "" when it names none (a lock taken outside RQ, or
    by an older version that stored a bare token): only its lease can end it."""
    holder, sep, _token = value.rpartition(SEPARATOR)
    return holder if sep else ""


class Lease:
    """One hold of a REPL's lock, renewed in the background until ``release``."""

    def __init__(self, connection: redis.Redis, key: str, value: str, seconds: float,
                 renew, release, *, taken_at: float, keep: Callable[[], bool] | None = None):
        self.key = key
        self.value = value
        self.seconds = seconds
        self._connection = connection
        self._renew = renew
        self._release = release
        self._keep = keep
        self._renewed = taken_at  # monotonic time the last successful SET/renewal was sent
        self._lost = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, daemon=True,
                                        name=f"lease {key}")

    @property
    def holder(self) -> str:
        return holder_of(self.value)

    @property
    def lost(self) -> bool:
        """True once this hold may have ended: nothing may be written in its name. After
        ``release``: whether it had ended by then."""
        if self._stop.is_set():
            return bool(self._lost)
        if not self._lost and time.monotonic() > self._renewed + self.seconds * SAFE_PART:
            self._lost = f"not renewed for {self.seconds * SAFE_PART:g} s"
        return bool(self._lost)

    def check(self) -> None:
        """Raise ``LeaseLost`` unless this job still holds the lock for certain."""
        if self.lost:
            raise LeaseLost(f"{self.key}: this job's lease ended ({self._lost}); another "
                            "job may act on the REPL now")

    def start(self) -> None:
        self._thread.start()

    def _renew_loop(self) -> None:
        interval = self.seconds / RENEWALS_PER_LEASE
        while not self._stop.wait(interval):
            if self.lost:
                return  # too late: renewing now would keep a lock nobody acts under
            if self._keep is not None and not self._keep():
                self._lose("its worker process is gone; RQ will run the job again")
                return
            sent = time.monotonic()
            try:
                ours = self._renew(keys=[self.key],
                                   args=[self.value, max(1, int(self.seconds * 1000))],
                                   client=self._connection)
            except redis.RedisError as exc:  # Redis away: ``check`` tells when it is too late
                log.warning("lease %s not renewed: %s", self.key, exc)
                continue
            if not ours:
                self._lose("another job took the lock over, or it expired")
                return
            self._renewed = sent

    def _lose(self, why: str) -> None:
        self._lost = why
        log.warning("lease %s lost: %s", self.key, why)

    def release(self) -> None:
        """Stop renewing and free the lock if it is still ours (never someone else's)."""
        _ = self.lost  # as it stands now, kept from here on
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            if not self._release(keys=[self.key], args=[self.value], client=self._connection):
                self._lost = self._lost or "the lock was not ours any more when released"
        except redis.RedisError as exc:  # it lapses on its own within the lease
            log.warning("lease %s not released (it lapses by itself): %s", self.key, exc)
