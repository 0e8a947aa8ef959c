"""RateLimiter: spacing, bursts, 429 handling and recovery, exactly, on a fake clock."""

import threading

import pytest

from CandleThrob.source.ratelimit import RateLimiter

from fake_clock import FakeClock


def limiter(clock, *args, **kwargs):
    return RateLimiter(*args, clock=clock, sleep=clock.sleep, **kwargs)


def test_free_tier_spaces_calls_twelve_seconds_apart():
    clock = FakeClock()
    lim = limiter(clock, 5)
    assert [lim.acquire() for _ in range(3)] == [0, 12, 12]
    assert clock.sleeps == [12, 12]
    assert clock.now == 24
    assert (lim.interval, lim.calls, lim.waited_seconds) == (12, 3, 24)


def test_from_seconds_is_polygon_rate_limit():
    assert RateLimiter.from_seconds(12).interval == 12
    assert RateLimiter.from_seconds(12).interval == RateLimiter(5).interval


def test_time_already_spent_counts_towards_the_spacing():
    clock = FakeClock()
    lim = limiter(clock, 5)
    lim.acquire()
    clock.now = 5
    assert lim.acquire() == 7
    clock.now = 100  # idle: the next call goes at once
    assert lim.acquire() == 0


@pytest.mark.parametrize("make", [
    lambda c: limiter(c, None),
    lambda c: limiter(c, 0),
    lambda c: RateLimiter.from_seconds(0, clock=c, sleep=c.sleep),
])
def test_unlimited_never_waits(make):
    clock = FakeClock()
    lim = make(clock)
    assert lim.unlimited
    assert [lim.acquire() for _ in range(100)] == [0] * 100
    assert clock.sleeps == []
    assert (lim.interval, lim.calls) == (0, 100)


def test_unlimited_still_honours_a_429():
    clock = FakeClock()
    lim = limiter(clock, None)
    lim.on_rate_limited(3)
    assert lim.acquire() == 3
    assert lim.acquire() == 0


def test_burst_then_steady_rate_and_refill_when_idle():
    clock = FakeClock()
    lim = limiter(clock, 5, burst=3)
    assert [lim.acquire() for _ in range(5)] == [0, 0, 0, 12, 12]
    clock.now += 100
    assert [lim.acquire() for _ in range(4)] == [0, 0, 0, 12]


def test_429_with_retry_after_holds_the_next_call_exactly_that_long():
    clock = FakeClock()
    lim = limiter(clock, 5)
    lim.acquire()
    clock.now = 20
    lim.on_rate_limited(7)
    assert lim.rate_limited_count == 1
    assert lim.interval == 24  # slowed down
    assert lim.acquire() == 7
    assert clock.now == 27
    assert lim.acquire() == 24  # the slower spacing from there


def test_429_without_retry_after_waits_out_the_window():
    clock = FakeClock()
    lim = limiter(clock, 5)
    lim.acquire()
    clock.now = 20
    lim.on_rate_limited(None)
    assert lim.acquire() == 60
    assert clock.now == 80


def test_429_empties_the_bucket():
    clock = FakeClock()
    lim = limiter(clock, 5, burst=3)
    lim.on_rate_limited(7)
    assert [lim.acquire() for _ in range(3)] == [7, 24, 24]


def test_backoff_doubles_up_to_the_cap():
    lim = limiter(FakeClock(), 5)
    intervals = []
    for _ in range(4):
        lim.on_rate_limited(0)
        intervals.append(lim.interval)
    assert intervals == [24, 48, 60, 60]


def test_cap_never_speeds_up_a_slow_configured_rate():
    lim = limiter(FakeClock(), 0.5)  # 120 s apart, above the 60 s cap
    lim.on_rate_limited(0)
    assert lim.interval == 120


def test_recovery_gives_back_a_quarter_of_the_extra_per_success():
    lim = limiter(FakeClock(), 5)
    lim.on_rate_limited(0)
    steps = []
    for _ in range(3):
        lim.on_success()
        steps.append(lim.interval)
    assert steps == [21, 18.75, 17.0625]
    for _ in range(13):  # 16 successes: extra 12 * 0.75**16 = 0.1203 s, still kept
        lim.on_success()
    assert lim.interval == 12 + 12 * 0.75 ** 16
    lim.on_success()  # below 1% of the base interval: back to the configured rate
    assert lim.interval == 12


