"""The local Polygon server and its data, against a real loopback socket."""

from __future__ import annotations

import datetime as dt
import gzip
import http.client
import io
import json
import os
import subprocess
import threading
import sys
import time
from pathlib import Path

import exchange_calendars as xcals
import massive
import numpy as np
import pandas as pd
import pytest
import urllib3

from CandleThrob.bars import epoch_ms_to_session_date
from CandleThrob.testing.datagen import (
    ETF_TICKERS, Dividend, Split, generate_market, market_data_from_files, sp500_companies,
)
from CandleThrob.testing.polygon_server import RATE_LIMIT_ERROR, PolygonServer

START, END = "2024-01-02", "2024-03-28"
HTTP = urllib3.PoolManager(retries=False, timeout=5)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def market():
    return generate_market(4, START, END, seed=7)


@pytest.fixture(scope="module")
def server(market):
    with PolygonServer(market) as running:
        yield running


def fetch(server, path, key="k", timeout=5.0, **params):
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    url = path if path.startswith("http") else server.url + path
    return HTTP.request("GET", url, fields=params or None, headers=headers, timeout=timeout)


def get(server, path, key="k", **params):
    response = fetch(server, path, key, **params)
    return response.status, json.loads(response.data)


def frame_of(results, ticker=None):
    """Served bars as a frame keyed like ``MarketData.bars``."""
    frame = pd.DataFrame(results).rename(columns={"o": "open", "h": "high", "l": "low", "c": "close",
                                                  "v": "volume", "vw": "vwap", "n": "transactions"})
    frame["trade_date"] = epoch_ms_to_session_date(frame.pop("t")).to_numpy()
    frame["ticker"] = (frame.pop("T") if "T" in frame else ticker)
    frame["ticker"] = frame["ticker"].astype(object)
    frame["transactions"] = frame["transactions"].astype("float64")
    return frame


def assert_same_bars(served: pd.DataFrame, expected: pd.DataFrame):
    columns = list(expected.columns)
    served = served[columns].sort_values(["ticker", "trade_date"], ignore_index=True)
    pd.testing.assert_frame_equal(served, expected.reset_index(drop=True), check_exact=True)


# -- generated data --------------------------------------------------------------

def test_generated_market_is_sessions_of_consistent_bars(market):
    companies = sp500_companies()
    assert len(companies) >= 500 and {"BRK.B", "BF.B"} <= {c.symbol for c in companies}
    assert market.tickers == sorted([c.symbol for c in companies[:4]] + list(ETF_TICKERS))
    assert [c.symbol for c in market.constituents] == ["MMM", "AOS", "ABT", "ABBV"]
    sessions = xcals.get_calendar("XNYS", start="1990-01-02").sessions_in_range(START, END)
    bars = market.bars()
    assert (bars.groupby("ticker")["trade_date"].apply(list) == [list(sessions)] * 24).all()
    assert pd.Timestamp("2024-01-15") not in set(bars["trade_date"])  # Martin Luther King Jr. Day
    assert (bars["low"] > 0).all()
    assert (bars["low"] <= bars[["open", "close", "vwap"]].min(axis=1)).all()
    assert (bars["high"] >= bars[["open", "close", "vwap"]].max(axis=1)).all()
    for column in ("open", "high", "low", "close", "vwap"):
        assert (bars[column] == bars[column].round(4)).all()
    for column in ("volume", "transactions"):
        assert (bars[column] == bars[column].round()).all() and (bars[column] >= 1).all()


def test_generation_is_deterministic_and_a_longer_range_extends_it(market):
    again = generate_market(4, START, END, seed=7).bars()
    pd.testing.assert_frame_equal(again, market.bars())
    assert not generate_market(4, START, END, seed=8).bars()["close"].equals(again["close"])
    longer = generate_market(4, START, "2024-04-30", seed=7).bars(end=END)
    pd.testing.assert_frame_equal(longer, again)


def test_large_generation_is_fast():
    started = time.monotonic()
    big = generate_market(503, "2015-01-02", "2024-12-31", seed=1)
    assert time.monotonic() - started < 10
    assert len(big.tickers) == 523
    assert len(big.on_day("2024-12-31")) == 523


# -- ticker ranges ---------------------------------------------------------------

