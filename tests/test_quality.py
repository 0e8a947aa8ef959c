"""The quality gate: row rules, ticker scores, warnings, quarantine, real anomalies."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from CandleThrob.bars import BAR_COLUMNS
from CandleThrob.quality.validator import DataQualityValidator, split_like_ratio
from CandleThrob.planning.trading_calendar import TradingCalendar

CALENDAR = TradingCalendar()
# January 2024: the 1st and the 15th (MLK day) are holidays, the 6th a Saturday.
JAN = list(CALENDAR.sessions_in_range("2024-01-02", "2024-01-31"))
KAGGLE = (Path(__file__).resolve().parents[1].parent / "shared" / "data"
          / "kaggle_sp500_all_stocks_5yr" / "all_stocks_5yr.csv.gz")


def bars(rows, ticker="T") -> pd.DataFrame:
    """A bars frame from (date, open, high, low, close, volume) rows."""
    frame = pd.DataFrame(rows, columns=["trade_date", "open", "high", "low", "close", "volume"])
    frame.insert(0, "ticker", pd.Series([ticker] * len(frame), dtype=object))
    frame["trade_date"] = pd.to_datetime(frame["trade_date"]).astype("datetime64[ns]")
    values = ["open", "high", "low", "close", "volume"]
    frame[values] = frame[values].astype(float)
    frame[["vwap", "transactions"]] = np.nan
    return frame[list(BAR_COLUMNS)]


def clean(days, ticker="T", close=10.0) -> pd.DataFrame:
    return bars([(day, close, close + 1, close - 1, close, 1000) for day in days], ticker)


@pytest.fixture(scope="module")
def validator():
    return DataQualityValidator(CALENDAR)


def rejected_one(validator, rows, **kwargs):
    result = validator.check(bars(rows), **kwargs)
    assert len(result.rejected) == 1
    return result.rejected.iloc[0]


# ---- row rules --------------------------------------------------------------

def test_clean_complete_ticker_scores_one(validator):
    result = validator.check(clean(JAN[:5]))
    quality = result.tickers["T"]
    assert len(result.accepted) == 5 and result.rejected.empty
    assert list(result.rejected.columns) == list(BAR_COLUMNS) + ["reasons", "detail"]
    assert (quality.fetched, quality.accepted, quality.rejected, quality.expected_sessions) == (5, 5, 0, 5)
    assert quality.score == 1.0 and quality.ok
    assert (quality.first_date, quality.last_date) == (JAN[0], JAN[4])
    assert quality.missing_sessions == [] and quality.big_moves == [] and quality.reasons_count == {}


def test_missing_value_names_the_fields(validator):
    row = rejected_one(validator, [("2024-01-02", np.nan, np.nan, 9, 10, np.nan)])
    assert row["reasons"] == "missing_value"
    assert row["detail"] == "missing_value (missing open, high, volume)"


def test_missing_date_is_a_missing_value_only(validator):
    row = rejected_one(validator, [(None, 10, 11, 9, 10, 100)])
    assert row["reasons"] == "missing_value"
    assert row["detail"] == "missing_value (missing trade_date)"


def test_non_positive_price(validator):
    row = rejected_one(validator, [("2024-01-02", 0, 11, -1, 10, 100)])
    assert (row["reasons"], row["detail"]) == ("non_positive_price", "non_positive_price (open, low <= 0)")


def test_negative_volume(validator):
    row = rejected_one(validator, [("2024-01-02", 10, 11, 9, 10, -5)])
    assert (row["reasons"], row["detail"]) == ("negative_volume", "negative_volume (volume -5.0)")


def test_zero_volume_alone_is_accepted(validator):
    result = validator.check(bars([("2024-01-02", 10, 11, 9, 10, 0)]))
    assert len(result.accepted) == 1 and result.rejected.empty


def test_high_below_low_gets_every_reason(validator):
    # The real AOS 2014-05-19 bar: high < low, so neither open nor close fits.
    row = rejected_one(validator, [("2024-01-02", 23.89, 23.595, 23.85, 24.445, 1944854)])
    assert row["reasons"] == "high_below_low;open_outside_range;close_outside_range"
    assert row["detail"].startswith("high_below_low (high 23.595 < low 23.85); "
                                    "open_outside_range (open 23.89 outside low 23.85 .. high 23.595)")


def test_open_and_close_outside_range(validator):
    result = validator.check(bars([("2024-01-02", 8, 11, 9, 10, 100), ("2024-01-03", 10, 11, 9, 12, 100)]))
    assert list(result.rejected["reasons"]) == ["open_outside_range", "close_outside_range"]
    assert result.rejected["detail"].iloc[0] == "open_outside_range (open 8.0 outside low 9.0 .. high 11.0)"


def test_rounding_within_the_price_tolerance_is_accepted(validator):
    # 0.04% above the high passes the default 0.05%; 0.06% does not.
    result = validator.check(bars([("2024-01-02", 10, 100, 9, 100.04, 100),
                                   ("2024-01-03", 10, 100, 9, 100.06, 100)]))
    assert list(result.accepted["trade_date"]) == [JAN[0]]
    assert list(result.rejected["reasons"]) == ["close_outside_range"]


def test_not_a_session(validator):
    result = validator.check(clean(["2024-01-05", "2024-01-06", "2024-01-15"]))
    assert list(result.rejected["trade_date"]) == [pd.Timestamp("2024-01-06"), pd.Timestamp("2024-01-15")]
    assert set(result.rejected["detail"]) == {"not_a_session (not a XNYS session)"}


def test_after_end(validator):
    result = validator.check(clean(JAN[:3]), end=JAN[1])
    row = result.rejected.iloc[0]
    assert (row["trade_date"], row["reasons"]) == (JAN[2], "after_end")
    assert row["detail"] == "after_end (after the run's end 2024-01-03)"


def test_duplicates_reject_every_copy(validator):
    frame = pd.concat([clean(JAN[:3]), clean([JAN[1]], close=11.0)], ignore_index=True)
    result = validator.check(frame)
    assert list(result.accepted.index) == [0, 2]  # input order and index kept
    assert list(result.rejected["close"]) == [10.0, 11.0]
    assert set(result.rejected["detail"]) == {"duplicate_date (2 bars for this ticker and date)"}
    # Only the same ticker's copies are duplicates.
    assert validator.check(pd.concat([clean(JAN[:1], "A"), clean(JAN[:1], "B")])).rejected.empty


def test_reasons_are_counted_per_ticker(validator):
    frame = pd.concat([bars([("2024-01-02", 10, 9, 11, 10, -1), ("2024-01-03", np.nan, 11, 9, 10, 1)], "A"),
                       clean(JAN[:2], "B")], ignore_index=True)
    tickers = validator.check(frame).tickers
    assert tickers["A"].reasons_count == {"missing_value": 1, "negative_volume": 1, "high_below_low": 1,
                                          "open_outside_range": 1, "close_outside_range": 1}
    assert tickers["B"].reasons_count == {}


# ---- ticker score -----------------------------------------------------------

def test_score_is_validity_times_completeness(validator):
    # 10 fetched: 9 good bars spanning 10 sessions (the 9th session missing)
    # and one dated on a Saturday: validity 9/10, completeness 9/10.
    frame = pd.concat([clean(JAN[:8] + JAN[9:10]), clean(["2024-01-06"])], ignore_index=True)
    quality = validator.check(frame).tickers["T"]
    assert (quality.fetched, quality.accepted, quality.expected_sessions) == (10, 9, 10)
    assert quality.missing_sessions == [JAN[8]]
    assert (quality.validity, quality.completeness) == (0.9, 0.9)
    assert quality.score == 0.81 and quality.ok


def test_a_cell_asked_again_after_a_bad_answer_does_not_count_in_the_score(validator):
    # one fresh good session, and the known-bad cell asked again and still bad (high below low)
    frame = bars([(JAN[0], 10, 9, 11, 10, 1000), (JAN[1], 10, 11, 9, 10, 1000)])
    plain = validator.check(frame).tickers["T"]
    assert (plain.fetched, plain.accepted, plain.score, plain.ok) == (2, 1, 0.5, False)
    retried = validator.check(frame, retried={("T", JAN[0])})
    quality = retried.tickers["T"]
    assert (quality.fetched, quality.accepted, quality.score, quality.ok) == (1, 1, 1.0, True)
    assert list(retried.rejected["trade_date"]) == [JAN[0]]  # still rejected, with its own reason
    assert validator.check(frame, retried={("T", JAN[1])}).tickers["T"].score == 0.5


def test_a_late_starter_is_not_incomplete(validator):
    frame = pd.concat([clean(JAN, "OLD"), clean(JAN[10:], "NEW")], ignore_index=True)
    quality = validator.check(frame).tickers["NEW"]
    assert quality.missing_sessions == [] and quality.score == 1.0
    assert quality.first_date == JAN[10]


def test_holes_are_missing_sessions(validator):
    quality = validator.check(clean(JAN[:2] + JAN[5:10])).tickers["T"]
    assert quality.missing_sessions == JAN[2:5]
    assert quality.expected_sessions == 10
    assert quality.score == 7 / 10


def test_a_rejected_bar_counts_once(validator):
    # The source did send a bar for the session, so it lowers validity only.
    frame = clean(JAN[:4])
    frame.loc[1, "open"] = np.nan
    quality = validator.check(frame).tickers["T"]
    assert quality.missing_sessions == []
    assert quality.score == 3 / 4


def test_no_accepted_bar_scores_zero_and_no_bars_score_one(validator):
    quality = validator.check(bars([("2024-01-02", np.nan, 11, 9, 10, 1)])).tickers["T"]
    assert (quality.score, quality.ok, quality.first_date) == (0.0, False, None)
    assert validator.validate_ticker_data(bars([])) == (True, 1.0, [])
    assert validator.check(bars([]), splits={"T": [JAN[0]]}).tickers == {}


def test_quarantine_moves_low_scores_to_rejected(validator):
    low = clean(JAN[:4], "LOW")
    low.loc[0, "high"] = np.nan  # score 3/4 < 0.8
    frame = pd.concat([low, clean(JAN[:4], "GOOD")], ignore_index=True)
    result = validator.check(frame)
    assert result.quarantine_low_scores() == ["LOW"]
    assert set(result.accepted["ticker"]) == {"GOOD"}
    assert list(result.rejected["reasons"]) == ["missing_value"] + ["low_quality_score"] * 3
    assert result.rejected["detail"].iloc[-1] == "low_quality_score (ticker score 0.75 < minimum 0.8)"
    assert result.quarantine_low_scores() == ["LOW"] and len(result.rejected) == 4


# ---- warnings -----------------------------------------------------------------

def closes(values, ticker="T", days=JAN) -> pd.DataFrame:
    return bars([(day, c, c, c, c, 1) for day, c in zip(days, values)], ticker)


def test_big_move_flagged_unless_split_on_record(validator):
    frame = closes([100.0, 100.0, 49.0, 50.0])
    quality = validator.check(frame).tickers["T"]
    assert quality.big_moves == [(JAN[2], 49.0 / 100.0)]
    assert quality.split_like_moves == [(JAN[2], 1, 2)]
    assert quality.score == 1.0  # warnings do not lower it
    quality = validator.check(frame, splits={"T": [pd.Timestamp("2024-01-04")]}).tickers["T"]
    assert quality.big_moves == [] and quality.split_like_moves == []


def test_big_move_threshold(validator):
    def moves(values, checker=validator):
        return checker.check(closes(values)).tickers["T"].big_moves

    # BAX-like -44% and exactly +-50% are not beyond the threshold.
    assert moves([100.0, 56.0]) == moves([100.0, 50.0]) == moves([100.0, 150.0]) == []
    assert moves([100.0, 49.9]) == [(JAN[1], 49.9 / 100.0)]
    assert moves([100.0, 150.1]) == [(JAN[1], 150.1 / 100.0)]
    assert moves([100.0, 56.0], DataQualityValidator(CALENDAR, big_move=0.4)) == [(JAN[1], 56.0 / 100.0)]


def test_moves_skip_rejected_bars(validator):
    # The LNT 2016-05-19 shape: one bad half-price close, rejected, then normal again.
    frame = bars([(JAN[0], 35.2, 35.4, 35.1, 35.35, 1), (JAN[1], 35.19, 35.785, 35.085, 17.87, 1),
                  (JAN[2], 35.8, 36.32, 35.55, 35.91, 1)])
    result = validator.check(frame)
    assert list(result.rejected["reasons"]) == ["close_outside_range"]
    assert result.tickers["T"].big_moves == []


def test_previous_close_is_the_first_reference(validator):
    def moves(stored):
        return validator.check(closes([40.0, 40.0]), previous_close=stored).tickers["T"].big_moves

    assert moves({"T": (pd.Timestamp("2023-12-29"), 100.0)}) == [(JAN[0], 40.0 / 100.0)]
    # A stored bar not before the new ones is no reference for them.
    assert moves({"T": (JAN[0], 100.0)}) == []


@pytest.mark.parametrize("prev_close, close, expected", [
    (100.0, 50.0, (1, 2)),             # 2-for-1
    (83.02, 40.975, (1, 2)),           # DISCA 2014-08-07, 1.3% off
    (90.0, 30.0, (1, 3)),
    (30.0, 20.0, (2, 3)),              # 3-for-2
    (20.0, 30.0, (3, 2)),
    (100.0, 5.0, (1, 20)),
    (1.0, 10.0, (10, 1)),              # 1-for-10 reverse split
    (1.0, 7.00000700001, (7, 1)),
    (7.00000700001, 1.0, (1, 7)),
    (100.0, 48.4, None),               # 3.2% off 1/2
    (100.0, 56.0, None),
    (100.0, 101.0, None),
    (0.0, 10.0, None),
    (np.nan, 10.0, None),
])
def test_split_like_ratio(prev_close, close, expected):
    assert split_like_ratio(prev_close, close) == expected


def test_split_like_ratio_tolerance_is_relative():
    # 7.00000700001 / 7 - 1 is just above 1e-6.
    assert split_like_ratio(1.0, 7.00000700001, tol=1e-6) is None
    assert split_like_ratio(1.0, 7.00000700001, tol=2e-6) == (7, 1)


# ---- the seed's API -------------------------------------------------------------

def test_validate_ticker_data(validator):
    # Bars on the 2nd, 3rd and 9th (accepted) and the 10th (rejected).
    frame = pd.concat([closes([10.0, 10.0, 10.0], days=JAN[:2] + JAN[5:6]),
                       bars([(JAN[6], 10, 9, 11, 10, -1)])], ignore_index=True)
    ok, score, issues = validator.validate_ticker_data(frame)
    assert (ok, score) == (False, (3 / 4) * (3 / 6))
    assert issues == [
        "2024-01-04: missing_session (3 session(s) without a bar, to 2024-01-08)",
        "2024-01-10: negative_volume (volume -1.0)",
        "2024-01-10: high_below_low (high 9.0 < low 11.0)",
        "2024-01-10: open_outside_range (open 10.0 outside low 11.0 .. high 9.0)",
        "2024-01-10: close_outside_range (close 10.0 outside low 11.0 .. high 9.0)",
    ]


def test_validate_ticker_data_takes_the_seed_shape(validator):
    frame = clean(JAN[:3])
    seed = frame.drop(columns=["ticker", "vwap", "transactions"]).set_index("trade_date")
    seed.columns = [c.capitalize() for c in seed.columns]
    seed["Open"] = seed["Open"].astype(object)
    seed.loc[JAN[1], "Open"] = "junk"
    ok, score, issues = validator.validate_ticker_data(seed)
    assert (ok, score, issues) == (False, 2 / 3, ["2024-01-03: missing_value (missing open)"])
    with pytest.raises(ValueError):
        validator.validate_ticker_data(pd.concat([clean(JAN[:1], "A"), clean(JAN[:1], "B")]))


def test_validate_ticker_data_reports_warnings(validator):
    ok, score, issues = validator.validate_ticker_data(closes([100.0, 49.0]))
    assert (ok, score) == (True, 1.0)
    assert issues == ["2024-01-03: big_move (close/previous close 0.49)",
                      "2024-01-03: split_like_move (as a 2-for-1 split)"]


# ---- real anomalies: the Kaggle S&P 500 five-year file ---------------------------

@pytest.fixture(scope="module")
def kaggle():
    if not KAGGLE.exists():
        pytest.skip(f"{KAGGLE} is absent")
    raw = pd.read_csv(KAGGLE)
    frame = pd.DataFrame({
        "ticker": raw["Name"].astype(object),
        "trade_date": pd.to_datetime(raw["date"]).astype("datetime64[ns]"),
        **{c: raw[c].astype(float) for c in ("open", "high", "low", "close", "volume")},
        "vwap": np.nan, "transactions": np.nan})
    return raw, frame, DataQualityValidator(CALENDAR).check(frame, end="2018-02-07")


def reasons_on(result, ticker, day):
    rows = result.rejected
    return list(rows.loc[(rows["ticker"] == ticker) & (rows["trade_date"] == pd.Timestamp(day)), "reasons"])


def test_kaggle_rejected_rows(kaggle):
    raw, frame, result = kaggle
    # Independently: no value may be absent, and low <= open, close <= high.
    # (The file has no duplicates nor non-session dates to add.)
    bad = (raw[["open", "high", "low", "close", "volume"]].isna().any(axis=1)
           | (raw["high"] < raw["low"])
           | ~raw["open"].between(raw["low"], raw["high"])
           | ~raw["close"].between(raw["low"], raw["high"]))
    assert not raw.duplicated(["Name", "date"]).any()
    assert len(result.rejected) == bad.sum() == 23
    assert len(result.accepted) == len(frame) - 23
    assert sorted(zip(result.rejected["ticker"], result.rejected["trade_date"].dt.strftime("%Y-%m-%d"))) \
        == sorted(zip(raw.loc[bad, "Name"], raw.loc[bad, "date"]))
    codes = Counter(code for reasons in result.rejected["reasons"] for code in reasons.split(";"))
    assert codes == {"missing_value": 11, "close_outside_range": 9, "open_outside_range": 4,
                     "high_below_low": 1}

    assert reasons_on(result, "AOS", "2014-05-19") == [
        "high_below_low;open_outside_range;close_outside_range"]
    assert reasons_on(result, "LNT", "2016-05-19") == ["close_outside_range"]
    assert reasons_on(result, "CHD", "2014-05-19") == ["open_outside_range"]  # open 18.77 vs ~33.9
    for ticker, day in [("BHF", "2017-07-26"), ("DHR", "2016-01-12"), ("O", "2016-01-12"),
                        ("FTV", "2016-07-01")]:
        assert reasons_on(result, ticker, day) == ["missing_value"]


def test_kaggle_completeness(kaggle):
    tickers = kaggle[2].tickers
    holes = {t: len(q.missing_sessions) for t, q in tickers.items() if q.missing_sessions}
    assert holes == {"BMY": 2, "DHR": 16, "ES": 10, "ICE": 5, "O": 16, "ORCL": 2}
    assert tickers["ES"].missing_sessions == list(CALENDAR.sessions_in_range("2015-03-09", "2015-03-20"))
    for ticker in ("ES", "DHR", "O"):
        assert tickers[ticker].score < 1
    assert tickers["ES"].score == (1248 / 1249) * (1249 / 1259)
    # Late starters: complete, only their one rejected bar costs.
    assert (tickers["BHF"].first_date, tickers["BHF"].completeness) == (pd.Timestamp("2017-07-17"), 1.0)
    assert tickers["BHF"].score == 142 / 143
    assert (tickers["FTV"].first_date, tickers["FTV"].completeness) == (pd.Timestamp("2016-07-05"), 1.0)
    assert tickers["FTV"].score == 403 / 404
    assert all(q.ok for q in tickers.values())


def test_kaggle_big_and_split_like_moves(kaggle):
    _, frame, result = kaggle
    tickers = result.tickers
    big = {(t, f"{day:%Y-%m-%d}") for t, q in tickers.items() for day, _ in q.big_moves}
    # BAX's -44% spin-off drop stays under 50%; LNT's bad close was rejected.
    assert big == {("AMD", "2016-04-22"), ("DISCA", "2014-08-07"), ("DISCK", "2014-08-07"),
                   ("EBAY", "2015-07-20"), ("NI", "2015-07-02"), ("VRTX", "2013-04-19")}
    assert tickers["DISCA"].big_moves == [(pd.Timestamp("2014-08-07"), 40.975 / 83.02)]
    split_like = {(t, f"{day:%Y-%m-%d}", split_from, split_to)
                  for t, q in tickers.items() for day, split_from, split_to in q.split_like_moves}
    # The unadjusted 2-for-1 splits, and real 33% moves that look like 3-for-2 ones.
    assert split_like == {("DISCA", "2014-08-07", 1, 2), ("DISCK", "2014-08-07", 1, 2),
                          ("AMD", "2016-04-22", 3, 2), ("ARNC", "2016-11-01", 2, 3),
                          ("CHK", "2016-02-08", 2, 3), ("EVHC", "2017-11-01", 2, 3),
                          ("WMB", "2016-02-08", 2, 3)}
    discovery = frame[frame["ticker"].isin(["DISCA", "DISCK"])]
    on_record = {"DISCA": [pd.Timestamp("2014-08-07")], "DISCK": [pd.Timestamp("2014-08-07")]}
    checked = DataQualityValidator(CALENDAR).check(discovery, splits=on_record).tickers
    assert all(not q.big_moves and not q.split_like_moves for q in checked.values())
