"""Plain helpers the Kubernetes test modules share (fixtures live in ``k8s_env``)."""

from __future__ import annotations

import threading


class Events(list):
    """The runtime's progress callback: (kind, message) pairs, safe to read while another
    thread appends."""

    def __call__(self, kind: str, message: str) -> None:
        self.append((kind, message))

    def text(self) -> str:
        return "\n".join(m for _, m in list(self))

    def of(self, kind: str) -> list[str]:
        return [m for k, m in list(self) if k == kind]


class Background:
    """A call on a thread, its result or exception kept for the test."""

    def __init__(self, fn, *args, **kwargs):
        self.result = self.error = None
        self.thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self.thread.start()

    def _run(self, fn, args, kwargs):
        try:
            self.result = fn(*args, **kwargs)
        except Exception as exc:  # the test looks at it
            self.error = exc

    def join(self, timeout: float = 30):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the call did not return"
        if self.error is not None:
            raise self.error
        return self.result


def stored(s3, bucket: str, key: str) -> bytes | None:
    """An object's bytes from a boto3 client, or None when there is none."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
