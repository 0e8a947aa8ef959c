"""The headline: the fewest API calls, counted in the local server's request log.

503 S&P-like tickers plus the 20 ETFs, as in production."""

from __future__ import annotations

import pandas as pd
import pytest

from CandleThrob.planning.trading_calendar import TradingCalendar
from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer

from ingest_helpers import API_KEY, api_calls, cli, data_calls, ingest, query, stored

END = "2024-06-14"  # a Friday
NEXT = ["2024-06-17", "2024-06-18", "2024-06-20", "2024-06-21"]  # 06-19 is Juneteenth


@pytest.fixture
def market():  # fresh for each database: the test adds a member to it
    return generate_market(503, "2022-06-01", "2024-06-28", seed=2)


def _grouped(day: str) -> str:
    return f"/v2/aggs/grouped/locale/us/market/stocks/{day}"


def test_calls_for_backfill_nightly_new_member_and_no_ops(database_url, market):
    url = database_url
    sessions = TradingCalendar().sessions_in_range("2022-06-15", END)
    with PolygonServer(market, api_key=API_KEY, today=END) as server:
        # Cold backfill of two years: one grouped call per session beats 523 range calls.
        cold = ingest(url, server, END)
        calls = data_calls(server)
        assert cold["tickers"] == 523 and cold["status"] == "success"
        assert len(sessions) == 503
        assert cold["data_calls"] == len(calls) == min(523, len(sessions)) == 503
        assert sorted(c["path"] for c in calls) == sorted(_grouped(d.date()) for d in sessions)
        # plus the corporate-actions ledger of the 523 tickers: one call to each endpoint
        assert cold["planned_calls"] == cold["api_calls"] == 503 + 2

        # Nothing new: no call at all.
        mark = len(server.requests)
        assert ingest(url, server, END)["planned_calls"] == 0
        assert data_calls(server, mark) == []

        # One new session: one grouped call, the last one again (settle window), and the ledger since then.
        mark = len(server.requests)
        nightly = ingest(url, server, NEXT[0])
        assert sorted(c["path"] for c in data_calls(server, mark)) == [_grouped(END), _grouped(NEXT[0])]
        assert nightly["planned_calls"] == nightly["api_calls"] == len(api_calls(server, mark)) == 4

        # A new member plus three new sessions (across a holiday): 1 range + 3 grouped.
        symbol = "NEWC"
        market.add_bars(generate_market(1, "2022-06-01", "2024-06-28", seed=9).bars("MMM").assign(ticker=symbol))
        market.add_constituent(symbol, "Newcomer Inc.", "Industrials")
        mark = len(server.requests)
        result = ingest(url, server, NEXT[3])
        paths = [c["path"] for c in data_calls(server, mark)]
        assert sorted(paths) == sorted([_grouped(d) for d in NEXT]  # NEXT[0] again: the settle window
                                       # a new member's history: two years back from this --end
                                       + [f"/v2/aggs/ticker/{symbol}/range/1/day/2022-06-22/2024-06-14"])
        ledger = [c["path"] for c in api_calls(server, mark) if c["path"].startswith("/stocks/")]
        # since the last check for everyone, and the new member's own history
        assert sorted(ledger) == ["/stocks/v1/dividends"] * 2 + ["/stocks/v1/splits"] * 2
        assert result["tickers"] == 524 and result["planned_calls"] == result["api_calls"] == 5 + 4

        # An --end on a weekend or a holiday: nothing to do, no call.
        for day in ("2024-06-22", "2024-06-19"):
            mark = len(server.requests)
            assert ingest(url, server, day)["planned_calls"] == 0
            assert data_calls(server, mark) == []

    want = market.bars(start="2022-06-15", end=NEXT[3], adjusted=True, today=NEXT[3])
    want = want[(want["ticker"] != "NEWC") | (want["trade_date"] >= "2022-06-22")]
    want = want.sort_values(["ticker", "trade_date"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(stored(url), want, check_dtype=False)


def test_plan_prints_calls_and_time_without_writing(tmp_path):
    market = generate_market(30, "2024-01-02", "2024-03-28", seed=4)
    db = tmp_path / "plan.db"
    with PolygonServer(market, api_key=API_KEY, today="2024-03-28") as server:
        done = cli("--plan", "--end", "2024-03-28", "--start", "2024-03-01",
                   env={"POLYGON_API_KEY": API_KEY, "POLYGON_BASE_URL": server.url,
                        "SP500_URL": f"{server.url}/wiki/List_of_S%26P_500_companies",
                        "DATABASE_URL": f"sqlite:///{db}", "POLYGON_RATE_LIMIT": "12",
                        "MIN_SP500_SYMBOLS": "1"})
        assert data_calls(server) == []
    assert done.returncode == 0, done.stderr
    # 50 tickers x 20 sessions (March 2024, Good Friday closed): 20 grouped calls, and the ledger's two.
    assert done.stdout.splitlines()[0] == ("22 calls: 20 for 1,000 missing cells (20 grouped, 0 range), "
                                           "2 corporate actions")
    assert "2024-03-01..2024-03-28 (20 sessions)" in done.stdout
    assert done.stdout.splitlines()[-2:] == ["22 calls, 4 min 24 s at 12 s per call",
                                             "macro series: skipped (FRED_API_KEY is not set)"]
    assert query(f"sqlite:///{db}", "SELECT COUNT(*) FROM ticker_data_raw") == [(0,)]
    assert query(f"sqlite:///{db}", "SELECT COUNT(*) FROM ingestion_runs") == [(0,)]


def test_removed_member_keeps_history_and_is_not_updated(tmp_path):
    market = generate_market(12, "2024-01-02", "2024-03-28", seed=8)
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    with PolygonServer(market, api_key=API_KEY, today="2024-03-01") as server:
        ingest(url, server, "2024-03-01", start="2024-02-01")
        gone = market.constituents[0].symbol
        before = stored(url, [gone])
        market.remove_constituent(gone)
        ingest(url, server, "2024-03-05")
    assert query(url, f"SELECT active FROM ticker_universe WHERE ticker = '{gone}'") == [(0,)]
    pd.testing.assert_frame_equal(stored(url, [gone]), before)
    assert query(url, "SELECT COUNT(*) FROM ticker_universe WHERE active = 1") == [(31,)]


def test_universe_falls_back_to_the_stored_one_then_fails_with_advice(tmp_path, caplog):
    market = generate_market(5, "2024-01-02", "2024-03-28", seed=8)
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    with PolygonServer(market, api_key=API_KEY, today="2024-03-01") as server:
        ingest(url, server, "2024-03-01", start="2024-02-01")
        broken = {"sp500_url": f"{server.url}/wiki/no-such-page"}
        result = ingest(url, server, "2024-03-04", **broken)
        assert result["tickers"] == 25 and result["exit_code"] == 0
        assert "using the 25 stored members" in caplog.text
        empty = f"sqlite:///{tmp_path / 'empty.db'}"
        done = cli("--end", "2024-03-04", env={"POLYGON_API_KEY": API_KEY, "POLYGON_BASE_URL": server.url,
                                               "SP500_URL": broken["sp500_url"], "DATABASE_URL": empty,
                                               "MIN_SP500_SYMBOLS": "1"})
    assert done.returncode == 3
    assert "--tickers" in done.stderr
