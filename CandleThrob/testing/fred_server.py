"""A local stand-in for FRED's ``fred/series`` and ``fred/series/observations`` (JSON only).

Serves vintages (ALFRED) with FRED's real-time semantics: each value of an
observation holds for a closed real-time period; a request for the period
[realtime_start, realtime_end] gets every (observation, vintage) whose period
meets it, with both ends clipped to the request. ``today`` is the server's now:
vintages released later do not exist yet, and one still current today shows
``realtime_end`` 9999-12-31. Keys are checked and refused with FRED's 400
bodies; it can misbehave (5xx, reset connections, stalls, truncated bodies, a
429 rate limit) like PolygonServer, whose loopback machinery it reuses.

    python -m CandleThrob.testing.fred_server --demo --start 2023-01-01 --end 2024-06-30

prints ``listening on http://HOST:PORT`` first and serves until killed.
Data come from ``--vintages`` CSV files (series_id, date, value, realtime_start,
realtime_end; value "." for missing) or from ``--demo``: a CPI-like monthly
series revised twice, an unemployment-like monthly series and a daily
Treasury-yield-like series with "." on holidays, all determined by ``--seed``.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import dataclasses
import datetime as dt
import itertools
import json
import math
import random
import re
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit
from zoneinfo import ZoneInfo

from CandleThrob.planning.trading_calendar import DateLike, TradingCalendar
from CandleThrob.testing.datagen import MarketData, to_date
from CandleThrob.testing.polygon_server import BadRequest, PolygonServer, _Handler, serve_until_stopped

FAULT_KINDS = ("5xx", "reset", "slow", "truncated")
EARLIEST, LATEST = dt.date(1776, 7, 4), dt.date(9999, 12, 31)
MAX_LIMIT = 100_000
FRED_TIME_ZONE = ZoneInfo("America/Chicago")  # last_updated is St. Louis time ("-05"/"-06")
_KEY_HELP = "  Read https://fred.stlouisfed.org/docs/api/api_key.html for more information."
# FRED's own words (errors.html, and answers its users quote); the other messages only follow its style.
KEY_NOT_SET = "Bad Request.  Variable api_key has not been set."
KEY_MALFORMED = "Bad Request.  The value for variable api_key is not a 32 character alpha-numeric lower-case string." \
    + _KEY_HELP
KEY_NOT_REGISTERED = "Bad Request.  The value for variable api_key is not registered." + _KEY_HELP
SERIES_MISSING = "Bad Request.  The series does not exist."
RATE_LIMITED = "Too Many Requests.  Up to 120 requests per minute are allowed."
_KEY_SHAPE = re.compile(r"[a-z0-9]{32}")
_SERVER_ERRORS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


# -- the data ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ServedVintage:
    date: dt.date
    realtime_start: dt.date
    realtime_end: dt.date
    value: str  # as FRED writes it; "." for missing
    updated_at: dt.datetime  # when FRED put it up (aware): what moves last_updated


@dataclasses.dataclass(frozen=True)
class SeriesMeta:
    title: str
    units: str
    units_short: str
    frequency: str
    frequency_short: str
    seasonal_adjustment: str = "Not Seasonally Adjusted"
    seasonal_adjustment_short: str = "NSA"
    notes: str = ""


@dataclasses.dataclass(frozen=True)
class SeriesView:
    """A series as FRED shows it on one day: only vintages released by then."""

    meta: SeriesMeta
    vintages: list[ServedVintage]  # by (date, realtime_start); still current: realtime_end = LATEST
    last_updated: dt.datetime


class FredData:
    """Vintages of several series; safe to change while a server reads them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._meta: dict[str, SeriesMeta] = {}
        self._vintages: dict[str, dict[dt.date, list[ServedVintage]]] = {}

    @property
    def series_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._meta)

    def add_series(self, series_id: str, meta: SeriesMeta) -> None:
        with self._lock:
            self._meta[series_id] = meta
            self._vintages.setdefault(series_id, {})

    def add_vintage(self, series_id: str, date: DateLike, value: str, realtime_start: DateLike,
                    realtime_end: DateLike = LATEST, updated_at: dt.datetime | None = None) -> None:
        """Add one vintage with an explicit real-time period (as a vintages file states it)."""
        date, start, end = to_date(date), to_date(realtime_start), to_date(realtime_end)
        if start > end:
            raise ValueError(f"{series_id} {date}: realtime_start {start} is after realtime_end {end}")
        with self._lock:
            rows = self._rows(series_id, date)
            if any(r.realtime_start <= end and start <= r.realtime_end for r in rows):
                raise ValueError(f"{series_id} {date}: the vintage from {start} overlaps another")
            self._insert(rows, ServedVintage(date, start, end, value, self._stamp(series_id, start, updated_at)))

    def publish(self, series_id: str, date: DateLike, value: str, released: DateLike,
                updated_at: dt.datetime | None = None) -> None:
        """Release ``value`` for observation ``date`` on ``released``: its first release, or a
        revision that ends the vintage current until then the day before."""
        date, released = to_date(date), to_date(released)
        with self._lock:
            rows = self._rows(series_id, date)
            if any(r.realtime_start >= released for r in rows):
                raise ValueError(f"{series_id} {date}: a vintage from {released} or later exists")
            if rows and rows[-1].realtime_end >= released:
                rows[-1] = dataclasses.replace(rows[-1], realtime_end=released - dt.timedelta(days=1))
            self._insert(rows, ServedVintage(date, released, LATEST, value,
                                             self._stamp(series_id, released, updated_at)))

    def last_release(self) -> dt.date | None:
        with self._lock:
            starts = [r.realtime_start for dates in self._vintages.values() for rows in dates.values()
                      for r in rows]
        return max(starts) if starts else None

    def view(self, series_id: str, today: dt.date) -> SeriesView | None:
        """The series as known on ``today``, or None if FRED would not know it yet."""
        with self._lock:
            meta = self._meta.get(series_id)
            dates = self._vintages.get(series_id, {})
            known = [r for date in sorted(dates) for r in dates[date] if r.realtime_start <= today]
        if meta is None or not known:
            return None
        # A vintage superseded only after today is still the current one today.
        shown = [r if r.realtime_end < today else dataclasses.replace(r, realtime_end=LATEST) for r in known]
        return SeriesView(meta, shown, max(r.updated_at for r in known))

    def _rows(self, series_id: str, date: dt.date) -> list[ServedVintage]:
        if series_id not in self._meta:
            raise KeyError(f"unknown series {series_id}: add_series first")
        return self._vintages[series_id].setdefault(date, [])

    @staticmethod
    def _insert(rows: list[ServedVintage], vintage: ServedVintage) -> None:
        bisect.insort(rows, vintage, key=lambda r: r.realtime_start)

    def _stamp(self, series_id: str, released: dt.date, updated_at: dt.datetime | None) -> dt.datetime:
        if updated_at is not None:
            return updated_at
        # Shortly after a morning release; later than anything already up by that day, so
        # each update moves last_updated, as FRED's to-the-second stamps do.
        stamp = dt.datetime.combine(released, dt.time(7, 51, 2), FRED_TIME_ZONE)
        earlier = [r.updated_at for rows in self._vintages[series_id].values() for r in rows
                   if r.realtime_start <= released]
        return max([stamp] + [u + dt.timedelta(seconds=1) for u in earlier])


