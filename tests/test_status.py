"""`candlethrob status`: freshness against the last final NYSE session, gaps, quarantines, corporate actions
and runs; `--check` exits with one documented code per cause."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from CandleThrob.testing.polygon_server import PolygonServer

from ingest_helpers import API_KEY, ingest
from read_helpers import MORNING_AFTER, build_warehouse, fresh_database, market, run_cli

UTC = dt.timezone.utc
# What a bar with its high below its low breaks: every rule that compares with the range.
BROKEN_BAR = ("high_below_low", "open_outside_range", "close_outside_range", "vwap_out_of_range")


def morning_after(day: str) -> dt.datetime:
    """08:00 in New York the day after ``day``."""
    return dt.datetime.combine(dt.date.fromisoformat(day) + dt.timedelta(days=1), dt.time(12), UTC)


def status(url: str, *args: str, now: dt.datetime = MORNING_AFTER) -> tuple[int, dict]:
    code, out, err = run_cli("status", "--format", "json", "--database-url", url, *args, now=now)
    assert err == ""
    return code, json.loads(out)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fresh_url(request, tmp_path_factory):
    url = fresh_database(request, tmp_path_factory)
    build_warehouse(url)
    return url


def test_a_fresh_warehouse_checks_ok(fresh_url):
    code, report = status(fresh_url, "--check")
    assert code == 0 and report["check"] == {"exit_code": 0, "problems": []}
    assert (report["last_final_session"], report["last_stored_session"], report["sessions_behind"]) == (
        "2024-03-20", "2024-03-20", 0)
    assert report["tickers"] == {"stored": 23, "behind": []}
    assert report["gaps"] == {"pending_cells": 0, "vendor_holes": 0, "holes": []}
    assert report["rejected_bars"] == {}
    actions = report["corporate_actions"]
    assert (actions["splits"], actions["dividends"], actions["pending"], actions["not_applied"],
            actions["vendor_factor_differs"], actions["rejected"]) == (1, 2, [], [], [], {})
    runs = report["runs"]
    assert [(r["status"], r["exit_code"], r["end_date"], r["started_at"]) for r in runs] == [
        ("success", 0, "2024-03-20", "2024-03-21 12:00:00"), ("success", 0, "2024-03-15", "2024-03-16 12:00:00")]
    assert runs[1]["rows_written"] == 23 * 93 and runs[1]["api_calls"] == 25  # 23 range calls + the ledger's 2
    assert runs[0]["rows_written"] == 23 * 4 and runs[0]["seconds"] == 0.0  # the test's clock stands still


def test_text_output(fresh_url):
    code, out, _ = run_cli("status", "--database-url", fresh_url, "--runs", "1")
    lines = out.splitlines()
    assert code == 0 and lines[1:6] == [
        "  last stored session 2024-03-20, last final NYSE session 2024-03-20: fresh",
        "  tickers: 23 stored, 0 behind the last final session",
        "  gaps: 0 cells pending a retry, 0 vendor holes",
        "  rejected bars: none",
        "  corporate actions: 1 split and 2 dividends on record; 0 pending (dated after the last stored bar), "
        "0 dividends not applied, 0 vendor factors differing from ours, 0 records refused"]
    assert lines[6] == "  last runs (newest first):" and lines[7].startswith(
        "    2024-03-21 12:00:00  success     exit 0  calls 6  bars 92  rejected 0  0 s  through 2024-03-20  run ")
    assert lines[-1] == "check: ok"


def test_stale_from_the_evening_a_session_becomes_final(fresh_url):
    """The warehouse holds 2024-03-20; 2024-03-21's bars are final from 20:00 New York time that day."""
    before = dt.datetime(2024, 3, 21, 23, 59, 59, tzinfo=UTC)  # 19:59:59 EDT
    assert status(fresh_url, "--check", now=before)[0] == 0
    code, report = status(fresh_url, "--check", now=dt.datetime(2024, 3, 22, 0, 0, tzinfo=UTC))
    assert code == 10 and report["check"]["problems"] == [{
        "code": 10, "cause": "stale",
        "message": "the last stored session is 2024-03-20, the last final NYSE session 2024-03-21 (1 session behind)"}]
    assert report["tickers"]["behind"][0] == {"ticker": "ABT", "last_covered": "2024-03-20", "sessions_behind": 1}
    assert status(fresh_url, now=dt.datetime(2024, 3, 22, 0, 0, tzinfo=UTC))[0] == 0  # without --check: 0
    assert run_cli("status", "--check", "--database-url", fresh_url, now=morning_after("2024-03-25"))[0] == 10


def test_an_ingest_that_stopped_short_of_the_last_final_session_is_stale(tmp_path):
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    build_warehouse(url, end="2024-03-19")
    code, report = status(url, "--check", now=MORNING_AFTER)  # the last final session is 2024-03-20
    assert code == 10 and report["sessions_behind"] == 1


def test_tickers_behind(tmp_path):
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    data = market()
    build_warehouse(url, data)
    with PolygonServer(data, api_key=API_KEY) as server:
        assert ingest(url, server, "2024-03-21", tickers=["SPY", "QQQ"])["exit_code"] == 0
    code, report = status(url, "--check", now=morning_after("2024-03-21"))
    assert code == 11 and report["sessions_behind"] == 0 and len(report["tickers"]["behind"]) == 21
    assert report["check"]["problems"][0]["message"].startswith("21 tickers behind by more than 0 sessions: ABT, ")
    assert status(url, "--check", "--max-behind", "1", now=morning_after("2024-03-21"))[0] == 0


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path_factory):
    return fresh_database(request, tmp_path_factory)


