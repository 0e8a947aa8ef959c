"""Polygon (Massive) as a source of daily bars and corporate actions, through the official client.

The client's own urllib3 pool is replaced by ``HttpGuard`` (a deadline per
request, a size cap, an abort switch) and its retries are off: its fast
retries would spend the free tier's five calls a minute in under a second.
Every HTTP request waits for the shared ``RateLimiter``, and ``RetryPolicy``
alone decides what happens after a failure, which is classified here:

====================================  ==================================
an HTTP error status                  ``errors.error_for_status``'s table
403 "plan doesn't include this        ``HistoryWindowError``: the key's
data timeframe"                       history window (skipped, clamped)
429 asking for more than              SkippableError: left for the next
MAX_RETRY_AFTER                       run, the wait is not taken
timeouts, resets, refused, cut        RetriableError
truncated, unparsable or oddly        RetriableError
shaped JSON
a grouped answer for another day,     RetriableError: never stored
a range answer for another ticker
grouped day empty / far too small     RetriableError
a repeating or endless ``next_url``   SkippableError
====================================  ==================================

Vendor error texts are scrubbed of the key before they reach any message.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Optional, Sequence
from urllib.parse import quote, urlparse

import pandas as pd

from CandleThrob.bars import bars_from_polygon, session_dates
from CandleThrob.config import AdvancedBatchConfig
from CandleThrob.errors import (CandleThrobError, ConfigError, HistoryWindowError, RetriableError, SkippableError,
                                error_for_status)
from CandleThrob.logs import scrub
from CandleThrob.source.http import Answer, HttpGuard, retry_after_seconds
from CandleThrob.source.ratelimit import RateLimiter
from CandleThrob.source.retry import RetryPolicy

RANGE_LIMIT = 50_000  # the aggregates endpoint's maximum bars per page
LEDGER_LIMIT = 5_000  # events per page asked of the splits and dividends endpoints (their maximum)
MAX_LEDGER_PAGES = 100  # 500,000 events: far beyond any real answer to our filters
# How Polygon says a request reaches before the key's plan allows (free tier: two years).
_HISTORY_WINDOW_SIGNS = ("doesn't include this data timeframe", "NOT_AUTHORIZED")


@dataclass(frozen=True)
class SourceStats:
    """The data source's counters at the end of a run."""

    calls: dict[str, int] = field(default_factory=dict)  # by endpoint, retries included
    failed_calls: dict[str, int] = field(default_factory=dict)
    retries_by_category: dict[str, int] = field(default_factory=dict)
    rate_limited: int = 0

    @property
    def total(self) -> int:
        return sum(self.calls.values())


