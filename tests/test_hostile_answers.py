"""Hostile answers: bounded time and memory, a clear outcome, nothing wrong stored.

Each case puts one misbehaviour in front of the real local server (``hostile.py``).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest

from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer

from hostile import HostileServer, gzip_bomb, json_answer, path_of, raw_answer, trickle
from ingest_helpers import API_KEY, ROOT, ingest, query, stored

END = "2024-03-15"
GROUPED = "/v2/aggs/grouped/locale/us/market/stocks/"


@pytest.fixture(scope="module")
def market():
    return generate_market(4, "2024-01-02", "2024-03-28", seed=3)  # 4 S&P-like + 20 ETFs


@pytest.fixture
def server(market):
    with PolygonServer(market, api_key=API_KEY, today=END) as srv:
        yield srv


def _range_of(ticker: str):
    return lambda path: path_of(path).startswith(f"/v2/aggs/ticker/{ticker}/range/")


def _cli(args: list[str], env: dict) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("POLYGON_", "DATABASE_URL"))}
    full.update(env, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "CandleThrob.ingestion.ingest_data", *args], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _env(base_url: str, database_url: str, universe_url: str, **extra) -> dict:
    env = {"POLYGON_API_KEY": API_KEY, "POLYGON_BASE_URL": base_url, "DATABASE_URL": database_url,
           "SP500_URL": f"{universe_url}/wiki/List_of_S%26P_500_companies", "POLYGON_RATE_LIMIT": "0",
           "RETRY_DELAY": "0.01", "MIN_SP500_SYMBOLS": "1", "HISTORY_START": "2024-03-01"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


# ---- time and memory are bounded, and signals always work ---------------------------------------

def test_a_trickling_answer_ends_at_the_request_deadline(sqlite_url, server, market):
    target = market.constituents[0].symbol
    with HostileServer(server.url, lambda path, up: trickle(up()[2], 0.2, lambda: False)
                       if _range_of(target)(path) else None) as hostile:
        result = ingest(sqlite_url, server, END, polygon_base_url=hostile.url, request_timeout=1, max_retries=1,
                        start="2024-03-01", tickers=[target, "SPY"])
    assert result["exit_code"] == 1 and result["failed_tickers"] == [target]
    assert "no complete answer from" in result["outcomes"][target]["error"]
    assert "within 1 s (REQUEST_TIMEOUT)" in result["outcomes"][target]["error"]
    assert query(sqlite_url, "SELECT COUNT(*) FROM ingestion_lock") == [(0,)]
    assert stored(sqlite_url)["ticker"].unique().tolist() == ["SPY"]  # the other ticker is there


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["TERM", "INT"])
def test_a_signal_ends_a_run_stuck_in_a_trickling_request(tmp_path, server, market, signum, code):
    target = market.constituents[0].symbol
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    server.today = END
    with HostileServer(server.url, lambda path, up: trickle(up()[2], 2.0, hostile.stopping)
                       if _range_of(target)(path) else None) as hostile:
        proc = _cli(["--end", END, "--no-progress", "--tickers", target],
                    _env(hostile.url, url, server.url, REQUEST_TIMEOUT=600))
        assert hostile.started.wait(60)  # the run is inside the trickling request now
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and f"interrupted by signal {signum}" in out
    assert query(url, "SELECT status FROM ingestion_runs") == [("interrupted",)]
    assert query(url, "SELECT COUNT(*) FROM ingestion_lock") == [(0,)]


def test_a_trickling_constituents_page_ends_at_the_deadline_and_the_stored_universe_is_used(sqlite_url, server):
    ingest(sqlite_url, server, "2024-03-14", start="2024-03-01")
    with HostileServer(server.url, lambda path, up: trickle(up()[2], 0.2, lambda: False)
                       if path.startswith("/wiki/") else None) as hostile:
        result = ingest(sqlite_url, server, END, sp500_url=f"{hostile.url}/wiki/List_of_S%26P_500_companies",
                        request_timeout=1)
    assert result["exit_code"] == 0 and result["tickers"] == 24 and result["rows_written"] == 24 * 2


def test_a_looping_next_url_is_detected_after_one_repeat(sqlite_url, server, market):
    target = market.constituents[1].symbol
    first = f"/v2/aggs/ticker/{target}/range/1/day/2024-03-01/2024-03-15?adjusted=false&sort=asc&limit=50000"

    def loop(path, upstream):  # every page is the first one again, pointing to the same next page
        if not _range_of(target)(path):
            return None
        payload = json.loads(hostile.fetch_upstream(first)[2])
        payload["next_url"] = f"{hostile.url}/v2/aggs/ticker/{target}/range/1/day/2024-03-01/2024-03-15?cursor=same"
        return json_answer(payload)

    with HostileServer(server.url, loop, API_KEY) as hostile:
        result = ingest(sqlite_url, server, END, polygon_base_url=hostile.url, start="2024-03-01",
                        tickers=[target, "SPY"])
        asked = [p for p in hostile.requests if _range_of(target)(p)]
    assert len(asked) == 2  # the first page and the one that points back to itself
    assert result["exit_code"] == 1 and "repeats a page already read" in result["outcomes"][target]["error"]
    assert target not in set(stored(sqlite_url)["ticker"])


def test_endless_distinct_pages_stop_at_what_the_request_can_hold(sqlite_url, server, market):
    target = market.constituents[1].symbol
    first = f"/v2/aggs/ticker/{target}/range/1/day/2024-03-01/2024-03-15?adjusted=false&sort=asc&limit=50000"
    pages = []

    def endless(path, upstream):
        if not _range_of(target)(path):
            return None
        pages.append(path)
        payload = json.loads(hostile.fetch_upstream(first)[2])
        payload["next_url"] = f"{hostile.url}/v2/aggs/ticker/{target}/range/1/day/2024-03-01/2024-03-15" \
                              f"?cursor=page{len(pages)}"
        return json_answer(payload)

    with HostileServer(server.url, endless, API_KEY) as hostile:
        result = ingest(sqlite_url, server, END, polygon_base_url=hostile.url, start="2024-03-01",
                        tickers=[target, "SPY"])
    assert len(pages) == 2  # a two-week span fits one page of 50,000 bars; a second is the most it may take
    assert "more than 2 pages" in result["outcomes"][target]["error"]


def test_a_huge_retry_after_fails_the_call_for_this_run(sqlite_url, server, market):
    target = market.constituents[2].symbol
    rule = lambda path, up: json_answer({"status": "ERROR", "error": "slow down"}, 429,  # noqa: E731
                                        {"Retry-After": "99999"}) if _range_of(target)(path) else None
    with HostileServer(server.url, rule) as hostile:
        result = ingest(sqlite_url, server, END, polygon_base_url=hostile.url, start="2024-03-01",
                        tickers=[target, "SPY"])
    assert result["exit_code"] == 1
    assert result["outcomes"][target]["error"].endswith(
        "the API asked to wait 99999 s (Retry-After), more than MAX_RETRY_AFTER=300 s; the call is left for "
        "the next run")


@pytest.mark.parametrize("kind", ["million_results", "gzip_bomb"])
def test_an_oversized_answer_is_refused_within_the_memory_it_may_take(tmp_path, server, market, kind):
    target = market.constituents[0].symbol
    if kind == "gzip_bomb":
        body, headers = gzip_bomb(200 * 2**20), {"Content-Encoding": "gzip"}
    else:
        row = '{"v":1,"o":1,"c":1,"h":1,"l":1,"t":1709528400000}'
        body, headers = ('{"status":"OK","results":[' + ",".join([row] * 1_000_000) + "]}").encode(), {}
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    server.today = END
    with HostileServer(server.url, lambda path, up: raw_answer(body, headers=headers)
                       if _range_of(target)(path) else None) as hostile:
        proc = _cli(["--end", END, "--no-progress", "--tickers", f"{target},SPY", "--report",
                     str(tmp_path / "r.json")], _env(hostile.url, url, server.url, MAX_RESPONSE_MB=16))
        out, err = proc.communicate(timeout=120)
    report = json.loads((tmp_path / "r.json").read_text())
    assert proc.returncode == 1, err
    assert "larger than 16 MB (MAX_RESPONSE_MB)" in report["outcomes"][target]["error"]
    assert report["peak_rss_mb"] < 400  # a 1.3 GB expansion was never held
    assert stored(url)["ticker"].unique().tolist() == ["SPY"]


# ---- nothing wrong is stored -----------------------------------------------------------------------

def test_a_grouped_answer_for_another_day_is_never_stored_or_covered(database_url, server, market):
    ingest(database_url, server, "2024-03-14", start="2024-03-01")

    def foreign_day(path, upstream):  # 03-13's bars, served for 03-15
        if path_of(path) != f"{GROUPED}{END}":
            return None
        return raw_answer(hostile.fetch_upstream(f"{GROUPED}2024-03-13")[2])

    with HostileServer(server.url, foreign_day, API_KEY) as hostile:
        result = ingest(database_url, server, END, polygon_base_url=hostile.url, max_retries=1)
    assert result["exit_code"] == 1 and result["failed_grouped_days"] == [END]
    assert query(database_url, f"SELECT COUNT(*) FROM ticker_data_raw WHERE trade_date = '{END}'") == [(0,)]
    assert query(database_url, "SELECT MAX(covered_to) FROM ingestion_coverage")[0][0] in ("2024-03-14",
                                                                                        pd.Timestamp("2024-03-14").date())
    # The next run asks for the day again and gets it.
    again = ingest(database_url, server, END)
    assert again["exit_code"] == 0 and again["rows_written"] == 24


def test_a_range_answer_for_another_ticker_is_never_stored_under_the_one_asked(database_url, server, market):
    asked, other = market.constituents[0].symbol, market.constituents[1].symbol

    def swap(path, upstream):
        if not _range_of(asked)(path):
            return None
        body = hostile.fetch_upstream(path.replace(f"/ticker/{asked}/", f"/ticker/{other}/"))[2]
        return raw_answer(body)

    with HostileServer(server.url, swap, API_KEY) as hostile:
        result = ingest(database_url, server, END, polygon_base_url=hostile.url, start="2024-03-01", max_retries=1,
                        tickers=[asked, "SPY"])
    assert result["exit_code"] == 1 and f"the answer is for ticker '{other}'" in result["outcomes"][asked]["error"]
    assert asked not in set(stored(database_url)["ticker"])


def _one_bad_bar(values: dict):
    def rule(path, upstream):
        if not path_of(path).startswith("/v2/aggs/ticker/SPY/range/"):
            return None
        payload = json.loads(upstream()[2])
        payload["results"][0].update(values)
        return json_answer(payload)
    return rule


@pytest.mark.parametrize("values,reasons", [
    ({"h": math.inf}, "non_finite_value;value_out_of_range"),
    ({"v": math.inf}, "non_finite_value;value_out_of_range"),
    ({"vw": -5}, "vwap_out_of_range"),
    ({"n": 1e30}, "transactions_out_of_range"),
    ({"n": -7}, "transactions_out_of_range"),
    ({"t": 1e20}, "missing_value"),
    ({"t": "yesterday"}, "missing_value"),
], ids=["inf-high", "inf-volume", "negative-vwap", "huge-count", "negative-count", "t-1e20", "t-yesterday"])
def test_non_finite_out_of_range_and_malformed_rows_are_rejected_with_reasons(database_url, server, values,
                                                                              reasons):
    with HostileServer(server.url, _one_bad_bar(values)) as hostile:
        result = ingest(database_url, server, END, polygon_base_url=hostile.url, tickers=["SPY"],
                        start="2024-03-01")
    assert result["rows_rejected"] == 1 and result["rows_written"] == 10
    assert query(database_url, "SELECT reasons FROM rejected_bars") == [(reasons,)]
    assert query(database_url, "SELECT COUNT(*) FROM ticker_data_raw WHERE trade_date = '2024-03-01'") == [(0,)]


@pytest.mark.parametrize("body,status,code,words", [
    (b'{"status":"OK","results":[1,2,3]}', 200, 1, "results[0] is a JSON int, not an object"),
    (b'{"status":"OK","results":"abc"}', 200, 1, "'results' is a JSON str, not a list"),
    (b'\xff\xfe\x00not json', 500, 1, "HTTP 500"),
    (b'\xff\xfe\x00not json', 401, 3, "the data API refused the key (HTTP 401"),
], ids=["list-of-ints", "a-string", "500-not-utf8", "401-not-utf8"])
def test_a_malformed_body_is_a_clear_error_never_a_traceback(tmp_path, server, body, status, code, words):
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    server.today = END
    with HostileServer(server.url, lambda path, up: raw_answer(body, status)
                       if _range_of("SPY")(path) else None) as hostile:
        proc = _cli(["--end", END, "--no-progress", "--tickers", "SPY", "--report", str(tmp_path / "r.json")],
                    _env(hostile.url, url, server.url, MAX_RETRIES=1))
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert words in (out + err)
