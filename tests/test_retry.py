"""Classification and the one retry policy: what is retried, how often, how long."""

import json
import random
import threading

import pytest
import sqlalchemy
import sqlalchemy.exc
import urllib3.exceptions

from CandleThrob.errors import (
    AuthenticationError,
    ConfigError,
    DatabaseUnavailableError,
    LockHeldError,
    RateLimitedError,
    RetriableError,
    SkippableError,
)
from CandleThrob.source.ratelimit import RateLimiter
from CandleThrob.source.retry import (
    Category,
    Disposition,
    RetryPolicy,
    classify,
    disposition,
    retry_on_failure,
)

from fake_clock import FakeClock

NET, API, DATA, DB, SYS = (Category.NETWORK, Category.API, Category.DATA,
                           Category.DATABASE, Category.SYSTEM)
RETRY, SKIP, FATAL = Disposition.TRANSIENT, Disposition.SKIP, Disposition.FATAL


class FixedRandom:
    """Stands in for random.Random: hands out the given values in turn."""

    def __init__(self, *values):
        self.values = iter(values)

    def random(self):
        return next(self.values)


def chained(exc, cause):
    try:
        raise exc from cause
    except Exception as raised:
        return raised


def wrapped_from_none(exc, original):
    """`raise exc from None` inside `except original`, as a source module does."""
    try:
        try:
            raise original
        except Exception:
            raise exc from None
    except Exception as raised:
        return raised


class HTTPStatusError(Exception):
    """What HTTP libraries raise for an error status: the status travels on ``response``."""

    def __init__(self, status):
        super().__init__(f"HTTP {status}")
        self.response = type("Response", (), {"status_code": status})()


def http_error(status):
    return HTTPStatusError(status)


def db_error(cls):
    return cls("SELECT 1", {}, Exception("no such host"))


@pytest.mark.parametrize("exc, category, what", [
    (RateLimitedError("429", retry_after=3, status=429), API, RETRY),
    (RetriableError("bad gateway", status=502), API, RETRY),
    (chained(RetriableError("truncated"), json.JSONDecodeError("x", "{", 1)), DATA, RETRY),
    (chained(RetriableError("reset"), ConnectionResetError()), NET, RETRY),
    (wrapped_from_none(RetriableError("network error"), urllib3.exceptions.ProtocolError()), NET, RETRY),
    (wrapped_from_none(RetriableError("unparsable"), ValueError()), DATA, RETRY),
    (RetriableError("no status, no cause"), API, RETRY),
    (TimeoutError(), NET, RETRY),
    (ConnectionResetError(), NET, RETRY),
    (urllib3.exceptions.ProtocolError("reset"), NET, RETRY),
    (urllib3.exceptions.ReadTimeoutError(None, "/v2", "read timed out"), NET, RETRY),
    (urllib3.exceptions.ConnectTimeoutError(), NET, RETRY),
    (urllib3.exceptions.NewConnectionError(None, "refused"), NET, RETRY),
    (urllib3.exceptions.MaxRetryError(None, "/v2"), NET, RETRY),
    (urllib3.exceptions.IncompleteRead(10, 20), NET, RETRY),
    (json.JSONDecodeError("Expecting value", "{", 1), DATA, RETRY),
    (http_error(503), API, RETRY),
    (http_error(429), API, RETRY),
    (http_error(401), API, FATAL),
    (http_error(404), API, SKIP),
    (SkippableError("unknown ticker", status=404), API, SKIP),
    (SkippableError("all bars rejected"), DATA, SKIP),
    (AuthenticationError("401"), API, FATAL),
    (DatabaseUnavailableError("down"), DB, FATAL),
    (LockHeldError("held"), DB, FATAL),
    (ConfigError("bad"), SYS, FATAL),
    (db_error(sqlalchemy.exc.OperationalError), DB, FATAL),
    (db_error(sqlalchemy.exc.InterfaceError), DB, FATAL),
    (db_error(sqlalchemy.exc.DataError), DATA, SKIP),
    (KeyError("results"), DATA, SKIP),
    (RuntimeError("bug"), SYS, FATAL),
    (MemoryError(), SYS, FATAL),
])
def test_classification(exc, category, what):
    assert (classify(exc), disposition(exc)) == (category, what)


def test_an_unreachable_database_is_fatal(tmp_path):
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path}/missing/dir/x.db")
    with pytest.raises(sqlalchemy.exc.OperationalError) as caught:
        engine.connect()
    assert (classify(caught.value), disposition(caught.value)) == (DB, FATAL)


def failing(*errors, result="ok"):
    """A function raising the given errors on successive calls, then returning."""
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    fn.calls = calls
    return fn


def policy(clock, **kwargs):
    kwargs.setdefault("jitter", 0)
    return RetryPolicy(sleep=clock.sleep, **kwargs)


def test_transient_is_retried_max_retries_times_then_raised():
    clock = FakeClock()
    p = policy(clock, max_retries=3)
    fn = failing(*[TimeoutError("slow")] * 10)
    with pytest.raises(RetriableError) as caught:
        p.call(fn)
    assert len(fn.calls) == 4
    assert clock.sleeps == [1, 2, 4]
    assert caught.value.attempts == 4
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert str(caught.value) == "TimeoutError: slow"
    assert p.stats[Category.NETWORK] == 3
    assert p.stats["network"] == 3


def test_exhausted_retriable_error_is_raised_as_itself_with_its_cause():
    clock = FakeClock()
    last = chained(RetriableError("truncated"), json.JSONDecodeError("x", "{", 1))
    fn = failing(RetriableError("first"), last)
    with pytest.raises(RetriableError) as caught:
        policy(clock, max_retries=1).call(fn)
    assert caught.value is last
    assert caught.value.attempts == 2
    assert isinstance(caught.value.__cause__, json.JSONDecodeError)