def test_range_serves_the_market_data(server, market):
    status, body = get(server, "/v2/aggs/ticker/MMM/range/1/day/2024-02-01/2024-02-29")
    assert status == 200 and body["status"] == "OK" and body["ticker"] == "MMM"
    assert body["adjusted"] is True and body["resultsCount"] == body["count"] == 20
    assert "next_url" not in body
    assert list(body["results"][0]) == ["v", "vw", "o", "c", "h", "l", "t", "n"]
    assert_same_bars(frame_of(body["results"], "MMM"), market.bars("MMM", "2024-02-01", "2024-02-29"))


def test_t_is_new_york_midnight_across_the_dst_change(server):
    status, body = get(server, "/v2/aggs/ticker/AOS/range/1/day/2024-03-08/2024-03-11",
                       adjusted="false")
    assert [bar["t"] for bar in body["results"]] == [
        1709874000000,  # Fri 2024-03-08 00:00 EST = 05:00 UTC
        1710129600000,  # Mon 2024-03-11 00:00 EDT = 04:00 UTC
    ]
    # epoch-ms bounds select the same bars
    status, by_ms = get(server, "/v2/aggs/ticker/AOS/range/1/day/1709874000000/1710129600000")
    assert [bar["t"] for bar in by_ms["results"]] == [1709874000000, 1710129600000]
    status, after_start = get(server, "/v2/aggs/ticker/AOS/range/1/day/1709874000001/1710129600000")
    assert [bar["t"] for bar in after_start["results"]] == [1710129600000]


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_pages_follow_next_url_to_the_whole_range(server, order):
    path = f"/v2/aggs/ticker/SPY/range/1/day/{START}/{END}"
    status, whole = get(server, path, sort=order)
    pages, body = [], get(server, path, sort=order, limit="7")[1]
    while True:
        pages.append(body)
        if "next_url" not in body:
            break
        assert body["next_url"].startswith(server.url + "/v2/aggs/ticker/SPY/range/1/day/")
        body = get(server, body["next_url"])[1]
    assert [p["resultsCount"] for p in pages] == [7] * 8 + [5]  # 61 sessions
    assert [bar for p in pages for bar in p["results"]] == whole["results"]
    times = [bar["t"] for bar in whole["results"]]
    assert times == sorted(times, reverse=order == "desc")


def test_no_bars_means_no_results_key(server):
    for path in ("/v2/aggs/ticker/NOPE/range/1/day/2024-01-02/2024-01-31",
                 "/v2/aggs/ticker/MMM/range/1/day/2024-01-06/2024-01-07",  # a weekend
                 "/v2/aggs/ticker/MMM/range/1/day/2023-01-01/2023-12-31"):
        status, body = get(server, path)
        assert status == 200 and body["status"] == "OK"
        assert body["resultsCount"] == body["count"] == 0 and "results" not in body


def test_bad_parameters_are_400(server):
    assert get(server, "/v2/aggs/ticker/MMM/range/1/day/2024-13-01/2024-01-31")[0] == 400
    assert get(server, "/v2/aggs/ticker/MMM/range/1/day/2024-01-02/2024-01-31", limit="0")[0] == 400
    assert get(server, "/v2/aggs/ticker/MMM/range/1/day/2024-01-02/2024-01-31", sort="up")[0] == 400
    status, body = get(server, "/v2/aggs/grouped/locale/us/market/stocks/yesterday")
    assert status == 400 and body["status"] == "ERROR"


# -- grouped days ---------------------------------------------------------------

def test_grouped_day_has_every_ticker_that_traded(server, market):
    status, body = get(server, "/v2/aggs/grouped/locale/us/market/stocks/2024-03-11",
                       adjusted="true", include_otc="false")
    assert status == 200 and body["resultsCount"] == body["count"] == 24
    assert list(body["results"][0])[:2] == ["T", "v"]
    assert_same_bars(frame_of(body["results"]), market.bars(start="2024-03-11", end="2024-03-11"))


def test_grouped_weekend_and_holiday_have_no_results(server):
    for day in ("2024-03-09", "2024-01-15"):
        status, body = get(server, f"/v2/aggs/grouped/locale/us/market/stocks/{day}")
        assert status == 200 and body["resultsCount"] == 0 and "results" not in body


# -- today, runtime changes, splits -------------------------------------------------

