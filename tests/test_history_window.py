"""The free tier's history window: a key that may read two years, asked for ten.

The local server answers bars older than its window with HTTP 403 NOT_AUTHORIZED ("Your
plan doesn't include this data timeframe"), as Polygon does on a free key. The run learns
the window from that first refusal, says so once with the earliest reachable date,
fetches what is reachable, counts the rest as unreachable (neither pending nor failed)
and succeeds; later runs and ``--plan`` clamp without asking again."""

from __future__ import annotations

import datetime as dt
import logging

import pandas as pd

from CandleThrob.ingestion.pipeline import CompleteDataIngestion, RunOptions
from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer

from ingest_helpers import API_KEY, api_calls, cli, make_config, query, stored

END = "2024-06-14"  # a Friday; the server's today
START = "2015-01-02"
FLOOR = "2022-06-16"  # the run's clock is 2024-06-15 in New York: two years back, and a day's margin


def _run(url: str, server, end: str, **options) -> dict:
    day = pd.Timestamp(end).date()
    now = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(12), dt.timezone.utc)
    ingestion = CompleteDataIngestion(make_config(url, server), clock=lambda: now)
    try:
        return ingestion.run(RunOptions(end=day, **options))
    finally:
        ingestion.warehouse.dispose()


def test_a_free_key_asked_for_ten_years_learns_its_window_once(database_url, caplog, tmp_path):
    market = generate_market(5, "2014-06-02", "2024-06-28", seed=17)  # 5 S&P-like + 20 ETFs
    with PolygonServer(market, api_key=API_KEY, today=END, history_limit_years=2) as server:
        caplog.set_level(logging.INFO, logger="CandleThrob")
        first = _run(database_url, server, END, start=dt.date.fromisoformat(START))
        calls = api_calls(server)
        refused = [c for c in calls if c["status"] == 403]
        # One refusal teaches the window; then every ticker is fetched from the earliest reachable date.
        assert len(refused) == 1
        assert first["status"] == "success" and first["exit_code"] == 0
        assert first["failed_tickers"] == [] and first["pending_cells"] == 0 and first["vendor_holes"] == 0
        assert first["history_floor"] == FLOOR
        said = [r.getMessage() for r in caplog.records if "history window" in r.getMessage()
                or "older than this key" in r.getMessage()]
        assert len(said) == 1 and FLOOR in said[0], said
        sessions_before = len(pd.bdate_range(START, FLOOR))  # an upper bound: weekdays, holidays included
        assert 0 < first["unreachable_cells"] <= 25 * sessions_before
        assert first["api_calls"] == len(calls)
        data = stored(database_url)
        assert data["trade_date"].min() == pd.Timestamp(FLOOR)
        assert data["ticker"].nunique() == 25
        want = market.bars(start=FLOOR, end=END, adjusted=True, today=END)
        pd.testing.assert_frame_equal(data, want.sort_values(["ticker", "trade_date"]).reset_index(drop=True),
                                      check_dtype=False)

        # The next night: no 403, the new session (and the settle window); still clamped.
        server.today = dt.date(2024, 6, 17)
        mark = len(server.requests)
        plan = _run(database_url, server, "2024-06-17", start=dt.date.fromisoformat(START), plan_only=True)
        assert plan["history_floor"] == "2022-06-19" and plan["unreachable_cells"] > 0
        assert "history window:" in plan["plan_text"] and "before 2022-06-19" in plan["plan_text"]
        second = _run(database_url, server, "2024-06-17", start=dt.date.fromisoformat(START))
        later = api_calls(server, mark)
        assert [c for c in later if c["status"] == 403] == []
        assert second["exit_code"] == 0 and second["api_calls"] == len(later) == plan["calls"]
        assert second["unreachable_cells"] == plan["unreachable_cells"]
    rows = query(database_url, "SELECT COUNT(*) FROM cell_gaps")
    assert rows == [(0,)]  # unreachable cells are not pending cells, nor vendor holes


def test_plan_shows_the_clamp_on_the_command_line(tmp_path):
    market = generate_market(2, "2014-06-02", "2024-06-28", seed=17)
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    with PolygonServer(market, api_key=API_KEY, today=END, history_limit_years=2) as server:
        env = {"POLYGON_API_KEY": API_KEY, "POLYGON_BASE_URL": server.url, "DATABASE_URL": url,
               "SP500_URL": f"{server.url}/wiki/List_of_S%26P_500_companies", "POLYGON_RATE_LIMIT": "0",
               "MIN_SP500_SYMBOLS": "1"}
        before = cli("--plan", "--end", END, "--start", START, env=env)
        assert before.returncode == 0, before.stderr
        # Not known yet: the plan says so, and what the run will do about it.
        assert "history window: not known yet, and calls reach before 2022-06-15" in before.stdout
        assert "POLYGON_HISTORY_YEARS" in before.stdout
        run = cli("--end", END, "--start", START, env=env)
        assert run.returncode == 0, run.stderr
        assert "beyond this key's history window" in run.stdout
        mark = len(server.requests)
        plan = cli("--plan", "--end", END, "--start", START, env=env)
        assert api_calls(server, mark) == []
    assert plan.returncode == 0, plan.stderr
    assert "history window:" in plan.stdout and "not asked" in plan.stdout
    assert plan.stdout.splitlines()[0].startswith("0 calls")
    assert "not known yet" not in plan.stdout
