"""The full-market population of grouped answers: symbols, bars, encoding and the answer cache."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import urllib3

from CandleThrob.bars import bars_from_polygon
from CandleThrob.testing.datagen import (
    ETF_TICKERS, SYMBOL_SHAPES, TEST_SYMBOLS, MarketPopulation, generate_market, market_symbols,
    sp500_companies,
)
from CandleThrob.testing.polygon_server import (
    GroupedAnswers, PolygonServer, PopulationRows, PreEncoded, encode_payload,
)

START, END = "2024-01-02", "2024-03-28"
DAY = dt.date(2024, 3, 11)
HTTP = urllib3.PoolManager(retries=False, timeout=10)
ROOT = Path(__file__).resolve().parents[1]
SHAPE_PATTERNS = {
    "test": "|".join(TEST_SYMBOLS),
    "plain": r"[A-Z]{1,5}",
    "class_share": r"[A-Z]{2,4}\.[ABC]",
    "warrant": r"[A-Z]{3,4}\.WS",
    "warrant_series": r"[A-Z]{3,4}\.WS\.[AB]",
    "unit": r"[A-Z]{3,4}\.U",
    "right": r"[A-Z]{3,4}\.RT",
    "preferred": r"[A-Z]{1,4}p[A-K]",
    "when_issued": r"[A-Z]{2,4}w",
}


def shape(symbol: str) -> str:
    # test symbols first: they are plain 5-letter symbols too
    return next(name for name, pattern in SHAPE_PATTERNS.items() if re.fullmatch(pattern, symbol))


def grouped(server, day=DAY, **params):
    response = HTTP.request("GET", f"{server.url}/v2/aggs/grouped/locale/us/market/stocks/{day}",
                            fields=params or None, headers={"Authorization": "Bearer k"})
    assert response.status == 200
    return json.loads(response.data)


@pytest.fixture(scope="module")
def market():
    return generate_market(4, START, END, seed=7)


# -- symbols ------------------------------------------------------------------------

def test_symbols_have_the_shapes_of_a_real_grouped_answer():
    reserved = {c.symbol for c in sp500_companies()} | set(ETF_TICKERS)
    symbols = market_symbols(10_477, seed=1, reserved=reserved)
    assert len(symbols) == len(set(symbols)) == 10_477
    assert not reserved & set(symbols)
    counts = Counter(shape(s) for s in symbols)
    assert counts == {"test": 6, "class_share": 157, "warrant": 314, "warrant_series": 52, "unit": 157,
                      "right": 52, "preferred": 733, "when_issued": 21, "plain": 8985}
    assert {name: counts[name] for name in SYMBOL_SHAPES} == \
        {name: round(share * 10_477) for name, (share, _, _) in SYMBOL_SHAPES.items()}
    assert any(s != s.upper() for s in symbols)  # Polygon's lower-case p and w
    lengths = Counter(len(s) for s in symbols if shape(s) == "plain")
    assert set(lengths) == {1, 2, 3, 4, 5} and lengths[4] > lengths[3] > lengths[5] > lengths[2] > lengths[1]
    # shuffled like a real answer, not grouped by shape
    assert shape(symbols[0]) == "plain" and len({shape(s) for s in symbols[:300]}) >= 5


def test_symbols_are_a_function_of_count_seed_and_reserved():
    assert market_symbols(500, seed=3) == market_symbols(500, seed=3)
    assert market_symbols(500, seed=3) != market_symbols(500, seed=4)
    assert "ZVZZT" not in market_symbols(500, seed=3, reserved={"ZVZZT"})
    assert market_symbols(0) == []
    assert sorted(market_symbols(4)) == sorted(TEST_SYMBOLS[:4])
    small = market_symbols(20, seed=2)
    assert len(set(small)) == 20 and Counter(shape(s) for s in small)["preferred"] == 1
    with pytest.raises(ValueError):
        market_symbols(-1)


def test_population_around_a_market_fills_it_to_the_size(market):
    population = MarketPopulation.around(market, 1_000, seed=5)
    assert len(population.symbols) == 1_000 - len(market.tickers) == 976
    assert not set(population.symbols) & ({c.symbol for c in sp500_companies()} | set(ETF_TICKERS))
    assert population.symbols == MarketPopulation.around(market, 1_000, seed=5).symbols
    assert MarketPopulation.around(market, 24, seed=5).symbols == ()
    assert MarketPopulation.around(market, 0, seed=5).symbols == ()


# -- bars ---------------------------------------------------------------------------

def test_population_bars_are_consistent_exact_and_deterministic():
    population = MarketPopulation(market_symbols(3_000, seed=1), seed=1)
    values = population.day_values(DAY)
    assert values.dtype == np.int64 and values.shape == (3_000, 7)
    open_, high, low, close, volume, vwap, transactions = values.T
    assert (low >= 1).all() and (volume >= 1).all() and (transactions >= 1).all()
    for price in (open_, close, vwap):
        assert (low <= price).all() and (price <= high).all()
    assert (transactions <= volume).all()
    assert (population.day_values(DAY) == values).all()
    assert not (population.day_values(DAY + dt.timedelta(days=1)) == values).all()
    assert not (MarketPopulation(population.symbols, seed=2).day_values(DAY) == values).all()
    bars = population.bars(DAY)
    assert list(bars["ticker"]) == list(population.symbols)
    assert (bars["trade_date"] == pd.Timestamp(DAY)).all()
    assert (bars["close"].to_numpy() == close / MarketPopulation.PRICE_SCALE).all()
    assert (bars["volume"].to_numpy() == volume).all()


# -- encoding -----------------------------------------------------------------------------

def test_population_rows_are_the_json_of_their_values():
    rows = PopulationRows(["A", "BRK.A", "ABCpA", "ABCw"])
    values = np.array([  # open, high, low, close (1/10,000 $), volume, vwap, transactions
        [120_000, 125_000, 110_000, 121_000, 1, 123_456, 1],
        [500, 501, 499, 500, 999_999_999_999, 1, 10_000],
        [99_999_999_9999, 99_999_999_9999, 1, 10, 100_000_000, 1_0001, 0],
        [10_000, 10_000, 10_000, 10_000, 10_000, 10_000, 9_999_999],
    ], dtype=np.int64)
    text = rows.encode(values, 1710129600000)
    assert text.startswith(b',{"T":"A","v":1,"vw":12.3456,"o":12,"c":12.1,"h":12.5,"l":11,')
    items = json.loads(b"[" + text[1:] + b"]")
    expected = [{"T": t, "v": int(v[4]), "vw": v[5] / 1e4, "o": v[0] / 1e4, "c": v[3] / 1e4, "h": v[1] / 1e4,
                 "l": v[2] / 1e4, "t": 1710129600000, "n": int(v[6])}
                for t, v in zip(["A", "BRK.A", "ABCpA", "ABCw"], values.tolist())]
    assert items == expected
    assert [list(item) for item in items] == [["T", "v", "vw", "o", "c", "h", "l", "t", "n"]] * 4
    hidden = np.array([False, True, False, True])
    assert json.loads(b"[" + rows.encode(values, 1710129600000, hidden)[1:] + b"]") == expected[::2]
    with pytest.raises(ValueError):
        rows.encode(values * 10, 1710129600000)  # a price of $100,000,000 does not fit
    with pytest.raises(ValueError):
        rows.encode(-values, 1710129600000)


def test_pre_encoded_payload_is_what_json_dumps_would_write():
    results = [{"T": "A", "v": 1.0}, {"T": "B", "v": 2.5}]
    full = {"queryCount": 2, "resultsCount": 2, "adjusted": True, "results": results, "status": "OK",
            "request_id": "x", "count": 2}
    payload = PreEncoded({"queryCount": 2, "resultsCount": 2, "adjusted": True},
                         json.dumps(results, separators=(",", ":")).encode()[1:-1],
                         {"status": "OK", "request_id": "x", "count": 2})
    assert encode_payload(payload) == json.dumps(full, separators=(",", ":")).encode()
    assert payload.get("adjusted") is True and "results" not in payload
    assert encode_payload({"a": 1}) == b'{"a":1}'


# -- served answers ---------------------------------------------------------------------

def test_grouped_day_lists_the_whole_market_and_the_members_as_before(market):
    with PolygonServer(market) as plain, PolygonServer(market, market_size=2_000, seed=3) as full:
        before, after = grouped(plain), grouped(full)
        population = full.grouped_answers.population
        assert after["resultsCount"] == after["queryCount"] == after["count"] == len(after["results"]) == 2_000
        assert list(after)[:4] == ["queryCount", "resultsCount", "adjusted", "results"]
        # the members' items come first, exactly as without the population
        assert after["results"][:24] == before["results"]
        others = bars_from_polygon(after["results"][24:])
        pd.testing.assert_frame_equal(others.astype({"ticker": object}), population.bars(DAY), check_exact=True)
        for unadjusted in (grouped(plain, adjusted="false"), grouped(full, adjusted="false")):
            assert unadjusted["results"][:24] == before["results"]  # no splits: the same bars
        # no session, no population
        for day in ("2024-03-09", "2024-01-15"):
            assert "results" not in grouped(full, day) and grouped(full, day)["resultsCount"] == 0


def test_range_answers_do_not_change(market):
    path = "/v2/aggs/ticker/MMM/range/1/day/2024-02-01/2024-02-29"
    with PolygonServer(market) as plain, PolygonServer(market, market_size=2_000) as full:
        bodies = [json.loads(HTTP.request("GET", s.url + path, headers={"Authorization": "Bearer k"}).data)
                  for s in (plain, full)]
    for body in bodies:
        del body["request_id"]
    assert bodies[0] == bodies[1] and bodies[0]["resultsCount"] == 20


def test_a_cached_answer_is_the_fresh_one_until_bars_splits_or_today_change():
    market = generate_market(2, START, END, seed=3)
    answers = GroupedAnswers(MarketPopulation.around(market, 300, seed=1), capacity=2)
    today = market.last_date
    first = answers.results(market, DAY, True, today)
    assert first[0] == 300 and first == answers.build(market, DAY, True, today)
    assert answers.results(market, DAY, True, today) is first  # kept
    market.add_split("MMM", "2024-03-04", 1, 2)
    resplit = answers.results(market, DAY, True, today)
    assert resplit is not first and resplit == answers.build(market, DAY, True, today) != first
    market.add_bars(market.bars("MMM", DAY, DAY).assign(close=123.0))
    assert b'"c":123.0' in answers.results(market, DAY, True, today)[1]
    before_split = dt.date(2024, 3, 1)  # the server's now before the split: not applied
    assert answers.results(market, DAY, True, before_split) == (0, b"")
    assert answers.results(market, before_split, True, before_split) == \
        answers.build(market, before_split, True, before_split)
    assert answers.results(market, before_split, True, before_split) != \
        answers.results(market, before_split, True, today)
    for day in (dt.date(2024, 3, 12), dt.date(2024, 3, 13), dt.date(2024, 3, 14)):
        answers.results(market, day, False, today)
    assert len(answers._cache) == 2


def test_a_symbol_the_market_gains_is_listed_once_with_the_markets_bars():
    market = generate_market(4, START, END, seed=7)
    with PolygonServer(market, market_size=500, seed=3) as server:
        symbol = server.grouped_answers.population.symbols[10]
        market.add_bars(market.bars("MMM").assign(ticker=symbol))
        body = grouped(server)
    tickers = [r["T"] for r in body["results"]]
    assert tickers.count(symbol) == 1 and body["resultsCount"] == 500 and tickers.index(symbol) < 25
    served = next(r for r in body["results"] if r["T"] == symbol)
    assert served["c"] == market.bars(symbol, DAY, DAY)["close"].item()


def test_faults_still_apply_to_full_market_answers(market):
    with PolygonServer(market, market_size=1_000, fault_rate=1.0, fault_kinds=["null_results"]) as server:
        body = grouped(server)
    assert body["results"] is None and body["resultsCount"] == 0
    with PolygonServer(market, market_size=1_000, fault_rate=1.0, fault_kinds=["truncated"]) as server:
        response = HTTP.request("GET", f"{server.url}/v2/aggs/grouped/locale/us/market/stocks/{DAY}",
                                headers={"Authorization": "Bearer k"})
    with pytest.raises(ValueError):
        json.loads(response.data)


# -- the command line -------------------------------------------------------------------

def serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "CandleThrob.testing.polygon_server", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)


def grouped_count(process: subprocess.Popen, day: str) -> int:
    try:
        url = process.stdout.readline().strip().removeprefix("listening on ")
        response = HTTP.request("GET", f"{url}/v2/aggs/grouped/locale/us/market/stocks/{day}",
                                headers={"Authorization": "Bearer k"})
        body = json.loads(response.data)
        assert body["resultsCount"] == len(body.get("results") or [])
        return body["resultsCount"]
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_command_line_serves_a_full_market_of_generated_data_only(tmp_path):
    generated = ("--tickers", "3", "--start", "2024-01-02", "--end", "2024-01-31")
    assert grouped_count(serve(*generated), "2024-01-31") == 11_000
    assert grouped_count(serve(*generated, "--market-size", "600"), "2024-01-31") == 600
    assert grouped_count(serve(*generated, "--market-size", "0"), "2024-01-31") == 23
    bars = generate_market(2, "2024-01-02", "2024-01-31", seed=1).bars().rename(columns={"trade_date": "date"})
    bars.to_csv(tmp_path / "bars.csv", index=False)
    assert grouped_count(serve("--bars", str(tmp_path / "bars.csv")), "2024-01-31") == 22
    assert grouped_count(serve("--bars", str(tmp_path / "bars.csv"), "--market-size", "600"), "2024-01-31") == 22
