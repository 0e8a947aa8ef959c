"""What a batch's answers mean: the bars to validate, the coverage they earn, the gaps they leave.

A call that failed earns nothing (its cells stay missing). A grouped day that
answered earns coverage for every ticker it was asked for; a range answer for
its span. Cells that yield no valid bar become gaps (``warehouse/gaps.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from CandleThrob.errors import HistoryWindowError
from CandleThrob.ingestion.state import CallResult, RunState
from CandleThrob.planning.coverage import Interval
from CandleThrob.planning.planner import GroupedCall
from CandleThrob.universe.market import MARKET, common_mask
from CandleThrob.warehouse.gaps import Gap

log = logging.getLogger("CandleThrob.pipeline")


@dataclass
class Answers:
    frames: list[pd.DataFrame] = field(default_factory=list)
    coverage: dict[str, list[Interval]] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)
    # The cells each answer was asked for (ticker, trade_date), and whether its answer had no bar at all
    wanted: list[pd.DataFrame] = field(default_factory=list)


def read_answers(state: RunState, results: list[CallResult], wanted_on: dict, missing: dict,
                 previous: dict) -> Answers:
    """``previous``: ticker -> (date, close) of its last stored bar; a ticker that never traded
    before a day cannot be missing from it (it was not listed yet)."""
    answers = Answers()
    for result in results:
        if isinstance(result.call, GroupedCall):
            _grouped(state, result, wanted_on.get(result.call.session, set()), answers, previous)
        else:
            _range(state, result, missing.get(result.call.ticker), answers)
    return answers


def gaps_and_fills(answers: Answers, accepted: pd.DataFrame, rejected: pd.DataFrame, quarantined: list[str]
                   ) -> tuple[list[Gap], pd.DataFrame]:
    """Cells asked that yielded no valid bar (gaps), and the (ticker, trade_date) keys that did.
    A quarantined ticker has no gaps: none of its cells counts as asked, all are asked again."""
    filled = accepted[["ticker", "trade_date"]]
    if not answers.wanted:
        return [], filled
    wanted = pd.concat(answers.wanted, ignore_index=True)
    wanted = wanted[~wanted["ticker"].isin(quarantined)]
    got = pd.MultiIndex.from_frame(filled)
    open_cells = wanted[~pd.MultiIndex.from_frame(wanted[["ticker", "trade_date"]]).isin(got)]
    if open_cells.empty:
        return [], filled
    refused = {(t, d): str(r) for t, d, r in zip(rejected["ticker"], rejected["trade_date"], rejected["reasons"])
               if not pd.isna(d)}
    gaps = []
    for ticker, day, empty in open_cells[["ticker", "trade_date", "empty"]].itertuples(index=False):
        if (ticker, day) in refused:
            gaps.append(Gap(ticker, day.date(), "rejected", f"the bar was rejected: {refused[(ticker, day)]}"))
        elif empty:
            gaps.append(Gap(ticker, day.date(), "empty", "the range answer held no bar at all"))
        else:
            gaps.append(Gap(ticker, day.date(), "absent", "no bar in the answer"))
    return gaps, filled


def _grouped(state: RunState, result: CallResult, wanted: set[str], answers: Answers, previous: dict) -> None:
    day = result.call.session.date()
    if result.error is not None:
        if isinstance(result.error, HistoryWindowError):
            state.window_refusals += 1
            return
        for ticker in wanted & state.outcomes.keys():
            state.outcomes[ticker].flag("grouped_days_failed", [str(day)])
            answers.touched.add(ticker)
        state.failed_days.append(str(day))
        state.failed_day_errors[str(day)] = str(result.error)
        log.error("grouped day %s failed: %s", day, result.error)
        return
    # A set lookup per bar: Series.isin on pandas' Arrow strings costs ~30 ms an answer.
    symbols = result.bars["ticker"].to_numpy(dtype=object)
    keep = np.fromiter((s in wanted for s in symbols), dtype=bool, count=len(symbols))
    if MARKET in wanted:  # UNIVERSE=all: every common stock and ETF of the answer
        keep |= common_mask(result.bars["ticker"])
    bars = result.bars if keep.all() else result.bars[keep]  # the source kept only these already
    # A symbol of the market that does not trade is no gap: listings come and go.
    for ticker in sorted(wanted.difference(symbols[keep].tolist(), (MARKET,))):
        if ticker in state.outcomes:
            state.outcomes[ticker].flag("absent_from_grouped_day", [str(day)])
            answers.touched.add(ticker)
    interval = (day, day)
    for ticker in wanted:
        answers.coverage.setdefault(ticker, []).append(interval)
    stamp = pd.Timestamp(day)
    traded = sorted(t for t in wanted if t in previous and previous[t][0] < stamp)
    answers.wanted.append(pd.DataFrame({"ticker": np.array(traded, dtype=object),
                                        "trade_date": np.full(len(traded), np.datetime64(day, "ns")),
                                        "empty": np.zeros(len(traded), dtype=bool)}))
    answers.frames.append(bars.assign(source=_column(len(bars), "grouped")))


def _range(state: RunState, result: CallResult, missing: pd.DatetimeIndex, answers: Answers) -> None:
    call = result.call
    outcome = state.outcome(call.ticker)
    outcome.api_calls += 1
    outcome.duration_s += result.seconds
    answers.touched.add(call.ticker)
    if result.error is not None:
        if isinstance(result.error, HistoryWindowError):
            state.window_refusals += 1
            return
        outcome.status = "failed"
        outcome.error = str(result.error)
        log.error("%s: %s", call.ticker, result.error)
        return
    empty = result.bars.empty
    asked = pd.DatetimeIndex([]) if missing is None else missing[(missing >= call.start) & (missing <= call.end)]
    if not empty:  # before its first bar and after its last the ticker was not listed: nothing is missing
        dates = result.bars["trade_date"].dropna()
        asked = asked[(asked >= dates.min()) & (asked <= dates.max())] if len(dates) else asked[:0]
    answers.wanted.append(pd.DataFrame({"ticker": _column(len(asked), call.ticker),
                                        "trade_date": asked.values.astype("datetime64[ns]"),
                                        "empty": np.full(len(asked), empty)}))
    if empty and len(asked):
        # Not days without trading: a ticker the run expects has no bar at all in the span.
        outcome.status = "failed"
        outcome.error = (f"the source answered OK but with no bars from {call.start.date()} to "
                         f"{call.end.date()}; the cells are asked again on later runs")
        log.warning("%s: %s", call.ticker, outcome.error)
    answers.coverage.setdefault(call.ticker, []).append((call.start.date(), call.end.date()))
    answers.frames.append(result.bars.assign(source=_column(len(result.bars), "range")))


def _column(n: int, value: str) -> np.ndarray:
    # An object array, not pandas' string dtype: filling that from a scalar is the slow path.
    return np.full(n, value, dtype=object)


def revisions(stored: pd.DataFrame, fresh: pd.DataFrame) -> list[dict]:
    """Bars of settled sessions whose values changed since they were stored: before and after."""
    if stored.empty or fresh.empty:
        return []
    columns = ["open", "high", "low", "close", "volume", "vwap", "transactions"]
    joined = stored[["ticker", "trade_date", *columns]].merge(
        fresh[["ticker", "trade_date", *columns]], on=["ticker", "trade_date"], suffixes=("_before", "_after"))
    out = []
    for row in joined.itertuples(index=False):
        before = {c: getattr(row, f"{c}_before") for c in columns}
        after = {c: getattr(row, f"{c}_after") for c in columns}
        if any(not _same(before[c], after[c]) for c in columns):
            out.append({"ticker": row.ticker, "date": str(row.trade_date.date()),
                        "before": {c: _plain(v) for c, v in before.items()},
                        "after": {c: _plain(v) for c, v in after.items()}})
    return out


def _same(a: float, b: float) -> bool:
    if pd.isna(a) and pd.isna(b):
        return True
    return not (pd.isna(a) or pd.isna(b)) and abs(a - b) <= 1e-9 * max(1.0, abs(b))


def _plain(value: float) -> object:
    return None if pd.isna(value) else float(value)
