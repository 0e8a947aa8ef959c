"""PerformanceMonitor and MemoryBudget: exact records with injected clocks and RSS."""

import mmap
import threading
import time
import types

import pytest

from CandleThrob.reporting.monitor import MemoryBudget, PerformanceMonitor, current_rss_mb

KEYS = {"duration", "cpu_time", "memory_before_mb", "memory_after_mb", "memory_peak_mb",
        "memory_usage_mb", "success", "error", "count", "total_duration"}


def readings(*values):
    """A clock or RSS source returning the given values in turn."""
    it = iter(values)
    return lambda: next(it)


def test_seed_usage_works_verbatim():
    ingestion = types.SimpleNamespace(performance_monitor=PerformanceMonitor())
    with ingestion.performance_monitor.monitor_operation("complete_ingestion"):
        sum(range(1000))
    metrics = ingestion.performance_monitor.metrics
    assert set(metrics["complete_ingestion"]) == KEYS
    assert metrics['complete_ingestion']['duration'] >= 0
    assert isinstance(metrics['complete_ingestion']['memory_usage_mb'], float)


def test_exact_record_from_injected_clocks_and_rss():
    monitor = PerformanceMonitor(enabled=False, clock=readings(10.0, 12.5),
                                 cpu_clock=readings(1.0, 1.75), rss_mb=readings(100.0, 130.0))
    with monitor.monitor_operation("fetch"):
        pass
    assert monitor.metrics == {"fetch": {
        "duration": 2.5, "cpu_time": 0.75,
        "memory_before_mb": 100.0, "memory_after_mb": 130.0, "memory_peak_mb": 130.0,
        "memory_usage_mb": 30.0, "success": True, "error": None,
        "count": 1, "total_duration": 2.5,
    }}


def test_failure_is_recorded_and_reraised_and_runs_accumulate():
    monitor = PerformanceMonitor(enabled=False, clock=readings(0, 1, 10, 13, 20, 22),
                                 cpu_clock=lambda: 0.0, rss_mb=lambda: 50.0)
    with monitor.monitor_operation("store"):
        pass
    with pytest.raises(ValueError):
        with monitor.monitor_operation("store"):
            raise ValueError("bad bar")
    record = monitor.metrics["store"]
    assert (record["success"], record["error"], record["duration"]) == (False, "ValueError: bad bar", 3)
    with monitor.monitor_operation("store"):
        pass
    record = monitor.metrics["store"]
    assert (record["success"], record["error"], record["duration"]) == (True, None, 2)
    assert (record["count"], record["total_duration"]) == (3, 6)


def test_sampler_catches_a_peak_between_before_and_after():
    rss = {"now": 100.0}
    seen_peak = threading.Event()

    def read_rss():
        value = rss["now"]
        if value == 500.0:
            seen_peak.set()
        return value

    monitor = PerformanceMonitor(sample_interval=0.005, rss_mb=read_rss)
    with monitor.monitor_operation("parse"):
        assert monitor.sampling
        rss["now"] = 500.0
        assert seen_peak.wait(5)
        rss["now"] = 120.0
    record = monitor.metrics["parse"]
    assert (record["memory_before_mb"], record["memory_peak_mb"],
            record["memory_after_mb"], record["memory_usage_mb"]) == (100.0, 500.0, 120.0, 20.0)
    assert monitor.peak_rss_mb() >= 500.0


def test_sampler_stops_when_no_operation_is_active():
    monitor = PerformanceMonitor(sample_interval=0.005)
    with monitor.monitor_operation("op"):
        pass
    deadline = time.monotonic() + 5
    while monitor.sampling and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not monitor.sampling


def test_disabled_monitor_records_without_a_sampler_thread():
    monitor = PerformanceMonitor(enabled=False)
    with monitor.monitor_operation("op"):
        assert not monitor.sampling
    assert set(monitor.metrics["op"]) == KEYS


def test_real_memory_readings_see_an_allocation_made_and_freed_inside_the_operation():
    readings = []
    seen = threading.Event()
    floor = {}

    def rss() -> float:
        value = current_rss_mb()
        readings.append(value)
        if floor and value >= floor["mb"] + 30:
            seen.set()
        return value

    monitor = PerformanceMonitor(sample_interval=0.005, rss_mb=rss)
    with monitor.monitor_operation("allocate"):
        floor["mb"] = readings[0]
        # A mapping of its own, not the allocator's: freed heap pages that an earlier test left
        # resident could otherwise be reused, and the resident set would not grow at all.
        block = mmap.mmap(-1, 32 * 1024 * 1024)
        block[::4096] = b"x" * len(range(0, len(block), 4096))  # touch every page: now it is resident
        assert seen.wait(10)  # the sampler has read the resident set while the block was alive
        block.close()  # unmapped: the pages leave the resident set now
    record = monitor.metrics["allocate"]
    assert record["memory_peak_mb"] >= record["memory_before_mb"] + 30
    assert record["memory_after_mb"] <= record["memory_peak_mb"] - 25  # freed before the end
    assert monitor.peak_rss_mb() >= record["memory_peak_mb"]


def test_many_threads_record_and_read_safely():
    monitor = PerformanceMonitor(sample_interval=0.001)
    stop = threading.Event()
    errors = []

    def work(i):
        for n in range(25):
            try:
                with monitor.monitor_operation(f"op{i % 2}"):
                    if n % 5 == 0:
                        raise RuntimeError(n)
            except RuntimeError:
                pass

    def read():
        while not stop.is_set():
            try:
                monitor.snapshot()
                monitor.peak_rss_mb()
            except Exception as exc:  # a torn read would show here
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    reader.join()
    assert errors == []
    metrics = monitor.metrics
    assert (metrics["op0"]["count"], metrics["op1"]["count"]) == (100, 100)


def test_snapshot_is_a_copy():
    monitor = PerformanceMonitor(enabled=False)
    with monitor.monitor_operation("op"):
        pass
    monitor.snapshot()["op"]["count"] = 99
    monitor.metrics.clear()
    assert monitor.metrics["op"]["count"] == 1


@pytest.mark.parametrize("limit, rss, exceeded", [
    (100, 89.9, False),
    (100, 90.0, True),  # 90% of the limit: stop while there is headroom
    (100, 150.0, True),
    (None, 1e6, False),
    (0, 1e6, False),
])
def test_memory_budget(limit, rss, exceeded):
    budget = MemoryBudget(limit, rss_mb=lambda: rss)
    assert budget.exceeded() is exceeded
    assert budget.rss_mb() == rss


def test_memory_budget_reads_the_real_process():
    assert MemoryBudget(1).rss_mb() == pytest.approx(current_rss_mb(), rel=0.5)
    assert MemoryBudget(1).exceeded()  # no Python process fits in 0.9 MB
