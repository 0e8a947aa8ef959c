"""The call planner: fewest grouped + range calls covering every missing cell."""

import itertools
import random

import numpy as np
import pandas as pd
import pytest

from CandleThrob.planning.planner import (GroupedCall, Plan, RangeCall, _min_cut_cover,
                                           _missing_positions, _threshold_cover, plan_calls)

# Business days stand in for NYSE sessions: the planner only sees the index it is given.
SESSIONS = pd.bdate_range("2022-01-03", periods=505)
TICKERS = [f"T{i:03d}" for i in range(523)]


def covered(plan: Plan, sessions: pd.DatetimeIndex) -> set:
    cells = {(None, day) for day in (call.session for call in plan.grouped)}
    for call in plan.ranges:
        span = sessions[(sessions >= call.start) & (sessions <= call.end)]
        cells |= {(call.ticker, day) for day in span}
    return cells


def assert_covers(plan: Plan, missing: dict, sessions: pd.DatetimeIndex) -> None:
    cells = covered(plan, sessions)
    for ticker, days in missing.items():
        for day in days:
            assert (None, day) in cells or (ticker, day) in cells, (ticker, day)


# --- the threshold rule on the shapes that occur every day -------------------------------

def test_cold_backfill_of_the_whole_universe_is_all_grouped():
    window = SESSIONS[:502]
    plan = plan_calls({t: window for t in TICKERS}, window)
    assert plan.calls == 502
    assert plan.grouped == [GroupedCall(day) for day in window]
    assert plan.ranges == []
    assert plan.missing_cells == 523 * 502


def test_cold_backfill_of_few_tickers_is_one_range_each():
    window = SESSIONS[:502]
    plan = plan_calls({t: window for t in TICKERS[:40]}, window)
    assert plan.grouped == []
    assert plan.ranges == [RangeCall(t, window[0], window[-1]) for t in TICKERS[:40]]


def test_nightly_run_is_one_grouped_call():
    plan = plan_calls({t: SESSIONS[-1:] for t in TICKERS}, SESSIONS)
    assert plan.grouped == [GroupedCall(SESSIONS[-1])]
    assert plan.ranges == []


def test_one_ticker_one_session_prefers_the_range_call_on_a_tie():
    plan = plan_calls({"AAPL": SESSIONS[-1:]}, SESSIONS)
    assert plan.grouped == []
    assert plan.ranges == [RangeCall("AAPL", SESSIONS[-1], SESSIONS[-1])]


def test_equal_costs_choose_the_fewest_grouped_calls():
    # 2 ranges or 2 grouped days cost the same.
    plan = plan_calls({"A": SESSIONS[-2:], "B": SESSIONS[-2:]}, SESSIONS)
    assert plan.grouped == []
    assert len(plan.ranges) == 2


def test_new_member_gets_one_range_shrunk_to_what_grouped_calls_leave():
    missing = {t: SESSIONS[-3:] for t in TICKERS[:522]}
    missing["NEW"] = SESSIONS
    plan = plan_calls(missing, SESSIONS)
    assert plan.calls == 4
    assert plan.grouped == [GroupedCall(day) for day in SESSIONS[-3:]]
    assert plan.ranges == [RangeCall("NEW", SESSIONS[0], SESSIONS[-4])]


@pytest.mark.parametrize("missing", [{}, {"AAPL": [], "MSFT": pd.DatetimeIndex([])}])
def test_nothing_missing_is_no_calls(missing):
    plan = plan_calls(missing, SESSIONS)
    assert (plan.calls, plan.grouped, plan.ranges, plan.missing_cells) == (0, [], [], 0)


# --- exactness against brute force -------------------------------------------------------

