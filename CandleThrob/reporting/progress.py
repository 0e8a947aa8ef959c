"""A terminal progress bar (tqdm) over the planned calls; silent off a terminal."""

from __future__ import annotations

import sys
from typing import Optional, TextIO

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, enabled: bool, stream: Optional[TextIO] = None):
        stream = stream or sys.stderr
        # tqdm's disable=None already switches off when the stream is not a TTY;
        # we decide explicitly so that --no-progress and tests are exact.
        self._bar = tqdm(total=total, unit="call", desc="ingest", file=stream, dynamic_ncols=True,
                         disable=not (enabled and total and stream.isatty()))
        self._bars = 0

    def update(self, planned_calls_done: int, bars: int, api_calls: int) -> None:
        """Advance by calls of the plan; show bars fetched and HTTP calls made (retries included)."""
        self._bars += bars
        self._bar.set_postfix(bars=self._bars, api_calls=api_calls, refresh=False)
        self._bar.update(planned_calls_done)

    def close(self) -> None:
        self._bar.close()
