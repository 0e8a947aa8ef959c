"""A local stand-in for Polygon's REST API (now "Massive") and Wikipedia's S&P 500 page.

Serves daily aggregates by ticker range (with ``next_url`` pagination),
grouped daily aggregates, splits and the constituents page from a
``MarketData``, answering with Polygon's JSON shapes and status codes. It can
also misbehave the way the real service does (rate limits, 5xx, reset
connections, stalls, truncated bodies, grouped days with ``"results": null``)
so that the ingestion's retry and validation paths can be tested, demoed and
benchmarked without a network or a key.

    python -m CandleThrob.testing.polygon_server --tickers 20 --start 2024-01-02 --end 2024-06-28

prints ``listening on http://HOST:PORT`` first and serves until killed.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import html
import json
import math
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections import deque
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable, Optional, Union
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit
from zoneinfo import ZoneInfo

from CandleThrob.planning.trading_calendar import TradingCalendar
from CandleThrob.source.polygon import RANGE_LIMIT
from CandleThrob.testing.datagen import (
    Constituent, DateLike, MarketData, adjust, generate_market, load_splits_csv,
    market_data_from_files, to_date,
)

NEW_YORK = ZoneInfo("America/New_York")
FAULT_KINDS = ("5xx", "reset", "slow", "truncated", "null_results")
RATE_LIMIT_ERROR = ("You've exceeded the maximum requests per minute, please wait or upgrade "
                    "your subscription to continue. https://polygon.io/pricing")
WIKI_PATH = "/wiki/List_of_S&P_500_companies"
SPLITS_MAX_LIMIT = 1000
_AGGS_RANGE = re.compile(r"/v2/aggs/ticker/([^/]+)/range/1/day/([^/]+)/([^/]+)")
_AGGS_GROUPED = re.compile(r"/v2/aggs/grouped/locale/us/market/stocks/([^/]+)")
_SPLITS = "/v3/reference/splits"
_SERVER_ERRORS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


class BadRequest(Exception):
    """A parameter Polygon would refuse with 400; the message is the ``error``."""


def _request_id() -> str:
    return uuid.uuid4().hex


@lru_cache(maxsize=None)
def ny_midnight_ms(day: dt.date) -> int:
    """Polygon's ``t`` of a daily bar: epoch ms of 00:00 New York time on its date."""
    return int(dt.datetime.combine(day, dt.time(), NEW_YORK).timestamp() * 1000)


