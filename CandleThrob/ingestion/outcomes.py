"""What a run did, per ticker and per call: the rows of ``ingestion_audit`` in the making."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd


@dataclass
class TickerOutcome:
    """What one run did for one ticker; becomes its ``ingestion_audit`` row."""

    ticker: str
    status: str = "ok"  # ok | failed (a call or restatement failed) | quarantined (low score)
    bars_fetched: int = 0
    bars_written: int = 0
    bars_rejected: int = 0
    quality_score: Optional[float] = None
    first_date: Optional[dt.date] = None
    last_date: Optional[dt.date] = None
    api_calls: int = 0
    duration_s: float = 0.0
    error: Optional[str] = None
    flags: dict = field(default_factory=dict)

    def add_dates(self, first: Optional[pd.Timestamp], last: Optional[pd.Timestamp]) -> None:
        if first is not None and not pd.isna(first):
            day = pd.Timestamp(first).date()
            self.first_date = min(self.first_date, day) if self.first_date else day
        if last is not None and not pd.isna(last):
            day = pd.Timestamp(last).date()
            self.last_date = max(self.last_date, day) if self.last_date else day

    def flag(self, key: str, values: list, cap: int = 50) -> None:
        """Add to a listed flag (keeping the first ``cap`` entries) and count them all."""
        items = self.flags.setdefault(key, [])
        items.extend(values[:max(0, cap - len(items))])
        self.flags[f"{key}_count"] = self.flags.get(f"{key}_count", 0) + len(values)

    def row(self, run_id: str) -> dict:
        return {"run_id": run_id, "ticker": self.ticker, "status": self.status,
                "bars_fetched": self.bars_fetched, "bars_written": self.bars_written,
                "bars_rejected": self.bars_rejected, "quality_score": self.quality_score,
                "first_date": self.first_date, "last_date": self.last_date,
                "api_calls": self.api_calls, "duration_s": round(self.duration_s, 3),
                "error": (self.error or None) and self.error[:2000], "flags": self.flags}


@dataclass
class CallResult:
    call: Any
    bars: Optional[pd.DataFrame] = None
    error: Optional[Exception] = None
    seconds: float = 0.0
