"""A local stand-in for Polygon's REST API (now "Massive") and Wikipedia's S&P 500 page.

Serves daily aggregates by ticker range (with ``next_url`` pagination),
grouped daily aggregates, splits and the constituents page from a
``MarketData``, answering with Polygon's JSON shapes and status codes. It can
also misbehave the way the real service does (rate limits, 5xx, reset
connections, stalls, truncated bodies, grouped days with ``"results": null``)
so that the ingestion's retry and validation paths can be tested, demoed and
benchmarked without a network or a key. For generated data a grouped day lists
a whole market (``--market-size``, ~11,000 symbols), as Polygon's does, so that
a client pays for parsing what the real service sends.

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
from collections import OrderedDict, deque
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable, Optional, Union
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from CandleThrob.planning.trading_calendar import TradingCalendar
from CandleThrob.source.polygon import RANGE_LIMIT
from CandleThrob.testing.datagen import (
    CLOSE, HIGH, LOW, OPEN, TRANSACTIONS, VOLUME, VWAP, Constituent, DateLike, Dividend, IndexChange,
    MarketData, MarketPopulation, Split, adjust, generate_market, load_dividends_csv, load_splits_csv,
    load_ticker_events_csv, market_data_from_files, to_date,
)

NEW_YORK = ZoneInfo("America/New_York")
FAULT_KINDS = ("5xx", "reset", "slow", "truncated", "null_results")
RATE_LIMIT_ERROR = ("You've exceeded the maximum requests per minute, please wait or upgrade "
                    "your subscription to continue. https://polygon.io/pricing")
WIKI_PATH = "/wiki/List_of_S&P_500_companies"
MARKET_SIZE = 11_000  # symbols in a real grouped-daily answer, about
_AGGS_RANGE = re.compile(r"/v2/aggs/ticker/([^/]+)/range/1/day/([^/]+)/([^/]+)")
_AGGS_GROUPED = re.compile(r"/v2/aggs/grouped/locale/us/market/stocks/([^/]+)")
_SPLITS = "/stocks/v1/splits"
_DIVIDENDS = "/stocks/v1/dividends"
_TICKER_EVENTS = re.compile(r"/vX/reference/tickers/([^/]+)/events")
_SERVER_ERRORS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


class BadRequest(Exception):
    """A parameter Polygon would refuse with 400; the message is the ``error``."""


class NotFound(Exception):
    """Something Polygon does not know: 404 with the message as the ``error``."""


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


# -- grouped answers, encoded once --------------------------------------------------

# Keys of a population bar, in Polygon's order: (key, column of ``day_values``
# or None for ``t``, 4-digit groups before the decimal point, decimals).
_POPULATION_KEYS = (("v", VOLUME, 3, 0), ("vw", VWAP, 2, 4), ("o", OPEN, 2, 4), ("c", CLOSE, 2, 4),
                    ("h", HIGH, 2, 4), ("l", LOW, 2, 4), ("t", None, 4, 0), ("n", TRANSACTIONS, 3, 0))
_GROUP = np.arange(10_000)[:, None]
_POWERS = 10 ** np.arange(3, -1, -1)


def _words(table: np.ndarray) -> np.ndarray:
    """A (10000, 4) byte table as one little-endian word per row: a group's four bytes in one store."""
    return np.ascontiguousarray(table, dtype=np.uint8).view("<u4").ravel()


