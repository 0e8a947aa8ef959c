"""A hostile HTTP server on loopback: it answers each request however a test says.

It sits in front of a real ``PolygonServer`` and passes through every request
that the test's ``rule`` leaves alone, so a run meets one misbehaviour among
otherwise real answers: a trickling body, a looping ``next_url``, a bomb, a
foreign day, an echoed key.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional
from urllib.parse import urlsplit

# A rule gets (path with query, the upstream answer as (status, headers, body)) and returns
# None to pass it through, or a callable that writes its own answer on the handler.
Rule = Callable[[str, Callable[[], tuple[int, dict, bytes]]], Optional[Callable[[BaseHTTPRequestHandler], None]]]


class HostileServer:
    def __init__(self, upstream: str, rule: Rule, api_key: str = ""):
        self.upstream = upstream.rstrip("/")
        self.api_key = api_key
        self.rule = rule
        self.requests: list[str] = []
        self.started = threading.Event()  # set when a misbehaving answer begins
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> "HostileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def fetch_upstream(self, path: str, headers: Optional[dict] = None) -> tuple[int, dict, bytes]:
        """The real server's answer to ``path`` (with the client's key, or this server's own)."""
        forwarded = {k: v for k, v in (headers or {}).items() if k.lower() == "authorization"}
        if not forwarded and self.api_key:
            forwarded = {"Authorization": f"Bearer {self.api_key}"}
        request = urllib.request.Request(self.upstream + path, headers=forwarded)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.requests.append(self.path)
                headers = dict(self.headers)
                upstream = lambda: server.fetch_upstream(self.path, headers)  # noqa: E731
                action = server.rule(self.path, upstream)
                try:
                    if action is None:
                        status, answer_headers, body = upstream()
                        send(self, status, body, answer_headers.get("Content-Type", "application/json"))
                    else:
                        server.started.set()
                        action(self)
                except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
                    pass  # the client gave up on us: what a hostile answer is for

            def log_message(self, *args) -> None:
                pass

        return Handler

    def stopping(self) -> bool:
        return self._stop.is_set()


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str = "application/json",
         headers: Optional[dict] = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def path_of(path: str) -> str:
    return urlsplit(path).path


def trickle(body: bytes, every: float, stop: Callable[[], bool]) -> Callable[[BaseHTTPRequestHandler], None]:
    """A valid answer, one byte at a time: every read gets data, so no read ever times out."""
    def act(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        for byte in body:
            if stop():
                return
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(every)
    return act


def json_answer(payload: object, status: int = 200, headers: Optional[dict] = None
                ) -> Callable[[BaseHTTPRequestHandler], None]:
    body = json.dumps(payload, allow_nan=True).encode()
    return lambda handler: send(handler, status, body, headers=headers)


def raw_answer(body: bytes, status: int = 200, content_type: str = "application/json",
               headers: Optional[dict] = None) -> Callable[[BaseHTTPRequestHandler], None]:
    return lambda handler: send(handler, status, body, content_type, headers)


def gzip_bomb(decoded_bytes: int) -> bytes:
    """A small gzip body that expands to ``decoded_bytes`` of zeros (inside a JSON string),
    compressed a chunk at a time so the test never holds the expanded bytes itself."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    chunk = b"0" * 2**20
    parts = [packer.compress(b'{"status":"OK","results":"')]
    parts += [packer.compress(chunk) for _ in range(decoded_bytes // len(chunk))]
    parts += [packer.compress(b'"}'), packer.flush()]
    return b"".join(parts)
