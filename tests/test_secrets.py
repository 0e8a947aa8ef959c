"""No secret reaches an output or a column, even when a server echoes it back."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, inspect

from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer

from hostile import HostileServer, json_answer, path_of
from ingest_helpers import API_KEY, cli, query

END = "2024-03-15"


@pytest.fixture(scope="module")
def market():
    return generate_market(3, "2024-01-02", "2024-03-28", seed=5)


def _everything_stored(url: str) -> str:
    """Every row of every table but the bars, as text."""
    engine = create_engine(url)
    try:
        tables = [t for t in inspect(engine).get_table_names() if not t.startswith(("ticker_data", "alembic"))]
    finally:
        engine.dispose()
    return "\n".join(str(query(url, f"SELECT * FROM {table}")) for table in sorted(tables))


def _env(url: str, base_url: str, server) -> dict:
    return {"POLYGON_API_KEY": API_KEY, "POLYGON_BASE_URL": base_url, "DATABASE_URL": url,
            "SP500_URL": f"{server.url}/wiki/List_of_S%26P_500_companies", "POLYGON_RATE_LIMIT": "0",
            "RETRY_DELAY": "0.01", "MAX_RETRIES": "1", "MIN_SP500_SYMBOLS": "1", "HISTORY_START": "2024-03-01"}


def test_a_key_echoed_in_an_error_body_is_scrubbed_from_every_output_and_column(database_url, market, tmp_path):
    day = "2024-03-13"

    def echo(path, upstream):
        if path_of(path).endswith(f"/stocks/{day}"):
            return json_answer({"status": "ERROR", "request_id": "x1",
                                "error": f"unknown parameter for key {API_KEY} (apiKey={API_KEY})"}, status=400)
        return None

    report = tmp_path / "report.json"
    with PolygonServer(market, api_key=API_KEY, today=END) as server:
        with HostileServer(server.url, echo, API_KEY) as hostile:
            run = cli("--end", END, "--no-progress", "--report", str(report),
                      env=_env(database_url, hostile.url, server))
    assert run.returncode == 1, run.stderr
    problems = json.loads(report.read_text())["problems"]
    assert problems[0].startswith("grouped day 2024-03-13 failed: ") and "400" in problems[0]
    assert "unknown parameter for key *** (apiKey=***)" in problems[0]
    assert "unknown parameter for key ***" in run.stdout
    stored = _everything_stored(database_url)
    assert "unknown parameter for key ***" in stored  # the message is kept, the key is not
    for text in (run.stdout, run.stderr, report.read_text(), stored):
        assert API_KEY not in text


def test_credentials_inside_the_base_url_are_never_stored_or_shown(database_url, market, tmp_path):
    report = tmp_path / "report.json"
    with PolygonServer(market, api_key=API_KEY, today=END) as server:
        base = server.url.replace("http://", "http://svc-user:url-pass-81f3@")
        run = cli("--end", END, "--no-progress", "--tickers", "SPY", "--report", str(report),
                  env=_env(database_url, base, server))
    assert run.returncode == 0, run.stderr
    (parameters,) = query(database_url, "SELECT parameters FROM ingestion_runs")[0]
    assert json.loads(parameters)["config"]["polygon_base_url"].startswith("http://***@127.0.0.1:")
    for text in (run.stdout, run.stderr, report.read_text(), _everything_stored(database_url)):
        assert "url-pass-81f3" not in text and API_KEY not in text