_DIGITS = _words(_GROUP // _POWERS % 10 + ord("0"))
_NO_LEADING_ZEROS = _words(_GROUP >= _POWERS)                        # 0 -> no digit at all
_NO_LEADING_ZEROS_BUT_UNITS = _words((_GROUP >= _POWERS) | (_POWERS == 1))
_NO_TRAILING_ZEROS = _words(_GROUP % (10 * _POWERS) != 0)          # of a fraction
_ALL_FOUR = _words(np.ones((1, 4)))[0]


class PopulationRows:
    """A population's bars of one session as ``results`` items of a grouped answer
    (JSON text, each item preceded by a comma), without a Python loop over its rows.

    Every row is laid out once in a fixed-width byte matrix (symbol, keys and
    punctuation in place). For a session, each number is written as 4-digit groups
    looked up in tables, and a mask drops what JSON must not hold: the symbol's
    padding, leading zeros, and a fraction's trailing zeros (and its point when it
    is 0). ``matrix[mask]`` is then the text, in one C pass.
    """

    def __init__(self, symbols: Iterable[str]):
        names = np.array([s.encode() for s in symbols])
        if not len(names):
            raise ValueError("a population of no symbols needs no rows")
        text, fields = bytearray(), {}

        def put(constant: str) -> None:
            text.extend(constant.encode())

        def field(name: str, kind: str, width: int) -> None:
            fields[name] = (kind, len(text))
            text.extend(b"\0" * width)

        put(',{"T":"')
        field("T", names.dtype.str, names.dtype.itemsize)
        put('"')
        for key, _, groups, decimals in _POPULATION_KEYS:
            put(f',"{key}":')
            for j in range(groups):
                field(f"{key}{j}", "<u4", 4)
            if decimals:
                field(f"{key}.", "u1", 1)
                text[-1] = ord(".")
                field(f"{key}f", "<u4", 4)
        put("}")
        self.count = len(names)
        self._dtype = np.dtype({"names": list(fields), "formats": [k for k, _ in fields.values()],
                                "offsets": [o for _, o in fields.values()], "itemsize": len(text)})
        constant = np.frombuffer(bytes(text), np.uint8)
        self._rows = np.tile(constant, (self.count, 1))
        self._kept = np.tile(constant != 0, (self.count, 1))
        self._rows.view(self._dtype)[:, 0]["T"] = names
        start = fields["T"][1]
        self._kept[:, start:start + names.dtype.itemsize] = self._rows[:, start:start + names.dtype.itemsize] != 0
        for key, _, _, decimals in _POPULATION_KEYS:
            if decimals:  # the point's byte is a constant, but it is kept or not per row
                self._kept[:, fields[f"{key}."][1]] = False
        self._lock = threading.Lock()

    def encode(self, values: np.ndarray, t: int, hidden: Optional[np.ndarray] = None) -> bytes:
        """``values`` as ``MarketPopulation.day_values`` gives them, ``t`` the session's
        Polygon stamp; rows where ``hidden`` is True are left out."""
        with self._lock:  # one session at a time in the matrices
            self._fill(values, t)
            kept = self._kept if hidden is None else self._kept & ~hidden[:, None]
            return self._rows[kept].tobytes()

    def _fill(self, values: np.ndarray, t: int) -> None:
        # Every number's bytes and mask are written in place: allocating the matrices
        # afresh costs more (page faults on 3 MB) than writing them.
        row_fields, kept_fields = self._rows.view(self._dtype)[:, 0], self._kept.view(self._dtype)[:, 0]
        for key, column, groups, decimals in _POPULATION_KEYS:
            whole = values[:, column] if column is not None else np.full(self.count, t, np.int64)
            if decimals:
                whole, fraction = np.divmod(whole, 10 ** decimals)
            split = []  # the 4-digit groups, least significant first
            for _ in range(groups):
                whole, group = np.divmod(whole, 10_000)
                split.append(group)
            if whole.any():  # also for a negative number, whose last quotient is -1
                raise ValueError(f"population {key!r} values outside 0..{10_000 ** groups - 1}")
            higher = np.zeros(self.count, bool)  # a higher group is not 0: no zero of this one leads
            for j, group in enumerate(reversed(split)):
                row_fields[f"{key}{j}"] = _DIGITS[group]
                shown = _NO_LEADING_ZEROS_BUT_UNITS if j == groups - 1 else _NO_LEADING_ZEROS
                kept_fields[f"{key}{j}"] = np.where(higher, _ALL_FOUR, shown[group])
                higher |= group != 0
            if decimals:
                row_fields[f"{key}f"] = _DIGITS[fraction]
                kept_fields[f"{key}f"] = _NO_TRAILING_ZEROS[fraction]
                kept_fields[f"{key}."] = fraction != 0


class GroupedAnswers:
    """Each session's grouped ``results`` (count, JSON text of the items), built on a
    session's first request and kept for the ``capacity`` latest (day, adjusted):
    a cold backfill asks each session once, and a 1.3 MB body per session of a
    10-year market would not fit in memory anyway. An entry is rebuilt when the
    market (or its bars or splits) or the server's today changed since.

    Items: the market's bars of the day (as before: ``bar_json``, ticker order),
    then the population's, minus any symbol the market has since gained.
    """

    def __init__(self, population: Optional[MarketPopulation] = None, capacity: int = 16):
        self.population = population
        self.capacity = capacity
        self._rows = PopulationRows(population.symbols) if population and population.symbols else None
        self._names = np.array(population.symbols if self._rows else [], dtype=object)
        self._symbols = frozenset(self._names.tolist())
        self._cache: OrderedDict[tuple, tuple] = OrderedDict()
        self._lock = threading.Lock()

    def results(self, market: MarketData, day: dt.date, adjusted: bool,
                today: Optional[dt.date]) -> tuple[int, bytes]:
        key, token = (day, adjusted), (market, market.version, today)
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None and entry[0] == token:
                self._cache.move_to_end(key)
                return entry[1]
        answer = self.build(market, day, adjusted, today)
        with self._lock:
            self._cache[key] = (token, answer)
            self._cache.move_to_end(key)
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return answer

    def build(self, market: MarketData, day: dt.date, adjusted: bool,
              today: Optional[dt.date]) -> tuple[int, bytes]:
        """The answer without the cache."""
        bars = market.on_day(day) if today is None or day <= today else []
        if not bars:  # the population trades on the market's sessions only
            return 0, b""
        values = np.array([series.values[row] for _, series, row in bars])
        if adjusted:  # only where there are splits: dividing by a factor of 1 changes nothing
            split = {s.ticker for s in market.splits}
            for i, (ticker, series, row) in enumerate(bars):
                if ticker in split:
                    factors = market.split_factors(ticker, series.days[row:row + 1], today)
                    values[i:i + 1] = adjust(values[i:i + 1], factors)
        results = [{"T": ticker, **bar_json(day, row, series.has_vwap, series.has_transactions)}
                   for (ticker, series, _), row in zip(bars, values.tolist())]
        text = json.dumps(results, separators=(",", ":"), allow_nan=False).encode()[1:-1]
        if self._rows is None:
            return len(results), text
        gained = self._symbols.intersection(market.tickers)
        hidden = np.isin(self._names, list(gained)) if gained else None
        others = self._rows.encode(self.population.day_values(day), ny_midnight_ms(day), hidden)
        shown = self._rows.count - (int(hidden.sum()) if hidden is not None else 0)
        return len(results) + shown, text + others


class PreEncoded(dict):
    """A 200's payload whose ``results`` are already JSON text: the other keys, in
    order, with ``results`` going after the first ``place`` of them."""

    def __init__(self, before: dict, results: bytes, after: dict):
        super().__init__(before, **after)
        self.results, self.place = results, len(before)


def encode_payload(payload: dict) -> bytes:
    """A payload as the body of its answer; pre-encoded results are spliced in, not re-encoded."""
    if not isinstance(payload, PreEncoded):
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    items = list(payload.items())
    before = json.dumps(dict(items[:payload.place]), separators=(",", ":"), allow_nan=False).encode()
    after = json.dumps(dict(items[payload.place:]), separators=(",", ":"), allow_nan=False).encode()
    return before[:-1] + b',"results":[' + payload.results + b"]," + after[1:]


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


def ticker_events(server: "PolygonServer", base_url: str, params: dict, security: str) -> dict:
    """``/vX/reference/tickers/{id}/events``: the ``ticker_change`` events of one security, newest first,
    as Massive answers them (an experimental endpoint; 404 for an id it does not know)."""
    events = sorted((e for e in server.market.ticker_events if e.security == security),
                    key=lambda e: e.date, reverse=True)
    if not events:
        raise NotFound(f"Ticker not found: {security}")
    return {"results": {"name": security, "events": [
        {"ticker_change": {"ticker": e.ticker}, "type": "ticker_change", "date": e.date.isoformat()}
        for e in events]}, "status": "OK", "request_id": _request_id()}


def aggs_grouped(server: "PolygonServer", base_url: str, params: dict, date_text: str) -> dict:
    try:
        day = dt.date.fromisoformat(date_text)
    except ValueError:
        raise BadRequest("Could not parse the date parameter. Use YYYY-MM-DD") from None
    adjusted = _bool_param(params, "adjusted", True)
    count, results = server.grouped_answers.results(server.market, day, adjusted, server.today)
    before = {"queryCount": count, "resultsCount": count, "adjusted": adjusted}
    after = {"status": "OK", "request_id": _request_id(), "count": count}
    # Polygon leaves "results" out rather than send an empty list
    return PreEncoded(before, results, after) if count else {**before, **after}


_COMPARE = {"": lambda a, b: a == b, "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
            "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}
_LEDGER_MAX_LIMIT = 5000


def event_id(*parts: object) -> str:
    """A stable id shaped like the vendor's (``E`` and 64 hex digits)."""
    return "E" + hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def split_id(ticker: str, day: dt.date, split_from: float, split_to: float) -> str:
    return event_id(ticker, day, split_from, split_to)


def _split_record(server: "PolygonServer", split: Split) -> dict:
    kind = "forward_split" if split.split_to > split.split_from else "reverse_split"
    return {"id": split_id(split.ticker, split.execution_date, split.split_from, split.split_to),
            "ticker": split.ticker, "execution_date": split.execution_date.isoformat(),
            "split_from": split.split_from, "split_to": split.split_to, "adjustment_type": kind,
            "historical_adjustment_factor": server.market.historical_split_factor(split, server.today)}


def _dividend_record(server: "PolygonServer", dividend: Dividend) -> dict:
    market, today = server.market, server.today
    later = [s for s in market.splits if s.ticker == dividend.ticker
             and dividend.ex_dividend_date < s.execution_date <= today]
    split_adjusted = dividend.cash_amount
    for split in later:
        split_adjusted *= split.split_from / split.split_to
    record = {"id": event_id(dividend.ticker, dividend.ex_dividend_date, dividend.cash_amount),
              "ticker": dividend.ticker, "ex_dividend_date": dividend.ex_dividend_date.isoformat(),
              "cash_amount": dividend.cash_amount, "split_adjusted_cash_amount": round(split_adjusted, 6),
              "currency": dividend.currency, "frequency": dividend.frequency,
              "distribution_type": dividend.distribution_type,
              "historical_adjustment_factor": market.historical_dividend_factor(dividend, today)}
    for name in ("declaration_date", "record_date", "pay_date"):
        value = getattr(dividend, name)
        if value is not None:
            record[name] = value.isoformat()
    return record


def _ledger(server: "PolygonServer", base_url: str, params: dict, *, path: str, date_field: str,
            records: list[dict]) -> dict:
    """One page of /stocks/v1 events, filtered as the vendor filters (``ticker``,
    ``ticker.any_of``, ``<date>.gt/.gte/.lt/.lte``), sorted by ``<field>.<asc|desc>``."""
    params = _with_cursor(params)
    limit = _limit_param(params, 100, _LEDGER_MAX_LIMIT)
    offset = _int_param(params, "offset", 0, 0)
    sort_field, _, direction = params.get("sort", f"{date_field}.asc").partition(".")
    if sort_field not in (date_field, "ticker") or direction not in ("asc", "desc"):
        raise BadRequest(f"The 'sort' parameter must be {date_field} or ticker, then .asc or .desc")
    kept = {}
    for name, value in params.items():
        field, _, op = name.partition(".")
        if field == "ticker" and op == "any_of":
            wanted = set(value.split(","))
            records = [r for r in records if r.get("ticker") in wanted]
        elif field in ("ticker", date_field) and op in _COMPARE:
            if field == date_field:
                _date_param(params, name)  # a malformed date is the vendor's 400
            # A record without the field slips through the filter: how a vendor's bad record reaches a client.
            records = [r for r in records if not isinstance(r.get(field), str) or _COMPARE[op](r[field], value)]
        else:
            continue
        kept[name] = value
    other = "ticker" if sort_field == date_field else date_field
    records = sorted(records, key=lambda r: (str(r.get(sort_field)), str(r.get(other))), reverse=direction == "desc")
    page = records[offset:offset + limit]
    payload = {"results": page, "status": "OK", "request_id": _request_id()}
    if offset + limit < len(records):
        cursor = encode_cursor({**kept, "limit": limit, "sort": f"{sort_field}.{direction}", "offset": offset + limit})
        payload["next_url"] = f"{base_url}{path}?cursor={cursor}"
    return payload


def stocks_splits(server: "PolygonServer", base_url: str, params: dict) -> dict:
    today = server.today
    records = [_split_record(server, s) for s in server.market.splits if today is None or s.execution_date <= today]
    return _ledger(server, base_url, params, path=_SPLITS, date_field="execution_date",
                   records=records + list(server.market.raw_split_records))


def stocks_dividends(server: "PolygonServer", base_url: str, params: dict) -> dict:
    today = server.today
    records = [_dividend_record(server, d) for d in server.market.dividends
               if today is None or d.ex_dividend_date <= today]
    return _ledger(server, base_url, params, path=_DIVIDENDS, date_field="ex_dividend_date",
                   records=records + list(server.market.raw_dividend_records))


def constituents_html(constituents: Iterable[Constituent], changes: Iterable[IndexChange] = ()) -> str:
    """A page shaped like Wikipedia's "List of S&P 500 companies" (``table#constituents``, and
    ``table#changes`` with its two-level header when there are changes)."""
    header = ("Symbol", "Security", "GICS Sector", "GICS Sub-Industry", "Headquarters Location",
              "Date added", "CIK", "Founded")
    head = "".join(f"<th>{h}</th>" for h in header)
    rows = "".join(
        f'<tr>\n<td><a rel="nofollow" class="external text" '
        f'href="https://www.nyse.com/quote/XNYS:{html.escape(c.symbol)}">{html.escape(c.symbol)}</a>\n</td>'
        f"<td>{html.escape(c.name)}</td><td>{html.escape(c.sector)}</td>"
        + "<td></td>" * 3 + f"<td>{html.escape(c.cik)}</td><td></td></tr>\n"
        for c in constituents)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"UTF-8\">"
            "<title>List of S&amp;P 500 companies - Wikipedia</title></head><body>\n"
            "<h1>List of S&amp;P 500 companies</h1>\n"
            '<h2 id="S&amp;P_500_component_stocks">S&amp;P 500 component stocks</h2>\n'
            f'<table class="wikitable sortable" id="constituents">\n<tbody><tr>{head}</tr>\n'
            f"{rows}</tbody></table>\n{_changes_html(list(changes))}</body></html>\n")


def _changes_html(changes: list[IndexChange]) -> str:
    if not changes:
        return ""
    cell = lambda text: f"<td>{html.escape(text)}</td>"  # noqa: E731
    rows = "".join(f"<tr>{cell(f'{c.date:%B} {c.date.day}, {c.date.year}')}{cell(c.added)}{cell(c.added_name)}"
                   f"{cell(c.removed)}{cell(c.removed_name)}{cell(c.reason)}</tr>\n" for c in changes)
    return ('<h2 id="Selected_changes_to_the_list_of_S&amp;P_500_components">Selected changes</h2>\n'
            '<table class="wikitable sortable" id="changes">\n<tbody>'
            '<tr><th rowspan="2">Date</th><th colspan="2">Added</th><th colspan="2">Removed</th>'
            '<th rowspan="2">Reason</th></tr>\n<tr><th>Ticker</th><th>Security</th><th>Ticker</th>'
            f"<th>Security</th></tr>\n{rows}</tbody></table>\n")


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
    the request log). With ``market_size`` above the market's ticker count,
    grouped days also list generated others up to that many symbols (a
    ``MarketPopulation`` drawn from ``seed``), as a real grouped answer lists
    the whole market.
    """

    def __init__(self, market: MarketData, *, host: str = "127.0.0.1", port: int = 0,
                 api_key: Optional[str] = None, today: Optional[DateLike] = None,
                 calls_per_minute: Optional[int] = None, window_seconds: float = 60.0,
                 send_retry_after: bool = False, fault_rate: float = 0.0,
                 fault_kinds: Iterable[str] = FAULT_KINDS, seed: int = 0,
                 stall_seconds: float = 30.0, request_log: Optional[Union[str, Path]] = None,
                 universe_html: Optional[Union[str, Path]] = None, history_limit_years: Optional[int] = None,
                 market_size: int = 0):
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
        self.history_limit_years = history_limit_years
        self.requests: list[dict] = []
        self._gate: Optional[Gate] = None
        self._preliminary: dict[dt.date, pd.DataFrame] = {}  # day -> its final bars, served after one answer
        self.grouped_answers = GroupedAnswers(MarketPopulation.around(market, market_size, seed))
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

    # -- test controls ----------------------------------------------------------

    def hold(self, after: int = 0, prefix: str = "/") -> "Gate":
        """Hold every API request under ``prefix`` after the first ``after`` until the gate opens:
        a test stops a client at a known point instead of sleeping and hoping."""
        self._gate = Gate(after, prefix, self._stopping)
        return self._gate

    def revise_after_first_answer(self, day: DateLike, preliminary: pd.DataFrame) -> None:
        """Serve ``preliminary`` bars for ``day`` until one answer has carried them, then the
        bars as they are now: the vendor's evening values that still change after the close."""
        day = to_date(day)
        bars = self.market.bars(start=day, end=day)
        self._preliminary[day] = bars[bars["ticker"].isin(preliminary["ticker"])]
        self.market.add_bars(preliminary)

    # -- called by the request handler ---------------------------------------

    def before_answer(self, path: str) -> None:
        if self._gate is not None:
            self._gate.pass_through(path)

    def after_answer(self, path: str, params: dict) -> None:
        """Preliminary bars answered once become final."""
        for day in [d for d in self._preliminary if _answer_covers(path, d)]:
            self.market.add_bars(self._preliminary.pop(day))

    def history_floor(self) -> Optional[dt.date]:
        """The oldest date a key on this plan may ask for (``--history-limit-years``)."""
        if not self.history_limit_years:
            return None
        return (pd.Timestamp(self.today) - pd.DateOffset(years=self.history_limit_years)).date()

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
        return constituents_html(self.market.constituents, self.market.index_changes).encode()

    def record(self, path: str, query: str, status: Optional[int], fault: Optional[str]) -> None:
        entry = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                 "path": path, "query": query, "status": status, "fault": fault}
        with self._log_lock:
            self.requests.append(entry)
            if self._log:
                self._log.write(json.dumps(entry) + "\n")
                self._log.flush()