def test_nothing_after_today_is_served_and_today_can_move():
    market = generate_market(2, START, END, seed=3)
    with PolygonServer(market, today="2024-03-01") as server:
        body = get(server, f"/v2/aggs/ticker/MMM/range/1/day/{START}/{END}")[1]
        assert body["results"][-1]["t"] == 1709269200000  # 2024-03-01
        assert "results" not in get(server, "/v2/aggs/grouped/locale/us/market/stocks/2024-03-04")[1]
        server.today = dt.date(2024, 3, 4)
        assert get(server, "/v2/aggs/grouped/locale/us/market/stocks/2024-03-04")[1]["resultsCount"] == 22
        server.today = None  # back to the last date in the data
        assert server.today == dt.date(2024, 3, 28)
        # a new session arrives: a longer walk of the same seed adds it
        market.add_bars(generate_market(2, START, "2024-04-01", seed=3).bars(start="2024-04-01"))
        assert server.today == dt.date(2024, 4, 1)
        assert get(server, "/v2/aggs/grouped/locale/us/market/stocks/2024-04-01")[1]["resultsCount"] == 22
        # and a corrected bar replaces the old one
        fixed = market.bars("MMM", "2024-04-01", "2024-04-01").assign(close=123.0)
        market.add_bars(fixed)
        body = get(server, "/v2/aggs/ticker/MMM/range/1/day/2024-04-01/2024-04-01")[1]
        assert [bar["c"] for bar in body["results"]] == [123.0]


def test_split_reprices_as_traded_bars_and_adjusted_divides_exactly():
    market = generate_market(2, START, END, seed=5)
    before = market.bars("MMM")
    market.add_split("MMM", "2024-02-15", 1, 4)
    market.add_split("AOS", "2024-03-01", 2, 3)
    raw = market.bars("MMM")
    old, new = raw["trade_date"] < "2024-02-15", raw["trade_date"] >= "2024-02-15"
    pd.testing.assert_frame_equal(raw[old], before[old])
    assert (raw.loc[new, "close"] == (before.loc[new, "close"] / 4).round(4)).all()
    assert (raw.loc[new, "volume"] == before.loc[new, "volume"] * 4).all()

    with PolygonServer(market) as server:
        path = f"/v2/aggs/ticker/MMM/range/1/day/{START}/{END}"
        served_raw = frame_of(get(server, path, adjusted="false")[1]["results"], "MMM")
        adjusted = frame_of(get(server, path)[1]["results"], "MMM")
        assert_same_bars(served_raw, raw)
        factor = np.where(old, 4.0, 1.0)
        for column in ("open", "high", "low", "close", "vwap"):
            assert (adjusted[column] == raw[column] / factor).all()
        assert (adjusted["volume"] == raw["volume"] * factor).all()
        assert (adjusted["transactions"] == raw["transactions"]).all()

        grouped = get(server, "/v2/aggs/grouped/locale/us/market/stocks/2024-02-29")[1]["results"]
        aos = next(bar for bar in grouped if bar["T"] == "AOS")
        aos_raw = market.bars("AOS", "2024-02-29", "2024-02-29").iloc[0]
        assert aos["c"] == aos_raw["close"] / 1.5 and aos["v"] == aos_raw["volume"] * 1.5

        # a split after "today" has not happened yet: not listed, not applied
        server.today = "2024-02-14"
        body = get(server, path)[1]
        assert [bar["c"] for bar in body["results"]] == raw.loc[raw["trade_date"] <= "2024-02-14", "close"].tolist()
        assert get(server, "/stocks/v1/splits")[1]["results"] == []


