"""The schema of the first release: split-adjusted bars in ticker_data, splits in stock_splits.

A warehouse made by that release has these tables and no alembic_version;
it is stamped with this revision and upgraded from here.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

from CandleThrob.warehouse.schema import RUN_ID, TICKER, Count, Flag, LongText, Number

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ticker_data",
        sa.Column("ticker", TICKER, nullable=False),
        sa.Column("trade_date", sa.Date, nullable=False),
        sa.Column("open_price", Number, nullable=False),
        sa.Column("high_price", Number, nullable=False),
        sa.Column("low_price", Number, nullable=False),
        sa.Column("close_price", Number, nullable=False),
        sa.Column("volume", Number, nullable=False),
        sa.Column("vwap", Number),
        sa.Column("num_transactions", Count),
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("ingested_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("ticker", "trade_date", name="pk_ticker_data"),
    )
    op.create_table(
        "rejected_bars",
        sa.Column("rejection_id", Count.with_variant(sa.Integer(), "sqlite"), sa.Identity(), primary_key=True),
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("ticker", TICKER, nullable=False),
        sa.Column("trade_date", sa.Date),
        sa.Column("open_price", Number),
        sa.Column("high_price", Number),
        sa.Column("low_price", Number),
        sa.Column("close_price", Number),
        sa.Column("volume", Number),
        sa.Column("vwap", Number),
        sa.Column("num_transactions", Number),
        sa.Column("reasons", sa.String(400), nullable=False),
        sa.Column("detail", sa.String(2000)),
        sa.Column("source", sa.String(16)),
        sa.Column("rejected_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "ingestion_runs",
        sa.Column("run_id", RUN_ID, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("host", sa.String(255)),
        sa.Column("pid", sa.Integer),
        sa.Column("shard", sa.String(16)),
        sa.Column("end_date", sa.Date),
        sa.Column("tickers_total", sa.Integer),
        sa.Column("tickers_ok", sa.Integer),
        sa.Column("tickers_failed", sa.Integer),
        sa.Column("rows_written", Count),
        sa.Column("rows_rejected", Count),
        sa.Column("api_calls", sa.Integer),
        sa.Column("parameters", LongText),
        sa.Column("version", sa.String(32)),
        sa.Column("error", sa.String(2000)),
    )
    op.create_table(
        "ingestion_audit",
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("ticker", TICKER, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("bars_fetched", sa.Integer, nullable=False),
        sa.Column("bars_written", sa.Integer, nullable=False),
        sa.Column("bars_rejected", sa.Integer, nullable=False),
        sa.Column("quality_score", Number),
        sa.Column("first_date", sa.Date),
        sa.Column("last_date", sa.Date),
        sa.Column("api_calls", sa.Integer, nullable=False),
        sa.Column("duration_s", Number),
        sa.Column("error", sa.String(2000)),
        sa.Column("flags", LongText),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "ticker", name="pk_ingestion_audit"),
    )
    op.create_table(
        "ticker_universe",
        sa.Column("ticker", TICKER, primary_key=True),
        sa.Column("name", sa.String(255)),
        sa.Column("sector", sa.String(128)),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("first_seen", sa.Date, nullable=False),
        sa.Column("last_seen", sa.Date, nullable=False),
        sa.Column("active", Flag, nullable=False),
    )
    op.create_table(
        "stock_splits",
        sa.Column("ticker", TICKER, nullable=False),
        sa.Column("execution_date", sa.Date, nullable=False),
        sa.Column("split_from", Number, nullable=False),
        sa.Column("split_to", Number, nullable=False),
        sa.Column("recorded_at", sa.DateTime, nullable=False),
        sa.Column("applied_run_id", RUN_ID),
        sa.PrimaryKeyConstraint("ticker", "execution_date", name="pk_stock_splits"),
    )
    op.create_table(
        "ingestion_coverage",
        sa.Column("ticker", TICKER, nullable=False),
        sa.Column("covered_from", sa.Date, nullable=False),
        sa.Column("covered_to", sa.Date, nullable=False),
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.PrimaryKeyConstraint("ticker", "covered_from", name="pk_ingestion_coverage"),
    )
    op.create_table(
        "ingestion_lock",
        sa.Column("lock_name", sa.String(32), primary_key=True),
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("process_started", Number),
        sa.Column("process_scope", sa.String(80)),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("heartbeat_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "ingestion_state",
        sa.Column("state_key", sa.String(64), primary_key=True),
        sa.Column("state_value", sa.String(255), nullable=False),
    )
