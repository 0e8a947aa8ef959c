"""The warehouse tables (SQLAlchemy Core), valid on SQLite, PostgreSQL and Oracle.

Identifiers avoid Oracle reserved words (START, ROWS, SIZE, LEVEL, ...) and stay
under 30 characters; prices are NUMBER on Oracle and double precision elsewhere.
"""

from __future__ import annotations

from typing import Optional

from sqlalchemy import (BigInteger, Boolean, Column, Date, DateTime, Float, Identity,
                        Integer, MetaData, PrimaryKeyConstraint, String, Table, Text,
                        TypeDecorator)
from sqlalchemy.dialects import oracle
from sqlalchemy.engine import Dialect

metadata = MetaData()


class OracleFlag(TypeDecorator):
    """NUMBER(1) holding 0/1 on every Oracle release (SQLAlchemy's Boolean is
    BOOLEAN on 23ai and SMALLINT before it, so the DDL would depend on the server).
    Binds 0/1 and reads back a bool, as Boolean does on SQLite and PostgreSQL."""

    impl = oracle.NUMBER
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(precision=1)

    def process_bind_param(self, value: Optional[bool], dialect: Dialect) -> Optional[int]:
        return None if value is None else int(bool(value))

    def process_result_value(self, value: Optional[int], dialect: Dialect) -> Optional[bool]:
        return None if value is None else bool(value)


# Prices and volumes: Polygon's adjusted volumes can be fractional, so no integers.
Number = Float(precision=53).with_variant(oracle.NUMBER(), "oracle")
Count = BigInteger().with_variant(oracle.NUMBER(19), "oracle")
Flag = Boolean().with_variant(OracleFlag(), "oracle")
# Oracle has no unbounded VARCHAR and its CLOB cannot be compared; JSON blobs go in CLOB.
LongText = Text().with_variant(oracle.CLOB(), "oracle")

TICKER = String(16)
RUN_ID = String(36)

ticker_data = Table(
    "ticker_data", metadata,
    Column("ticker", TICKER, nullable=False),
    Column("trade_date", Date, nullable=False),
    Column("open_price", Number, nullable=False),
    Column("high_price", Number, nullable=False),
    Column("low_price", Number, nullable=False),
    Column("close_price", Number, nullable=False),
    Column("volume", Number, nullable=False),
    Column("vwap", Number),
    Column("num_transactions", Count),
    Column("run_id", RUN_ID, nullable=False),
    Column("source", String(16), nullable=False),
    Column("ingested_at", DateTime, nullable=False),
    PrimaryKeyConstraint("ticker", "trade_date", name="pk_ticker_data"),
)

rejected_bars = Table(
    "rejected_bars", metadata,
    # SQLite auto-numbers only an INTEGER PRIMARY KEY, not a BIGINT one.
    Column("rejection_id", Count.with_variant(Integer(), "sqlite"), Identity(), primary_key=True),
    Column("run_id", RUN_ID, nullable=False),
    Column("ticker", TICKER, nullable=False),
    Column("trade_date", Date),
    Column("open_price", Number),
    Column("high_price", Number),
    Column("low_price", Number),
    Column("close_price", Number),
    Column("volume", Number),
    Column("vwap", Number),
    Column("num_transactions", Number),
    Column("reasons", String(400), nullable=False),
    Column("detail", String(2000)),
    Column("source", String(16)),
    Column("rejected_at", DateTime, nullable=False),
)

ingestion_runs = Table(
    "ingestion_runs", metadata,
    Column("run_id", RUN_ID, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime),
    Column("host", String(255)),
    Column("pid", Integer),
    Column("shard", String(16)),
    Column("end_date", Date),
    Column("tickers_total", Integer),
    Column("tickers_ok", Integer),
    Column("tickers_failed", Integer),
    Column("rows_written", Count),
    Column("rows_rejected", Count),
    Column("api_calls", Integer),
    Column("parameters", LongText),
    Column("version", String(32)),
    Column("error", String(2000)),
)

ingestion_audit = Table(
    "ingestion_audit", metadata,
    Column("run_id", RUN_ID, nullable=False),
    Column("ticker", TICKER, nullable=False),
    Column("status", String(16), nullable=False),
    Column("bars_fetched", Integer, nullable=False),
    Column("bars_written", Integer, nullable=False),
    Column("bars_rejected", Integer, nullable=False),
    Column("quality_score", Number),
    Column("first_date", Date),
    Column("last_date", Date),
    Column("api_calls", Integer, nullable=False),
    Column("duration_s", Number),
    Column("error", String(2000)),
    Column("flags", LongText),
    Column("updated_at", DateTime, nullable=False),
    PrimaryKeyConstraint("run_id", "ticker", name="pk_ingestion_audit"),
)

ticker_universe = Table(
    "ticker_universe", metadata,
    Column("ticker", TICKER, primary_key=True),
    Column("name", String(255)),
    Column("sector", String(128)),
    Column("kind", String(8), nullable=False),
    Column("first_seen", Date, nullable=False),
    Column("last_seen", Date, nullable=False),
    Column("active", Flag, nullable=False),
)

stock_splits = Table(
    "stock_splits", metadata,
    Column("ticker", TICKER, nullable=False),
    Column("execution_date", Date, nullable=False),
    Column("split_from", Number, nullable=False),
    Column("split_to", Number, nullable=False),
    Column("recorded_at", DateTime, nullable=False),
    Column("applied_run_id", RUN_ID),
    PrimaryKeyConstraint("ticker", "execution_date", name="pk_stock_splits"),
)

# What the source was asked and answered, per ticker, as session intervals. This
# is the checkpoint: it commits in the same transaction as the bars it vouches for.
ingestion_coverage = Table(
    "ingestion_coverage", metadata,
    Column("ticker", TICKER, nullable=False),
    Column("covered_from", Date, nullable=False),
    Column("covered_to", Date, nullable=False),
    Column("run_id", RUN_ID, nullable=False),
    PrimaryKeyConstraint("ticker", "covered_from", name="pk_ingestion_coverage"),
)

# One row per lock scope (the whole universe, or one shard): who holds it.
ingestion_lock = Table(
    "ingestion_lock", metadata,
    Column("lock_name", String(32), primary_key=True),
    Column("run_id", RUN_ID, nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("process_started", Number),
    # Boot and pid namespace: containers may share a hostname yet not see each other's pids.
    Column("process_scope", String(80)),
    Column("started_at", DateTime, nullable=False),
    Column("heartbeat_at", DateTime, nullable=False),
)

ingestion_state = Table(
    "ingestion_state", metadata,
    Column("state_key", String(64), primary_key=True),
    Column("state_value", String(255), nullable=False),
)

BAR_COLUMNS_DB = ("ticker", "trade_date", "open_price", "high_price", "low_price",
                  "close_price", "volume", "vwap", "num_transactions", "run_id",
                  "source", "ingested_at")
