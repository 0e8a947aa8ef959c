"""A terminal progress bar (tqdm) over the planned calls; silent off a terminal.

It moves with every call, not every batch: at the free tier's 12 s a call a
batch of 25 takes five minutes. Besides calls done of the total it shows the
bars written so far, the HTTP calls made (retries included), and an ETA that
knows the rate limit: the calls left cannot go faster than one per interval.
"""

from __future__ import annotations

import sys
import threading
from typing import Optional, TextIO

from tqdm import tqdm


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class Progress:
    def __init__(self, total: int, enabled: bool, seconds_per_call: float = 0.0,
                 stream: Optional[TextIO] = None):
        stream = stream or sys.stderr
        self.total = total
        self.seconds_per_call = seconds_per_call
        self._lock = threading.Lock()
        self._done = self._bars = self._api_calls = 0
        # tqdm's disable=None already switches off when the stream is not a TTY;
        # we decide explicitly so that --no-progress and tests are exact.
        self._bar = tqdm(total=total, unit="call", desc="ingest", file=stream, dynamic_ncols=True,
                         disable=not (enabled and total and stream.isatty()))

    def called(self, api_calls: int) -> None:
        """One planned call finished (from any worker thread)."""
        with self._lock:
            self._done += 1
            self._api_calls = max(self._api_calls, api_calls)
            self._refresh()
            self._bar.update(1)

    def stored(self, bars_written: int) -> None:
        with self._lock:
            self._bars = bars_written
            self._refresh()
            self._bar.refresh()

    def eta_seconds(self) -> float:
        """The calls left, at the observed pace but never faster than the rate limit allows."""
        left = max(self.total - self._done, 0)
        elapsed = self._bar.format_dict.get("elapsed", 0.0) if not self._bar.disable else 0.0
        observed = elapsed / self._done if self._done else 0.0
        return left * max(observed, self.seconds_per_call)

    def _refresh(self) -> None:
        self._bar.set_postfix_str(f"bars={self._bars}, api_calls={self._api_calls}, "
                                  f"eta={_duration(self.eta_seconds())}", refresh=False)

    def close(self) -> None:
        self._bar.close()
