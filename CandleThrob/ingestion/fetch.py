"""The fetch stage: the plan's calls in batches, each validated and stored as it comes.

While the key's history window is unknown, the call reaching furthest back beyond
the free tier's window goes first, alone: if the key may not read that far (HTTP
403), that one refusal teaches the window and the rest is planned within it,
instead of every old call being refused in turn.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING, Optional, Union

import pandas as pd

from CandleThrob.actions.stage import LedgerStage
from CandleThrob.ingestion.executor import BatchExecutor
from CandleThrob.ingestion.state import RunState
from CandleThrob.ingestion.work import RunOptions, Work
from CandleThrob.ingestion.writer import BatchWriter
from CandleThrob.planning.planner import GroupedCall, Plan, RangeCall
from CandleThrob.planning.stage import YOUNG_SESSIONS, CallPlanner, PlannedRun
from CandleThrob.planning.window import FREE_TIER_YEARS, default_start, history_floor, learn_history_window
from CandleThrob.reporting.progress import Progress

if TYPE_CHECKING:
    from CandleThrob.ingestion.runtime import Runtime


def fetch_bars(rt: "Runtime", state: RunState, work: Work, options: RunOptions, writer: BatchWriter,
           ledger: LedgerStage) -> None:
    """Fetch the plan, the history-window probe first when it is needed (see the module's doc)."""
    executor = BatchExecutor(rt.config, lambda: rt.source, rt.warehouse, writer, rt.validator,
                             rt.clock, rt.stop_event, rt.check_stop, rt.memory_budget)
    planned = work.planned
    progress = Progress(total=planned.plan.calls, enabled=options.progress,
                        seconds_per_call=rt.config.rate_limit_seconds)

    def replan_within_the_window() -> PlannedRun:
        floor = learn_history_window(rt.warehouse, rt.clock)
        clamped = CallPlanner(rt.warehouse, rt.calendar, rt.gaps(), rt.config.history_start,
                              rt.config.settle_sessions).plan(
            work.tickers, state.end, start=options.start, full_refresh=options.full_refresh,
            shard=options.shard, floor=floor, spans=work.spans)
        state.unreachable, state.history_floor = clamped.unreachable, floor
        return clamped

    try:
        probe = None if planned.floor is not None else oldest_call(planned.plan, probe_cutoff(rt, state.end))
        if probe is not None:
            executor.run(state, _with_calls(planned, [probe]), ledger.split_dates(), progress)
            if state.stopped:
                state.remaining_calls += planned.plan.calls - 1
                return
            planned = replan_within_the_window() if state.window_refusals \
                else _with_calls(planned, [c for c in planned.plan.grouped + planned.plan.ranges if c != probe])
        executor.run(state, planned, ledger.split_dates(), progress)
        if state.window_refusals and planned.floor is None and not state.stopped:
            planned = replan_within_the_window()
            executor.run(state, planned, ledger.split_dates(), progress)
    finally:
        progress.close()
    young = CallPlanner(rt.warehouse, rt.calendar, rt.gaps(), None, rt.config.settle_sessions) \
        .young_after(state.end, state.fetched_sessions, state.settled)
    with rt.warehouse.transaction() as conn:
        rt.warehouse.set_state(conn, YOUNG_SESSIONS, young)


def probe_cutoff(rt: "Runtime", end: pd.Timestamp) -> dt.date:
    """Calls starting before this may be refused by a free key: beyond the free tier's two
    years, and beyond the tool's own default window (so a cold start with the defaults
    never needs the probe)."""
    return min(default_start(end, None).date(), history_floor(FREE_TIER_YEARS, rt.warehouse, rt.clock))


def oldest_call(plan: Plan, cutoff: dt.date) -> Optional[Union[GroupedCall, RangeCall]]:
    """The call of ``plan`` that reaches furthest back, if it starts before ``cutoff``."""
    calls = plan.grouped + plan.ranges
    if not calls:
        return None
    oldest = min(calls, key=lambda c: c.session if isinstance(c, GroupedCall) else c.start)
    start = oldest.session if isinstance(oldest, GroupedCall) else oldest.start
    return oldest if start.date() < cutoff else None


def _with_calls(planned: PlannedRun, calls: list) -> PlannedRun:
    """``planned`` making only ``calls`` (a part of its own calls)."""
    plan = Plan([c for c in calls if isinstance(c, GroupedCall)], [c for c in calls if isinstance(c, RangeCall)],
                planned.plan.missing_cells, planned.plan.sessions)
    return dataclasses.replace(planned, plan=plan)
