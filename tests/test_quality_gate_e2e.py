"""The quality gate on real data with real anomalies: the Kaggle S&P 500 five-year set,
served through the local server and ingested end to end."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from CandleThrob.testing.datagen import MarketData, load_bars_csv
from CandleThrob.testing.polygon_server import PolygonServer

from ingest_helpers import API_KEY, ingest, query, stored

# Every ticker with an anomaly listed in the data's SOURCE.md, plus clean references.
TICKERS = ["AOS", "LNT", "CHD", "BHF", "DHR", "O", "ES", "FTV", "UA", "REGN", "VRTX", "WRK",
           "DISCA", "DISCK", "BAX", "EBAY", "NI", "ICE", "BMY", "ORCL", "BBY", "CHK", "IP", "SPG",
           "AAPL", "MSFT"]
END = "2018-02-07"


@pytest.fixture(scope="module")
def kaggle(shared_data):
    bars, _ = load_bars_csv(shared_data / "kaggle_sp500_all_stocks_5yr" / "all_stocks_5yr.csv.gz")
    return bars[bars["ticker"].isin(TICKERS)].reset_index(drop=True)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def run(request, kaggle, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('kaggle') / 'wh.db'}"
    else:
        url = request.getfixturevalue("postgres_server").create_database("ct_kaggle")
    with PolygonServer(MarketData(kaggle), api_key=API_KEY, today=END) as server:
        result = ingest(url, server, END, tickers=TICKERS, start="2013-02-08")
    return url, result


def _bad_rows(frame: pd.DataFrame) -> pd.Series:
    """An independent statement of the row rules that this data set breaks."""
    values = frame[["open", "high", "low", "close", "volume"]]
    return (values.isna().any(axis=1) | (frame["high"] < frame["low"])
            | (frame["open"] > frame["high"]) | (frame["open"] < frame["low"])
            | (frame["close"] > frame["high"]) | (frame["close"] < frame["low"]))


def test_anomalies_are_quarantined_with_their_reasons(run, kaggle):
    url, result = run
    rejected = query(url, "SELECT ticker, trade_date, reasons FROM rejected_bars ORDER BY ticker, trade_date")
    reasons = {(t, str(d)[:10]): r for t, d, r in rejected}
    assert reasons[("AOS", "2014-05-19")] == "high_below_low;open_outside_range;close_outside_range"
    assert reasons[("LNT", "2016-05-19")] == "close_outside_range"
    assert reasons[("CHD", "2014-05-19")] == "open_outside_range"
    for ticker, day in [("BHF", "2017-07-26"), ("DHR", "2016-01-12"), ("O", "2016-01-12"),
                        ("FTV", "2016-07-01"), ("UA", "2016-04-07"), ("REGN", "2015-06-09"),
                        ("VRTX", "2015-05-12"), ("WRK", "2015-06-26"), ("ES", "2015-07-17")]:
        assert reasons[(ticker, day)].startswith("missing_value"), (ticker, day)
    expected_bad = kaggle[_bad_rows(kaggle)]
    assert sorted(reasons) == sorted(zip(expected_bad["ticker"], expected_bad["trade_date"].dt.strftime("%Y-%m-%d")))
    assert result["rows_rejected"] == len(expected_bad) == len(rejected)
    # A rejected bar is never in ticker_data.
    assert query(url, "SELECT COUNT(*) FROM ticker_data t JOIN rejected_bars r "
                      "ON t.ticker = r.ticker AND t.trade_date = r.trade_date") == [(0,)]


def test_every_other_bar_is_stored_exactly(run, kaggle):
    url, _ = run
    want = kaggle[~_bad_rows(kaggle)].sort_values(["ticker", "trade_date"]).reset_index(drop=True)
    got = stored(url)
    assert got["vwap"].isna().all() and got["transactions"].isna().all()  # the source has neither
    columns = ["ticker", "trade_date", "open", "high", "low", "close", "volume"]
    pd.testing.assert_frame_equal(got[columns], want[columns], check_exact=True, check_dtype=False)


def test_holes_lower_completeness_but_late_starters_are_not_penalised(run):
    url, _ = run
    rows = query(url, "SELECT ticker, quality_score, flags FROM ingestion_audit")
    audit = {t: (s, json.loads(f)) for t, s, f in rows}
    missing = {t: audit[t][1].get("missing_sessions_count", 0) for t in audit}
    assert (missing["ES"], missing["DHR"], missing["O"]) == (10, 16, 16)
    assert audit["ES"][0] == pytest.approx((1248 / 1249) * (1249 / 1259), abs=0, rel=1e-12)
    assert missing["BHF"] == 0 and missing["FTV"] == 0
    assert audit["BHF"][0] == pytest.approx(142 / 143, rel=1e-12)
    assert audit["FTV"][0] == pytest.approx(403 / 404, rel=1e-12)
    assert audit["AAPL"][0] == 1.0


def test_missed_split_drop_is_flagged_not_dropped(run):
    url, result = run
    flags = {t: json.loads(f) for t, f in query(url, "SELECT ticker, flags FROM ingestion_audit")}
    for ticker in ("DISCA", "DISCK"):
        assert "2014-08-07" in [m["date"] for m in flags[ticker]["big_moves"]]
        assert {"date": "2014-08-07", "split_from": 1, "split_to": 2} in flags[ticker]["split_like_moves"]
        assert query(url, f"SELECT COUNT(*) FROM ticker_data WHERE ticker = '{ticker}' "
                          "AND trade_date = '2014-08-07'") == [(1,)]
    assert "big_moves" not in flags["BAX"]  # -44%: a real spin-off drop, within the threshold
    assert result["exit_code"] == 0  # flags warn; every ticker scored above the minimum


def test_a_ticker_below_the_minimum_score_writes_nothing(kaggle, tmp_path):
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    with PolygonServer(MarketData(kaggle), api_key=API_KEY, today=END) as server:
        result = ingest(url, server, END, tickers=["ES", "AAPL"], start="2013-02-08",
                        min_data_quality_score=0.995)
    assert result["exit_code"] == 1 and result["status"] == "partial"
    assert result["failed_tickers"] == ["ES"]
    assert query(url, "SELECT COUNT(*) FROM ticker_data WHERE ticker = 'ES'") == [(0,)]
    es = kaggle[kaggle["ticker"] == "ES"]
    assert query(url, "SELECT COUNT(*) FROM rejected_bars WHERE ticker = 'ES'") == [(len(es),)]
    assert query(url, "SELECT COUNT(*) FROM rejected_bars WHERE ticker = 'ES' "
                      "AND reasons = 'low_quality_score'") == [(len(es) - 1,)]
    # Not marked as asked: the next run asks again.
    assert query(url, "SELECT COUNT(*) FROM ingestion_coverage WHERE ticker = 'ES'") == [(0,)]
