"""A thin FRED client: ``fred/series`` and ``fred/series/observations`` with real-time periods.

Why not ``fredapi``: it opens its own connections (``urllib.request``), so it cannot
go through the project's guarded transport, which owns the deadline, the size cap,
the shared rate limiter (FRED allows 120 requests a minute per key) and the retry
policy; it also drops ``realtime_end`` and turns every answer into a pandas Series,
which loses the vintage periods this feature is about. Two endpoints and one
paging loop are little code, so this module asks for exactly what it needs through
an injected ``get_json(url, params) -> dict`` that performs one GET: in a run,
``source.fred.FredSource.get_json``.

FRED's facts this relies on (https://fred.stlouisfed.org/docs/api/fred/):

* a real-time period is closed at both ends; an observation's rows are its
  vintages, each with the real-time period in which it was the value; rows are
  clipped to the requested period (a vintage known since 2013 shows
  ``realtime_start`` = the request's start);
* ``realtime_end`` 9999-12-31 means "still current";
* ``"."`` is FRED's marker for a missing value;
* a bad or missing key is answered HTTP 400 with ``error_code``/``error_message``
  naming ``api_key``; an unknown series is HTTP 400 "The series does not exist.";
* ``limit`` is at most 100000 rows; paging is by ``offset``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from CandleThrob.errors import RetriableError, SkippableError

EARLIEST_REALTIME = dt.date(1776, 7, 4)
OPEN_END = dt.date(9999, 12, 31)
MISSING = "."
MISSING_VALUE = "missing_value"
MAX_PAGE_LIMIT = 100_000

GetJson = Callable[[str, Mapping[str, str]], dict]
"""One HTTP GET of ``url`` with query ``params``: the parsed JSON object, or one of
the project's errors (RetriableError, SkippableError, AuthenticationError)."""

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# FRED writes plain decimals; float() alone would also take "1_000", "nan" and "inf".
_DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclasses.dataclass(frozen=True)
class SeriesInfo:
    series_id: str
    title: str
    units: str
    frequency: str
    frequency_short: str
    seasonal_adjustment: str
    last_updated: dt.datetime  # aware, as FRED states it ("2024-03-12 07:51:02-05")
    observation_start: dt.date | None
    observation_end: dt.date | None
    realtime_start: dt.date  # FRED's today when it answered: the date a check is good for


@dataclasses.dataclass(frozen=True)
class Vintage:
    """One value of one observation and the real-time period in which it was the value."""

    series_id: str
    observation_date: dt.date
    realtime_start: dt.date
    realtime_end: dt.date
    value: float | None
    note: str | None = None  # why value is None (MISSING_VALUE for FRED's ".")


@dataclasses.dataclass(frozen=True)
class RejectedRow:
    series_id: str
    row: Any  # as FRED sent it
    reason: str


@dataclasses.dataclass(frozen=True)
class VintageBatch:
    """What one ``observations`` call returned, with the real-time window it asked for:
    a row's ends equal to the window's may be the window's, not the vintage's."""

    series_id: str
    realtime_start: dt.date
    realtime_end: dt.date
    vintages: tuple[Vintage, ...]
    rejected: tuple[RejectedRow, ...]
    pages: int