class PolygonSource:
    """Range, grouped-daily, splits and dividends requests, each one counted as an API call."""

    def __init__(self, api_key: str, base_url: str = "https://api.massive.com", *,
                 rate_limiter: Optional[RateLimiter] = None, retry_policy: Optional[RetryPolicy] = None,
                 timeout: float = 30.0, pool_size: int = 8, max_bytes: int = 64 * 2**20,
                 max_retry_after: float = 300.0, on_abort: Optional[Callable[[], Exception]] = None,
                 check_budget: Optional[Callable[[], None]] = None):
        # Imported here: ~0.3 s of models that a run with nothing to fetch, --plan or a usage error never needs.
        from massive import RESTClient

        self.base_url = base_url.rstrip("/")
        self.client = RESTClient(api_key=api_key, base=self.base_url, retries=0, maxsize=1)
        self.secrets = [api_key, quote(api_key, safe="")]
        self.max_retry_after = max_retry_after
        self.http = HttpGuard(timeout=timeout, max_bytes=max_bytes, headers=self.client.headers,
                              maxsize=pool_size, check_status=self._status_error, on_abort=on_abort)
        self.client.client = self.http
        self.rate_limiter = rate_limiter or RateLimiter(calls_per_minute=None)
        self.retry_policy = retry_policy or RetryPolicy(max_retries=3, base_delay=1.0)
        self.check_budget = check_budget or (lambda: None)
        self._lock = threading.Lock()
        self.calls: collections.Counter = collections.Counter()
        self.failed_calls: collections.Counter = collections.Counter()

    @classmethod
    def from_config(cls, config: AdvancedBatchConfig, sleep: Callable[[float], None],
                    on_abort: Optional[Callable[[], Exception]] = None,
                    check_budget: Optional[Callable[[], None]] = None) -> "PolygonSource":
        """The run's one source, limiter and retry policy (``sleep`` is the run's
        interruptible wait). A missing key is a usage error, raised before any write."""
        if not config.polygon_api_key:
            raise ConfigError("POLYGON_API_KEY is not set. Put your Polygon/Massive key in the "
                              "environment or in .env (POLYGON_API_KEY=...), or try the built-in "
                              "demo: python -m CandleThrob.ingestion.ingest_data --demo")
        burst = config.rate_burst or RateLimiter.per_minute_burst(config.rate_limit_seconds)
        limiter = RateLimiter.from_seconds(config.rate_limit_seconds, sleep=sleep, burst=burst)
        policy = RetryPolicy.from_config(config, sleep)
        return cls(config.polygon_api_key, config.polygon_base_url, rate_limiter=limiter, retry_policy=policy,
                   timeout=config.request_timeout, pool_size=max(4, config.workers),
                   max_bytes=int(config.max_response_mb * 2**20), max_retry_after=config.max_retry_after,
                   on_abort=on_abort, check_budget=check_budget)

    # ---- bars ---------------------------------------------------------------
    def fetch_range(self, ticker: str, start: dt.date, end: dt.date, adjusted: bool = False) -> pd.DataFrame:
        """All daily bars of one ticker in [start, end] (as traded unless ``adjusted``)."""
        def first() -> Answer:
            return self.client.get_aggs(ticker, 1, "day", str(start), str(end), adjusted=adjusted,
                                        sort="asc", limit=RANGE_LIMIT, raw=True)

        def same_ticker(body: dict) -> None:
            answered = body.get("ticker")
            if answered is not None and answered != ticker:
                raise RetriableError(f"{ticker} {start}..{end}: the answer is for ticker {str(answered)[:16]!r}")

        # A page holds up to RANGE_LIMIT bars; the span holds fewer sessions than days.
        pages = (end - start).days // RANGE_LIMIT + 2
        results = self._paginate("range", first, what=f"{ticker} {start}..{end}", max_pages=pages,
                                 check=same_ticker)
        return bars_from_polygon(results, ticker=ticker)

    def fetch_grouped(self, day: dt.date, adjusted: bool = False, min_tickers: int = 1,
                      tickers: Optional[Collection[str]] = None) -> pd.DataFrame:
        """Every ticker's bar for one session (only those of ``tickers`` when given: an
        answer lists the whole market, ~11,000 symbols, and converting the rest is waste).
        ``frame.attrs["answered"]`` is how many bars the answer held in all.

        An OK answer with no results, with fewer than ``min_tickers``, or with bars of
        another day is a glitch of the vendor: retried, never taken as that day's data."""
        def request() -> Answer:
            return self.client.get_grouped_daily_aggs(str(day), adjusted=adjusted, raw=True)

        def check(body: dict) -> None:
            results = _results(body, f"grouped {day}")
            if len(results) < min_tickers:
                raise RetriableError(f"grouped day {day} answered with {len(results)} tickers "
                                     f"(at least {min_tickers} expected)")
            dates = pd.Series(session_dates([r.get("t") for r in results]))  # one conversion per distinct stamp
            other = dates[dates != pd.Timestamp(day)]
            if len(other):
                shown = "no date" if pd.isna(other.iloc[0]) else str(other.iloc[0].date())
                raise RetriableError(f"grouped day {day} answered with {len(other)} bars of another day "
                                     f"(e.g. {shown}); not stored")

        body = self._call("grouped", request, what=f"grouped {day}", check=check)
        results = _results(body, f"grouped {day}")
        bars = bars_from_polygon(results, tickers=tickers)
        bars.attrs["answered"] = len(results)
        return bars

    # ---- corporate actions ------------------------------------------------------
    def fetch_splits(self, since: Optional[dt.date], until: dt.date,
                     tickers: Optional[Sequence[str]] = None) -> list[dict]:
        """Split records executed in (since, until] (all history when ``since`` is None),
        for ``tickers`` or for every ticker, every page, as the vendor sent them."""
        params = _ledger_params("execution_date", since, until, tickers)
        return self._paginate("splits", lambda: self.client.list_stocks_splits(raw=True, **params),
                              what="splits", max_pages=MAX_LEDGER_PAGES)

    def fetch_dividends(self, since: Optional[dt.date], until: dt.date,
                        tickers: Optional[Sequence[str]] = None) -> list[dict]:
        """Cash dividend records with ex-dates in (since, until], as the vendor sent them."""
        params = _ledger_params("ex_dividend_date", since, until, tickers)
        return self._paginate("dividends", lambda: self.client.list_stocks_dividends(raw=True, **params),
                              what="dividends", max_pages=MAX_LEDGER_PAGES)

    def fetch_ticker_events(self, ticker: str) -> list[tuple[dt.date, str]]:
        """The vendor's ``ticker_change`` events of the security now trading as ``ticker``:
        ``(date, the symbol it traded as from that date)``, oldest first. An experimental endpoint."""
        body = self._call("ticker_events", lambda: self.client.get_ticker_events(ticker, types="ticker_change",
                                                                                 raw=True),
                          what=f"ticker events of {ticker}")
        events = (body.get("results") or {}).get("events") if isinstance(body.get("results"), dict) else None
        found = []
        for event in events if isinstance(events, list) else []:
            change = event.get("ticker_change") if isinstance(event, dict) else None
            try:
                day = dt.date.fromisoformat(str(event.get("date")))
            except ValueError:
                continue  # a malformed event settles nothing
            if isinstance(change, dict) and isinstance(change.get("ticker"), str):
                found.append((day, change["ticker"].strip().upper()))
        return sorted(found)

    def stats(self) -> SourceStats:
        with self._lock:
            calls, failed = dict(self.calls), dict(self.failed_calls)
        return SourceStats(calls=calls, failed_calls=failed,
                           retries_by_category={k.value: v for k, v in self.retry_policy.stats.items()},
                           rate_limited=self.rate_limiter.rate_limited_count)

    def close(self) -> None:
        self.http.close()

    # ---- plumbing --------------------------------------------------------------
    def _paginate(self, endpoint: str, first: Callable[[], Answer], *, what: str, max_pages: int,
                  check: Optional[Callable[[dict], None]] = None) -> list:
        """Every page's ``results``, following ``next_url``; each page is one call. A page
        that points back to one already read, or more pages than the request can hold,
        is the vendor's bug: the call is skipped for this run, not repeated forever."""
        body = self._call(endpoint, first, what=what, check=check)
        results = list(_results(body, what))
        seen: set[str] = set()
        pages = 1
        while body.get("next_url"):
            next_url = str(body["next_url"])
            if next_url in seen:
                raise SkippableError(f"{what}: the answer's next_url repeats a page already read; "
                                     "the vendor's pagination loops, the call is left for the next run")
            if pages >= max_pages:
                raise SkippableError(f"{what}: more than {max_pages} pages, more than the request can hold; "
                                     "the vendor's pagination does not end, the call is left for the next run")
            seen.add(next_url)
            self.check_budget()  # a long chain of pages still respects MAX_PROCESSING_TIME
            path = self._relative(next_url)
            body = self._call(endpoint, functools.partial(self.client._get, path=path, params={}, raw=True),
                              what=f"{what} (page {pages + 1})", check=check)
            results.extend(_results(body, what))
            pages += 1
        return results

    def _relative(self, next_url: str) -> str:
        """The path and query of a ``next_url``, always asked of our own base URL."""
        if next_url.startswith(self.base_url):
            return next_url[len(self.base_url):]
        parsed = urlparse(next_url)
        return parsed.path + (f"?{parsed.query}" if parsed.query else "")

    def _call(self, endpoint: str, request: Callable[[], Answer], *, what: str,
              check: Optional[Callable[[dict], None]] = None) -> dict:
        """One logical request: the policy retries it, each attempt waits for the limiter."""
        def attempt() -> dict:
            with self._lock:
                self.calls[endpoint] += 1
            try:
                body = self._decode(request(), what)
                if check is not None:
                    check(body)
            except Exception:
                with self._lock:
                    self.failed_calls[endpoint] += 1
                raise
            return body

        return self.retry_policy.call(attempt, rate_limiter=self.rate_limiter)

    @staticmethod
    def _decode(answer: Answer, what: str) -> dict:
        try:
            body = json.loads(answer.data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise RetriableError(f"{what}: truncated or unparsable response body") from None
        if not isinstance(body, dict):
            raise RetriableError(f"{what}: unexpected response shape (a JSON {type(body).__name__}, "
                                 "not an object)")
        if str(body.get("status", "OK")).upper() not in ("OK", "DELAYED"):
            raise RetriableError(f"{what}: status {str(body.get('status'))[:40]!r}")
        return body

    def _status_error(self, answer: Answer) -> CandleThrobError:
        """The error a non-200 answer stands for, its text scrubbed of the key."""
        message = scrub(_error_text(answer.text()), self.secrets)
        where = answer.url.replace(self.base_url, "") or answer.url
        if answer.status == 401:
            return error_for_status(401, f"the data API refused the key (HTTP 401: {message}); "
                                         "check POLYGON_API_KEY")
        if answer.status == 403 and any(sign in answer.text() for sign in _HISTORY_WINDOW_SIGNS):
            return HistoryWindowError(f"{where}: HTTP 403: {message}")
        if answer.status == 429:
            seconds = retry_after_seconds(answer.headers)
            if seconds is not None and seconds > self.max_retry_after:
                return SkippableError(f"{where}: the API asked to wait {seconds:.0f} s (Retry-After), more than "
                                      f"MAX_RETRY_AFTER={self.max_retry_after:g} s; the call is left for the next run",
                                      status=429)
            return error_for_status(429, f"{where}: rate limited (HTTP 429)", retry_after=seconds)
        return error_for_status(answer.status, f"{where}: HTTP {answer.status}: {message}")


def _ledger_params(date_field: str, since: Optional[dt.date], until: dt.date,
                   tickers: Optional[Sequence[str]]) -> dict[str, Any]:
    params: dict[str, Any] = {f"{date_field}_lte": str(until), "limit": LEDGER_LIMIT, "sort": f"{date_field}.asc"}
    if since is not None:
        params[f"{date_field}_gt"] = str(since)
    if tickers:
        params["ticker_any_of"] = ",".join(tickers)
    return params


def _results(body: dict, what: str) -> list:
    """A body's ``results``: absent or null is none; anything but a list of objects is a bad body."""
    results = body.get("results")
    if results is None:
        return []
    if not isinstance(results, list):
        raise RetriableError(f"{what}: malformed body: 'results' is a JSON {type(results).__name__}, not a list")
    for index, row in enumerate(results):
        if not isinstance(row, dict):
            raise RetriableError(f"{what}: malformed body: results[{index}] is a JSON {type(row).__name__}, "
                                 "not an object")
    return results


def _error_text(body: str) -> str:
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            return str(parsed.get("error") or parsed.get("message") or parsed.get("status"))[:200]
    except ValueError:
        pass
    return body[:200]