class Gate:
    """Requests past the first ``after`` wait until ``open()``; ``arrived`` is set when one waits."""

    def __init__(self, after: int, prefix: str, stopping: threading.Event):
        self.after, self.prefix = after, prefix
        self.arrived = threading.Event()
        self._open = threading.Event()
        self._stopping = stopping
        self._seen = 0
        self._lock = threading.Lock()

    def pass_through(self, path: str) -> None:
        if not path.startswith(self.prefix):
            return
        with self._lock:
            self._seen += 1
            held = self._seen > self.after
        if held and not self._open.is_set():
            self.arrived.set()
            while not (self._open.wait(0.05) or self._stopping.is_set()):
                pass

    def open(self) -> None:
        self._open.set()


def _answer_covers(path: str, day: dt.date) -> bool:
    grouped = _AGGS_GROUPED.fullmatch(path)
    if grouped:
        return grouped.group(1) == day.isoformat()
    ranged = _AGGS_RANGE.fullmatch(path)
    if ranged:
        try:
            return _bound(ranged.group(2), "from", True) <= day <= _bound(ranged.group(3), "to", False)
        except BadRequest:
            return False
    return False


def _too_old(app: "PolygonServer", path: str) -> bool:
    floor = app.history_floor()
    if floor is None:
        return False
    grouped = _AGGS_GROUPED.fullmatch(path)
    ranged = _AGGS_RANGE.fullmatch(path)
    try:
        if grouped:
            return dt.date.fromisoformat(grouped.group(1)) < floor
        if ranged:
            return _bound(ranged.group(2), "from", True) < floor
    except (ValueError, BadRequest):
        return False
    return False


