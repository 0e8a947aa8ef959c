"""Running CandleThrob in tests: in-process against a local server, or as the CLI."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pandas as pd
from sqlalchemy import create_engine, text

from CandleThrob.config import AdvancedBatchConfig
from CandleThrob.ingestion.pipeline import CompleteDataIngestion, RunOptions
from CandleThrob.warehouse.storage import Warehouse

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "test-key-6f1d"


def make_config(database_url: str, server, **overrides) -> AdvancedBatchConfig:
    settings = dict(database_url=database_url, polygon_api_key=API_KEY, polygon_base_url=server.url,
                    sp500_url=f"{server.url}/wiki/List_of_S%26P_500_companies", rate_limit_seconds=0,
                    retry_delay=0.01, request_timeout=5, max_workers=4, min_sp500_symbols=1)
    settings.update(overrides)
    return AdvancedBatchConfig.from_env({}, **settings)


def ingest(database_url: str, server, end, *, tickers=None, start=None, clock_now: Optional[dt.datetime] = None,
           **overrides) -> dict:
    """One in-process run through ``end`` (the server's today is set to ``end``)."""
    end = pd.Timestamp(end).date()
    if server.today is None or server.today < end:
        server.today = end
    config = make_config(database_url, server, **overrides)
    now = clock_now or dt.datetime.combine(end + dt.timedelta(days=1), dt.time(12), dt.timezone.utc)
    ingestion = CompleteDataIngestion(config, clock=lambda: now)
    try:
        return ingestion.run(RunOptions(end=end, tickers=tickers, start=start))
    finally:
        ingestion.warehouse.dispose()


def stored(database_url: str, tickers=None) -> pd.DataFrame:
    """ticker_data as a bars frame (lineage columns dropped), sorted."""
    warehouse = Warehouse(create_engine(database_url))
    try:
        frame = warehouse.bars(tickers)
    finally:
        warehouse.dispose()
    return frame.drop(columns=["run_id", "source"]).reset_index(drop=True)


def data_calls(server, since: int = 0) -> list[dict]:
    """Requests for bars (range and grouped daily) after index ``since``."""
    return [r for r in server.requests[since:] if r["path"].startswith("/v2/aggs/")]


def api_calls(server, since: int = 0) -> list[dict]:
    """Every request to the API (bars and splits), not the constituents page."""
    return [r for r in server.requests[since:] if not r["path"].startswith("/wiki/")]


def query(database_url: str, sql: str) -> list[tuple]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def cli(*args: str, env: Optional[dict] = None, cwd: Optional[Path] = None, timeout: float = 120,
        by_path: bool = False) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("POLYGON_", "MASSIVE_", "DATABASE_URL", "ORACLE_", "FRED_", "MACRO_SERIES"))}
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env or {})
    entry = [str(ROOT / "CandleThrob" / "ingestion" / "ingest_data.py")] if by_path \
        else ["-m", "CandleThrob.ingestion.ingest_data"]
    return subprocess.run([sys.executable, *entry, *args], env=full_env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
