"""Several watches read at once, and Kubernetes Events turned into a REPL's progress.

A start waits on its pods and, meanwhile, copies what Kubernetes says about them
(Scheduled, Pulling, Pulled, BackOff, FailedScheduling, ...) into the REPL's event log, the
way kubespawner reports progress. A watch blocks while nothing happens (a cold image pull
takes minutes without a single pod change), so each watch is read by its own thread into
one queue; the caller's thread does everything else, the REPL's events included.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

END = "END"  # the watch ended (deadline reached or closed)
ERROR = "ERROR"  # reading failed: the object is the exception
EVENTS_PER_START = 50  # at most this many Kubernetes events copied per start (of 200 kept)


class Feed:
    """Streams read by daemon threads into one queue of ``(key, type, object)``.

    A stream is any iterable of ``(type, object)`` with a ``close()``
    (``client.WatchStream``); ``close()`` here closes them all, which wakes their threads.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Any, str, Any]] = queue.Queue()
        self._streams: list = []
        self._threads: list[threading.Thread] = []

    def follow(self, key: Any, stream: Iterable) -> None:
        self._streams.append(stream)
        thread = threading.Thread(target=self._read, args=(key, stream), daemon=True,
                                  name=f"watch-{key}")
        self._threads.append(thread)
        thread.start()

    def _read(self, key: Any, stream: Iterable) -> None:
        try:
            for type_, obj in stream:
                self._queue.put((key, type_, obj))
        except Exception as exc:  # handed to the caller's thread, which decides
            self._queue.put((key, ERROR, exc))
            return
        self._queue.put((key, END, None))

    def get(self, deadline: float) -> tuple[Any, str, Any] | None:
        """The next item, or None once ``deadline`` (``time.monotonic()``) has passed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            return self._queue.get(timeout=remaining)
        except queue.Empty:
            return None

    def pending(self) -> list[tuple[Any, str, Any]]:
        """What is queued already, without waiting."""
        items = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def close(self) -> None:
        """Close every stream. Not waited for: a thread blocked in a read wakes at once
        (its socket is shut down); one whose request is still on its way ends as soon as
        the answer comes, finding its stream closed. Their queue is dropped with them."""
        for stream in self._streams:
            stream.close()

    def __enter__(self) -> Feed:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def describe(event: dict) -> str:
    """A Kubernetes Event in the REPL's log: Normal ones in Kubernetes' own words
    ("Pulling image ..."), warnings with their reason ("Warning BackOff: Back-off ...")."""
    message = " ".join(str(event.get("message") or "").split())
    reason = event.get("reason") or ""
    if event.get("type") == "Warning":
        return f"Warning {reason}: {message}" if reason else f"Warning: {message}"
    return message or reason


class EventCopier:
    """Copies a start's Kubernetes Events into its progress: each distinct one once (the
    API repeats an event by raising its ``count``), at most ``EVENTS_PER_START``."""

    def __init__(self, progress, kind: str = "kubernetes"):
        self.progress = progress
        self.kind = kind
        self.said: set[str] = set()

    def __call__(self, type_: str, event: dict) -> None:
        if type_ not in ("ADDED", "MODIFIED") or not event:
            return
        words = describe(event)
        if not words or words in self.said or len(self.said) >= EVENTS_PER_START:
            return
        self.said.add(words)
        self.progress(self.kind, words)

