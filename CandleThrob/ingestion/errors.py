"""Errors grouped by what the caller should do about them.

* ``FatalError``     -> stop the run now (exit 3): bad key, database unreachable.
* ``RetriableError`` -> the same request may succeed later: timeouts, 5xx, 429,
                        truncated bodies, grouped days answered empty.
* ``SkippableError`` -> permanent for one ticker: skip it, record why, go on.
* ``ConfigError``    -> bad configuration or usage (exit 2), raised before
                        anything is written.

Each class's docstring is its message template, in the manner of sqlite-utils.
"""

from __future__ import annotations

from typing import Optional


class CandleThrobError(Exception):
    """CandleThrob failed."""

    exit_code = 1


class ConfigError(CandleThrobError):
    """Bad configuration or usage."""

    exit_code = 2


class FatalError(CandleThrobError):
    """The run cannot go on."""

    exit_code = 3


class AuthenticationError(FatalError):
    """The data API refused the key (HTTP 401). Check POLYGON_API_KEY."""


class DatabaseUnavailableError(FatalError):
    """The database cannot be reached."""


class UniverseUnavailableError(FatalError):
    """No ticker universe: the constituents page failed and none is stored. Pass --tickers."""


class LockHeldError(CandleThrobError):
    """Another run holds the lock on this database."""

    exit_code = 4


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
    """A permanent failure for one ticker: skip it and record why."""

    def __init__(self, message: str, *, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


class InterruptedRun(CandleThrobError):
    """The run was interrupted by a signal; the checkpoint is kept."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.exit_code = 128 + signum
