"""A warehouse of the first release (split-adjusted bars) is upgraded in place: no bar is fetched again."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import numpy as np
import pandas as pd
from sqlalchemy import create_engine, inspect, text

from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer
from CandleThrob.warehouse import bulk, migrate

from ingest_helpers import API_KEY, api_calls, data_calls, ingest, query

START, FIRST, SPLIT, SECOND = "2024-01-02", "2024-03-08", "2024-03-12", "2024-03-15"


def _evening(day: str) -> dt.datetime:
    """21:30 in New York on ``day``, as the first release stamped ingested_at (naive UTC)."""
    local = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(21, 30), zoneinfo.ZoneInfo("America/New_York"))
    return local.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _first_release_warehouse(url: str, market, split_ticker: str) -> None:
    """What the first release left: bars as the vendor adjusted them on the day they were
    fetched, the split ticker restated whole after its split, coverage, runs, the split row."""
    engine = create_engine(url)
    with engine.begin() as conn:
        migrate.upgrade(conn, "0001")
        first = market.bars(start=START, end=FIRST, adjusted=True, today=FIRST)
        bulk_legacy(conn, first[first["ticker"] != split_ticker], "run-1", _evening(FIRST))
        later = market.bars(start="2024-03-11", end=SECOND, adjusted=True, today=SECOND)
        bulk_legacy(conn, later[later["ticker"] != split_ticker], "run-2", _evening(SECOND))
        restated = market.bars(split_ticker, START, SECOND, adjusted=True, today=SECOND)
        bulk_legacy(conn, restated, "run-2", _evening(SECOND))
        conn.execute(text("INSERT INTO stock_splits (ticker, execution_date, split_from, split_to, recorded_at, "
                          "applied_run_id) VALUES (:t, :d, 1, 4, :r, 'run-2')"),
                     {"t": split_ticker, "d": dt.date.fromisoformat(SPLIT), "r": _evening(SECOND)})
        for ticker in market.tickers:
            conn.execute(text("INSERT INTO ingestion_coverage (ticker, covered_from, covered_to, run_id) "
                              "VALUES (:t, :a, :b, 'run-2')"),
                         {"t": ticker, "a": dt.date.fromisoformat(START), "b": dt.date.fromisoformat(SECOND)})
    engine.dispose()


def bulk_legacy(conn, bars: pd.DataFrame, run_id: str, ingested_at: dt.datetime) -> None:
    rows = bulk.bar_rows(bars.assign(source="range"), run_id, ingested_at, date_as="date")
    conn.execute(text("INSERT INTO ticker_data VALUES (:a0, :a1, :a2, :a3, :a4, :a5, :a6, :a7, :a8, :a9, :a10, "
                      ":a11)"), [{f"a{i}": v for i, v in enumerate(row)} for row in rows])


def test_a_first_release_warehouse_is_upgraded_in_place_bar_for_bar(database_url):
    url = database_url
    market = generate_market(5, "2023-06-01", "2024-03-28", seed=19)
    split_ticker = market.constituents[2].symbol
    market.add_split(split_ticker, SPLIT, 1, 4)
    _first_release_warehouse(url, market, split_ticker)
    legacy_rows = query(url, "SELECT COUNT(*) FROM ticker_data")[0][0]
    with PolygonServer(market, api_key=API_KEY, today=SECOND) as server:
        result = ingest(url, server, SECOND, settle_sessions=0)
        calls = [c["path"] for c in api_calls(server)]
        assert data_calls(server) == []  # not one bar fetched again
    assert result["exit_code"] == 0, result
    assert calls == ["/stocks/v1/splits", "/stocks/v1/dividends"]  # the whole ledger of the legacy tickers
    engine = create_engine(url)
    with engine.connect() as conn:
        assert migrate.current(conn) == "0004"
        assert not inspect(conn).has_table("ticker_data_legacy") and not inspect(conn).has_table("stock_splits")
    engine.dispose()
    # Bar for bar: the raw table holds what traded, the view what the vendor's adjusted answer says now.
    raw = query(url, "SELECT ticker, trade_date, close_price, volume, run_id FROM ticker_data_raw "
                     "ORDER BY ticker, trade_date")
    traded = market.bars(start=START, end=SECOND).sort_values(["ticker", "trade_date"]).reset_index(drop=True)
    assert len(raw) == len(traded) == legacy_rows
    np.testing.assert_allclose([r[2] for r in raw], traded["close"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose([r[3] for r in raw], traded["volume"].to_numpy(), rtol=1e-12)
    # Lineage survives: the split ticker's bars were last fetched by run-2, the others' old ones by run-1.
    runs = {(r[0], str(r[1])[:10]): r[4] for r in raw}
    assert runs[(split_ticker, START)] == "run-2" and runs[("SPY", START)] == "run-1"
    adjusted = query(url, "SELECT close_price FROM ticker_data ORDER BY ticker, trade_date")
    want = market.bars(start=START, end=SECOND, adjusted=True, today=SECOND).sort_values(["ticker", "trade_date"])
    np.testing.assert_allclose([r[0] for r in adjusted], want["close"].to_numpy(), rtol=1e-12)
    # The next run is a plain nightly one.
    with PolygonServer(market, api_key=API_KEY, today="2024-03-18") as server:
        assert ingest(url, server, "2024-03-18", settle_sessions=0)["exit_code"] == 0
        assert [c["path"] for c in data_calls(server)] == ["/v2/aggs/grouped/locale/us/market/stocks/2024-03-18"]
