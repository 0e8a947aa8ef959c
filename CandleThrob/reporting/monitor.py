"""Time, CPU and memory per named operation, and a memory budget for the run.

Memory is the process's resident set (RSS, via psutil). Readings before and
after an operation miss what it allocates and frees inside, so while any
operation is active a background thread samples RSS every ``sample_interval``
seconds and each active operation keeps the highest reading it saw. Memory is
per process, not per operation: operations that overlap in threads see each
other's allocations.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import threading
import time
from typing import Callable, Dict, Iterator, Optional

import psutil

try:
    import resource
except ImportError:  # Windows
    resource = None

MB = 1024 * 1024

_process = psutil.Process()


def current_rss_mb() -> float:
    """This process's resident set size now, in MiB."""
    return _process.memory_info().rss / MB


def _max_rss_mb() -> float:
    """The kernel's own peak RSS for this process (0 where unknown)."""
    try:
        # Linux: this process's own high-water mark. ru_maxrss is not: it
        # survives exec, so a CLI started by a big parent would report the parent's.
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    if resource is None:
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / MB if sys.platform == "darwin" else peak / 1024


class _Running:
    """One operation in flight."""

    __slots__ = ("started", "cpu_started", "before", "peak")

    def __init__(self, started: float, cpu_started: float, before: float):
        self.started = started
        self.cpu_started = cpu_started
        self.before = before
        self.peak = before


class PerformanceMonitor:
    """Records each ``monitor_operation(name)``; safe to use from many threads.

    ``metrics[name]`` holds the latest run's ``duration`` (wall s),
    ``cpu_time`` (process CPU s, all threads), ``memory_before_mb``,
    ``memory_after_mb``, ``memory_peak_mb``, ``memory_usage_mb`` (after -
    before), ``success`` and ``error`` (``"Type: message"`` or None), plus
    ``count`` and ``total_duration`` over every run of that name.

    ``enabled=False`` (``ENABLE_PERFORMANCE_MONITORING=false``) still records
    everything from the before/after readings but starts no sampler thread, so
    the peak is only the larger of the two.
    """

    def __init__(self, enabled: bool = True, *, sample_interval: float = 0.25,
                 clock: Callable[[], float] = time.perf_counter,
                 cpu_clock: Callable[[], float] = time.process_time,
                 rss_mb: Callable[[], float] = current_rss_mb):
        self.enabled = enabled
        self.sample_interval = sample_interval
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._rss_mb = rss_mb
        self._lock = threading.Lock()
        self._metrics: Dict[str, dict] = {}
        self._running: Dict[int, _Running] = {}
        self._sampler: Optional[threading.Thread] = None
        self._highest = 0.0

    @property
    def metrics(self) -> Dict[str, dict]:
        """Per operation name, the keys above (a copy: safe while others record)."""
        return self.snapshot()

    def snapshot(self) -> Dict[str, dict]:
        """A deep copy of ``metrics`` for reports."""
        with self._lock:
            return copy.deepcopy(self._metrics)

    def peak_rss_mb(self) -> float:
        """Highest RSS of the whole process so far, in MiB.

        The kernel's ``ru_maxrss`` is a floor the sampler may have missed
        between readings (e.g. allocations outside any operation).
        """
        now = self._rss_mb()
        with self._lock:
            self._highest = max(self._highest, now)
            return max(self._highest, _max_rss_mb())

    @contextlib.contextmanager
    def monitor_operation(self, name: str) -> Iterator[None]:
        """Time the block as ``name``; a failure is recorded and re-raised."""
        before = self._rss_mb()
        running = _Running(self._clock(), self._cpu_clock(), before)
        with self._lock:
            self._highest = max(self._highest, before)
            self._running[id(running)] = running
            if self.enabled and self._sampler is None:
                self._sampler = threading.Thread(
                    target=self._sample, name="candlethrob-memory-sampler", daemon=True)
                self._sampler.start()
        error = None
        try:
            yield
        except BaseException as exc:  # KeyboardInterrupt too: the record should say so
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._finish(name, running, error)

    def _finish(self, name: str, running: _Running, error: Optional[str]) -> None:
        duration = self._clock() - running.started
        cpu_time = self._cpu_clock() - running.cpu_started
        after = self._rss_mb()
        with self._lock:
            del self._running[id(running)]
            self._highest = max(self._highest, after)
            previous = self._metrics.get(name, {})
            self._metrics[name] = {
                "duration": duration,
                "cpu_time": cpu_time,
                "memory_before_mb": running.before,
                "memory_after_mb": after,
                "memory_peak_mb": max(running.peak, after),
                "memory_usage_mb": after - running.before,
                "success": error is None,
                "error": error,
                "count": previous.get("count", 0) + 1,
                "total_duration": previous.get("total_duration", 0.0) + duration,
            }

    def _sample(self) -> None:
        # Runs while any operation is active, then ends itself within one
        # tick; the decision to end is taken under the lock, so an operation
        # starting at that moment either sees this thread alive or starts a
        # new one.
        while True:
            time.sleep(self.sample_interval)
            rss = self._rss_mb()
            with self._lock:
                if not self._running:
                    self._sampler = None
                    return
                self._highest = max(self._highest, rss)
                for running in self._running.values():
                    running.peak = max(running.peak, rss)

    @property
    def sampling(self) -> bool:
        """Whether the background sampler thread is running now."""
        with self._lock:
            return self._sampler is not None


class MemoryBudget:
    """Tells the orchestrator to stop cleanly before ``MAX_MEMORY_USAGE``.

    ``exceeded()`` is true from ``threshold`` (90%) of ``limit_mb`` on: it is
    checked between tickers, so the last 10% is the headroom for the ticker
    in flight to finish and the checkpoint to be written before the
    container's OOM killer would end the run without one. ``limit_mb``
    None or 0 means no budget.
    """

    def __init__(self, limit_mb: Optional[float], threshold: float = 0.9, *,
                 rss_mb: Callable[[], float] = current_rss_mb):
        if (limit_mb is not None and limit_mb < 0) or not 0 < threshold <= 1:
            raise ValueError("need limit_mb >= 0 (or None) and 0 < threshold <= 1")
        self.limit_mb = limit_mb
        self.threshold = threshold
        self._rss_mb = rss_mb

    def rss_mb(self) -> float:
        """This process's RSS now, in MiB."""
        return self._rss_mb()

    def exceeded(self) -> bool:
        return bool(self.limit_mb) and self.rss_mb() >= self.limit_mb * self.threshold
