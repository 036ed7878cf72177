"""A real HTTP server on 127.0.0.1 serving a folder, with knobs to misbehave, for offline download tests.

    with serve_dir(folder, fail_first=2) as server:
        fetch(server.url("train.zip"), dest)
        assert server.requests[-1].headers.get("range") is None
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_CHUNK = 1 << 20


@dataclass
class Recorded:
    """One request as it arrived; header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]


class FileServer(ThreadingHTTPServer):
    """Serves the files of ``root`` (GET and HEAD, single byte ranges); the knobs may be changed while it runs.

    Knobs:
        fail_first: answer the first N requests with ``fail_status`` (e.g. 503).
        cut_after: on the first GET of a file, promise the whole body in Content-Length but close the
            connection after this many bytes.
        ignore_range: answer every GET with 200 and the whole file, as servers without Range support do.
    """

    daemon_threads = True

    def __init__(self, root: Path, *, fail_first: int = 0, fail_status: int = 503, cut_after: int | None = None,
                 ignore_range: bool = False):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = Path(root)
        self.fail_first, self.fail_status = fail_first, fail_status
        self.cut_after, self.ignore_range = cut_after, ignore_range
        self.requests: list[Recorded] = []
        self.lock = threading.Lock()
        self._gets = 0

    def url(self, name: str) -> str:
        """The URL of ``root/name``."""
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"

    def record(self, handler: BaseHTTPRequestHandler) -> tuple[int, int]:
        """Log a request; return how many requests came before it and how many file GETs before it."""
        with self.lock:
            n = len(self.requests)
            self.requests.append(Recorded(handler.command, handler.path,
                                          {k.lower(): v for k, v in handler.headers.items()}))
            gets = self._gets
            if handler.command == "GET" and n >= self.fail_first:
                self._gets += 1
            return n, gets


class _Handler(BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, format, *args):  # http.server names the argument format; output stays quiet
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        n, gets = self.server.record(self)
        if n < self.server.fail_first:
            self.send_error(self.server.fail_status)
            return
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        path = self.server.root / rel
        if not rel or ".." in Path(rel).parts or not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if m and not self.server.ignore_range:
            start, end = int(m.group(1)), min(int(m.group(2) or size - 1), size - 1)
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "none" if self.server.ignore_range else "bytes")
        self.end_headers()
        if body:
            limit = self.server.cut_after if gets == 0 and self.server.cut_after is not None else end - start + 1
            self._copy(path, start, min(limit, end - start + 1))

    def _copy(self, path: Path, start: int, count: int) -> None:
        with open(path, "rb") as f, contextlib.suppress(BrokenPipeError, ConnectionResetError):
            f.seek(start)
            while count > 0 and (chunk := f.read(min(_CHUNK, count))):
                self.wfile.write(chunk)
                count -= len(chunk)
        self.close_connection = True


@contextlib.contextmanager
def serve_dir(root: str | Path, **knobs) -> Iterator[FileServer]:
    """Run a ``FileServer`` for ``root`` on a free port of 127.0.0.1 for the duration of the block."""
    server = FileServer(Path(root), **knobs)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (connecting to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
