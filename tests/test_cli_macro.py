"""``candlethrob macro``: the stored FRED series, as known on a date, from the command line."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from macro_helpers import KEY, TODAY, revised_data
from read_helpers import run_cli

from CandleThrob.config import AdvancedBatchConfig
from CandleThrob.macro.store import next_request, store_vintages, upsert_series_info
from CandleThrob.source.fred import FredSource
from CandleThrob.source.retry import RetryPolicy
from CandleThrob.testing.fred_server import FredServer
from CandleThrob.warehouse.engine import create_db_engine
from CandleThrob.warehouse.storage import Warehouse


@pytest.fixture(scope="module")
def warehouse_url(tmp_path_factory):
    """CPITEST (each month revised twice) and DAILYTEST, fetched from the FRED-compatible server."""
    url = f"sqlite:///{tmp_path_factory.mktemp('macro') / 'candlethrob.db'}"
    engine = create_db_engine(AdvancedBatchConfig(database_url=url))
    Warehouse(engine).create_schema()
    with FredServer(revised_data(), api_key=KEY, today=TODAY) as server:
        client = FredSource(KEY, server.url, retry_policy=RetryPolicy(max_retries=0), timeout=5.0).client
        for series_id in ("CPITEST", "DAILYTEST"):
            info = client.series_info(series_id)
            with engine.begin() as conn:
                ask = next_request(conn, info)
            batch = client.observations(ask.series_id, ask.realtime_start, observation_start=ask.observation_start)
            with engine.begin() as conn:
                store_vintages(conn, batch, run_id="run-1", ingested_at=dt.datetime(2024, 5, 21, 3))
                upsert_series_info(conn, info, run_id="run-1", checked_at=dt.datetime(2024, 5, 21, 3))
    engine.dispose()
    return url


def test_the_latest_values_as_csv(warehouse_url):
    code, out, err = run_cli("macro", "cpitest", "--start", "2024-02-01", "--database-url", warehouse_url)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "series_id,observation_date,value,value_note,realtime_start,realtime_end",
        "CPITEST,2024-02-01,310.222,,2024-05-15,9999-12-31",
        "CPITEST,2024-03-01,312.45,,2024-05-15,9999-12-31",
        "CPITEST,2024-04-01,313.548,,2024-05-15,9999-12-31",
    ]


def test_as_of_a_date_gives_what_was_known_then(warehouse_url):
    code, out, _ = run_cli("macro", "CPITEST", "--as-of", "2024-03-20", "--format", "json",
                           "--database-url", warehouse_url)
    assert code == 0
    assert json.loads(out) == [
        {"series_id": "CPITEST", "observation_date": "2024-01-01", "value": 308.5, "value_note": None,
         "realtime_start": "2024-03-12", "realtime_end": "2024-04-09"},
        {"series_id": "CPITEST", "observation_date": "2024-02-01", "value": 310.326, "value_note": None,
         "realtime_start": "2024-03-12", "realtime_end": "2024-04-09"},
    ]


def test_daily_carries_a_value_from_its_release(warehouse_url):
    code, out, _ = run_cli("macro", "CPITEST,DAILYTEST", "--daily", "--start", "2024-05-14", "--end", "2024-05-16",
                           "--database-url", warehouse_url)
    assert code == 0
    rows = out.splitlines()
    assert rows[0] == "date,series_id,observation_date,value,realtime_start"
    # CPI: February's third release and March's second came out on 2024-05-15; April's first too.
    assert [r for r in rows[1:] if r.split(",")[1] == "CPITEST"] == [
        "2024-05-14,CPITEST,2024-03-01,312.332,2024-04-10",
        "2024-05-15,CPITEST,2024-04-01,313.548,2024-05-15",
        "2024-05-16,CPITEST,2024-04-01,313.548,2024-05-15",
    ]


@pytest.mark.parametrize("argv, says", [
    (["macro", "CPITEST", "--daily", "--start", "2024-05-14"], "--daily needs --start and --end"),
    (["macro", "CPITEST", "--as-of", "2024-13-01"],
     "argument --as-of: '2024-13-01' is not a date; expected YYYY-MM-DD"),
])
def test_bad_usage_is_one_line_and_exit_2(warehouse_url, argv, says):
    code, out, err = run_cli(*argv, "--database-url", warehouse_url)
    assert code == 2 and out == "" and says in err and err.count("\n") == 1


def test_a_warehouse_that_does_not_exist_is_not_created(tmp_path):
    code, _, err = run_cli("macro", "CPITEST", "--database-url", f"sqlite:///{tmp_path / 'nope.db'}")
    assert code == 2 and "nope.db" in err and not (tmp_path / "nope.db").exists()
