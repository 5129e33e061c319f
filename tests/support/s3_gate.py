"""A pass-through HTTP proxy in front of the moto S3 server that can hold chosen uploads.

``S3Gate(moto_url)`` listens on 127.0.0.1 and forwards every request to moto as it came
(method, path, headers, body; path-style S3, so the path names bucket and key). A test asks
``hold("PUT", "notes.txt")`` before an upload happens: the first matching request is then
kept waiting -- an upload under way, for as long as the test wants -- until ``release``.
Nothing else is slowed down, and nothing depends on timing.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-connection"}


@dataclass
class Hold:
    method: str
    path_suffix: str
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    status: int = 0

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and path.split("?", 1)[0].endswith(self.path_suffix)

    def release(self) -> None:
        self.released.set()


class S3Gate:
    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._holds: list[Hold] = []
        self._lock = threading.Lock()
        gate = self

        class Handler(_Handler):
            owner = gate

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def hold(self, method: str, path_suffix: str) -> Hold:
        """Keep the next ``method`` request whose path ends with ``path_suffix`` waiting."""
        held = Hold(method, path_suffix)
        with self._lock:
            self._holds.append(held)
        return held

    def _take(self, method: str, path: str) -> Hold | None:
        with self._lock:
            for held in self._holds:
                if held.matches(method, path):
                    self._holds.remove(held)
                    return held
        return None

    def close(self) -> None:
        with self._lock:
            for held in self._holds:
                held.release()
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    owner: S3Gate
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - quiet test output
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self) -> None:
        body = self._body()
        held = self.owner._take(self.command, self.path)
        if held is not None:
            held.arrived.set()
            held.released.wait()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            if held is not None:
                held.status = resp.status
            data = resp.read()
            self.send_response(resp.status)
            for key, value in resp.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            conn.close()
            if held is not None:
                held.done.set()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward
