"""The point-in-time universe in a run: former members inside the window, renames, the members on a date."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from CandleThrob.testing.datagen import (
    Constituent, IndexChange, MarketData, TickerEvent, generate_market, load_market_file,
)
from CandleThrob.testing.polygon_server import PolygonServer, constituents_html
from CandleThrob.universe.read import continuous_bars, members
from CandleThrob.warehouse.engine import create_engine
from CandleThrob.warehouse.storage import Warehouse

from CandleThrob import read_bars

from ingest_helpers import API_KEY, data_calls, ingest, make_config, query
from read_helpers import run_cli

START, RENAME, END = "2021-06-01", dt.date(2022, 6, 9), "2022-12-30"
META_CIK = "1326801"


def _rows(url: str, sql: str) -> list[tuple]:
    """Rows with dates as ISO text, as SQLite and PostgreSQL both can be compared."""
    return [tuple(v.isoformat() if isinstance(v, dt.date) else v for v in row) for row in query(url, sql)]


def _series(source: MarketData, ticker: str, as_ticker: str, start, end) -> pd.DataFrame:
    return source.bars(ticker, start, end).assign(ticker=as_ticker)


@pytest.fixture(scope="module")
def meta_market():
    """Three companies and the ETFs; Meta as FB until 2022-06-08 and as META from 2022-06-09; and another
    fund that traded as META before that day (what a naive backfill of "META" would store as Meta's)."""
    generated = generate_market(6, START, END, seed=4)
    companies = generated.constituents[:3]
    others = [c.symbol for c in generated.constituents[3:6]]
    market = MarketData(constituents=list(companies) + [Constituent("META", "Meta Platforms",
                                                                    "Communication Services", META_CIK)])
    for ticker in [c.symbol for c in companies] + [t for t in generated.tickers if t not in others
                                                    and t not in {c.symbol for c in generated.constituents}]:
        market.add_bars(generated.bars(ticker))
    market.add_bars(_series(generated, others[0], "FB", START, RENAME - dt.timedelta(days=1)))
    market.add_bars(pd.concat([_series(generated, others[1], "META", "2021-06-30", RENAME - dt.timedelta(days=1)),
                               _series(generated, others[2], "META", RENAME, END)], ignore_index=True))
    market.index_changes = [IndexChange(RENAME, "META", "Meta Platforms", "FB", "Meta Platforms", "rename")]
    return market, generated, others


def test_a_rename_is_one_company_and_the_symbols_earlier_holder_is_never_stored(database_url, meta_market):
    market, generated, others = meta_market
    with PolygonServer(market, api_key=API_KEY, today=END) as server:
        result = ingest(database_url, server, END, start=START)
    assert result["exit_code"] == 0 and result["former_members"] == 1
    # META is stored from the rename on only: the fund that traded as META before is not Meta
    assert _rows(database_url, "SELECT MIN(trade_date), COUNT(*) FROM ticker_data_raw WHERE ticker = 'META'") == [
        ("2022-06-09", len(generated.bars(others[2], RENAME, END)))]
    assert _rows(database_url, "SELECT MAX(trade_date) FROM ticker_data_raw WHERE ticker = 'FB'") == [
        ("2022-06-08",)]
    assert _rows(database_url, "SELECT security_id, ticker, valid_from, valid_to FROM symbol_history "
                               "WHERE security_id = '1326801' ORDER BY ticker") == [
        (META_CIK, "FB", None, "2022-06-08"), (META_CIK, "META", "2022-06-09", None)]

    warehouse = Warehouse(create_engine(database_url))
    try:
        for asked in ("META", "FB"):
            series = continuous_bars(warehouse, asked, adjust="none")
            expected = pd.concat([_series(generated, others[0], "META", START, RENAME - dt.timedelta(days=1)),
                                  _series(generated, others[2], "META", RENAME, END)], ignore_index=True)
            assert list(series["traded_as"].unique()) == ["FB", "META"]
            assert (series["ticker"] == "META").all() and len(series) == len(expected)
            assert series["close"].tolist() == expected["close"].tolist()
            assert series["trade_date"].tolist() == expected["trade_date"].tolist()
    finally:
        warehouse.dispose()


def test_members_on_a_date_follow_the_rename(sqlite_url, meta_market):
    market, _, _ = meta_market
    with PolygonServer(market, api_key=API_KEY, today=END) as server:
        config = make_config(sqlite_url, server)
        before_any_run = members("2022-01-03", config=config)  # nothing stored: the page itself is read
        ingest(sqlite_url, server, END, start="2022-12-01")
        stored_before, stored_after = members("2022-06-08", config=config), members("2022-06-09", config=config)
    companies = sorted(c.symbol for c in market.constituents[:3])
    assert before_any_run["ticker"].tolist() == sorted(companies + ["FB"])
    assert stored_before["ticker"].tolist() == sorted(companies + ["FB"])
    assert stored_after["ticker"].tolist() == sorted(companies + ["META"])
    assert list(stored_after.columns) == ["ticker", "cik", "name", "sector"]
    assert stored_after.set_index("ticker").loc["META", "cik"] == META_CIK
    assert stored_before.set_index("ticker").loc["FB", "cik"] == META_CIK


# --- a backfill with former members, from real data -----------------------------------------------

PAGE_2018 = "sp500_wikipedia_html/List_of_SP500_companies_2018-02_rev821321383.html"
KAGGLE_2018 = "kaggle_sp500_all_stocks_5yr/all_stocks_5yr.csv.gz"
KAGGLE_2017 = "kaggle_sp500_all_stocks_5yr/all_stocks_5yr_v2017-08.csv.gz"
# Members on the 2017 list that left by the 2018 page (the 2017 bars end on 2017-08-11).
LEFT = {"BCR": dt.date(2018, 1, 2), "DD": dt.date(2017, 8, 31), "LVLT": dt.date(2017, 10, 12),
        "SPLS": dt.date(2017, 9, 17), "WFM": dt.date(2017, 8, 28)}
WINDOW = ("2017-06-01", "2018-02-07")


@pytest.fixture(scope="module")
def kaggle_market(shared_data):
    bars, _, _ = load_market_file(shared_data / KAGGLE_2018)
    older, _, _ = load_market_file(shared_data / KAGGLE_2017)
    bars = pd.concat([bars, older[older["ticker"].isin(set(LEFT))]], ignore_index=True)
    return MarketData(bars[bars["trade_date"] >= WINDOW[0]])


def test_a_backfill_holds_the_members_that_left_in_its_window_at_no_extra_call(tmp_path, shared_data,
                                                                                kaggle_market):
    page = shared_data / PAGE_2018
    with_former, without = f"sqlite:///{tmp_path / 'pit.db'}", f"sqlite:///{tmp_path / 'survivors.db'}"
    with PolygonServer(kaggle_market, api_key=API_KEY, today=WINDOW[1], universe_html=page) as server:
        mark = len(server.requests)
        result = ingest(with_former, server, WINDOW[1], start=WINDOW[0], min_sp500_symbols=450,
                        min_data_quality_score=0.0)
        pit_calls = len(data_calls(server, mark))
        survivors = [t for (t,) in query(with_former, "SELECT ticker FROM ticker_universe WHERE active = 1")]
        mark = len(server.requests)
        ingest(without, server, WINDOW[1], start=WINDOW[0], tickers=survivors, min_data_quality_score=0.0)
        survivor_calls = len(data_calls(server, mark))
    assert result["former_members"] == 16 and result["former_member_calls"] == 0
    assert pit_calls == survivor_calls == result["data_calls"] == 174  # one grouped call per session
    spans = dict(((t, (a, b)) for t, a, b in _rows(
        with_former, "SELECT ticker, MIN(trade_date), MAX(trade_date) FROM ticker_data_raw GROUP BY ticker")))
    for ticker, last_day in LEFT.items():
        # from the window's start through the last bar the source has before the exit
        assert spans[ticker] == ("2017-06-01", min(last_day, dt.date(2017, 8, 11)).isoformat()), ticker
    assert not set(LEFT) & set(t for (t,) in query(without, "SELECT DISTINCT ticker FROM ticker_data_raw"))


def test_a_rename_inside_a_gap_of_the_tools_own_scrapes_is_dated_by_one_ticker_events_call(database_url, meta_market,
                                                                                           tmp_path):
    market, generated, others = meta_market
    companies = list(market.constituents[:3])
    page = tmp_path / "page.html"
    market.ticker_events = [TickerEvent("META", dt.date(2012, 5, 18), "FB"), TickerEvent("META", RENAME, "META")]
    with PolygonServer(market, api_key=API_KEY, today=END, universe_html=page) as server:
        # the tool saw FB in April; it did not run again until July, when the page said META (no changes row)
        page.write_text(constituents_html(companies + [Constituent("FB", "Meta Platforms", "", META_CIK)]))
        ingest(database_url, server, "2022-04-29", start="2022-04-01")
        page.write_text(constituents_html(companies + [Constituent("META", "Meta Platforms", "", META_CIK)]))
        plan = ingest(database_url, server, "2022-07-01", plan_only=True)
        mark = len(server.requests)
        result = ingest(database_url, server, "2022-07-01")
        events = [r["path"] for r in server.requests[mark:] if "/events" in r["path"]]
        again = ingest(database_url, server, "2022-07-05")
        events_again = [r["path"] for r in server.requests if "/events" in r["path"]]
    assert plan["ticker_event_calls"] == 1 and "ticker events: 1 calls for renames the page cannot date (FB->META)" \
        in plan["plan_text"]
    assert events == ["/vX/reference/tickers/META/events"] and result["exit_code"] == 0
    assert len(events_again) == 1 and again["ticker_event_calls"] == 0  # asked once, never again
    assert _rows(database_url, "SELECT new_ticker, change_date, old_ticker FROM symbol_changes") == [
        ("META", "2022-06-09", "FB")]
    assert _rows(database_url, "SELECT MIN(trade_date), MAX(trade_date) FROM ticker_data_raw WHERE ticker = 'FB'") \
        == [("2022-04-01", "2022-06-08")]
    assert _rows(database_url, "SELECT MIN(trade_date) FROM ticker_data_raw WHERE ticker = 'META'") == [
        ("2022-06-09",)]


def test_the_command_line_reads_members_and_a_continuous_series(sqlite_url, meta_market):
    market, generated, others = meta_market
    with PolygonServer(market, api_key=API_KEY, today=END) as server:
        ingest(sqlite_url, server, END, start=START)
    code, out, err = run_cli("members", "--as-of", "2022-06-08", "--database-url", sqlite_url)
    companies = sorted(c.symbol for c in market.constituents[:3])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "ticker,cik,name,sector" and [line.split(",")[0] for line in lines[1:]] == sorted(
        companies + ["FB"])
    assert f"FB,{META_CIK},Meta Platforms,Communication Services" in lines
    code, out, _ = run_cli("members", "--as-of", "2022-06-09", "--format", "json", "--database-url", sqlite_url)
    assert code == 0 and {"ticker": "META", "cik": META_CIK, "name": "Meta Platforms",
                          "sector": "Communication Services"} in json.loads(out)
    code, out, _ = run_cli("bars", "META", "--continuous", "--adjust", "none", "--start", "2022-06-07", "--end",
                           "2022-06-10", "--database-url", sqlite_url)
    rows = [line.split(",") for line in out.splitlines()]
    assert code == 0 and rows[0][-1] == "traded_as"
    assert [(r[0], r[1], r[-1]) for r in rows[1:]] == [
        ("META", "2022-06-07", "FB"), ("META", "2022-06-08", "FB"), ("META", "2022-06-09", "META"),
        ("META", "2022-06-10", "META")]
    frame = read_bars("META", continuous=True, adjust="split", database_url=sqlite_url)
    assert frame["trade_date"].min() == pd.Timestamp(START) and frame["traded_as"].iloc[0] == "FB"
    assert str(frame["transactions"].dtype) == "Int64" and (frame["ticker"] == "META").all()
    plain = read_bars("META", database_url=sqlite_url)
    assert plain["trade_date"].min() == pd.Timestamp(RENAME) and "traded_as" not in plain.columns


# --- which days of a window each symbol is wanted (no server) --------------------------------------

def _membership(stays, history):
    from CandleThrob.universe.pit import Membership

    intervals = pd.DataFrame(stays, columns=["ticker", "cik", "name", "sector", "first_day", "last_day",
                                             "security_id"]).astype({"first_day": "datetime64[us]",
                                                                     "last_day": "datetime64[us]"})
    frame = pd.DataFrame(history, columns=["security_id", "ticker", "valid_from", "valid_to"]).astype(
        {"valid_from": "datetime64[us]", "valid_to": "datetime64[us]"})
    return Membership(intervals, frame, pd.DataFrame())


T = pd.Timestamp
STAYS = [("AAA", None, "A", "X", None, None, "AAA@start"),                      # a member all along
         ("LEFT", None, "L", "X", T("2019-01-02"), T("2022-03-31"), "LEFT@2019-01-02"),  # left in the window
         ("GONE", None, "G", "X", None, T("2020-12-31"), "GONE@start"),           # left before the window
         ("JOIN", None, "J", "X", T("2022-06-01"), T("2022-09-30"), "JOIN@2022-06-01"),  # joined and left in it
         ("FB", "1", "M", "X", None, T("2022-06-08"), "1"), ("META", "1", "M", "X", T("2022-06-09"), None, "1")]
HISTORY = [("1", "FB", None, T("2022-06-08")), ("1", "META", T("2022-06-09"), None),
           ("AAA@start", "AAA", None, None), ("LEFT@2019-01-02", "LEFT", T("2019-01-02"), T("2022-03-31")),
           ("GONE@start", "GONE", None, T("2020-12-31")), ("JOIN@2022-06-01", "JOIN", T("2022-06-01"),
                                                            T("2022-09-30"))]


@pytest.mark.parametrize("policy,expected", [
    ("membership", {"AAA": [(None, None)], "LEFT": [(None, T("2022-03-31"))],
                    "JOIN": [(T("2022-06-01"), T("2022-09-30"))], "FB": [(None, T("2022-06-08"))],
                    "META": [(T("2022-06-09"), None)]}),
    # the whole window, except where the symbol went on to mean another name of the company
    ("window", {"AAA": [(None, None)], "LEFT": [(None, None)], "JOIN": [(None, None)],
                "FB": [(None, T("2022-06-08"))], "META": [(T("2022-06-09"), None)]}),
])
def test_wanted_spans_follow_the_former_members_policy(policy, expected):
    from CandleThrob.universe.pit import wanted_spans

    spans = wanted_spans(_membership(STAYS, HISTORY), {"AAA", "META"}, "2021-01-04", "2022-12-30", policy)
    assert spans == expected
