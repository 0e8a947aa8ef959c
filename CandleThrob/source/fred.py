"""FRED as a source: every request bounded by ``HttpGuard``, spaced by a rate limiter within
FRED's published limit, and retried by the run's one ``RetryPolicy``, as Polygon's are.

``FredClient`` (``macro/fred.py``) knows FRED's endpoints and answers; this module only
carries its requests and says what a failure means:

=====================================  ==================================
HTTP 400 naming ``api_key``, or 401    AuthenticationError: fatal, exit 3
HTTP 429                               RateLimitedError, the limiter waits;
                                       a Retry-After beyond MAX_RETRY_AFTER
                                       is SkippableError (the series waits
                                       for the next run)
other statuses                         ``errors.error_for_status``'s table
                                       (400 "series does not exist": skip)
timeouts, resets, cut or non-JSON      RetriableError
bodies
=====================================  ==================================

FRED takes its key in the query string: messages name the path only, and whatever the
server sends back is scrubbed of the key before it reaches a message.
"""

from __future__ import annotations

import collections
import json
import threading
from typing import Any, Callable, Mapping, Optional
from urllib.parse import quote, urlsplit

from CandleThrob.config import AdvancedBatchConfig
from CandleThrob.errors import (AuthenticationError, CandleThrobError, ConfigError, RetriableError, SkippableError,
                                error_for_status)
from CandleThrob.logs import scrub
from CandleThrob.macro.fred import FredClient
from CandleThrob.source.http import Answer, HttpGuard, retry_after_seconds
from CandleThrob.source.polygon import SourceStats
from CandleThrob.source.ratelimit import RateLimiter
from CandleThrob.source.retry import RetryPolicy

FRED_CALLS_PER_MINUTE = 120  # FRED's published limit per key
# A burst of 20, then one call every 0.6 s: no 60-second window holds more than
# 20 + 100 = 120 calls, and a night's one or two calls per series never wait.
FRED_BURST = 20
FRED_SPACING = 60 / (FRED_CALLS_PER_MINUTE - FRED_BURST)


def fred_rate_limiter(sleep: Callable[[float], None]) -> RateLimiter:
    return RateLimiter.from_seconds(FRED_SPACING, burst=FRED_BURST, sleep=sleep)


class FredSource:
    """``client`` is a ``FredClient`` whose every request goes through this source."""

    def __init__(self, api_key: str, base_url: str, *, rate_limiter: Optional[RateLimiter] = None,
                 retry_policy: Optional[RetryPolicy] = None, timeout: float = 30.0, max_bytes: int = 64 * 2**20,
                 max_retry_after: float = 300.0, on_abort: Optional[Callable[[], Exception]] = None):
        self.secrets = [api_key, quote(api_key, safe="")]
        self.max_retry_after = max_retry_after
        self.http = HttpGuard(timeout=timeout, max_bytes=max_bytes, maxsize=2, check_status=self._status_error,
                              on_abort=on_abort)
        self.rate_limiter = rate_limiter or RateLimiter(calls_per_minute=None)
        self.retry_policy = retry_policy or RetryPolicy(max_retries=3, base_delay=1.0)
        self.client = FredClient(api_key, base_url, self.get_json)
        self._lock = threading.Lock()
        self.calls: collections.Counter = collections.Counter()
        self.failed_calls: collections.Counter = collections.Counter()

    @classmethod
    def from_config(cls, config: AdvancedBatchConfig, sleep: Callable[[float], None],
                    on_abort: Optional[Callable[[], Exception]] = None) -> "FredSource":
        """The run's FRED source (``sleep`` is the run's interruptible wait). No key is a
        usage error, raised before any write."""
        if not config.fred_api_key:
            raise ConfigError("FRED_API_KEY is not set. Macro series need a FRED key (free: "
                              "https://fred.stlouisfed.org/docs/api/api_key.html); put it in the environment "
                              "or in .env (FRED_API_KEY=...).")
        return cls(config.fred_api_key, config.fred_base_url, rate_limiter=fred_rate_limiter(sleep),
                   retry_policy=RetryPolicy.from_config(config, sleep), timeout=config.request_timeout,
                   max_bytes=int(config.max_response_mb * 2**20), max_retry_after=config.max_retry_after,
                   on_abort=on_abort)

    def get_json(self, url: str, params: Mapping[str, str]) -> dict:
        """One GET (FredClient's transport): the policy retries it, each attempt waits for the limiter."""
        path = urlsplit(url).path

        def attempt() -> dict:
            with self._lock:
                self.calls[path] += 1
            try:
                return _decode(self.http.request("GET", url, fields=dict(params)), path)
            except Exception:
                with self._lock:
                    self.failed_calls[path] += 1
                raise

        return self.retry_policy.call(attempt, rate_limiter=self.rate_limiter)

    def stats(self) -> SourceStats:
        with self._lock:
            calls, failed = dict(self.calls), dict(self.failed_calls)
        return SourceStats(calls=calls, failed_calls=failed,
                           retries_by_category={k.value: v for k, v in self.retry_policy.stats.items() if v},
                           rate_limited=self.rate_limiter.rate_limited_count)

    def close(self) -> None:
        self.http.close()

    def _status_error(self, answer: Answer) -> CandleThrobError:
        """The error a non-200 answer stands for, its text scrubbed of the key."""
        message = scrub(_error_text(answer), self.secrets)
        path = urlsplit(answer.url).path
        if answer.status == 401 or (answer.status == 400 and "api_key" in message):
            return AuthenticationError(f"FRED refused the key (HTTP {answer.status}: {message}); "
                                       "check FRED_API_KEY")
        if answer.status == 429:
            seconds = retry_after_seconds(answer.headers)
            if seconds is not None and seconds > self.max_retry_after:
                return SkippableError(f"{path}: FRED asked to wait {seconds:.0f} s (Retry-After), more than "
                                      f"MAX_RETRY_AFTER={self.max_retry_after:g} s; the series is left for the "
                                      "next run", status=429)
            return error_for_status(429, f"{path}: rate limited (HTTP 429)", retry_after=seconds)
        return error_for_status(answer.status, f"{path}: HTTP {answer.status}: {message}")


def _decode(answer: Answer, path: str) -> dict:
    try:
        body = json.loads(answer.data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RetriableError(f"{path}: truncated or unparsable response body", status=answer.status) from None
    if not isinstance(body, dict):
        raise RetriableError(f"{path}: the answer is a JSON {type(body).__name__}, not an object",
                             status=answer.status)
    return body


def _error_text(answer: Answer) -> str:
    """FRED's ``error_message``, or the start of whatever else came back."""
    try:
        body: Any = json.loads(answer.data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error_message"), str):
        return body["error_message"][:300]
    return answer.text()[:200]