def test_splits_endpoint_filters_sorts_and_pages():
    market = generate_market(1, START, END, seed=1)
    for ticker, day in [("MMM", "2024-01-10"), ("SPY", "2024-01-20"), ("QQQ", "2024-02-01"),
                        ("MMM", "2024-02-20"), ("TLT", "2024-03-05"), ("SPY", "2024-03-27")]:
        market.add_split(ticker, day, 1.0, 2.0)  # served as 1 and 2, like the vendor
    with PolygonServer(market, today="2024-03-20") as server:
        status, body = get(server, "/stocks/v1/splits", sort="execution_date.desc")
        assert status == 200 and body["status"] == "OK" and "next_url" not in body
        assert [r["execution_date"] for r in body["results"]] == [
            "2024-03-05", "2024-02-20", "2024-02-01", "2024-01-20", "2024-01-10"]
        assert set(body["results"][0]) == {"id", "ticker", "execution_date", "split_from", "split_to",
                                           "adjustment_type", "historical_adjustment_factor"}
        assert [type(body["results"][0][k]) for k in ("split_from", "split_to")] == [int, int]
        mmm = get(server, "/stocks/v1/splits", ticker="MMM")[1]["results"]
        # The vendor's factor: what prices before the event are multiplied by, later splits included.
        assert [(r["execution_date"], r["historical_adjustment_factor"], r["adjustment_type"]) for r in mmm] == [
            ("2024-01-10", 0.25, "forward_split"), ("2024-02-20", 0.5, "forward_split")]
        window = get(server, "/stocks/v1/splits", **{"execution_date.gte": "2024-01-20",
                                                     "execution_date.lt": "2024-03-05"})[1]
        assert [r["ticker"] for r in window["results"]] == ["SPY", "QQQ", "MMM"]
        picked = get(server, "/stocks/v1/splits", **{"ticker.any_of": "QQQ,TLT"})[1]
        assert [r["ticker"] for r in picked["results"]] == ["QQQ", "TLT"]
        pages, body = [], get(server, "/stocks/v1/splits", limit="2", sort="ticker.asc")[1]
        while True:
            pages.append([r["ticker"] for r in body["results"]])
            if "next_url" not in body:
                break
            body = get(server, body["next_url"])[1]
        assert pages == [["MMM", "MMM"], ["QQQ", "SPY"], ["TLT"]]
        assert get(server, "/stocks/v1/splits", sort="price.asc")[0] == 400


def test_dividends_endpoint_computes_the_vendors_factors():
    market = generate_market(1, START, END, seed=1)
    market.add_dividend(Dividend("MMM", dt.date(2024, 2, 15), 1.5, record_date=dt.date(2024, 2, 16)))
    market.add_dividend(Dividend("MMM", dt.date(2024, 3, 14), 0.75, distribution_type="special"))
    market.add_split("MMM", "2024-03-20", 1, 2)
    closes = market.bars("MMM").set_index("trade_date")["close"]
    first, second = 1 - 1.5 / closes[pd.Timestamp("2024-02-14")], 1 - 0.75 / closes[pd.Timestamp("2024-03-13")]
    with PolygonServer(market, today="2024-03-28") as server:
        body = get(server, "/stocks/v1/dividends", **{"ex_dividend_date.gt": "2024-01-31"})[1]
    assert [(r["ex_dividend_date"], r["cash_amount"], r["distribution_type"]) for r in body["results"]] == [
        ("2024-02-15", 1.5, "recurring"), ("2024-03-14", 0.75, "special")]
    assert body["results"][0]["historical_adjustment_factor"] == pytest.approx(first * second, rel=1e-15)
    assert body["results"][1]["historical_adjustment_factor"] == pytest.approx(second, rel=1e-15)
    assert body["results"][0]["record_date"] == "2024-02-16" and "record_date" not in body["results"][1]
    assert [r["split_adjusted_cash_amount"] for r in body["results"]] == [0.75, 0.375]


def test_history_limit_answers_like_the_free_tier():
    market = generate_market(1, "2021-01-04", END, seed=1)
    with PolygonServer(market, today="2024-03-28", history_limit_years=2) as server:
        status, body = get(server, "/v2/aggs/ticker/MMM/range/1/day/2022-03-25/2024-03-28")
        assert (status, body["status"]) == (403, "NOT_AUTHORIZED")
        assert body["message"].startswith("Your plan doesn't include this data timeframe")
        assert get(server, "/v2/aggs/grouped/locale/us/market/stocks/2022-03-25")[0] == 403
        assert get(server, "/v2/aggs/ticker/MMM/range/1/day/2022-03-28/2024-03-28")[0] == 200
        assert get(server, "/stocks/v1/splits")[0] == 200  # reference data is on every plan


def test_a_held_request_waits_for_the_gate_and_a_revision_is_served_once():
    market = generate_market(1, START, END, seed=1)
    with PolygonServer(market, today=END) as server:
        day = "2024-03-28"
        final = market.bars(start=day, end=day)
        server.revise_after_first_answer(day, final.assign(close=final["close"] * 1.01))
        first = get(server, f"/v2/aggs/grouped/locale/us/market/stocks/{day}")[1]["results"]
        second = get(server, f"/v2/aggs/grouped/locale/us/market/stocks/{day}")[1]["results"]
        assert [r["c"] for r in first] == (final["close"] * 1.01).tolist()
        assert [r["c"] for r in second] == final["close"].tolist()
        gate = server.hold(after=1, prefix="/v2/aggs/")
        assert get(server, f"/v2/aggs/grouped/locale/us/market/stocks/{day}")[0] == 200  # the first passes
        answers = []
        waiter = threading.Thread(target=lambda: answers.append(
            get(server, f"/v2/aggs/grouped/locale/us/market/stocks/{day}")[0]))
        waiter.start()
        assert gate.arrived.wait(10) and answers == []
        gate.open()
        waiter.join(10)
        assert answers == [200]


# -- auth, rate limit, faults, log ------------------------------------------------------

def test_auth(market):
    path = "/v2/aggs/ticker/MMM/range/1/day/2024-01-02/2024-01-05"
    with PolygonServer(market) as server:
        for key in (None, "", " "):
            status, body = get(server, path, key=key)
            assert status == 401 and body["status"] == "ERROR"
            assert body["error"] == "API Key was not provided" and body["request_id"]
        assert get(server, path, key="anything")[0] == 200
    with PolygonServer(market, api_key="secret") as server:
        status, body = get(server, path, key="wrong")
        assert status == 401 and body["status"] == "ERROR" and body["error"] == "Unknown API Key"
        assert get(server, path, key="secret")[0] == 200
        assert get(server, path, key=None, apiKey="secret")[0] == 200
        assert get(server, path, key=None, apiKey="wrong")[1]["error"] == "Unknown API Key"
        assert fetch(server, "/wiki/List_of_S%26P_500_companies", key=None).status == 200


@pytest.mark.parametrize("retry_after", [True, False])
def test_rate_limit_answers_429_within_the_window(market, retry_after):
    path = "/v2/aggs/grouped/locale/us/market/stocks/2024-01-05"
    with PolygonServer(market, calls_per_minute=3, window_seconds=1.0,
                       send_retry_after=retry_after) as server:
        assert [fetch(server, path).status for _ in range(3)] == [200] * 3
        assert fetch(server, "/wiki/List_of_S%26P_500_companies").status == 200  # not counted
        limited = fetch(server, path)
        assert limited.status == 429
        body = json.loads(limited.data)
        assert body["status"] == "ERROR" and body["error"] == RATE_LIMIT_ERROR
        assert limited.headers.get("Retry-After") == ("1" if retry_after else None)
        time.sleep(1.05)
        assert fetch(server, path).status == 200


def faulty(market, kind, **options):
    return PolygonServer(market, fault_rate=1.0, fault_kinds=[kind], **options)


GROUPED = "/v2/aggs/grouped/locale/us/market/stocks/2024-01-05"


def test_fault_5xx(market):
    with faulty(market, "5xx", seed=1) as server:
        responses = [fetch(server, GROUPED) for _ in range(12)]
        assert {r.status for r in responses} == {500, 502, 503}
        assert all(json.loads(r.data)["status"] == "ERROR" for r in responses)
        assert {r["fault"] for r in server.requests} == {"5xx"}


def test_fault_reset(market):
    with faulty(market, "reset") as server:
        with pytest.raises(urllib3.exceptions.ProtocolError):
            fetch(server, GROUPED)
        assert server.requests[-1]["status"] is None and server.requests[-1]["fault"] == "reset"


def test_fault_slow_outlasts_the_client_timeout(market):
    with faulty(market, "slow", stall_seconds=5) as server:
        started = time.monotonic()
        with pytest.raises(urllib3.exceptions.ReadTimeoutError):
            fetch(server, GROUPED, timeout=0.3)
    assert time.monotonic() - started < 2  # stop() does not wait for the stalled answer


def test_fault_truncated_json(market):
    with faulty(market, "truncated") as server:
        response = fetch(server, GROUPED)
        assert response.status == 200
        assert int(response.headers["Content-Length"]) == len(response.data) > 0
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.data)


def test_fault_null_results_only_on_grouped_days(market):
    with faulty(market, "null_results") as server:
        status, body = get(server, GROUPED)
        assert status == 200 and body["results"] is None and body["resultsCount"] == 0
        status, body = get(server, "/v2/aggs/ticker/MMM/range/1/day/2024-01-02/2024-01-05")
        assert status == 200 and len(body["results"]) == 4