def fred_timestamp(moment: dt.datetime) -> str:
    """FRED's ``last_updated``: St. Louis time, offset in hours ("2024-03-12 07:51:02-05")."""
    local = moment.astimezone(FRED_TIME_ZONE)
    return f"{local:%Y-%m-%d %H:%M:%S}{int(local.utcoffset().total_seconds() // 3600):+03d}"


# -- data from files -------------------------------------------------------------------

VINTAGE_COLUMNS = ("series_id", "date", "value", "realtime_start", "realtime_end")
_FREQUENCIES = ((1, "Daily", "D"), (7, "Weekly", "W"), (31, "Monthly", "M"), (92, "Quarterly", "Q"))


def load_vintages_csv(paths: Iterable[str | Path], data: FredData | None = None) -> FredData:
    """Vintages files (``VINTAGE_COLUMNS``; realtime_end may be 9999-12-31) into ``data``."""
    data = data if data is not None else FredData()
    rows = []
    for path in paths:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = set(VINTAGE_COLUMNS) - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{path}: missing columns {sorted(missing)}")
            rows.extend(reader)
    by_series: dict[str, list[dict]] = {}
    for row in rows:
        by_series.setdefault(row["series_id"].strip(), []).append(row)
    for series_id, series_rows in by_series.items():
        name, short = _frequency(sorted({to_date(r["date"].strip()) for r in series_rows}))
        data.add_series(series_id, SeriesMeta(series_id, "Units", "Units", name, short))
        for row in series_rows:
            data.add_vintage(series_id, row["date"].strip(), row["value"].strip(), row["realtime_start"].strip(),
                             row["realtime_end"].strip() or LATEST)
    return data


