"""HTTP with the bounds a nightly job needs: a deadline per request, a size cap, an abort switch.

urllib3's timeouts are per socket read, so a server that trickles one byte
every few seconds never times out, and a blocked read does not notice a
SIGTERM. ``HttpGuard`` keeps every request in flight in a registry with its
deadline; a watchdog thread shuts the socket of a request past its deadline,
and ``abort_all`` (called when a stop is requested) shuts every one at once.
A shut socket ends the blocked read at once, so a run stops within moments
whatever the server does.

Bodies are read in chunks and decoded (gzip, deflate) incrementally, with the
decoded size capped: neither a huge answer nor a small compression bomb can
take more than ``max_bytes`` of memory.

Every HTTP client of the tool goes through it: the Polygon client (in place
of the official client's own urllib3 pool), the constituents page, FRED.
"""

from __future__ import annotations

import math
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional
from urllib.parse import urlsplit, urlunsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from CandleThrob.errors import CandleThrobError, RetriableError, SkippableError

_CHUNK = 64 * 1024
_in_flight = threading.local()  # the request this thread is making, for the connection classes


class ResponseTooLargeError(SkippableError):
    """An answer larger than the cap: no real answer is this large, so it is not retried."""


@dataclass
class Answer:
    """A finished HTTP exchange: what the official client reads (``status``, ``headers``, ``data``)."""

    status: int
    headers: Mapping[str, str]
    data: bytes
    url: str = ""

    def text(self) -> str:
        """The body as text, whatever its bytes: errors must never raise while being reported."""
        return self.data.decode("utf-8", errors="replace")


@dataclass(eq=False)
class _Request:
    deadline: float
    connection: Optional[HTTPConnection] = None
    aborted: Optional[str] = None  # why: "deadline" or "stop"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def abort(self, why: str) -> None:
        with self.lock:
            if self.aborted is None:
                self.aborted = why
            connection = self.connection
        _shut(connection)

    def attach(self, connection: HTTPConnection) -> None:
        with self.lock:
            self.connection = connection
            aborted = self.aborted
        if aborted:
            _shut(connection)


def _shut(connection: Optional[HTTPConnection]) -> None:
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _track(connection: HTTPConnection) -> None:
    request = getattr(_in_flight, "request", None)
    if request is not None:
        request.attach(connection)


class _TrackedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _track(self)

    def request(self, *args: Any, **kwargs: Any) -> None:  # a kept-alive connection skips connect()
        _track(self)
        super().request(*args, **kwargs)


