"""NYSE sessions and the default --end: the last session whose daily bars are final."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from CandleThrob.planning.trading_calendar import TradingCalendar

CAL = TradingCalendar()
UTC = dt.timezone.utc


def test_default_end_is_final_after_20h_new_york():
    # Wed 2024-07-03 is an early close; bars count as final at 20:00 New York (EDT = UTC-4).
    assert CAL.last_final_session(dt.datetime(2024, 7, 3, 23, 59, tzinfo=UTC)) == pd.Timestamp("2024-07-02")
    assert CAL.last_final_session(dt.datetime(2024, 7, 4, 0, 0, tzinfo=UTC)) == pd.Timestamp("2024-07-03")
    # Independence Day and the weekend after it: still the 5th, the last session.
    assert CAL.last_final_session(dt.datetime(2024, 7, 7, 12, tzinfo=UTC)) == pd.Timestamp("2024-07-05")
    # In winter (EST = UTC-5) 20:00 New York is 01:00 UTC the next day.
    assert CAL.last_final_session(dt.datetime(2024, 1, 10, 0, 30, tzinfo=UTC)) == pd.Timestamp("2024-01-08")
    assert CAL.last_final_session(dt.datetime(2024, 1, 10, 1, 0, tzinfo=UTC)) == pd.Timestamp("2024-01-09")


def test_sessions_know_holidays_and_one_off_closures():
    assert not CAL.is_session("2024-03-29")  # Good Friday
    assert not CAL.is_session("2012-10-29")  # Hurricane Sandy
    assert not CAL.is_session("2018-12-05")  # President Bush's day of mourning
    assert CAL.is_session("2024-11-29")      # the early close after Thanksgiving is a session
    assert len(CAL.sessions_in_range("2024-01-01", "2024-12-31")) == 252


def test_backfills_before_the_default_twenty_year_window_work():
    assert CAL.first_session <= pd.Timestamp("1990-01-02")
    assert len(CAL.sessions_in_range("1995-01-01", "1995-12-31")) == 252
    assert CAL.session_on_or_before("1995-07-04") == pd.Timestamp("1995-07-03")