def _frequency(dates: list[dt.date]) -> tuple[str, str]:
    """FRED's frequency name for dates this far apart (most common gap)."""
    gaps = [(b - a).days for a, b in itertools.pairwise(dates)]
    typical = max(set(gaps), key=gaps.count) if gaps else 366
    return next(((name, short) for days, name, short in _FREQUENCIES if typical <= days), ("Annual", "A"))


# -- generated data --------------------------------------------------------------------

DEMO_SERIES = {
    "CPIAUCSL": SeriesMeta("Consumer Price Index for All Urban Consumers: All Items in U.S. City Average",
                           "Index 1982-1984=100", "Index 1982-1984=100", "Monthly", "M", "Seasonally Adjusted",
                           "SA", "Generated by CandleThrob's FRED test server."),
    "UNRATE": SeriesMeta("Unemployment Rate", "Percent", "%", "Monthly", "M", "Seasonally Adjusted", "SA",
                         "Generated by CandleThrob's FRED test server."),
    "DGS10": SeriesMeta("Market Yield on U.S. Treasury Securities at 10-Year Constant Maturity, Quoted on an "
                        "Investment Basis", "Percent", "%", "Daily", "D",
                        notes="Generated by CandleThrob's FRED test server."),
}


def generate_demo(start: DateLike, end: DateLike, seed: int = 0) -> FredData:
    """Demo series observed from ``start`` and released up to ``end`` (the default today).

    * CPIAUCSL: monthly; month M's value is first released on a weekday between the
      10th and 15th of M+1 and revised at each of the next two monthly releases.
    * UNRATE: monthly, released on the first Friday from the 3rd of M+1, never revised.
    * DGS10: every weekday, released the next weekday; "." where NYSE is closed (the
      bond market's holidays, near enough).

    The same seed and dates give the same data; a later ``end`` only adds to it.
    """
    start, end = to_date(start), to_date(end)
    data = FredData()
    for series_id, meta in DEMO_SERIES.items():
        data.add_series(series_id, meta)
    _generate_cpi(data, start, end, seed)
    _generate_unrate(data, start, end, seed)
    _generate_dgs10(data, start, end, seed)
    return data


def _months(start: dt.date, released: Callable[[dt.date], dt.date], end: dt.date) -> list[dt.date]:
    """First days of the months from ``start``'s whose first release is by ``end``."""
    month, out = start.replace(day=1), []
    while released(month) <= end:
        out.append(month)
        month = _next_month(month)
    return out


def _next_month(day: dt.date) -> dt.date:
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def _cpi_release(month: dt.date, seed: int) -> dt.date:
    # Its own stream per month: a longer range never moves an earlier release date.
    day = _next_month(month).replace(day=random.Random(f"{seed}:CPIAUCSL:{month}").randint(10, 15))
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return day


def _generate_cpi(data: FredData, start: dt.date, end: dt.date, seed: int) -> None:
    rng = random.Random(f"{seed}:CPIAUCSL")
    level = 250.0 + rng.uniform(0, 60)
    for month in _months(start, lambda m: _cpi_release(m, seed), end):
        level *= 1 + rng.gauss(0.0025, 0.002)
        final = round(level, 3)
        # Revisions of a few thousandths, never zero, so each vintage differs from the last.
        first = final + rng.choice((-1, 1)) * rng.randint(20, 90) / 1000
        second = final + rng.choice((-1, 1)) * rng.randint(1, 19) / 1000
        releases = [_cpi_release(month, seed)]
        releases += [_cpi_release(_next_month(month), seed), _cpi_release(_next_month(_next_month(month)), seed)]
        for value, released in zip((first, second, final), releases):
            if released <= end:
                data.publish("CPIAUCSL", month, f"{value:.3f}", released)