def test_success_after_transient_failures_returns_the_result():
    clock = FakeClock()
    fn = failing(ConnectionResetError(), RetriableError("502", status=502), result=42)
    assert policy(clock).call(fn) == 42
    assert clock.sleeps == [1, 2]


@pytest.mark.parametrize("exc", [
    SkippableError("no such ticker", status=404),
    AuthenticationError("401"),
    DatabaseUnavailableError("down"),
    RuntimeError("bug"),
])
def test_skip_and_fatal_are_raised_at_once(exc):
    clock = FakeClock()
    p = policy(clock)
    fn = failing(exc)
    with pytest.raises(type(exc)) as caught:
        p.call(fn)
    assert caught.value is exc
    assert len(fn.calls) == 1
    assert clock.sleeps == []
    assert sum(p.stats.values()) == 0


def test_keyboard_interrupt_is_not_retried():
    fn = failing(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        policy(FakeClock()).call(fn)
    assert len(fn.calls) == 1


def test_delay_without_jitter_doubles_up_to_max_delay():
    p = RetryPolicy(base_delay=1, max_delay=60, jitter=0)
    assert [p.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_equal_jitter_keeps_the_upper_half():
    p = RetryPolicy(base_delay=1, jitter=0.5, rng=FixedRandom(0.0, 1.0, 0.5))
    assert [p.delay(n) for n in (1, 2, 3)] == [0.5, 2.0, 3.0]


def test_full_jitter_spans_zero_to_the_ceiling():
    p = RetryPolicy(base_delay=1, jitter=1, rng=FixedRandom(0.0, 1.0, 0.5))
    assert [p.delay(n) for n in (1, 2, 3)] == [0.0, 2.0, 2.0]


def test_seeded_delays_are_reproducible():
    p = RetryPolicy(base_delay=1, jitter=0.5, rng=random.Random(42))
    assert [p.delay(n) for n in (1, 2, 3)] == [
        0.8197133992289418, 1.025010755222667, 2.5500586367382385]


def test_429_without_limiter_sleeps_at_least_retry_after():
    clock = FakeClock()
    fn = failing(RateLimitedError("429", retry_after=7, status=429),
                 RateLimitedError("429", status=429))
    policy(clock).call(fn)
    assert clock.sleeps == [7, 2]  # max(7, 1), then plain backoff


def test_retry_after_shorter_than_backoff_waits_the_backoff():
    clock = FakeClock()
    policy(clock, base_delay=4).call(failing(RetriableError("503", retry_after=1, status=503)))
    assert clock.sleeps == [4]


def test_429_with_limiter_lets_the_limiter_wait_once():
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock, sleep=clock.sleep)
    seen = []
    fn = failing(RateLimitedError("429", retry_after=30, status=429), result="bars")
    p = policy(clock)
    result = p.call(fn, rate_limiter=limiter,
                    on_retry=lambda e, n, s: seen.append((type(e), n, s)))
    assert result == "bars"
    assert clock.sleeps == [30]  # the limiter's pause; the policy slept nothing
    assert seen == [(RateLimitedError, 1, 0.0)]
    assert (limiter.calls, limiter.rate_limited_count) == (2, 1)
    assert limiter.interval == 21  # doubled to 24, one success gave 3 s back
    assert p.stats[Category.API] == 1


def test_other_transient_errors_with_limiter_overlap_backoff_and_spacing():
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock, sleep=clock.sleep)
    p = policy(clock)
    p.call(failing(RetriableError("502", status=502)), rate_limiter=limiter)
    # 1 s backoff, then the limiter only waits out the rest of its 12 s slot.
    assert clock.sleeps == [1, 11]
    assert clock.now == 12
    assert p.stats[Category.API] == 1


def test_stats_count_retries_from_many_threads():
    p = RetryPolicy(sleep=lambda s: None)
    threads = [threading.Thread(target=p.call, args=(failing(TimeoutError(), TimeoutError()),))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert p.stats == {NET: 16, API: 0, DATA: 0, DB: 0, SYS: 0}


def test_retry_on_failure_as_the_seed_uses_it():
    @retry_on_failure(max_retries=2, delay_seconds=0.1)
    def fetch(ticker):
        """Fetch bars."""
        return ticker.upper()

    assert fetch("aapl") == "AAPL"
    assert (fetch.__name__, fetch.__doc__) == ("fetch", "Fetch bars.")
    assert (fetch.retry_policy.max_retries, fetch.retry_policy.base_delay) == (2, 0.1)


def test_retry_on_failure_retries_transient_errors_only():
    clock = FakeClock()
    attempts = []

    @retry_on_failure(max_retries=2, delay_seconds=0.1, jitter=0, sleep=clock.sleep)
    def fetch(kind):
        attempts.append(kind)
        raise {"slow": TimeoutError(), "gone": SkippableError("delisted")}[kind]

    with pytest.raises(RetriableError) as caught:
        fetch("slow")
    assert caught.value.attempts == 3
    assert clock.sleeps == [0.1, 0.2]
    with pytest.raises(SkippableError):
        fetch("gone")
    assert attempts == ["slow"] * 3 + ["gone"]


def test_retry_on_failure_passes_every_keyword_to_the_function():
    @retry_on_failure()
    def fn(rate_limiter=None, on_retry=None):
        return rate_limiter, on_retry

    assert fn(rate_limiter="mine", on_retry="also mine") == ("mine", "also mine")


@pytest.mark.parametrize("kwargs", [
    {"max_retries": -1}, {"base_delay": -1}, {"jitter": 1.5},
])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)