class _TrackedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _track(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _track(self)
        super().request(*args, **kwargs)


class _TrackedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


class HttpGuard:
    """A urllib3 pool whose every request ends by ``timeout`` seconds, however the server behaves.

    ``request`` has the signature the official client calls on its pool. A
    request past its deadline raises ``RetriableError``; one cut short by
    ``abort_all`` raises what ``on_abort`` returns (the run's interruption).
    ``check_status`` turns a non-200 answer into an error before anyone reads
    its body as UTF-8 or JSON.
    """

    def __init__(self, *, timeout: float, max_bytes: int, headers: Optional[Mapping[str, str]] = None,
                 maxsize: int = 8, connect_timeout: float = 10.0,
                 check_status: Optional[Callable[[Answer], Optional[Exception]]] = None,
                 on_abort: Optional[Callable[[], Exception]] = None, clock: Callable[[], float] = time.monotonic,
                 ca_certs: Optional[str] = None):
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.check_status = check_status
        self.on_abort = on_abort
        self._clock = clock
        pool_kw: dict[str, Any] = {"num_pools": 4, "maxsize": maxsize, "retries": False,
                                   "timeout": urllib3.Timeout(connect=min(connect_timeout, timeout), read=timeout)}
        if headers:
            pool_kw["headers"] = dict(headers)
        if ca_certs:
            pool_kw["ca_certs"] = ca_certs
        self.pool = urllib3.PoolManager(**pool_kw)
        self.pool.pool_classes_by_scheme = {"http": _TrackedHTTPConnectionPool, "https": _TrackedHTTPSConnectionPool}
        self._requests: set[_Request] = set()
        self._lock = threading.Condition()
        self._stopped = False
        self._closed = False
        self._watchdog = threading.Thread(target=self._watch, name="http-deadlines", daemon=True)
        self._watchdog.start()

    # -- the pool interface the official client uses --------------------------------

    def request(self, method: str, url: str, fields: Optional[Mapping[str, Any]] = None,
                headers: Optional[Mapping[str, str]] = None, **_ignored: Any) -> Answer:
        pending = _Request(deadline=self._clock() + self.timeout)
        with self._lock:
            if self._stopped:
                raise self._abort_error("stop", url)
            self._requests.add(pending)
            self._lock.notify()
        _in_flight.request = pending
        try:
            answer = self._exchange(method, url, fields, headers, pending)
        except CandleThrobError:
            raise
        except Exception as exc:  # urllib3/http.client/socket errors, or what a shut socket causes
            if pending.aborted:
                raise self._abort_error(pending.aborted, url) from None
            raise RetriableError(f"network error ({exc.__class__.__name__}) from {_safe(url)}") from exc
        finally:
            _in_flight.request = None
            with self._lock:
                self._requests.discard(pending)
        if pending.aborted:  # the answer completed just as it was cut: it still counts as cut
            raise self._abort_error(pending.aborted, url)
        if self.check_status is not None and answer.status != 200:
            error = self.check_status(answer)
            if error is not None:
                raise error
        return answer

    def abort_all(self) -> None:
        """Cut every request in flight and refuse new ones (a stop was requested)."""
        with self._lock:
            self._stopped = True
            pending = list(self._requests)
        for request in pending:
            request.abort("stop")

    def resume(self) -> None:
        """Accept requests again (a new run in the same process)."""
        with self._lock:
            self._stopped = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        self.pool.clear()

    # -- internals -----------------------------------------------------------------

    def _exchange(self, method: str, url: str, fields: Optional[Mapping[str, Any]],
                  headers: Optional[Mapping[str, str]], pending: _Request) -> Answer:
        response = self.pool.request(method, url, fields=fields, headers=headers, preload_content=False,
                                     decode_content=False, redirect=False)
        try:
            data = self._read(response, url)
        except BaseException:
            response.close()
            raise
        response.release_conn()
        return Answer(status=response.status, headers=response.headers, data=data, url=_safe(url))

    def _read(self, response: urllib3.BaseHTTPResponse, url: str) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_large(url)
        encoding = (response.headers.get("Content-Encoding") or "").lower()
        decoder = zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding in ("gzip", "deflate", "x-gzip") else None
        parts: list[bytes] = []
        size = 0
        for chunk in response.stream(_CHUNK, decode_content=False):
            pieces = [chunk] if decoder is None else _inflate(decoder, chunk, self.max_bytes - size + 1)
            for piece in pieces:
                size += len(piece)
                if size > self.max_bytes:
                    raise self._too_large(url)
                parts.append(piece)
        if decoder is not None:
            tail = decoder.flush()
            size += len(tail)
            if size > self.max_bytes:
                raise self._too_large(url)
            parts.append(tail)
        return b"".join(parts)

    def _too_large(self, url: str) -> ResponseTooLargeError:
        return ResponseTooLargeError(f"the answer from {_safe(url)} is larger than {self.max_bytes // 2**20} MB "
                                     "(MAX_RESPONSE_MB); no real answer is, so it is refused")

    def _abort_error(self, why: str, url: str) -> Exception:
        if why == "stop" and self.on_abort is not None:
            return self.on_abort()
        if why == "stop":
            return RetriableError(f"the request to {_safe(url)} was cut short: the run is stopping")
        return RetriableError(f"no complete answer from {_safe(url)} within {self.timeout:g} s (REQUEST_TIMEOUT)")

    def _watch(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                now = self._clock()
                due = [r for r in self._requests if r.deadline <= now and r.aborted is None]
                upcoming = [r.deadline for r in self._requests if r.deadline > now]
                if not due:
                    # Wake for the next deadline, or when a request arrives; never sleep long,
                    # so that a clock that is not time.monotonic (tests) is still followed.
                    self._lock.wait(min([0.5] + [d - now for d in upcoming]))
                    continue
            for request in due:
                request.abort("deadline")


def retry_after_seconds(headers: Any) -> Optional[float]:
    """A Retry-After header's seconds, or None when absent or not a finite number >= 0."""
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def _inflate(decoder: Any, chunk: bytes, room: int) -> list[bytes]:
    """Decompress ``chunk`` without ever producing much more than ``room`` bytes at once."""
    out = []
    data = chunk
    while data:
        piece = decoder.decompress(data, max(room, 1))
        out.append(piece)
        room -= len(piece)
        if room <= 0:
            break
        data = decoder.unconsumed_tail
    return out


def _safe(url: str) -> str:
    """A URL fit for a message: no query string (where keys travel) and no user info."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