def _unrate_release(month: dt.date) -> dt.date:
    day = _next_month(month).replace(day=3)
    return day + dt.timedelta(days=(4 - day.weekday()) % 7)


def _generate_unrate(data: FredData, start: dt.date, end: dt.date, seed: int) -> None:
    rng = random.Random(f"{seed}:UNRATE")
    rate = rng.uniform(3.4, 4.5)
    for month in _months(start, _unrate_release, end):
        rate = min(max(rate + rng.choice((-0.1, 0.0, 0.0, 0.1)), 3.0), 9.0)
        data.publish("UNRATE", month, f"{rate:.1f}", _unrate_release(month))


def _next_weekday(day: dt.date) -> dt.date:
    day += dt.timedelta(days=1)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return day


def _generate_dgs10(data: FredData, start: dt.date, end: dt.date, seed: int) -> None:
    rng = random.Random(f"{seed}:DGS10")
    calendar = TradingCalendar(start=start, end=end)
    yield_ = rng.uniform(3.5, 4.5)
    day = start if start.weekday() < 5 else _next_weekday(start)
    while _next_weekday(day) <= end:
        released = _next_weekday(day)
        stamp = dt.datetime.combine(released, dt.time(15, 16, 3), FRED_TIME_ZONE)
        if calendar.is_session(day):
            yield_ = max(0.05, yield_ + rng.gauss(0, 0.05))
            data.publish("DGS10", day, f"{yield_:.2f}", released, updated_at=stamp)
        else:
            data.publish("DGS10", day, ".", released, updated_at=stamp)
        day = released


# -- endpoints: (server, params) -> JSON payload of a 200 -----------------------------

def _date_param(params: dict, name: str) -> dt.date | None:
    text = params.get(name)
    if text is None:
        return None
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError
        return dt.date.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"Bad Request.  Variable {name} is not a valid YYYY-MM-DD formatted date.") from None


