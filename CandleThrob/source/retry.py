"""The one retry policy of the tool, and how failures are classified.

Every exception is sorted twice: by *category* (where it came from: network,
api, data, database, system — counted in the run report) and by *disposition*
(what the caller should do: retry it, skip the ticker, or stop the run). Only
transient failures are retried; a skip or a fatal error is raised at once,
because retrying a bad key or a missing ticker only spends calls.
"""

from __future__ import annotations

import enum
import functools
import http.client
import json
import logging
import random
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, TypeVar

import sqlalchemy.exc
import urllib3.exceptions

from CandleThrob.errors import (
    AuthenticationError,
    error_for_status,
    CandleThrobError,
    DatabaseUnavailableError,
    LockHeldError,
    RateLimitedError,
    RetriableError,
    SkippableError,
)
from CandleThrob.source.ratelimit import RateLimiter

if TYPE_CHECKING:
    from CandleThrob.config import AdvancedBatchConfig

log = logging.getLogger(__name__)

T = TypeVar("T")


class Category(str, enum.Enum):
    """Where a failure came from (keys of ``RetryPolicy.stats``)."""

    NETWORK = "network"
    API = "api"
    DATA = "data"
    DATABASE = "database"
    SYSTEM = "system"


class Disposition(str, enum.Enum):
    """What the caller should do about a failure."""

    TRANSIENT = "transient"  # the same request may succeed later: retry
    SKIP = "skip"            # permanent for one ticker: record it, go on
    FATAL = "fatal"          # the run cannot go on


# Failures below our own taxonomy that are worth another try. urllib3's are
# listed by name because they do not derive from the builtin TimeoutError/ConnectionError.
_NETWORK_TRANSIENT = (
    TimeoutError,
    ConnectionError,
    http.client.IncompleteRead,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    urllib3.exceptions.ConnectTimeoutError,  # includes NewConnectionError
    urllib3.exceptions.MaxRetryError,
)


def _by_status(status: Optional[int]) -> Disposition:
    """Disposition of an HTTP status the caller did not translate itself (the shared table)."""
    return _classify_own(error_for_status(status, ""))[1]


def _http_status(exc: BaseException) -> Optional[int]:
    """The HTTP status an HTTP library's error carries (``status_code``, or ``response.status_code``)."""
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None) or getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _classify(exc: BaseException) -> tuple[Category, Disposition]:
    # Order matters: our own taxonomy first, then the narrow library classes,
    # then the broad builtins they derive from (JSONDecodeError is a
    # ValueError).
    if isinstance(exc, CandleThrobError):
        return _classify_own(exc)
    if isinstance(exc, json.JSONDecodeError):
        return Category.DATA, Disposition.TRANSIENT  # a truncated body
    if isinstance(exc, _NETWORK_TRANSIENT):
        return Category.NETWORK, Disposition.TRANSIENT
    status = _http_status(exc)
    if status is not None:
        return Category.API, _by_status(status)
    if isinstance(exc, sqlalchemy.exc.DataError):
        # The database refused a value (e.g. too large for the column): that
        # ticker's rows are rolled back alone, so skip it rather than stop.
        return Category.DATA, Disposition.SKIP
    if isinstance(exc, sqlalchemy.exc.SQLAlchemyError):
        # OperationalError/InterfaceError: unreachable, bad credentials, gone
        # away. Anything else is a schema or code problem. Neither heals itself.
        return Category.DATABASE, Disposition.FATAL
    if isinstance(exc, (KeyError, IndexError, ValueError)):
        return Category.DATA, Disposition.SKIP  # an answer of an unexpected shape
    # Unknown: most likely a bug, or the machine (MemoryError, disk full).
    # It should surface, not be retried or quietly skipped.
    return Category.SYSTEM, Disposition.FATAL


def _classify_own(exc: CandleThrobError) -> tuple[Category, Disposition]:
    if isinstance(exc, RetriableError):
        return _own_category(exc, Category.API), Disposition.TRANSIENT
    if isinstance(exc, SkippableError):
        return _own_category(exc, Category.DATA), Disposition.SKIP
    if isinstance(exc, AuthenticationError):
        return Category.API, Disposition.FATAL
    if isinstance(exc, (DatabaseUnavailableError, LockHeldError)):
        return Category.DATABASE, Disposition.FATAL
    # Other fatal errors, bad configuration, an interrupted run, our own bugs.
    return _own_category(exc, Category.SYSTEM), Disposition.FATAL


def _own_category(exc: CandleThrobError, default: Category) -> Category:
    # An HTTP status means the API answered. Otherwise the wrapped exception
    # tells where it came from: `raise RetriableError(...) from JSONDecodeError`
    # is data. `from None` only hides the original from tracebacks; it is still
    # the __context__.
    if getattr(exc, "status", None) is not None:
        return Category.API
    origin = exc.__cause__ if exc.__cause__ is not None else exc.__context__
    if origin is not None:
        return _classify(origin)[0]
    return default


def classify(exc: BaseException) -> Category:
    """Where ``exc`` came from: network, api, data, database or system."""
    return _classify(exc)[0]


def disposition(exc: BaseException) -> Disposition:
    """What to do about ``exc``: transient (retry), skip (ticker) or fatal (run)."""
    return _classify(exc)[1]


