"""UNIVERSE=all: every common stock and ETF of the grouped answers, at the S&P 500's call count."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from CandleThrob.planning.planner import plan_calls
from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer
from CandleThrob.universe.market import MARKET, is_common
from ingest_helpers import data_calls, ingest, query

START, END = "2024-01-02", "2024-03-15"
SIZE = 400  # symbols in a grouped answer: the market's 24 and 376 others of every shape


def test_the_symbol_filter_keeps_common_stocks_and_etfs_only():
    kept = ["AAPL", "A", "GOOGL", "SPY", "BRK.B", "BF.A", "MOG.A", "ABCDE", "ABCDY"]
    left_out = ["BACpB", "ABCpA", "ABC.WS", "ABC.WS.A", "ABC.U", "ABC.RT", "ABCr", "ABCw", "ABC.WD",
                "ABCDW", "ABCDR", "ABCDU", "ZVZZT", "NTEST", "ZXYZ.A", "abc", "ABCDEF", "", None, 7, ["AAPL"]]
    assert [s for s in kept + left_out if is_common(s)] == kept


def test_the_markets_cells_are_never_ranged():
    sessions = pd.bdate_range("2024-01-02", periods=30)
    # One symbol missing the whole window would cost one range call, but the market's sessions
    # only a grouped call can bring.
    assert plan_calls({MARKET: sessions}, sessions, grouped_only=(MARKET,)).calls == 30
    assert plan_calls({"AAPL": sessions}, sessions).calls == 1
    mixed = plan_calls({MARKET: sessions[-2:], "AAPL": sessions}, sessions, grouped_only=(MARKET,))
    assert ([c.session for c in mixed.grouped], [(c.ticker, c.start, c.end) for c in mixed.ranges]) == \
        (list(sessions[-2:]), [("AAPL", sessions[0], sessions[-3])])


@pytest.fixture
def market():
    return generate_market(4, START, END, seed=11)


def expected_symbols(answer: list[str]) -> list[str]:
    # The rule, restated the way the README states it.
    plain = [s for s in answer if re.fullmatch(r"[A-Z]{1,5}", s) and not (len(s) == 5 and s[-1] in "WRU")]
    classes = [s for s in answer if re.fullmatch(r"[A-Z]{1,4}\.[A-Z]", s) and not s.endswith(".U")]
    return sorted(set(plain + classes) - {"ZVZZT", "ZWZZT", "ZXZZT", "ZBZZT", "ZJZZT", "NTEST", "ZXYZ.A"})


def test_all_stores_the_whole_market_with_the_calls_of_the_index(market, database_url, tmp_path):
    with PolygonServer(market, market_size=SIZE, seed=5) as server:
        index_run = ingest(f"sqlite:///{tmp_path / 'index.db'}", server, END, start=START)
        index_calls = data_calls(server)
        since = len(server.requests)
        run = ingest(database_url, server, END, start=START, universe="all")
        calls = data_calls(server, since)
        population = list(server.grouped_answers.population.symbols)
    assert run["exit_code"] == 0 and index_run["exit_code"] == 0
    sessions = len(pd.bdate_range(START, END)) - 2  # MLK day and Presidents' Day
    # 24 tickers cost fewer range calls than grouped days; the market only grouped days can bring,
    # and then they bring the 24 too. With the real index's 523 tickers both plans are the grouped days.
    assert (len(calls), len(index_calls), sessions) == (52, 24, 52)
    assert all("/grouped/" in c["path"] for c in calls)
    symbols = [t for (t,) in query(database_url, "SELECT DISTINCT ticker FROM ticker_data ORDER BY ticker")]
    assert len(population) + len(market.tickers) == SIZE
    assert symbols == expected_symbols(population + market.tickers)
    # 400 = the market's 24 + 376 others: 6 test symbols, 6 class shares, 11 + 2 warrants, 6 units,
    # 2 rights, 26 preferreds, 1 when-issued and 316 plain symbols, one of them a 5-letter ...W/R/U.
    assert set(market.tickers) <= set(symbols) and len(symbols) == 24 + 6 + 316 - 1
    assert query(database_url, "SELECT COUNT(*) FROM ticker_data") == [(len(symbols) * sessions,)]
    # The index's own bookkeeping is what UNIVERSE=sp500 keeps; the others are counted, not listed.
    assert run["tickers"] == index_run["tickers"] == len(market.tickers) == 24
    assert sorted(run["outcomes"]) == sorted(index_run["outcomes"]) == market.tickers
    assert (run["market_symbols"], index_run["market_symbols"]) == (len(symbols) - 24, 0)
    assert run["rows_written"] == len(symbols) * sessions
    assert (run["pending_cells"], run["vendor_holes"], run["tickers_failed"]) == (0, 0, 0)
    assert query(database_url, f"SELECT COUNT(*) FROM ingestion_coverage WHERE ticker = '{MARKET}'") == [(1,)]


def test_the_plan_says_what_the_whole_market_costs(market, sqlite_url):
    with PolygonServer(market, market_size=SIZE, seed=5) as server:
        plan = ingest(sqlite_url, server, END, start=START, universe="all", plan_only=True)
    assert (plan["data_calls"], plan["grouped_calls"], plan["range_calls"], plan["tickers"]) == (52, 52, 0, 24)
    assert "whole market (UNIVERSE=all): 52 sessions stored whole, every common stock and ETF of their " \
           "grouped answers; no call per symbol" in plan["plan_text"].splitlines()


def listed(market, ticker: str, start: str, end: str) -> pd.DataFrame:
    """Bars for a symbol of the market outside the index: a copy of SPY's, renamed."""
    return market.bars("SPY", start, end).assign(ticker=ticker)


def test_listings_join_and_delistings_stop_without_a_call_per_ticker(market, database_url):
    market.add_bars(listed(market, "OLDCO", START, "2024-03-13"))
    with PolygonServer(market, market_size=SIZE, seed=5) as server:
        assert ingest(database_url, server, "2024-03-13", start=START, universe="all")["exit_code"] == 0
        market.add_bars(listed(market, "NEWCO", "2024-03-14", END))
        since = len(server.requests)
        run = ingest(database_url, server, END, universe="all")
        calls = data_calls(server, since)
    assert run["exit_code"] == 0 and run["tickers"] == 24
    # the 13th again: it was stored on its own evening, and is asked once more to settle it
    assert sorted(c["path"].rsplit("/", 1)[1] for c in calls) == ["2024-03-13", "2024-03-14", "2024-03-15"]
    dates = {t: [str(d)[:10] for (d,) in query(
        database_url, f"SELECT trade_date FROM ticker_data WHERE ticker = '{t}' ORDER BY trade_date")]
        for t in ("OLDCO", "NEWCO")}
    assert dates["NEWCO"] == ["2024-03-14", "2024-03-15"]
    assert (len(dates["OLDCO"]), dates["OLDCO"][-1]) == (50, "2024-03-13")
    # OLDCO is absent from both new days: no gap, no flag, nothing to retry
    assert (run["pending_cells"], run["vendor_holes"]) == (0, 0) and "OLDCO" not in run["outcomes"]
    assert query(database_url, "SELECT COUNT(*) FROM cell_gaps") == [(0,)]
