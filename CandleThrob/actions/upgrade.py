"""Upgrading a warehouse of the first release in place: its split-adjusted bars back to as traded.

The first release stored bars as the vendor adjusted them when they were
fetched, and restated a ticker when a later split arrived. So a stored bar is
adjusted for exactly the splits executed after its trade date and by the day
it was fetched (``ingested_at``, in New York): dividing those out gives the
bar as traded. That needs the whole splits ledger of those tickers (the first
release did not record every split), which the corporate-actions stage fetches
first; no bar is fetched again. Rows are converted and the legacy table
dropped in one transaction: a killed upgrade is redone whole by the next run.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Optional

import numpy as np
import pandas as pd
from sqlalchemy import func, inspect, select, table, column, text

from CandleThrob.warehouse import bulk
from CandleThrob.warehouse.ledger import LedgerStore
from CandleThrob.warehouse.lock import RunLock
from CandleThrob.warehouse.storage import Warehouse, _chunks, _date

log = logging.getLogger("CandleThrob.upgrade")
LEGACY = "ticker_data_legacy"
_legacy = table(LEGACY, *(column(c) for c in ("ticker", "trade_date", "open_price", "high_price", "low_price",
                                                "close_price", "volume", "vwap", "num_transactions", "run_id",
                                                "source", "ingested_at")))
_PRICES = ["open", "high", "low", "close", "vwap"]


def legacy_starts(warehouse: Warehouse) -> dict[str, dt.date]:
    """Per ticker of a first-release warehouse not yet converted, its first stored date."""
    with warehouse.engine.connect() as conn:
        if not inspect(conn).has_table(LEGACY):
            return {}
        rows = conn.execute(select(_legacy.c.ticker, func.min(_legacy.c.trade_date)).group_by(_legacy.c.ticker))
        return {ticker: _date(day) for ticker, day in rows}


def convert(warehouse: Warehouse, lock: Optional[RunLock], tickers: list[str]) -> int:
    """Turn every legacy bar into its as-traded bar in ``ticker_data_raw``; drop the legacy table."""
    splits = LedgerStore(warehouse).splits(tickers)
    converted = 0
    with warehouse.transaction() as conn:
        if lock is not None:
            lock.assert_held(conn)
        for chunk in _chunks(sorted(tickers), 100):
            legacy = pd.DataFrame(conn.execute(select(_legacy).where(_legacy.c.ticker.in_(list(chunk)))).all(),
                                  columns=[c.name for c in _legacy.c])
            raw = as_traded(legacy, splits[splits["ticker"].isin(chunk)])
            # Lineage survives: each group keeps the run and the time it was first fetched in.
            for (run_id, ingested_at), rows in raw.groupby(["run_id", "ingested_at"], sort=False):
                converted += bulk.upsert_bars(conn, rows, run_id, pd.Timestamp(ingested_at).to_pydatetime())
        conn.execute(text(f"DROP TABLE {LEGACY}"))
    log.info("upgraded the warehouse in place: %d split-adjusted bars turned back into as-traded bars", converted)
    return converted


def as_traded(legacy: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """Legacy rows (table columns) -> a bars frame as traded, with ``source``, ``run_id``, ``ingested_at``."""
    frame = pd.DataFrame({
        "ticker": legacy["ticker"].astype(object),
        "trade_date": pd.to_datetime(legacy["trade_date"]).astype("datetime64[ns]"),
        **{name: pd.to_numeric(legacy[f"{name}_price"], errors="coerce").astype("float64")
           for name in ("open", "high", "low", "close")},
        "volume": pd.to_numeric(legacy["volume"], errors="coerce").astype("float64"),
        "vwap": pd.to_numeric(legacy["vwap"], errors="coerce").astype("float64"),
        "transactions": pd.to_numeric(legacy["num_transactions"], errors="coerce").astype("float64"),
        "source": legacy["source"].astype(object), "run_id": legacy["run_id"].astype(object),
        "ingested_at": pd.to_datetime(legacy["ingested_at"]),
    })
    fetched_on = frame["ingested_at"].dt.tz_localize("UTC").dt.tz_convert("America/New_York").dt.tz_localize(None) \
        .dt.normalize()
    ratio = np.ones(len(frame))
    for ticker, day, split_from, split_to in splits[["ticker", "execution_date", "split_from", "split_to"]].itertuples(
            index=False):
        executed = pd.Timestamp(day)
        applied = (frame["ticker"] == ticker) & (frame["trade_date"] < executed) & (fetched_on >= executed)
        ratio[applied.to_numpy()] *= split_to / split_from
    for name in _PRICES:
        frame[name] = frame[name] * ratio
    frame["volume"] = frame["volume"] / ratio
    return frame
