"""The state of one run: per-ticker outcomes (the rows of ``ingestion_audit`` in the
making), per-call results, and the run itself."""

from __future__ import annotations

import collections
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import pandas as pd

from CandleThrob.macro.outcome import MacroState

if TYPE_CHECKING:
    from CandleThrob.quality.validator import QualityResult, TickerQuality

log = logging.getLogger("CandleThrob.pipeline")


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

    def add_quality(self, quality: "TickerQuality") -> None:
        """Keep the worst score of the run, its dates, and what the gate flagged."""
        self.quality_score = quality.score if self.quality_score is None else min(self.quality_score, quality.score)
        self.add_dates(quality.first_date, quality.last_date)
        if quality.missing_sessions:
            self.flag("missing_sessions", [str(d.date()) for d in quality.missing_sessions])
        if quality.big_moves:
            self.flag("big_moves", [{"date": str(d.date()), "ratio": round(r, 6)} for d, r in quality.big_moves])
            log.warning("%s: one-day move beyond 50%% with no split on record on %s", self.ticker,
                        ", ".join(str(d.date()) for d, _ in quality.big_moves))
        if quality.split_like_moves:
            self.flag("split_like_moves", [{"date": str(d.date()), "split_from": a, "split_to": b}
                                           for d, a, b in quality.split_like_moves])
        if quality.reasons_count:
            reasons = collections.Counter(self.flags.get("rejected_reasons", {}))
            reasons.update(quality.reasons_count)
            self.flags["rejected_reasons"] = dict(sorted(reasons.items()))

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


@dataclass
class RunState:
    """Everything one run learns, in one place, passed explicitly from stage to stage.

    Created when a run starts (``run_id``) and turned into the run report at
    its end; nothing about a run lives anywhere else.
    """

    run_id: str
    end: pd.Timestamp
    tickers: list[str]
    started: float  # the clock's monotonic time at the start
    outcomes: dict[str, TickerOutcome] = field(default_factory=dict)
    failed_days: list[str] = field(default_factory=list)  # grouped days that kept failing
    failed_day_errors: dict[str, str] = field(default_factory=dict)  # day -> why
    stopped: Optional[str] = None  # the budget that stopped the run early
    remaining_calls: int = 0
    actions_feed_error: Optional[str] = None  # the splits or dividends feed failed
    actions: dict[str, int] = field(default_factory=dict)  # ledger records stored and rejected
    new_event_ids: set[str] = field(default_factory=set)
    factors_refreshed: set[str] = field(default_factory=set)
    universe_refused: Optional[str] = None  # why the constituents page was not believed
    window_refusals: int = 0  # calls the key's history window refused (HTTP 403)
    fetched_sessions: set[dt.date] = field(default_factory=set)  # grouped days answered
    settled: set[dt.date] = field(default_factory=set)  # sessions asked again and answered
    revised: int = 0  # stored bars the vendor changed since (settle window)
    verified: dict[str, int] = field(default_factory=dict)  # --verify-adjustments: ticker -> bars differing
    verify_calls: int = 0
    gaps: dict[str, int] = field(default_factory=dict)  # pending cells and vendor holes after the run
    unreachable: int = 0  # cells before the key's history window, not asked
    macro: MacroState = field(default_factory=MacroState)  # the macro series stage
    history_floor: Optional[dt.date] = None  # the window's first date, when this run learned it
    status: str = "running"
    exit_code: int = 0
    error: Optional[str] = None
    failed_stage: Optional[str] = None

    planned: frozenset = field(init=False)  # ``tickers`` as a set, for the per-bar lookups

    def __post_init__(self) -> None:
        self.planned = frozenset(self.tickers)
        for ticker in self.tickers:
            self.outcomes.setdefault(ticker, TickerOutcome(ticker))

    def listed(self, outcome: "TickerOutcome") -> bool:
        """Whether a ticker gets its own audit row and report entry: a planned one always; a
        symbol that ``UNIVERSE=all`` keeps from the grouped answers only when something was wrong
        (11,000 rows a night that say "ok" would bury the ones that matter)."""
        return outcome.ticker in self.planned or outcome.status != "ok" or bool(outcome.bars_rejected) \
            or bool(outcome.flags)

    def market_symbols(self) -> int:
        """Symbols stored besides the planned tickers (``UNIVERSE=all``)."""
        return sum(t not in self.planned for t in self.outcomes)

    def outcome(self, ticker: str) -> TickerOutcome:
        return self.outcomes.setdefault(ticker, TickerOutcome(ticker))

    def fail(self, status: str, error: str, exit_code: int, stage: Optional[str]) -> None:
        self.status, self.error, self.exit_code, self.failed_stage = status, error, exit_code, stage

    def failed_tickers(self) -> list[str]:
        return sorted(t for t, o in self.outcomes.items() if o.status in ("failed", "quarantined"))

    def totals(self) -> dict[str, int]:
        outcomes = self.outcomes.values()
        return {"tickers_ok": sum(o.status == "ok" for o in outcomes),
                "tickers_failed": sum(o.status in ("failed", "quarantined") for o in outcomes),
                "rows_written": sum(o.bars_written for o in outcomes),
                "rows_rejected": sum(o.bars_rejected for o in outcomes)}

    def record_check(self, check: "QualityResult", quarantined: list[str], fetched: pd.DataFrame,
                     min_score: float) -> set[str]:
        """Add one validated batch to the per-ticker outcomes; returns the tickers it touched."""
        touched = set(check.rejected["ticker"].unique())
        counts = {name: frame["ticker"].value_counts().to_dict()
                  for name, frame in (("fetched", fetched), ("accepted", check.accepted), ("rejected", check.rejected))}
        for ticker, quality in check.tickers.items():
            outcome = self.outcome(ticker)
            outcome.bars_fetched += int(counts["fetched"].get(ticker, 0))
            outcome.bars_written += int(counts["accepted"].get(ticker, 0))
            outcome.bars_rejected += int(counts["rejected"].get(ticker, 0))
            outcome.add_quality(quality)
            if self.listed(outcome):
                touched.add(ticker)
        for ticker in quarantined:
            outcome = self.outcomes[ticker]
            outcome.status = "quarantined"
            outcome.error = (f"quality score {check.tickers[ticker].score:.4f} below "
                             f"MIN_DATA_QUALITY_SCORE {min_score}")
            log.error("%s quarantined: %s", ticker, outcome.error)
        return touched

    def problems(self) -> list[str]:
        """Why a run that ran to its end is partial, one line per cause (stored as the run's error)."""
        lines = [f"grouped day {day} failed: {self.failed_day_errors.get(day, 'no answer')}"
                 for day in self.failed_days]
        failed = self.failed_tickers()
        if failed:
            first = self.outcomes[failed[0]]
            lines.append(f"{len(failed)} tickers failed or quarantined, e.g. {failed[0]}: {first.error}")
        if self.stopped:
            lines.append(f"stopped early by {self.stopped} with {self.remaining_calls} calls left")
        if self.actions_feed_error:
            lines.append(f"corporate-actions feed failed: {self.actions_feed_error}")
        if self.universe_refused:
            lines.append(f"universe: {self.universe_refused}")
        return lines + self.macro.problems()

    def settle(self) -> None:
        """A run that ran to its end: success, or partial when anything is left to do."""
        if self.status != "running":
            return
        if (self.failed_tickers() or self.stopped or self.failed_days or self.actions_feed_error
                or self.universe_refused or self.macro.unfinished()):
            self.status, self.exit_code = "partial", 1
        else:
            self.status, self.exit_code = "success", 0