def brute_force_calls(missing: dict, sessions: pd.DatetimeIndex, max_range_bars: int) -> int:
    """Try every set of grouped sessions; each ticker left with cells pays for its whole span."""
    best = None
    for size in range(len(sessions) + 1):
        for grouped in itertools.combinations(sessions, size):
            cost = size
            for days in missing.values():
                if set(days) - set(grouped):
                    span = sessions.get_loc(days[-1]) - sessions.get_loc(days[0]) + 1
                    cost += -(-span // max_range_bars)
            best = cost if best is None else min(best, cost)
    return best


def random_missing(rng: random.Random, sessions: pd.DatetimeIndex, suffixes: bool) -> dict:
    """Up to 5 tickers; suffixes only, or holes thick in a few rows and columns,
    the shape real gaps take (a ticker missing a long stretch, a day missing for many)."""
    n_tickers = rng.randint(1, 5)
    if suffixes:
        return {f"T{i}": sessions[len(sessions) - rng.randint(0, len(sessions)):]
                for i in range(n_tickers)}
    heavy_ticker = [rng.random() < 0.4 for _ in range(n_tickers)]
    heavy_session = [rng.random() < 0.4 for _ in sessions]
    return {f"T{i}": pd.DatetimeIndex([
                day for j, day in enumerate(sessions)
                if rng.random() < (0.9 if heavy_ticker[i] or heavy_session[j] else 0.15)])
            for i in range(n_tickers)}


@pytest.mark.parametrize("seed", range(500))
def test_random_holes_match_brute_force(seed):
    rng = random.Random(seed)
    sessions = SESSIONS[:rng.randint(1, 7)]
    missing = random_missing(rng, sessions, suffixes=seed % 5 == 0)
    plan = plan_calls(missing, sessions)
    assert plan.calls == brute_force_calls(missing, sessions, max_range_bars=len(sessions))
    assert_covers(plan, missing, sessions)
    for call in plan.ranges:  # shrunk: each range starts and ends on a cell it must fetch
        grouped = {g.session for g in plan.grouped}
        assert call.start in missing[call.ticker] and call.start not in grouped
        assert call.end in missing[call.ticker] and call.end not in grouped


@pytest.mark.parametrize("seed", range(200))
def test_split_ranges_never_cost_more_than_the_model_optimum(seed):
    # With spans over the limit the plan is optimal for whole-span costs; shrinking
    # and greedy splitting may only save calls.
    rng = random.Random(seed)
    sessions = SESSIONS[:rng.randint(1, 7)]
    max_range_bars = rng.randint(1, 3)
    missing = random_missing(rng, sessions, suffixes=seed % 5 == 0)
    plan = plan_calls(missing, sessions, max_range_bars=max_range_bars)
    best = brute_force_calls(missing, sessions, max_range_bars)
    whole_span_cost = len(plan.grouped) + sum(
        -(-(sessions.get_loc(missing[t][-1]) - sessions.get_loc(missing[t][0]) + 1)
          // max_range_bars)
        for t in {call.ticker for call in plan.ranges})
    assert whole_span_cost == best
    assert plan.calls <= best
    assert_covers(plan, missing, sessions)
    for call in plan.ranges:
        assert sessions.get_loc(call.end) - sessions.get_loc(call.start) + 1 <= max_range_bars


@pytest.mark.parametrize("seed", range(200))
def test_threshold_rule_and_min_cut_choose_the_same_plan(seed):
    rng = random.Random(seed)
    sessions = SESSIONS[:rng.randint(1, 60)]
    missing = {t: sessions[len(sessions) - rng.randint(0, len(sessions)):]
               for t in TICKERS[:rng.randint(1, 40)]}
    _, positions = _missing_positions(missing, sessions)
    if not positions:
        return
    cost = np.array([rng.randint(1, 3) for _ in positions])
    grouped_t, ranged_t = _threshold_cover(positions, cost, len(sessions))
    grouped_c, ranged_c = _min_cut_cover(positions, cost, len(sessions))
    assert grouped_t.tolist() == sorted(grouped_c.tolist())
    assert ranged_t.tolist() == ranged_c.tolist()


def test_min_cut_on_a_cross_of_holes():
    # One session missed by all tickers, one ticker missing every session:
    # one grouped call plus one range, whatever else is missing.
    missing = {t: SESSIONS[[10]] for t in TICKERS[:50]}
    missing["GAPPY"] = SESSIONS[::7]
    plan = plan_calls(missing, SESSIONS)
    assert plan.grouped == [GroupedCall(SESSIONS[10])]
    assert plan.ranges == [RangeCall("GAPPY", SESSIONS[0], SESSIONS[::7][-1])]


# --- the range limit ----------------------------------------------------------------------

def test_spans_longer_than_the_limit_are_split():
    plan = plan_calls({"AAPL": SESSIONS[:10]}, SESSIONS, max_range_bars=4)
    assert plan.ranges == [RangeCall("AAPL", SESSIONS[0], SESSIONS[3]),
                           RangeCall("AAPL", SESSIONS[4], SESSIONS[7]),
                           RangeCall("AAPL", SESSIONS[8], SESSIONS[9])]


def test_split_spans_skip_gaps_and_end_on_a_needed_cell():
    plan = plan_calls({"AAPL": SESSIONS[[0, 1, 2, 7, 8]]}, SESSIONS, max_range_bars=4)
    assert plan.ranges == [RangeCall("AAPL", SESSIONS[0], SESSIONS[2]),
                           RangeCall("AAPL", SESSIONS[7], SESSIONS[8])]


def test_split_counts_tip_the_balance_to_grouped_calls():
    # Ranged, each ticker needs 2 calls (6 sessions, 5 per call): 3 tickers cost 6,
    # the same as 6 grouped calls, so ranges win the tie; a 4th ticker tips it.
    three = plan_calls({t: SESSIONS[-6:] for t in "ABC"}, SESSIONS, max_range_bars=5)
    four = plan_calls({t: SESSIONS[-6:] for t in "ABCD"}, SESSIONS, max_range_bars=5)
    assert (len(three.grouped), len(three.ranges)) == (0, 6)
    assert (len(four.grouped), len(four.ranges)) == (6, 0)


# --- inputs -------------------------------------------------------------------------------

def test_plain_lists_of_timestamps_unsorted_and_repeated_are_accepted():
    days = [SESSIONS[-1], SESSIONS[-2], SESSIONS[-1]]
    plan = plan_calls({"AAPL": days}, SESSIONS)
    assert plan.ranges == [RangeCall("AAPL", SESSIONS[-2], SESSIONS[-1])]
    assert plan.missing_cells == 2


def test_a_day_outside_the_window_is_refused():
    with pytest.raises(ValueError, match="AAPL: 2022-01-01 is not a session"):
        plan_calls({"AAPL": [pd.Timestamp("2022-01-01")]}, SESSIONS)


def test_max_range_bars_must_be_positive():
    with pytest.raises(ValueError, match="max_range_bars"):
        plan_calls({}, SESSIONS, max_range_bars=0)


# --- describe -----------------------------------------------------------------------------

def test_describe_compresses_grouped_runs_and_times_the_plan():
    window = SESSIONS[:8]  # Mon 2022-01-03 .. Wed 2022-01-12
    missing = {t: window[[0, 1, 2, 5]] for t in "ABCDEF"}
    missing["NEW"] = window
    plan = plan_calls(missing, window)
    assert plan.describe(seconds_per_call=12) == "\n".join([
        "5 calls for 32 missing cells: 4 grouped, 1 range",
        "grouped daily (every ticker, one session per call):",
        "  2022-01-03..2022-01-05 (3 sessions)",
        "  2022-01-10",
        "ticker range (one ticker, a span of sessions per call):",
        "  NEW 2022-01-06..2022-01-12 (5 sessions)",
        "5 calls, 1 min at 12 s per call",
    ])


@pytest.mark.parametrize("calls, seconds, text", [
    (523, 12, "523 calls, 1 h 44 min at 12 s per call"),
    (1, 12, "1 call, 12 s at 12 s per call"),
    (300, 12, "300 calls, 1 h at 12 s per call"),
    (8, 12, "8 calls, 1 min 36 s at 12 s per call"),
    (10, 0, "10 calls, 0 s at 0 s per call"),
    (3, 0.5, "3 calls, 1.5 s at 0.5 s per call"),
])
def test_describe_total_time(calls, seconds, text):
    window = pd.bdate_range("2020-01-01", periods=calls)
    plan = Plan(grouped=[GroupedCall(day) for day in window], ranges=[],
                missing_cells=calls, sessions=window)
    assert plan.describe(seconds).splitlines()[-1] == text