def test_faults_are_drawn_deterministically_from_the_seed(market):
    def draws(seed):
        with PolygonServer(market, fault_rate=0.5, fault_kinds=["5xx", "truncated", "null_results"],
                           seed=seed) as server:
            for _ in range(16):
                fetch(server, GROUPED)
            return [(r["status"], r["fault"]) for r in server.requests]

    first = draws(11)
    assert first == draws(11) != draws(12)
    assert {fault for _, fault in first} == {None, "5xx", "truncated", "null_results"}


def test_request_log_lines_never_hold_the_key(market, tmp_path):
    log = tmp_path / "requests.jsonl"
    with PolygonServer(market, request_log=log) as server:
        fetch(server, "/v2/aggs/ticker/MMM/range/1/day/2024-01-02/2024-01-05", key=None,
              apiKey="topsecret", adjusted="false")
        fetch(server, "/v2/aggs/ticker/MMM/range/1/day/2024-01-02/2024-01-05", key="topsecret2")
        fetch(server, "/wiki/List_of_S%26P_500_companies", key=None)
        fetch(server, "/stocks/v1/splits", key=None)
    text = log.read_text()
    assert "topsecret" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines == server.requests
    assert [set(line) for line in lines] == [{"time", "path", "query", "status", "fault"}] * 4
    assert [(line["path"], line["query"], line["status"]) for line in lines] == [
        ("/v2/aggs/ticker/MMM/range/1/day/2024-01-02/2024-01-05", "adjusted=false", 200),
        ("/v2/aggs/ticker/MMM/range/1/day/2024-01-02/2024-01-05", "", 200),
        ("/wiki/List_of_S%26P_500_companies", "", 200),
        ("/stocks/v1/splits", "", 401)]
    assert dt.datetime.fromisoformat(lines[0]["time"]).utcoffset() == dt.timedelta(0)


# -- the constituents page -------------------------------------------------------------

def read_symbols(server, path="/wiki/List_of_S%26P_500_companies"):
    response = fetch(server, path, key=None)
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/html")
    table = pd.read_html(io.StringIO(response.data.decode()), attrs={"id": "constituents"})[0]
    assert list(table.columns) == ["Symbol", "Security", "GICS Sector", "GICS Sub-Industry",
                                   "Headquarters Location", "Date added", "CIK", "Founded"]
    return table["Symbol"].tolist()


def test_constituents_page_lists_the_members_and_follows_changes(tmp_path):
    market = generate_market(503, "2024-01-02", "2024-01-03", seed=0)
    with PolygonServer(market) as server:
        symbols = read_symbols(server)
        assert len(symbols) == 503 and {"BRK.B", "BF.B"} <= set(symbols)
        assert not set(ETF_TICKERS) & set(symbols)
        assert read_symbols(server, "/wiki/List_of_S&P_500_companies") == symbols
        market.remove_constituent("MMM")
        market.add_constituent("NEWCO", "New Company", "Industrials")
        changed = read_symbols(server)
        assert "MMM" not in changed and changed[-1] == "NEWCO" and len(changed) == 503
    page = tmp_path / "page.html"
    page.write_text('<table class="wikitable sortable" id="constituents"><tr><th>Symbol</th></tr>'
                    "<tr><td>ZZZ</td></tr></table>")
    with PolygonServer(market, universe_html=page) as server:
        assert fetch(server, "/wiki/List_of_S%26P_500_companies", key=None).data == page.read_bytes()


# -- files -------------------------------------------------------------------------------