HISTORY_WINDOW_ERROR = ("Your plan doesn't include this data timeframe. Please upgrade your plan at "
                        "https://polygon.io/pricing")


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
        if self._refused(app, path, params):
            return None
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
        except NotFound as error:
            status, payload = 404, {"status": "NOT_FOUND", "request_id": _request_id(), "error": str(error)}
        if fault == "null_results":
            payload = {"queryCount": 0, "resultsCount": 0, "adjusted": payload.get("adjusted", True),
                       "results": None, "status": "OK", "request_id": _request_id(), "count": 0}
        body = encode_payload(payload)
        if fault == "truncated":
            body = body[:len(body) // 2]
        self._send(status, body, "application/json", fault=fault)
        if status == 200 and fault is None:
            app.after_answer(path, params)

    def _refused(self, app: PolygonServer, path: str, params: dict) -> bool:
        """Answer a request the vendor would refuse (key, rate limit, plan's history window)."""
        key = self._api_key(params)
        if not key or (app.api_key is not None and key != app.api_key):
            error = "API Key was not provided" if not key else "Unknown API Key"
            self._send_json(401, {"status": "ERROR", "request_id": _request_id(), "error": error})
            return True
        wait = app.rate_limit_wait()
        if wait is not None:
            headers = {"Retry-After": str(max(1, math.ceil(wait)))} if app.send_retry_after else {}
            self._send_json(429, {"status": "ERROR", "request_id": _request_id(), "error": RATE_LIMIT_ERROR}, headers)
            return True
        app.before_answer(path)
        if _too_old(app, path):
            self._send_json(403, {"status": "NOT_AUTHORIZED", "request_id": _request_id(),
                                  "message": HISTORY_WINDOW_ERROR})
            return True
        return False

    def _not_allowed(self) -> None:
        self._send_json(405, {"status": "ERROR", "request_id": _request_id(),
                              "error": f"Method {self.command} not allowed"}, {"Allow": "GET"})

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _not_allowed

    @staticmethod
    def _route(path: str) -> Optional[tuple[Callable[..., dict], tuple]]:
        if path == _SPLITS:
            return stocks_splits, ()
        if path == _DIVIDENDS:
            return stocks_dividends, ()
        for pattern, endpoint in ((_AGGS_RANGE, aggs_range), (_AGGS_GROUPED, aggs_grouped),
                                  (_TICKER_EVENTS, ticker_events)):
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
    add("--dividends", metavar="CSV", help="ticker, ex_dividend_date, cash_amount [, record_date, pay_date, "
        "declaration_date, frequency, distribution_type, currency]")
    add("--history-limit-years", type=int, metavar="N",
        help="answer 403 NOT_AUTHORIZED for bars older than N years before --today, as the free tier does")
    add("--revise", action="append", default=[], metavar="DATE:PCT",
        help="serve DATE's bars PCT percent off once, then the real ones (late revisions after the close)")
    add("--universe-html", metavar="FILE", help="serve this file as the constituents page")
    add("--ticker-events", metavar="CSV", help="security, date, ticker: what /vX/reference/tickers/{id}/events "
                                               "answers (ticker_change events)")
    add("--tickers", type=int, default=10, help="generated: this many S&P 500 companies (+ 20 ETFs)")
    add("--start", type=to_date, default=dt.date(2020, 1, 2), help="generated: first date")
    add("--end", type=to_date, help="generated: last date (default: the last completed NYSE session)")
    add("--market-size", type=int, default=MARKET_SIZE, metavar="N",
        help="generated: grouped days list N symbols, the index's and ETFs' plus generated others "
             f"(default {MARKET_SIZE}; 0: none added); --bars files are served as they are")
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


def preliminary_bars(market: MarketData, day: DateLike, percent: float) -> pd.DataFrame:
    """``day``'s bars with every price ``percent`` off and a tenth less volume: evening values."""
    bars = market.bars(start=day, end=day)
    factor = 1 + percent / 100
    return bars.assign(**{c: (bars[c] * factor).round(4) for c in ("open", "high", "low", "close", "vwap")},
                       volume=(bars["volume"] * 0.9).round())


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.bars:
        market = market_data_from_files(args.bars, args.splits, args.dividends)
    else:
        end = args.end or TradingCalendar().last_final_session(dt.datetime.now(dt.timezone.utc)).date()
        market = generate_market(args.tickers, args.start, end, args.seed)
        # generated bars know no splits: reprice them so the file's splits really happened
        for split in load_splits_csv(args.splits) if args.splits else ():
            market.add_split(split.ticker, split.execution_date, split.split_from, split.split_to)
        for dividend in load_dividends_csv(args.dividends) if args.dividends else ():
            market.add_dividend(dividend)
    if args.ticker_events:
        market.ticker_events = load_ticker_events_csv(args.ticker_events)
    server = PolygonServer(
        market, host=args.host, port=args.port, api_key=args.api_key, today=args.today,
        calls_per_minute=args.calls_per_minute, window_seconds=args.rate_window,
        send_retry_after=args.send_retry_after, fault_rate=args.fault_rate,
        fault_kinds=args.fault_kinds, seed=args.seed,
        stall_seconds=args.stall_seconds, request_log=args.request_log,
        universe_html=args.universe_html, history_limit_years=args.history_limit_years,
        market_size=0 if args.bars else args.market_size)
    for revision in args.revise:
        day, _, percent = revision.partition(":")
        server.revise_after_first_answer(day, preliminary_bars(market, day, float(percent or 1)))
    return serve_until_stopped(server)


def serve_until_stopped(server: "PolygonServer") -> int:
    """A command line's server: its URL on the first line of stdout, then serve until Ctrl-C or
    SIGTERM (both through KeyboardInterrupt), then a clean stop. Exit code 0."""
    print(f"listening on {server.url}", flush=True)
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