def test_the_last_run_failed(url):
    """A constituents page with too few symbols is refused: the stored universe is loaded, and the run ends
    partial (exit 1) so that someone looks at the page."""
    data = market()
    build_warehouse(url, data)
    with PolygonServer(data, api_key=API_KEY) as server:
        result = ingest(url, server, "2024-03-21", min_sp500_symbols=10)
    assert result["exit_code"] == 1
    code, report = status(url, "--check", now=morning_after("2024-03-21"))
    assert code == 12 and report["sessions_behind"] == 0 and report["tickers"]["behind"] == []
    problem = report["check"]["problems"]
    assert [p["code"] for p in problem] == [12] and problem[0]["message"].startswith(
        f"the last run {result['run_id']} (partial, exit 1) for 2024-03-21: ")
    with PolygonServer(data, api_key=API_KEY) as server:  # the next night's run succeeds: all clear
        assert ingest(url, server, "2024-03-22")["exit_code"] == 0
    assert status(url, "--check", now=morning_after("2024-03-22"))[0] == 0


def test_pending_cells_then_a_vendor_hole(url):
    """MMM's 2024-03-21 bar has high below low in every answer: rejected and pending, then a vendor hole.
    (A quality score of 0 keeps MMM's other bars; a quarantined ticker would also be behind, exit 11.)"""
    data = market()
    build_warehouse(url, data)
    good = data.bars("MMM", "2024-03-21", "2024-03-21")
    data.add_bars(good.assign(high=good["low"] * 0.9))
    settings = {"max_cell_retries": 0, "min_data_quality_score": 0.0}
    with PolygonServer(data, api_key=API_KEY) as server:
        assert ingest(url, server, "2024-03-21", **settings)["exit_code"] == 0
        code, report = status(url, "--check", now=morning_after("2024-03-21"))
        assert code == 13 and report["check"]["problems"] == [{
            "code": 13, "cause": "gaps", "message": "1 cell pending a retry (allowed 0), 0 vendor holes (allowed 0)"}]
        assert report["rejected_bars"] == {r: {"rejected": 1, "still_missing": 1} for r in sorted(BROKEN_BAR)}
        assert status(url, "--check", "--max-pending", "1", now=morning_after("2024-03-21"))[0] == 0
        assert ingest(url, server, "2024-03-22", **settings)["exit_code"] == 0  # asked again: now a hole
    code, report = status(url, "--check", now=morning_after("2024-03-22"))
    assert code == 13 and report["check"]["problems"][0]["message"] == \
        "0 cells pending a retry (allowed 0), 1 vendor hole (allowed 0)"
    assert [(h["ticker"], h["trade_date"], h["kind"]) for h in report["gaps"]["holes"]] == [
        ("MMM", "2024-03-21", "rejected")]
    assert report["rejected_bars"] == {r: {"rejected": 2, "still_missing": 2} for r in sorted(BROKEN_BAR)}
    assert status(url, "--check", "--max-holes", "1", now=morning_after("2024-03-22"))[0] == 0


def test_a_quarantined_ticker_is_behind_and_its_bars_are_counted_by_reason(tmp_path):
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    data = market()
    build_warehouse(url, data)
    good = data.bars("MMM", "2024-03-21", "2024-03-21")
    data.add_bars(good.assign(high=good["low"] * 0.9))
    with PolygonServer(data, api_key=API_KEY) as server:
        assert ingest(url, server, "2024-03-21")["exit_code"] == 1
    code, report = status(url, "--check", now=morning_after("2024-03-21"))
    assert code == 11 and [p["code"] for p in report["check"]["problems"]] == [11, 12]
    assert report["tickers"]["behind"] == [{"ticker": "MMM", "last_covered": "2024-03-20", "sessions_behind": 1}]
    assert report["rejected_bars"] == {**{r: {"rejected": 1, "still_missing": 1} for r in sorted(BROKEN_BAR)},
                                       "low_quality_score": {"rejected": 1, "still_missing": 0}}


def test_corporate_actions_pending_and_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    data = market()
    data.raw_split_records.append({"id": "S-zero", "ticker": "MMM", "execution_date": "2024-03-12", "split_from": 0,
                                   "split_to": 2})
    build_warehouse(url, data)
    from sqlalchemy import create_engine, text
    engine = create_engine(url)
    with engine.begin() as conn:  # announced ahead of its ex-date
        conn.execute(text("INSERT INTO dividend_events (event_id, ticker, ex_dividend_date, cash_amount, currency, "
                          "run_id, recorded_at) VALUES ('D-next', 'SPY', '2024-04-01', 1.5, 'USD', 'r', "
                          "'2024-03-21 12:00:00')"))
    engine.dispose()
    actions = status(url)[1]["corporate_actions"]
    assert actions["pending"] == [{"ticker": "SPY", "kind": "dividend", "date": "2024-04-01"}]
    assert actions["rejected"] == {"split: non_positive_split_from": 1}