def test_a_429_reported_while_a_caller_sleeps_sends_it_back_to_the_queue():
    clock = FakeClock()
    lim = RateLimiter(5, clock=clock, sleep=lambda s: sleep_through_a_429(s))
    calls = []

    def sleep_through_a_429(seconds):
        calls.append(seconds)
        if len(calls) == 1:  # another thread hits a 429 five seconds in
            clock.now += 5
            lim.on_rate_limited(30)  # would deadlock if acquire held its lock
            clock.now += seconds - 5
        else:
            clock.now += seconds

    lim.acquire()
    waited = []
    # In a thread, so a regression (sleeping under the lock) fails instead of hanging.
    caller = threading.Thread(target=lambda: waited.append(lim.acquire()), daemon=True)
    caller.start()
    caller.join(5)
    assert waited == [12 + 23]
    assert calls == [12, 23]
    assert clock.now == 35  # not before 5 + 30


def test_threads_get_distinct_slots():
    clock = FakeClock()  # stands still: every wait is the reserved offset
    lock = threading.Lock()
    waits = []
    inside, most = [0], [0]

    def record(seconds):
        with lock:
            waits.append(seconds)

    def slow_clock() -> float:
        # Reading the clock and reserving a slot happen under the limiter's lock: however long
        # a read takes, no second thread may be in here at the same time.
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        threading.Event().wait(0.01)  # room for another thread to come in, if the lock let it
        with lock:
            inside[0] -= 1
        return clock()

    lim = RateLimiter(5, clock=slow_clock, sleep=record)
    threads = [threading.Thread(target=lim.acquire) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1
    assert sorted(waits) == [12 * i for i in range(1, 8)]
    assert lim.calls == 8


def test_acquire_does_not_hold_the_lock_while_sleeping():
    sleeping, release = threading.Event(), threading.Event()

    def blocking_sleep(seconds):
        sleeping.set()
        assert release.wait(5)

    lim = RateLimiter(300, sleep=blocking_sleep)  # real clock, 0.2 s apart
    sleeper = threading.Thread(target=lambda: [lim.acquire(), lim.acquire()], daemon=True)
    sleeper.start()
    assert sleeping.wait(5)

    def meanwhile():
        lim.on_success()
        lim.on_rate_limited(0)
        return lim.interval, lim.calls, lim.waited_seconds, lim.rate_limited_count

    other = threading.Thread(target=meanwhile, daemon=True)
    other.start()
    other.join(5)
    try:
        assert not other.is_alive(), "blocked behind a sleeping acquire"
        assert sleeper.is_alive()
    finally:
        release.set()
        sleeper.join(5)
    assert lim.calls == 2


@pytest.mark.parametrize("kwargs", [
    {"calls_per_minute": -1},
    {"seconds_between_calls": -1},
    {"burst": 0},
    {"recovery": 1},
])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)


def test_the_vendors_minute_allowance_goes_at_once_then_one_call_per_interval():
    clock = FakeClock()
    burst = RateLimiter.per_minute_burst(12)
    lim = RateLimiter.from_seconds(12, burst=burst, clock=clock, sleep=clock.sleep)
    assert burst == 5
    waits = [lim.acquire() for _ in range(7)]
    assert waits == [0, 0, 0, 0, 0, 12, 12]  # five at once, the sixth waits 12 s, then every 12 s
    assert clock.now == 24


def test_a_429_after_a_burst_still_pauses_everyone_and_empties_the_bucket():
    clock = FakeClock()
    lim = RateLimiter.from_seconds(12, burst=5, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        lim.acquire()
    lim.on_rate_limited(30)
    assert lim.acquire() == 30  # not before Retry-After, however full the bucket was
    assert lim.acquire() == 24  # and then spaced, at the doubled interval, not as a burst
    assert RateLimiter.per_minute_burst(0) == 1 and RateLimiter.per_minute_burst(0.2) == 300
