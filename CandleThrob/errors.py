"""Errors grouped by what the caller should do about them.

* ``FatalError``     -> stop the run now (exit 3): bad key, database unreachable.
* ``RetriableError`` -> the same request may succeed later: timeouts, 5xx, 429,
                        truncated bodies, grouped days answered empty.
* ``SkippableError`` -> permanent for one ticker or one source: skip it, record
                        why, go on.
* ``ConfigError``    -> bad configuration or usage (exit 2), raised before
                        anything is written.
* ``LockHeldError``  -> another run holds the lock (exit 4).

Each class's docstring is its message template, in the manner of sqlite-utils.
Every error may carry the pipeline ``stage`` it came from, so a log line or the
run report can say where a run broke.

``error_for_status`` is the one table from an HTTP status to an error: the
source, the retry policy and the universe fetcher all ask it.
"""

from __future__ import annotations

from typing import Optional


class CandleThrobError(Exception):
    """CandleThrob failed."""

    exit_code = 1
    #: The pipeline stage that raised it, set by the orchestrator.
    stage: Optional[str] = None


class ConfigError(CandleThrobError):
    """Bad configuration or usage."""

    exit_code = 2


class InvalidTickerError(ConfigError, ValueError):
    """Not a valid ticker symbol (a usage error, and a ValueError for library callers)."""

    def __init__(self, value: object, reason: str, allowed: str):
        super().__init__(f"{value!r} is not a valid ticker symbol: {reason}; allowed: {allowed}")
        self.value = value
        self.reason = reason


class ReadRequestError(ConfigError, ValueError):
    """A read asked for something that cannot be: a bad date, an end before the start, an unknown
    adjustment or format (a usage error for the command line, a ValueError for library callers)."""


class WarehouseNotFoundError(ConfigError):
    """No warehouse to read at that URL (a missing SQLite file or PostgreSQL database, or one
    without CandleThrob's tables): reading never creates one."""


class FatalError(CandleThrobError):
    """The run cannot go on."""

    exit_code = 3


class AuthenticationError(FatalError):
    """The data API refused the key (HTTP 401). Check POLYGON_API_KEY."""


class DatabaseUnavailableError(FatalError):
    """The database cannot be reached, or refused a write."""


class UniverseUnavailableError(FatalError):
    """No ticker universe: the constituents page failed and none is stored. Pass --tickers."""


class LockHeldError(CandleThrobError):
    """Another run holds the lock on this database."""

    exit_code = 4


class LockLostError(LockHeldError):
    """This run's lock was taken over; it stops without writing."""


class RetriableError(CandleThrobError):
    """A transient failure: the same request may succeed if tried again."""

    def __init__(self, message: str, *, retry_after: Optional[float] = None,
                 status: Optional[int] = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class RateLimitedError(RetriableError):
    """The data API answered 429: too many requests."""


class SkippableError(CandleThrobError):
    """A permanent failure for one ticker or one source: skip it and record why."""

    def __init__(self, message: str, *, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


class HistoryWindowError(SkippableError):
    """The key's plan does not reach that far back (HTTP 403 NOT_AUTHORIZED, "doesn't include this
    data timeframe"): the free tier serves two years."""


class UniverseError(SkippableError):
    """The S&P 500 constituents page cannot be used (the stored universe is used instead)."""


class UniversePageRefused(UniverseError):
    """The page arrived but is not believed (broken, truncated, padded, too short): unlike a page
    that could not be fetched tonight, this ends the run partial so cron and Kestra notice."""


class OutOfTimeError(CandleThrobError):
    """MAX_PROCESSING_TIME was reached in the middle of a request chain: the run stops cleanly."""


class InterruptedRun(CandleThrobError):
    """The run was interrupted by a signal; the checkpoint is kept."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.exit_code = 128 + signum


def error_for_status(status: Optional[int], message: str, *,
                     retry_after: Optional[float] = None) -> CandleThrobError:
    """The error an HTTP answer with ``status`` stands for (``message`` says what was asked).

    ====================  =========================================================
    401                   AuthenticationError: the key is wrong; nothing will work
    403, 404, other 4xx   SkippableError: this request will not succeed (not
                          entitled, unknown symbol, bad parameter); skip it
    408, 429              retried (429 as RateLimitedError, keeping Retry-After)
    5xx, no status        retried: the server or the network failed
    ====================  =========================================================
    """
    if status == 401:
        return AuthenticationError(message)
    if status == 429:
        return RateLimitedError(message, retry_after=retry_after, status=status)
    if status is None or status == 408 or status >= 500:
        return RetriableError(message, retry_after=retry_after, status=status)
    return SkippableError(message, status=status)
