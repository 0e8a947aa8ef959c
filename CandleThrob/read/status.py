"""Is the warehouse fresh, and what needs a person? A morning check's questions, with an exit code per cause.

Freshness is judged against the **last final session**: the latest NYSE
session whose evening has reached ``BARS_FINAL_AFTER`` (20:00 New York time),
from which Polygon's daily bars are final and the nightly ingest loads them by
default. Before 20:00 a session's bars are not expected yet; from 20:00 they are,
so a monitor should check after the nightly run has had time to finish.

``check`` turns a status into problems, each with its exit code:

== ===========================================================================
10 stale: the last stored session is before the last final session
11 behind: some active tickers were last loaded more than ``max_behind``
   sessions before the last final session (the warehouse itself is current)
12 the last run failed: the latest run (each shard's latest, for the same
   ``--end``) ended with a non-zero exit code, or died
13 gaps: more cells pending a retry than ``max_pending``, or more vendor holes
   than ``max_holes``
== ===========================================================================

The command exits with the first of these codes that applies; all are listed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional

import pandas as pd

from CandleThrob.planning.trading_calendar import TradingCalendar
from CandleThrob.read import health
from CandleThrob.warehouse.gaps import GapStore
from CandleThrob.warehouse.storage import Warehouse

STALE, BEHIND, RUN_FAILED, GAPS = 10, 11, 12, 13
CHECK_CODES = {STALE: "stale", BEHIND: "tickers behind", RUN_FAILED: "last run failed", GAPS: "gaps"}


@dataclass(frozen=True)
class Thresholds:
    max_behind: int = 0
    max_pending: int = 0
    max_holes: int = 0


@dataclass(frozen=True)
class Problem:
    code: int
    cause: str
    message: str


def warehouse_status(warehouse: Warehouse, calendar: Optional[TradingCalendar] = None, runs: int = 5,
                     spans: Optional[dict[str, health.Span]] = None) -> dict:
    """Everything ``candlethrob status`` shows, as plain data (JSON-ready). ``spans``: each ticker's
    stored span, when the caller has read it already (it costs a pass over the primary key)."""
    clock = warehouse.clock
    calendar = calendar or TradingCalendar(clock=clock)
    final = calendar.last_final_session(clock.now()).date()
    spans = health.stored_spans(warehouse) if spans is None else spans
    last_stored = max((last for _, last in spans.values()), default=None)
    return {
        "database": warehouse.describe(),
        "now": clock.now().isoformat(timespec="seconds"),
        "last_final_session": final.isoformat(),
        "last_stored_session": last_stored.isoformat() if last_stored else None,
        "sessions_behind": _sessions_after(calendar, last_stored, final),
        "tickers": {"stored": len(spans), "behind": _tickers_behind(warehouse, calendar, final)},
        "gaps": {**GapStore(warehouse, calendar, 0).counts(), "holes": health.recent_holes(warehouse)},
        "rejected_bars": health.rejected_by_reason(warehouse),
        "corporate_actions": health.corporate_actions(warehouse, spans),
        "runs": health.last_runs(warehouse, runs),
        "judged_runs": health.judged_runs(warehouse),
    }


def check(status: dict, thresholds: Thresholds = Thresholds()) -> list[Problem]:
    """The problems in ``status``, in the order of their codes."""
    problems = []
    if status["sessions_behind"] != 0:
        problems.append(Problem(STALE, CHECK_CODES[STALE], (
            f"the last stored session is {status['last_stored_session'] or 'none'}, the last final NYSE session "
            f"{status['last_final_session']}" + (f" ({plural(status['sessions_behind'], 'session')} behind)"
                                                 if status["sessions_behind"] else ""))))
    late = [t for t in status["tickers"]["behind"]
            if t["sessions_behind"] is None or t["sessions_behind"] > thresholds.max_behind]
    if late and not problems:
        names = ", ".join(t["ticker"] for t in late[:10]) + (" ..." if len(late) > 10 else "")
        problems.append(Problem(BEHIND, CHECK_CODES[BEHIND], f"{plural(len(late), 'ticker')} behind by more "
                                f"than {plural(thresholds.max_behind, 'session')}: {names}"))
    failed = [r for r in status["judged_runs"] if r["exit_code"] != 0]
    if failed:
        run = failed[0]
        problems.append(Problem(RUN_FAILED, CHECK_CODES[RUN_FAILED], (
            f"the last run {run['run_id']} ({run['status']}, exit {run['exit_code']}) for {run['end_date']}"
            + (f": {run['error']}" if run.get("error") else ""))))
    gaps = status["gaps"]
    if gaps["pending_cells"] > thresholds.max_pending or gaps["vendor_holes"] > thresholds.max_holes:
        problems.append(Problem(GAPS, CHECK_CODES[GAPS], (
            f"{plural(gaps['pending_cells'], 'cell')} pending a retry (allowed {thresholds.max_pending}), "
            f"{plural(gaps['vendor_holes'], 'vendor hole')} (allowed {thresholds.max_holes})")))
    return problems


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def exit_code(problems: list[Problem]) -> int:
    return problems[0].code if problems else 0


def _sessions_after(calendar: TradingCalendar, last: Optional[dt.date], final: dt.date) -> Optional[int]:
    """Sessions after ``last`` up to ``final`` (None: nothing stored at all)."""
    if last is None:
        return None
    return len(calendar.sessions_in_range(pd.Timestamp(last) + pd.Timedelta(days=1), final))


def _tickers_behind(warehouse: Warehouse, calendar: TradingCalendar, final: dt.date) -> list[dict]:
    """Active tickers whose coverage (sessions asked and answered) ends before ``final``, most behind first."""
    covered = health.last_covered(warehouse)
    out = []
    for ticker in health.expected_tickers(warehouse) or sorted(covered):
        last = covered.get(ticker)
        if last is None or last < final:
            out.append({"ticker": ticker, "last_covered": last.isoformat() if last else None,
                        "sessions_behind": _sessions_after(calendar, last, final)})
    # never loaded first, then the most sessions behind
    return sorted(out, key=lambda t: (t["sessions_behind"] is not None, -(t["sessions_behind"] or 0), t["ticker"]))

