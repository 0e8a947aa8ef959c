"""Polygon (Massive) as a source of daily bars, through the official client.

The client's own urllib3 retries are switched off: its fast retries would spend
the free tier's five calls a minute in under a second. Every HTTP request here
waits for the shared ``RateLimiter``, and failures are classified into our
error taxonomy so that ``RetryPolicy`` alone decides what happens next:

====================================  ==================================
an HTTP error status                  ``errors.error_for_status``'s table
timeouts, resets, refused             RetriableError
truncated or unparsable JSON          RetriableError
grouped day empty / far too small     RetriableError
====================================  ==================================
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional
from urllib.parse import urlparse

import pandas as pd
import urllib3
from massive import RESTClient
from massive.exceptions import BadResponse

from CandleThrob.bars import bars_from_polygon
from CandleThrob.config import AdvancedBatchConfig
from CandleThrob.errors import ConfigError, RetriableError, error_for_status
from CandleThrob.source.ratelimit import RateLimiter
from CandleThrob.source.retry import RetryPolicy

RANGE_LIMIT = 50_000  # the aggregates endpoint's maximum bars per page


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


class _StatusRecorder:
    """Wraps the client's urllib3 pool to keep each thread's last status and headers:
    the client raises ``BadResponse`` with only the body, and we need the code."""

    def __init__(self, pool: urllib3.PoolManager):
        self._pool = pool
        self.last = threading.local()

    def request(self, *args, **kwargs):
        self.last.status, self.last.headers = None, {}
        response = self._pool.request(*args, **kwargs)
        self.last.status, self.last.headers = response.status, response.headers
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


class PolygonSource:
    """Range, grouped-daily and splits requests, each one counted as an API call."""

    def __init__(self, api_key: str, base_url: str = "https://api.polygon.io", *,
                 rate_limiter: Optional[RateLimiter] = None, retry_policy: Optional[RetryPolicy] = None,
                 timeout: float = 30.0, connect_timeout: float = 10.0, pool_size: int = 8):
        self.base_url = base_url.rstrip("/")
        self.client = RESTClient(api_key=api_key, base=self.base_url,
                                 connect_timeout=min(connect_timeout, timeout), read_timeout=timeout,
                                 retries=0, maxsize=pool_size,
                                 connection_pool_kw={"retries": False})
        self._recorder = _StatusRecorder(self.client.client)
        self.client.client = self._recorder
        self.rate_limiter = rate_limiter or RateLimiter(calls_per_minute=None)
        self.retry_policy = retry_policy or RetryPolicy(max_retries=3, base_delay=1.0)
        self._lock = threading.Lock()
        self.calls: collections.Counter = collections.Counter()
        self.failed_calls: collections.Counter = collections.Counter()

    # ---- public requests ----------------------------------------------------
    def fetch_range(self, ticker: str, start: dt.date, end: dt.date, adjusted: bool = True) -> pd.DataFrame:
        """All daily bars of one ticker in [start, end], following ``next_url``."""
        def first():
            return self.client.get_aggs(ticker, 1, "day", str(start), str(end), adjusted=adjusted,
                                        sort="asc", limit=RANGE_LIMIT, raw=True)

        return bars_from_polygon(self._paginate("range", first, what=f"{ticker} {start}..{end}"), ticker=ticker)

    def fetch_grouped(self, day: dt.date, adjusted: bool = True, min_tickers: int = 1) -> pd.DataFrame:
        """Every ticker's bar for one session. An OK answer with no results, or with
        fewer than ``min_tickers``, is a glitch of the vendor: retried, never taken
        as a day without data."""
        def request():
            return self.client.get_grouped_daily_aggs(str(day), adjusted=adjusted, raw=True)

        def check(body: dict) -> None:
            count = len(body.get("results") or [])
            if count < min_tickers:
                raise RetriableError(f"grouped day {day} answered with {count} tickers "
                                     f"(at least {min_tickers} expected)")

        body = self._call("grouped", request, what=f"grouped {day}", check=check)
        return bars_from_polygon(body.get("results") or [])

    def fetch_splits(self, since: Optional[dt.date], until: dt.date) -> list[dict]:
        """Splits executed in (since, until], all tickers, every page."""
        params: dict[str, Any] = {"execution_date_lte": str(until), "limit": 1000,
                                  "order": "asc", "sort": "execution_date"}
        if since is not None:
            params["execution_date_gt"] = str(since)
        results = self._paginate("splits", lambda: self.client.list_splits(raw=True, **params), what="splits")
        out = []
        for r in results:
            try:
                out.append({"ticker": str(r["ticker"]),
                            "execution_date": dt.date.fromisoformat(str(r["execution_date"])[:10]),
                            "split_from": float(r["split_from"]), "split_to": float(r["split_to"])})
            except (KeyError, TypeError, ValueError):
                continue  # a malformed split record cannot be applied; the price check still catches it
        return out

    def stats(self) -> SourceStats:
        with self._lock:
            calls, failed = dict(self.calls), dict(self.failed_calls)
        return SourceStats(calls=calls, failed_calls=failed,
                           retries_by_category={k.value: v for k, v in self.retry_policy.stats.items()},
                           rate_limited=self.rate_limiter.rate_limited_count)

    @classmethod
    def from_config(cls, config: AdvancedBatchConfig, sleep: Callable[[float], None]) -> "PolygonSource":
        """The run's one source, limiter and retry policy (``sleep`` is the run's
        interruptible wait). A missing key is a usage error, raised before any write."""
        if not config.polygon_api_key:
            raise ConfigError("POLYGON_API_KEY is not set. Put your Polygon/Massive key in the "
                              "environment or in .env (POLYGON_API_KEY=...), or try the built-in "
                              "demo: python -m CandleThrob.ingestion.ingest_data --demo")
        limiter = RateLimiter.from_seconds(config.rate_limit_seconds, sleep=sleep)
        policy = RetryPolicy(max_retries=config.max_retries, base_delay=config.retry_delay, sleep=sleep)
        return cls(config.polygon_api_key, config.polygon_base_url, rate_limiter=limiter, retry_policy=policy,
                   timeout=config.request_timeout, pool_size=max(4, config.workers))

    # ---- plumbing --------------------------------------------------------------
    def _paginate(self, endpoint: str, first: Callable, *, what: str) -> list:
        """Every page's ``results``, following ``next_url``; each page is one call."""
        body = self._call(endpoint, first, what=what)
        results = list(body.get("results") or [])
        while body.get("next_url"):
            path = self._relative(body["next_url"])
            body = self._call(endpoint, functools.partial(self.client._get, path=path, params={}, raw=True),
                              what=f"{what} (next page)")
            results.extend(body.get("results") or [])
        return results

    def _relative(self, next_url: str) -> str:
        if next_url.startswith(self.base_url):
            return next_url[len(self.base_url):]
        parsed = urlparse(next_url)
        return parsed.path + (f"?{parsed.query}" if parsed.query else "")

    def _call(self, endpoint: str, request: Callable, *, what: str,
              check: Optional[Callable[[dict], None]] = None) -> dict:
        """One logical request: the policy retries it, each attempt waits for the limiter."""
        def attempt() -> dict:
            with self._lock:
                self.calls[endpoint] += 1
            try:
                body = self._decode(self._send(request, what), what)
                if check is not None:
                    check(body)
            except Exception:
                with self._lock:
                    self.failed_calls[endpoint] += 1
                raise
            return body

        return self.retry_policy.call(attempt, rate_limiter=self.rate_limiter)

    def _send(self, request: Callable, what: str):
        try:
            return request()
        except BadResponse as exc:
            status = getattr(self._recorder.last, "status", None)
            headers = getattr(self._recorder.last, "headers", {}) or {}
            raise _classify_status(status, headers, str(exc), what) from None
        except urllib3.exceptions.HTTPError as exc:
            raise RetriableError(f"{what}: network error ({exc.__class__.__name__})") from None

    @staticmethod
    def _decode(response: urllib3.BaseHTTPResponse, what: str) -> dict:
        try:
            body = json.loads(response.data)
        except (ValueError, UnicodeDecodeError):
            raise RetriableError(f"{what}: truncated or unparsable response body") from None
        if not isinstance(body, dict):
            raise RetriableError(f"{what}: unexpected response shape")
        if str(body.get("status", "OK")).upper() not in ("OK", "DELAYED"):
            raise RetriableError(f"{what}: status {body.get('status')!r}")
        return body


def _classify_status(status: Optional[int], headers: Mapping[str, str], body: str, what: str) -> Exception:
    message = _error_text(body)
    if status == 401:
        return error_for_status(status, f"the data API refused the key (HTTP 401: {message}); "
                                        "check POLYGON_API_KEY")
    retry_after = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        seconds = float(retry_after) if retry_after is not None else None
    except ValueError:
        seconds = None
    text = f"{what}: rate limited (HTTP 429)" if status == 429 else f"{what}: HTTP {status}: {message}"
    return error_for_status(status, text, retry_after=seconds)


def _error_text(body: str) -> str:
    try:
        parsed = json.loads(body)
        return str(parsed.get("error") or parsed.get("message") or parsed.get("status"))[:200]
    except (ValueError, AttributeError):
        return body[:200]