class FredClient:
    """``series_info`` and ``observations`` over ``get_json``; every failure is one of the
    project's errors (see ``CandleThrob.errors``)."""

    def __init__(self, api_key: str, base_url: str, get_json: GetJson, *,
                 page_limit: int = MAX_PAGE_LIMIT, max_pages: int = 20):
        if not 1 <= page_limit <= MAX_PAGE_LIMIT or max_pages < 1:
            raise ValueError(f"need 1 <= page_limit <= {MAX_PAGE_LIMIT} and max_pages >= 1")
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._get_json = get_json
        self.page_limit = page_limit
        self.max_pages = max_pages

    def series_info(self, series_id: str) -> SeriesInfo:
        payload = self._get("/fred/series", {"series_id": series_id})
        try:
            entry = payload["seriess"][0]
            return SeriesInfo(
                series_id=entry["id"], title=entry["title"], units=entry["units"],
                frequency=entry["frequency"], frequency_short=entry["frequency_short"],
                seasonal_adjustment=entry["seasonal_adjustment"],
                last_updated=_last_updated(entry["last_updated"]),
                observation_start=_optional_date(entry.get("observation_start")),
                observation_end=_optional_date(entry.get("observation_end")),
                realtime_start=_date(entry["realtime_start"]))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            # A 200 of the wrong shape is a garbled answer (a proxy, a cut body), not the series.
            raise RetriableError(f"fred/series {series_id}: unexpected answer ({type(exc).__name__})") from None

    def observations(self, series_id: str, realtime_start: dt.date, realtime_end: dt.date | None = None,
                     observation_start: dt.date | None = None) -> VintageBatch:
        """Every vintage whose real-time period meets [realtime_start, realtime_end]
        (default: still current), following ``offset`` pages up to ``max_pages``."""
        realtime_end = realtime_end or OPEN_END
        params = {"series_id": series_id, "realtime_start": realtime_start.isoformat(),
                  "realtime_end": realtime_end.isoformat(), "sort_order": "asc",
                  "limit": str(self.page_limit)}
        if observation_start is not None:
            params["observation_start"] = observation_start.isoformat()
        vintages: list[Vintage] = []
        rejected: list[RejectedRow] = []
        offset, pages, total, previous_first = 0, 0, None, None
        while True:
            if pages == self.max_pages:
                raise SkippableError(f"fred/series/observations {series_id}: more than {self.max_pages} "
                                     f"pages of {self.page_limit} rows")
            rows, count, echoed = _page(series_id, self._get("/fred/series/observations",
                                                             {**params, "offset": str(offset)}))
            pages += 1
            if echoed != offset or (not rows and offset < count) or (rows and rows[0] == previous_first):
                raise RetriableError(f"fred/series/observations {series_id}: the page at offset {offset} "
                                     "does not advance")
            if total is not None and count != total:
                raise RetriableError(f"fred/series/observations {series_id}: the series changed while paging "
                                     f"({total} rows, then {count})")
            total, previous_first = count, rows[0] if rows else None
            for row in rows:
                parsed = parse_row(series_id, row)
                (rejected if isinstance(parsed, RejectedRow) else vintages).append(parsed)
            offset += len(rows)
            if offset >= count:
                return VintageBatch(series_id, realtime_start, realtime_end, tuple(vintages), tuple(rejected),
                                    pages)

    def _get(self, path: str, params: Mapping[str, str]) -> dict:
        return self._get_json(self._base_url + path, {**params, "api_key": self._api_key, "file_type": "json"})


def _page(series_id: str, payload: dict) -> tuple[list, int, Any]:
    rows, count = payload.get("observations"), payload.get("count")
    if not isinstance(rows, list) or not isinstance(count, int) or isinstance(count, bool):
        raise RetriableError(f"fred/series/observations {series_id}: unexpected answer (no observations or count)")
    return rows, count, payload.get("offset")


def parse_row(series_id: str, row: Any) -> Vintage | RejectedRow:
    """One ``observations`` row as a Vintage, or as a RejectedRow saying what is wrong."""
    if not isinstance(row, dict):
        return RejectedRow(series_id, row, "not an object")
    dates = {}
    for name in ("date", "realtime_start", "realtime_end"):
        text = row.get(name)
        try:
            dates[name] = _date(text)
        except (TypeError, ValueError):
            return RejectedRow(series_id, row, f"bad {name} {text!r}")
    if dates["realtime_start"] > dates["realtime_end"]:
        return RejectedRow(series_id, row, "realtime_start after realtime_end")
    text = row.get("value")
    if text == MISSING:
        value, note = None, MISSING_VALUE
    elif isinstance(text, str) and _DECIMAL.fullmatch(text) and math.isfinite(float(text)):
        value, note = float(text), None
    else:
        return RejectedRow(series_id, row, f"non-numeric value {text!r}")
    return Vintage(series_id, dates["date"], dates["realtime_start"], dates["realtime_end"], value, note)


def _date(text: Any) -> dt.date:
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        raise ValueError(f"not a YYYY-MM-DD date: {text!r}")
    return dt.date.fromisoformat(text)


def _optional_date(text: Any) -> dt.date | None:
    return None if text in (None, "") else _date(text)


def _last_updated(text: Any) -> dt.datetime:
    stamp = dt.datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        raise ValueError("last_updated without a UTC offset")
    return stamp