def _ms_to_ny_date(ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(ms / 1000, NEW_YORK).date()


def _bound(text: str, name: str, first: bool) -> dt.date:
    """A ``from``/``to`` path part, YYYY-MM-DD or epoch ms, as the first/last date it admits."""
    try:
        if not text.isdigit():
            return dt.date.fromisoformat(text)
        day = _ms_to_ny_date(int(text))
    except (ValueError, OverflowError, OSError):
        raise BadRequest(f"Could not parse the time parameter: '{name}'. "
                         "Use YYYY-MM-DD or Unix MS Timestamps") from None
    # a bar is stamped at its date's midnight: ``from`` inside a day starts at the next one
    return day + dt.timedelta(days=1) if first and ny_midnight_ms(day) < int(text) else day


def _date_param(params: dict, name: str) -> Optional[dt.date]:
    if name not in params:
        return None
    try:
        return dt.date.fromisoformat(params[name])
    except ValueError:
        raise BadRequest(f"Could not parse the date parameter: '{name}'. Use YYYY-MM-DD") from None


def _bool_param(params: dict, name: str, default: bool) -> bool:
    value = params.get(name, str(default)).lower()
    if value not in ("true", "false"):
        raise BadRequest(f"Could not parse the '{name}' parameter: use true or false")
    return value == "true"


def _int_param(params: dict, name: str, default: int, minimum: int) -> int:
    try:
        value = int(params.get(name, default))
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise BadRequest(f"The '{name}' parameter must be an integer of at least {minimum}")
    return value


def _limit_param(params: dict, default: int, maximum: int) -> int:
    return min(_int_param(params, "limit", default, 1), maximum)


def _choice_param(params: dict, name: str, default: str, allowed: Iterable[str]) -> str:
    value = params.get(name, default)
    if value not in allowed:
        raise BadRequest(f"The '{name}' parameter must be one of {', '.join(allowed)}")
    return value


def encode_cursor(params: dict) -> str:
    return base64.urlsafe_b64encode(urlencode(params).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict:
    try:
        return dict(parse_qsl(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode(),
                              strict_parsing=True))
    except ValueError:
        raise BadRequest("Invalid cursor") from None


def _with_cursor(params: dict) -> dict:
    """Query parameters with those packed in ``cursor`` (a ``next_url``) unpacked."""
    params = dict(params)
    if "cursor" in params:
        params.update(decode_cursor(params.pop("cursor")))
    return params


def _json_number(value: float) -> Optional[float]:
    return None if math.isnan(value) else value


def bar_json(day: dt.date, row: list, has_vwap: bool, has_transactions: bool) -> dict:
    """One bar in Polygon's keys and order; NaN becomes null, absent columns absent."""
    open_, high, low, close, volume, vwap, transactions = row
    bar = {"v": _json_number(volume)}
    if has_vwap:
        bar["vw"] = _json_number(vwap)
    bar.update(o=_json_number(open_), c=_json_number(close), h=_json_number(high),
               l=_json_number(low), t=ny_midnight_ms(day))
    if has_transactions:
        bar["n"] = None if math.isnan(transactions) else int(transactions)
    return bar


# -- endpoints: (server, base_url, params, *path parts) -> JSON payload of a 200 --------

def aggs_range(server: "PolygonServer", base_url: str, params: dict, ticker: str,
               from_text: str, to_text: str) -> dict:
    params = _with_cursor(params)
    first, last = _bound(from_text, "from", True), _bound(to_text, "to", False)
    adjusted = _bool_param(params, "adjusted", True)
    order = _choice_param(params, "sort", "asc", ("asc", "desc"))
    limit = _limit_param(params, 5000, RANGE_LIMIT)
    today = server.today
    series = server.market.ticker_bars(ticker)
    page, next_url = [], None
    if series is not None:
        window = series.between(first, last if today is None else min(last, today))
        days, values = window.days, window.values
        if adjusted:
            values = adjust(values, server.market.split_factors(ticker, days, today))
        if order == "desc":
            days, values = days[::-1], values[::-1]
        page = [bar_json(day, row, window.has_vwap, window.has_transactions)
                for day, row in zip(days[:limit].tolist(), values[:limit].tolist())]
        if len(days) > limit:
            # like Polygon: the next page's range starts (asc) or ends (desc) at the next bar
            next_t = ny_midnight_ms(days[limit].item())
            from_text, to_text = (next_t, to_text) if order == "asc" else (from_text, next_t)
            cursor = encode_cursor({"adjusted": str(adjusted).lower(), "limit": limit, "sort": order})
            next_url = f"{base_url}/v2/aggs/ticker/{ticker}/range/1/day/{from_text}/{to_text}?cursor={cursor}"
    payload = {"ticker": ticker, "queryCount": len(page), "resultsCount": len(page), "adjusted": adjusted}
    if page:  # Polygon leaves "results" out rather than send an empty list
        payload["results"] = page
    payload.update(status="OK", request_id=_request_id(), count=len(page))
    if next_url:
        payload["next_url"] = next_url
    return payload


def aggs_grouped(server: "PolygonServer", base_url: str, params: dict, date_text: str) -> dict:
    try:
        day = dt.date.fromisoformat(date_text)
    except ValueError:
        raise BadRequest("Could not parse the date parameter. Use YYYY-MM-DD") from None
    adjusted = _bool_param(params, "adjusted", True)
    today = server.today
    results = []
    if today is None or day <= today:
        for ticker, series, row in server.market.on_day(day):
            values = series.values[row:row + 1]
            if adjusted:
                values = adjust(values, server.market.split_factors(ticker, series.days[row:row + 1], today))
            results.append({"T": ticker, **bar_json(day, values[0].tolist(), series.has_vwap,
                                                    series.has_transactions)})
    payload = {"queryCount": len(results), "resultsCount": len(results), "adjusted": adjusted}
    if results:
        payload["results"] = results
    payload.update(status="OK", request_id=_request_id(), count=len(results))
    return payload


_SPLIT_FILTERS = ("ticker", "ticker.gt", "ticker.gte", "ticker.lt", "ticker.lte", "execution_date",
                  "execution_date.gt", "execution_date.gte", "execution_date.lt",
                  "execution_date.lte", "reverse_split")
_COMPARE = {"": lambda a, b: a == b, "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
            "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}


def split_id(ticker: str, day: dt.date, split_from: float, split_to: float) -> str:
    """A stable id shaped like Polygon's (``E`` and 64 hex digits)."""
    return "E" + hashlib.sha256(f"{ticker}|{day}|{split_from}|{split_to}".encode()).hexdigest()


def reference_splits(server: "PolygonServer", base_url: str, params: dict) -> dict:
    params = _with_cursor(params)
    limit = _limit_param(params, 10, SPLITS_MAX_LIMIT)
    sort = _choice_param(params, "sort", "execution_date", ("execution_date", "ticker"))
    order = _choice_param(params, "order", "desc", ("asc", "desc"))
    offset = _int_param(params, "offset", 0, 0)
    today = server.today
    splits = [s for s in server.market.splits if today is None or s.execution_date <= today]
    for name in _SPLIT_FILTERS:
        if name not in params:
            continue
        field, _, op = name.partition(".")
        if field == "reverse_split":
            wanted = _bool_param(params, name, False)
            splits = [s for s in splits if (s.split_from > s.split_to) == wanted]
        else:
            bound = params[name] if field == "ticker" else _date_param(params, name)
            splits = [s for s in splits if _COMPARE[op](getattr(s, field), bound)]
    other = "ticker" if sort == "execution_date" else "execution_date"
    splits.sort(key=lambda s: (getattr(s, sort), getattr(s, other)), reverse=order == "desc")
    page = splits[offset:offset + limit]
    payload = {"results": [{"execution_date": s.execution_date.isoformat(),
                            "split_from": s.split_from, "split_to": s.split_to, "ticker": s.ticker,
                            "id": split_id(s.ticker, s.execution_date, s.split_from, s.split_to)}
                           for s in page],
               "status": "OK", "request_id": _request_id()}
    if offset + limit < len(splits):
        kept = {k: v for k, v in params.items() if k in _SPLIT_FILTERS}
        cursor = encode_cursor({**kept, "limit": limit, "sort": sort, "order": order,
                                "offset": offset + limit})
        payload["next_url"] = f"{base_url}{_SPLITS}?cursor={cursor}"
    return payload


def constituents_html(constituents: Iterable[Constituent]) -> str:
    """A page shaped like Wikipedia's "List of S&P 500 companies" (``table#constituents``)."""
    header = ("Symbol", "Security", "GICS Sector", "GICS Sub-Industry", "Headquarters Location",
              "Date added", "CIK", "Founded")
    head = "".join(f"<th>{h}</th>" for h in header)
    rows = "".join(
        f'<tr>\n<td><a rel="nofollow" class="external text" '
        f'href="https://www.nyse.com/quote/XNYS:{html.escape(c.symbol)}">{html.escape(c.symbol)}</a>\n</td>'
        f"<td>{html.escape(c.name)}</td><td>{html.escape(c.sector)}</td>"
        + "<td></td>" * 5 + "</tr>\n"
        for c in constituents)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"UTF-8\">"
            "<title>List of S&amp;P 500 companies - Wikipedia</title></head><body>\n"
            "<h1>List of S&amp;P 500 companies</h1>\n"
            '<h2 id="S&amp;P_500_component_stocks">S&amp;P 500 component stocks</h2>\n'
            f'<table class="wikitable sortable" id="constituents">\n<tbody><tr>{head}</tr>\n'
            f"{rows}</tbody></table>\n</body></html>\n")


# -- the server ---------------------------------------------------------------

class _RateLimit:
    """At most ``calls`` accepted calls in any sliding ``window`` seconds."""

    def __init__(self, calls: int, window: float):
        self.calls, self.window = calls, window
        self._accepted: deque[float] = deque()
        self._lock = threading.Lock()

    def wait(self) -> Optional[float]:
        """None: accepted and counted. Else the seconds until a slot frees."""
        now = time.monotonic()
        with self._lock:
            while self._accepted and self._accepted[0] <= now - self.window:
                self._accepted.popleft()
            if len(self._accepted) < self.calls:
                self._accepted.append(now)
                return None
            return self._accepted[0] + self.window - now


class PolygonServer:
    """Polygon's daily-bar endpoints over ``market`` on a real loopback socket.

    The socket is bound at construction, so ``url`` is known before ``start()``.
    ``today`` (a date, or None for the last date in the data) is the server's
    "now" and may be changed while it runs; so may ``market``'s bars, splits and
    constituents. ``requests`` lists one dict per request answered (keys as in
    the request log).
    """

    def __init__(self, market: MarketData, *, host: str = "127.0.0.1", port: int = 0,
                 api_key: Optional[str] = None, today: Optional[DateLike] = None,
                 calls_per_minute: Optional[int] = None, window_seconds: float = 60.0,
                 send_retry_after: bool = False, fault_rate: float = 0.0,
                 fault_kinds: Iterable[str] = FAULT_KINDS, seed: int = 0,
                 stall_seconds: float = 30.0, request_log: Optional[Union[str, Path]] = None,
                 universe_html: Optional[Union[str, Path]] = None):
        unknown = set(fault_kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
        self.market = market
        self.today = today
        self.api_key = api_key
        self.send_retry_after = send_retry_after
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        self.stall_seconds = stall_seconds
        self.universe_html = Path(universe_html) if universe_html else None
        self.requests: list[dict] = []
        self._rate_limit = _RateLimit(calls_per_minute, window_seconds) if calls_per_minute else None
        self._faults = random.Random(seed)
        self._fault_lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._log = open(request_log, "a", encoding="utf-8") if request_log else None
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._httpd = _HTTPServer((host, port), self)

    @property
    def today(self) -> Optional[dt.date]:
        return self._today or self.market.last_date

    @today.setter
    def today(self, value: Optional[DateLike]) -> None:
        self._today = None if value is None else to_date(value)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "PolygonServer":
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                            name="polygon-server", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until a signal's exception (KeyboardInterrupt) ends it."""
        self._httpd.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        self._stopping.set()  # wakes stalled ("slow") answers
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.close_connections()
        self._httpd.server_close()
        with self._log_lock:
            if self._log:
                self._log.close()
                self._log = None

    def __enter__(self) -> "PolygonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- called by the request handler ---------------------------------------

    def rate_limit_wait(self) -> Optional[float]:
        return self._rate_limit.wait() if self._rate_limit else None

    def draw_fault(self, grouped: bool) -> tuple[Optional[str], Optional[int]]:
        """(kind, status for 5xx) for this data request, or (None, None)."""
        kinds = [k for k in self.fault_kinds if grouped or k != "null_results"]
        with self._fault_lock:
            if not kinds or self._faults.random() >= self.fault_rate:
                return None, None
            kind = self._faults.choice(kinds)
            return kind, (self._faults.choice(sorted(_SERVER_ERRORS)) if kind == "5xx" else None)

    def stall(self) -> None:
        self._stopping.wait(self.stall_seconds)

    def universe_page(self) -> bytes:
        if self.universe_html:
            return self.universe_html.read_bytes()
        return constituents_html(self.market.constituents).encode()

    def record(self, path: str, query: str, status: Optional[int], fault: Optional[str]) -> None:
        entry = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                 "path": path, "query": query, "status": status, "fault": fault}
        with self._log_lock:
            self.requests.append(entry)
            if self._log:
                self._log.write(json.dumps(entry) + "\n")
                self._log.flush()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # a stalled answer or an idle keep-alive connection must not hold up stop()
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: PolygonServer):
        self.app = app
        self.connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            (self.connections.add if open_ else self.connections.discard)(connection)

    def close_connections(self) -> None:
        """End idle keep-alive connections, whose threads wait for a next request."""
        with self._connections_lock:
            for connection in self.connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that time out or go away mid-answer are expected here, not errors;
        # so is anything an answer stalled past stop() meets on its way out.
        if not isinstance(sys.exc_info()[1], OSError) and not self.app._stopping.is_set():
            super().handle_error(request, client_address)


def _without_api_key(query: str) -> str:
    """The raw query string minus ``apiKey``: the key never reaches a log."""
    return "&".join(p for p in query.split("&") if p and unquote(p.split("=", 1)[0]) != "apiKey")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as urllib3 expects
    # headers and body go out in two writes; Nagle would hold the second for the client's delayed ACK
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: object) -> None:
        pass  # requests go to PolygonServer.record instead

    def do_GET(self) -> None:
        app = self.server.app
        url = urlsplit(self.path)
        path = unquote(url.path)
        if path == WIKI_PATH:
            return self._send(200, app.universe_page(), "text/html; charset=UTF-8")
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        route = self._route(path)
        if route is None:
            return self._send_json(404, {"status": "NOT_FOUND", "request_id": _request_id(),
                                         "message": "Not found: the requested path does not exist"})
        key = self._api_key(params)
        if not key or (app.api_key is not None and key != app.api_key):
            error = "API Key was not provided" if not key else "Unknown API Key"
            return self._send_json(401, {"status": "ERROR", "request_id": _request_id(), "error": error})
        wait = app.rate_limit_wait()
        if wait is not None:
            headers = {"Retry-After": str(max(1, math.ceil(wait)))} if app.send_retry_after else {}
            return self._send_json(429, {"status": "ERROR", "request_id": _request_id(),
                                         "error": RATE_LIMIT_ERROR}, headers)
        endpoint, parts = route
        fault, fault_status = app.draw_fault(grouped=endpoint is aggs_grouped)
        if fault == "reset":
            return self._reset()
        if fault == "5xx":
            return self._send_json(fault_status, {"status": "ERROR", "request_id": _request_id(),
                                                  "error": _SERVER_ERRORS[fault_status]}, fault=fault)
        if fault == "slow":
            app.stall()
        base_url = f"http://{self.headers.get('Host') or app.url.removeprefix('http://')}"
        try:
            status, payload = 200, endpoint(app, base_url, params, *parts)
        except BadRequest as error:
            status, payload = 400, {"status": "ERROR", "request_id": _request_id(), "error": str(error)}
        if fault == "null_results":
            payload = {"queryCount": 0, "resultsCount": 0, "adjusted": payload.get("adjusted", True),
                       "results": None, "status": "OK", "request_id": _request_id(), "count": 0}
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        if fault == "truncated":
            body = body[:len(body) // 2]
        self._send(status, body, "application/json", fault=fault)

    def _not_allowed(self) -> None:
        self._send_json(405, {"status": "ERROR", "request_id": _request_id(),
                              "error": f"Method {self.command} not allowed"}, {"Allow": "GET"})

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _not_allowed

    @staticmethod
    def _route(path: str) -> Optional[tuple[Callable[..., dict], tuple]]:
        if path == _SPLITS:
            return reference_splits, ()
        for pattern, endpoint in ((_AGGS_RANGE, aggs_range), (_AGGS_GROUPED, aggs_grouped)):
            match = pattern.fullmatch(path)
            if match:
                return endpoint, match.groups()
        return None

    def _api_key(self, params: dict) -> str:
        scheme, _, key = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and key.strip():
            return key.strip()
        return params.get("apiKey", "")

    def _send_json(self, status: int, payload: dict, headers: Optional[dict] = None,
                   fault: Optional[str] = None) -> None:
        self._send(status, json.dumps(payload, separators=(",", ":")).encode(), "application/json",
                   headers, fault)

    def _send(self, status: int, body: bytes, content_type: str, headers: Optional[dict] = None,
              fault: Optional[str] = None) -> None:
        # recorded before the client can read the answer, so a test that has it sees the entry
        self._record(status, fault)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _record(self, status: Optional[int], fault: Optional[str]) -> None:
        url = urlsplit(self.path)
        self.server.app.record(url.path, _without_api_key(url.query), status, fault)

    def _reset(self) -> None:
        """Drop the connection with a TCP reset and no answer at all."""
        self._record(None, "reset")
        # linger on, timeout 0: close() sends RST instead of an orderly FIN
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


# -- command line ---------------------------------------------------------------

def _fault_kinds(text: str) -> list[str]:
    kinds = [k for k in text.split(",") if k]
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {sorted(unknown)}; known: {','.join(FAULT_KINDS)}")
    return kinds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m CandleThrob.testing.polygon_server",
                                     description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=0, help="0: any free port")
    add("--bars", action="append", default=[], metavar="CSV",
        help="as-traded daily bars (repeatable; .gz ok); default: generated data")
    add("--splits", metavar="CSV", help="ticker, execution_date, split_from, split_to")
    add("--universe-html", metavar="FILE", help="serve this file as the constituents page")
    add("--tickers", type=int, default=10, help="generated: this many S&P 500 companies (+ 20 ETFs)")
    add("--start", type=to_date, default=dt.date(2020, 1, 2), help="generated: first date")
    add("--end", type=to_date, help="generated: last date (default: the last completed NYSE session)")
    add("--seed", type=int, default=0, help="generated data and fault draws")
    add("--today", type=to_date, help="the server's now (default: the last date in the data)")
    add("--api-key", help="accept only this key (default: any non-empty key)")
    add("--calls-per-minute", type=int, help="rate limit on data requests")
    add("--rate-window", type=float, default=60.0, metavar="SECONDS",
        help="the rate limit's sliding window (default 60)")
    add("--send-retry-after", action="store_true", help="send Retry-After with 429")
    add("--fault-rate", type=float, default=0.0, help="share of data requests that fail")
    add("--fault-kinds", type=_fault_kinds, default=list(FAULT_KINDS),
        help="comma-separated subset of " + ",".join(FAULT_KINDS))
    add("--stall-seconds", type=float, default=30.0, help="how long a 'slow' fault stalls")
    add("--request-log", metavar="FILE", help="one JSON line per request")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.bars:
        market = market_data_from_files(args.bars, args.splits)
    else:
        end = args.end or TradingCalendar().last_final_session(dt.datetime.now(dt.timezone.utc)).date()
        market = generate_market(args.tickers, args.start, end, args.seed)
        # generated bars know no splits: reprice them so the file's splits really happened
        for split in load_splits_csv(args.splits) if args.splits else ():
            market.add_split(split.ticker, split.execution_date, split.split_from, split.split_to)
    server = PolygonServer(
        market, host=args.host, port=args.port, api_key=args.api_key, today=args.today,
        calls_per_minute=args.calls_per_minute, window_seconds=args.rate_window,
        send_retry_after=args.send_retry_after, fault_rate=args.fault_rate,
        fault_kinds=args.fault_kinds, seed=args.seed,
        stall_seconds=args.stall_seconds, request_log=args.request_log,
        universe_html=args.universe_html)
    print(f"listening on {server.url}", flush=True)
    # SIGTERM ends the server like Ctrl-C: through KeyboardInterrupt, then a clean stop
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
