"""Coverage intervals: merging on the NYSE calendar and the missing cells they leave."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from CandleThrob.planning.coverage import merge_intervals, missing_cells, missing_sessions
from CandleThrob.planning.trading_calendar import TradingCalendar

D = dt.date
CAL = TradingCalendar()


def test_intervals_that_only_a_weekend_or_holiday_separates_join():
    # Fri 2024-03-15 and Mon 03-18; Thu 03-28 and Mon 04-01 (Good Friday 03-29 closed).
    assert merge_intervals([(D(2024, 3, 18), D(2024, 3, 20)), (D(2024, 3, 11), D(2024, 3, 15))],
                           CAL.session_days) == [(D(2024, 3, 11), D(2024, 3, 20))]
    assert merge_intervals([(D(2024, 3, 25), D(2024, 3, 28)), (D(2024, 4, 1), D(2024, 4, 1))],
                           CAL.sessions) == [(D(2024, 3, 25), D(2024, 4, 1))]


def test_a_session_between_keeps_intervals_apart_and_overlaps_fold():
    pieces = [(D(2024, 3, 4), D(2024, 3, 6)), (D(2024, 3, 8), D(2024, 3, 8)),
              (D(2024, 3, 5), D(2024, 3, 5)), (D(2024, 3, 11), D(2024, 3, 12))]
    # 03-07 is a session nobody covers; 03-08 (Fri) and 03-11 (Mon) touch.
    assert merge_intervals(pieces, CAL.session_days) == [(D(2024, 3, 4), D(2024, 3, 6)),
                                                         (D(2024, 3, 8), D(2024, 3, 12))]
    assert merge_intervals([], CAL.session_days) == []


def test_missing_sessions_are_the_window_outside_every_interval():
    window = CAL.sessions_in_range("2024-03-04", "2024-03-15")
    left = missing_sessions(window, [(D(2024, 3, 4), D(2024, 3, 6)), (D(2024, 3, 11), D(2024, 3, 14))])
    assert [d.date() for d in left] == [D(2024, 3, 7), D(2024, 3, 8), D(2024, 3, 15)]


def test_missing_cells_window_per_ticker():
    sessions = CAL.sessions_in_range("2024-03-01", "2024-03-15")
    coverage = {"OLD": [(D(2024, 3, 5), D(2024, 3, 13))]}
    default = pd.Timestamp("2024-03-11")
    got = missing_cells(["OLD", "NEW"], coverage, sessions, default)
    # OLD starts where its coverage starts; NEW at the default start.
    assert [d.date() for d in got["OLD"]] == [D(2024, 3, 14), D(2024, 3, 15)]
    assert [d.date() for d in got["NEW"]] == [D(2024, 3, 11), D(2024, 3, 12), D(2024, 3, 13),
                                             D(2024, 3, 14), D(2024, 3, 15)]
    # An explicit earlier --start backfills OLD's prefix too.
    earlier = missing_cells(["OLD"], coverage, sessions, default, explicit_start=pd.Timestamp("2024-03-01"))
    assert [d.date() for d in earlier["OLD"]] == [D(2024, 3, 1), D(2024, 3, 4), D(2024, 3, 14), D(2024, 3, 15)]
    # --full-refresh ignores coverage.
    full = missing_cells(["OLD"], coverage, sessions, default, full_refresh=True)
    assert len(full["OLD"]) == len(sessions[sessions >= pd.Timestamp("2024-03-05")])