def test_bars_from_alpha_vantage_and_kaggle_files(tmp_path):
    alpha = tmp_path / "daily_adjusted_AAPL.csv"
    alpha.write_bytes(
        b"timestamp,open,high,low,close,adjusted_close,volume,dividend_amount,split_coefficient\r\n"
        b"2020-09-01,132.76,134.80,130.53,134.18,133.5,151948100,0.0000,1.0\r\n"
        b"2020-08-31,127.58,131.00,126.00,129.04,128.4,225702700,0.0000,4.0\r\n"
        b"2020-08-28,504.05,505.77,498.31,499.23,124.2,46907479,0.0000,1.0\r\n")
    (tmp_path / "daily_BRK-A.csv").write_text("timestamp,open,high,low,close,volume,split_coefficient\n"
                                              "2020-08-28,1,2,0.5,1.5,10,1.5\n")
    kaggle = tmp_path / "all_stocks.csv.gz"
    with gzip.open(kaggle, "wt") as out:
        out.write("date,open,high,low,close,volume,Name\n"
                  "2020-08-28,10,11,9,10.5,1000,XYZ\n2020-08-31,,11,9,10.5,1000,XYZ\n")
    market = market_data_from_files([alpha, tmp_path / "daily_BRK-A.csv", kaggle])
    assert market.tickers == ["AAPL", "BRK.A", "XYZ"]
    assert market.splits == [Split("BRK.A", dt.date(2020, 8, 28), 2, 3),
                             Split("AAPL", dt.date(2020, 8, 31), 1, 4)]
    assert market.bars("AAPL")["close"].tolist() == [499.23, 129.04, 134.18]
    assert [c.symbol for c in market.constituents] == ["AAPL", "BRK.A", "XYZ"]

    with PolygonServer(market) as server:
        body = get(server, "/v2/aggs/ticker/AAPL/range/1/day/2020-08-28/2020-09-01")[1]
        assert body["results"][0] == {"v": 46907479 * 4.0, "o": 504.05 / 4, "c": 499.23 / 4,
                                      "h": 505.77 / 4, "l": 498.31 / 4, "t": 1598587200000}
        body = get(server, "/v2/aggs/ticker/XYZ/range/1/day/2020-08-28/2020-09-01")[1]
        assert [bar["o"] for bar in body["results"]] == [10.0, None]


# -- clients and the command line -------------------------------------------------------

def test_official_client_works_against_the_server(server, market):
    client = massive.RESTClient(api_key="k", base=server.url, retries=0)
    aggs = client.get_aggs("MMM", 1, "day", "2024-02-01", "2024-02-29")
    expected = market.bars("MMM", "2024-02-01", "2024-02-29")
    assert [a.close for a in aggs] == expected["close"].tolist()
    assert [a.transactions for a in aggs] == expected["transactions"].astype(int).tolist()
    paged = list(client.list_aggs("MMM", 1, "day", START, END, limit=9))
    assert [a.timestamp for a in paged] == [a.timestamp for a in client.get_aggs("MMM", 1, "day", START, END)]
    grouped = client.get_grouped_daily_aggs("2024-03-11")
    assert sorted(g.ticker for g in grouped) == market.tickers
    assert client.get_grouped_daily_aggs("2024-03-10") == []
    assert list(client.list_stocks_splits(ticker="MMM")) == []
    assert list(client.list_stocks_dividends(ticker="MMM")) == []


def test_keep_alive_and_other_methods():
    market = generate_market(1, START, "2024-01-05", seed=0)
    with PolygonServer(market) as server:
        connection = http.client.HTTPConnection(*server.url.removeprefix("http://").split(":"))
        for _ in range(2):
            connection.request("GET", "/stocks/v1/splits", headers={"Authorization": "Bearer k"})
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["status"] == "OK"
        local_port = connection.sock.getsockname()[1]
        connection.request("POST", "/stocks/v1/splits", body=b"{}")
        response = connection.getresponse()
        assert response.status == 405 and response.getheader("Allow") == "GET"
        response.read()
        assert connection.sock.getsockname()[1] == local_port  # the same connection throughout
        connection.close()
        status, body = get(server, "/v1/marketstatus/now")
        assert status == 404 and body["status"] == "NOT_FOUND" and body["request_id"]


def test_command_line_serves_until_terminated():
    process = subprocess.Popen(
        [sys.executable, "-m", "CandleThrob.testing.polygon_server", "--port", "0", "--tickers", "3",
         "--start", "2024-01-02", "--end", "2024-01-31"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        response = HTTP.request("GET", url + "/v2/aggs/grouped/locale/us/market/stocks/2024-01-31",
                                headers={"Authorization": "Bearer k"})
        # 3 members and 20 ETFs, among a full market's symbols as a real grouped answer lists them
        answer = json.loads(response.data)
        assert response.status == 200 and answer["resultsCount"] == 11_000 == len(answer["results"])
        assert {"SPY", "QQQ"} <= {r["T"] for r in answer["results"]}
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
    assert process.stderr.read() == ""