def _int_param(params: dict, name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not re.fullmatch(r"\d+", text) or not low <= int(text) <= high:
        raise BadRequest(f"Bad Request.  Variable {name} is not between {low} and {high}.")
    return int(text)


def _realtime_window(params: dict, today: dt.date) -> tuple[dt.date, dt.date]:
    """FRED's defaults (realtime_period.html): both unset is today; with only one set,
    the other end is open ("realtime_start=1980-01-01" means 1980 and later)."""
    start, end = _date_param(params, "realtime_start"), _date_param(params, "realtime_end")
    if start is None and end is None:
        start = end = today
    start, end = start or EARLIEST, end or LATEST
    if start > end:
        raise BadRequest("Bad Request.  The value for variable realtime_start is after the value for "
                         "variable realtime_end.")
    return start, end


def _series_view(server: FredServer, params: dict) -> SeriesView:
    if params.get("file_type") != "json":
        raise BadRequest("Bad Request.  This server answers file_type=json only.")
    series_id = params.get("series_id", "")
    if not series_id:
        raise BadRequest("Bad Request.  Variable series_id is not set.")
    view = server.data.view(series_id, server.today)
    if view is None:
        raise BadRequest(SERIES_MISSING)
    return view


def series_observations(server: FredServer, params: dict) -> dict:
    view = _series_view(server, params)
    first, last = _realtime_window(params, server.today)
    obs_start = _date_param(params, "observation_start") or EARLIEST
    obs_end = _date_param(params, "observation_end") or LATEST
    if obs_start > obs_end:
        raise BadRequest("Bad Request.  The value for variable observation_start is after the value for "
                         "variable observation_end.")
    limit = _int_param(params, "limit", MAX_LIMIT, 1, MAX_LIMIT)
    offset = _int_param(params, "offset", 0, 0, sys.maxsize)
    order = params.get("sort_order", "asc")
    if order not in ("asc", "desc"):
        raise BadRequest("Bad Request.  Variable sort_order is not one of the values: 'asc', 'desc'.")
    rows = [{"realtime_start": max(v.realtime_start, first).isoformat(),
             "realtime_end": min(v.realtime_end, last).isoformat(),
             "date": v.date.isoformat(), "value": v.value}
            for v in view.vintages
            if obs_start <= v.date <= obs_end and v.realtime_start <= last and v.realtime_end >= first]
    if order == "desc":  # by date only: a date's vintages stay in real-time order
        rows.sort(key=lambda row: row["date"], reverse=True)
    return {"realtime_start": first.isoformat(), "realtime_end": last.isoformat(),
            "observation_start": obs_start.isoformat(), "observation_end": obs_end.isoformat(),
            "units": "lin", "output_type": 1, "file_type": "json", "order_by": "observation_date",
            "sort_order": order, "count": len(rows), "offset": offset, "limit": limit,
            "observations": rows[offset:offset + limit]}


def series(server: FredServer, params: dict) -> dict:
    view = _series_view(server, params)
    first, last = _realtime_window(params, server.today)
    meta, dates = view.meta, [v.date for v in view.vintages]
    entry = {"id": params["series_id"], "realtime_start": first.isoformat(), "realtime_end": last.isoformat(),
             "title": meta.title, "observation_start": min(dates).isoformat(),
             "observation_end": max(dates).isoformat(), "frequency": meta.frequency,
             "frequency_short": meta.frequency_short, "units": meta.units, "units_short": meta.units_short,
             "seasonal_adjustment": meta.seasonal_adjustment,
             "seasonal_adjustment_short": meta.seasonal_adjustment_short,
             "last_updated": fred_timestamp(view.last_updated), "popularity": 50}
    if meta.notes:  # FRED leaves notes out when a series has none
        entry["notes"] = meta.notes
    return {"realtime_start": first.isoformat(), "realtime_end": last.isoformat(), "seriess": [entry]}


_ROUTES = {"/fred/series/observations": series_observations, "/fred/series": series}


# -- the server ---------------------------------------------------------------------------

class FredServer(PolygonServer):
    """FRED's series endpoints over ``data`` on a real loopback socket.

    It reuses PolygonServer's machinery (socket bound at construction so ``url`` is
    known before ``start()``, threads, clean stop, fault draws, rate limit, request
    log in ``requests``) and leaves its market empty. ``today`` (default: the last
    release in the data) is the server's now and may be moved while it runs; so may
    ``data`` (``data.publish`` adds a revision). ``api_key`` None accepts any key of
    FRED's shape (32 lower-case letters and digits).
    """

    def __init__(self, data: FredData, *, host: str = "127.0.0.1", port: int = 0,
                 api_key: str | None = None, today: DateLike | None = None,
                 calls_per_minute: int | None = None, window_seconds: float = 60.0,
                 send_retry_after: bool = False, fault_rate: float = 0.0,
                 fault_kinds: Iterable[str] = FAULT_KINDS, seed: int = 0, stall_seconds: float = 30.0,
                 request_log: str | Path | None = None):
        fault_kinds = tuple(fault_kinds)
        unknown = set(fault_kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
        if api_key is not None and not _KEY_SHAPE.fullmatch(api_key):
            raise ValueError("a FRED key is 32 lower-case letters and digits")
        self.data = data
        super().__init__(MarketData(), host=host, port=port, api_key=api_key, today=today,
                         calls_per_minute=calls_per_minute, window_seconds=window_seconds,
                         send_retry_after=send_retry_after, fault_rate=fault_rate, fault_kinds=fault_kinds,
                         seed=seed, stall_seconds=stall_seconds, request_log=request_log)
        # PolygonServer's socket server is built for Polygon's routes; FRED's handler answers instead.
        self._httpd.RequestHandlerClass = _FredHandler

    @property
    def today(self) -> dt.date:
        # Without data nor a date there is nothing to be late for: the machine's date will do.
        return self._today or self.data.last_release() or dt.date.today()

    @today.setter
    def today(self, value: DateLike | None) -> None:
        self._today = None if value is None else to_date(value)

    def key_error(self, key: str) -> str | None:
        """FRED's message refusing ``key``, or None if it is accepted."""
        if not key:
            return KEY_NOT_SET
        if not _KEY_SHAPE.fullmatch(key):
            return KEY_MALFORMED
        if self.api_key is not None and key != self.api_key:
            return KEY_NOT_REGISTERED
        return None


def _without_api_key(query: str) -> str:
    """The raw query string minus ``api_key``: the key never reaches a log."""
    return "&".join(p for p in query.split("&") if p and unquote(p.split("=", 1)[0]) != "api_key")


def _error(status: int, message: str) -> dict:
    return {"error_code": status, "error_message": message}


class _FredHandler(_Handler):
    """Polygon's handler (keep-alive, tracked connections, resets) with FRED's routes and bodies."""

    def do_GET(self) -> None:
        app = self.server.app
        url = urlsplit(self.path)
        endpoint = _ROUTES.get(unquote(url.path))
        if endpoint is None:
            return self._send_json(404, _error(404, "Not Found"))
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        refused = app.key_error(params.get("api_key", ""))
        if refused:
            return self._send_json(400, _error(400, refused))
        wait = app.rate_limit_wait()
        if wait is not None:
            headers = {"Retry-After": str(max(1, math.ceil(wait)))} if app.send_retry_after else {}
            return self._send_json(429, _error(429, RATE_LIMITED), headers)
        fault, fault_status = app.draw_fault(grouped=False)
        if fault == "reset":
            return self._reset()
        if fault == "5xx":
            return self._send_json(fault_status, _error(fault_status, _SERVER_ERRORS[fault_status]), fault=fault)
        if fault == "slow":
            app.stall()
        try:
            status, payload = 200, endpoint(app, params)
        except BadRequest as error:
            status, payload = 400, _error(400, str(error))
        body = json.dumps(payload, separators=(",", ":")).encode()
        if fault == "truncated":
            body = body[:len(body) // 2]
        self._send(status, body, "application/json; charset=UTF-8", fault=fault)

    def _not_allowed(self) -> None:
        self._send_json(405, _error(405, f"Method {self.command} not allowed"), {"Allow": "GET"})

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _not_allowed

    def _record(self, status: int | None, fault: str | None) -> None:
        url = urlsplit(self.path)
        self.server.app.record(url.path, _without_api_key(url.query), status, fault)


# -- command line ---------------------------------------------------------------------------

def _fault_kinds(text: str) -> list[str]:
    kinds = [k for k in text.split(",") if k]
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {sorted(unknown)}; known: {','.join(FAULT_KINDS)}")
    return kinds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m CandleThrob.testing.fred_server",
                                     description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--demo", action="store_true", help="serve generated series (see --start, --end, --seed)")
    source.add_argument("--vintages", action="append", metavar="CSV",
                        help="series_id,date,value,realtime_start,realtime_end (repeatable)")
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=0, help="0: any free port")
    add("--start", type=to_date, default=dt.date(2020, 1, 1), help="demo: first observation date")
    add("--end", type=to_date, help="demo: last release date (default: today)")
    add("--seed", type=int, default=0, help="demo data and fault draws")
    add("--today", type=to_date, help="the server's now (default: the last release in the data)")
    add("--api-key", help="accept only this key (default: any key of FRED's shape)")
    add("--calls-per-minute", type=int, help="rate limit (FRED allows 120)")
    add("--rate-window", type=float, default=60.0, metavar="SECONDS", help="the rate limit's window")
    add("--send-retry-after", action="store_true", help="send Retry-After with 429")
    add("--fault-rate", type=float, default=0.0, help="share of requests that fail")
    add("--fault-kinds", type=_fault_kinds, default=list(FAULT_KINDS),
        help="comma-separated subset of " + ",".join(FAULT_KINDS))
    add("--stall-seconds", type=float, default=30.0, help="how long a 'slow' fault stalls")
    add("--request-log", metavar="FILE", help="one JSON line per request")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.demo:
        data = generate_demo(args.start, args.end or dt.date.today(), args.seed)
    else:
        data = load_vintages_csv(args.vintages)
    server = FredServer(data, host=args.host, port=args.port, api_key=args.api_key, today=args.today,
                        calls_per_minute=args.calls_per_minute, window_seconds=args.rate_window,
                        send_retry_after=args.send_retry_after, fault_rate=args.fault_rate,
                        fault_kinds=args.fault_kinds, seed=args.seed, stall_seconds=args.stall_seconds,
                        request_log=args.request_log)
    return serve_until_stopped(server)


if __name__ == "__main__":
    sys.exit(main())