class RetryPolicy:
    """Exponential backoff with jitter, retrying transient failures only.

    Retry ``n`` (1-based) waits ``d = min(max_delay, base_delay * 2**(n-1))``
    scaled into ``[d * (1 - jitter), d]``: jitter 0 is plain exponential,
    0.5 is "equal jitter", 1 is "full jitter". The spread keeps worker threads
    that failed together from retrying together.

    ``call`` makes at most ``max_retries + 1`` attempts. ``stats`` counts the
    retries per category for the run report; one policy may serve all threads.
    """

    def __init__(self, max_retries: int = 3, base_delay: float = 1.0,
                 max_delay: float = 60.0, jitter: float = 0.5, *,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: Optional[random.Random] = None):
        if max_retries < 0 or base_delay < 0 or max_delay < 0 or not 0 <= jitter <= 1:
            raise ValueError("need max_retries >= 0, delays >= 0 and 0 <= jitter <= 1")
        self.max_retries = max_retries
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.jitter = jitter
        self.sleep = sleep
        self.rng = rng if rng is not None else random.Random()
        self._lock = threading.Lock()
        self._stats: Dict[Category, int] = {c: 0 for c in Category}

    @classmethod
    def from_config(cls, config: "AdvancedBatchConfig", sleep: Callable[[float], None]) -> "RetryPolicy":
        """The run's policy for every vendor (MAX_RETRIES, RETRY_DELAY), waiting with the run's
        interruptible ``sleep``: Polygon and FRED are retried alike."""
        return cls(max_retries=config.max_retries, base_delay=config.retry_delay, sleep=sleep)

    @property
    def stats(self) -> Dict[Category, int]:
        """Retries so far per category (a copy; keys compare equal to their values)."""
        with self._lock:
            return dict(self._stats)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1 = first retry)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return ceiling * (1 - self.jitter) + ceiling * self.jitter * self.rng.random()

    def call(self, fn: Callable[..., T], *args,
             on_retry: Optional[Callable[[BaseException, int, float], None]] = None,
             rate_limiter: Optional[RateLimiter] = None, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)``, retrying transient failures.

        With ``rate_limiter``, every attempt first passes ``rate_limiter.acquire()``
        (so ``fn`` must not acquire itself), a success is reported with
        ``on_success()``, and a 429 (``RateLimitedError``) with
        ``on_rate_limited(retry_after)``. The limiter then owns the wait: it
        holds back *every* thread until Retry-After (or its window) has passed,
        and this policy does not sleep on top of it. Without a limiter a 429
        sleeps ``max(retry_after, delay(n))``; so does any other transient error
        that carries a Retry-After.

        ``on_retry(exc, attempt, seconds)`` is called before each retry with
        the seconds this policy is about to sleep (0 when the limiter waits).

        Skip and fatal failures propagate unchanged at once. When retries run
        out, the last failure is raised as a ``RetriableError`` (the original
        itself when it already is one, else one chained ``from`` it) with
        ``attempts`` set to the number of attempts made.
        """
        attempt = 0
        while True:
            if rate_limiter is not None:
                rate_limiter.acquire()
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                category, what = _classify(exc)
                if what is not Disposition.TRANSIENT:
                    raise
                attempt += 1
                if attempt > self.max_retries:
                    if isinstance(exc, RetriableError):
                        exc.attempts = attempt
                        raise
                    gave_up = RetriableError(f"{type(exc).__name__}: {exc}")
                    gave_up.attempts = attempt
                    raise gave_up from exc
                seconds = self._wait_before_retry(exc, attempt, rate_limiter)
                with self._lock:
                    self._stats[category] += 1
                if isinstance(exc, RateLimitedError) and rate_limiter is not None:
                    log.warning("retry %d/%d after HTTP 429: every call waits %s", attempt, self.max_retries,
                                f"{exc.retry_after:.0f} s (Retry-After)" if exc.retry_after is not None
                                else f"{rate_limiter.window:.0f} s (the rate window)")
                else:
                    log.warning("retry %d/%d in %.1fs after %s error: %s: %s", attempt,
                                self.max_retries, seconds, category.value, type(exc).__name__, exc)
                if on_retry is not None:
                    on_retry(exc, attempt, seconds)
                if seconds > 0:
                    self.sleep(seconds)
            else:
                if rate_limiter is not None:
                    rate_limiter.on_success()
                return result

    def _wait_before_retry(self, exc: Exception, attempt: int, rate_limiter: Optional[RateLimiter]) -> float:
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(exc, RateLimitedError) and rate_limiter is not None:
            rate_limiter.on_rate_limited(retry_after)
            return 0.0
        backoff = self.delay(attempt)
        return backoff if retry_after is None else max(retry_after, backoff)


def retry_on_failure(max_retries: int = 3, delay_seconds: float = 1.0,
                     **policy_options: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: retry the function's *transient* failures with ``RetryPolicy``.

    ``@retry_on_failure(max_retries=2, delay_seconds=0.1)`` makes up to three
    attempts, waiting about 0.1 s then 0.2 s (``delay_seconds`` is the
    policy's ``base_delay``). Skip and fatal failures are not retried: see
    ``disposition``. Other ``RetryPolicy`` options (``jitter``, ``max_delay``,
    ``sleep``, ``rng``) pass through; the policy is ``wrapper.retry_policy``.
    """
    policy = RetryPolicy(max_retries=max_retries, base_delay=delay_seconds, **policy_options)

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs) -> T:
            # Bound first, so the function's own keyword arguments never
            # collide with call()'s (on_retry, rate_limiter).
            return policy.call(functools.partial(fn, *args, **kwargs))

        wrapper.retry_policy = policy
        return wrapper

    return decorate
