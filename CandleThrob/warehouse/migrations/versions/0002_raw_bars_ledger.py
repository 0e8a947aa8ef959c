"""Bars as traded plus a corporate-actions ledger; cells to retry; what a run left behind.

The split-adjusted bars of the first release move to ticker_data_legacy. The
first run of this release fetches the whole splits ledger for their tickers,
turns them back into as-traded bars in ticker_data_raw and drops the legacy
table (``actions.upgrade``): no bar is fetched again. ticker_data becomes a view
with the columns it always had, split-adjusted from the raw bars and factors.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from CandleThrob.warehouse.schema import RUN_ID, TICKER, Count, Number
from CandleThrob.warehouse.views import create_view_statements

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    context = op.get_context()
    if context.as_sql or op.get_bind().execute(sa.text("SELECT COUNT(*) FROM ticker_data")).scalar():
        op.rename_table("ticker_data", "ticker_data_legacy")
    else:
        op.drop_table("ticker_data")  # a new warehouse: nothing to carry over
    op.drop_table("stock_splits")  # the ledger is fetched again, whole, from the new endpoints
    op.execute("DELETE FROM ingestion_state WHERE state_key = 'last_split_check'")
    op.create_table(
        "ticker_data_raw",
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
        sa.PrimaryKeyConstraint("ticker", "trade_date", name="pk_ticker_data_raw"),
    )
    op.create_table(
        "split_events",
        sa.Column("event_id", sa.String(80), primary_key=True),
        sa.Column("ticker", TICKER, nullable=False),
        sa.Column("execution_date", sa.Date, nullable=False),
        sa.Column("split_from", Number, nullable=False),
        sa.Column("split_to", Number, nullable=False),
        sa.Column("adjustment_type", sa.String(32)),
        sa.Column("vendor_factor", Number),
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("recorded_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "dividend_events",
        sa.Column("event_id", sa.String(80), primary_key=True),
        sa.Column("ticker", TICKER, nullable=False),
        sa.Column("ex_dividend_date", sa.Date, nullable=False),
        sa.Column("cash_amount", Number, nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("declaration_date", sa.Date),
        sa.Column("record_date", sa.Date),
        sa.Column("pay_date", sa.Date),
        sa.Column("frequency", sa.Integer),
        sa.Column("distribution_type", sa.String(32)),
        sa.Column("split_adjusted_cash", Number),
        sa.Column("vendor_factor", Number),
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("recorded_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "rejected_actions",
        sa.Column("rejection_id", Count.with_variant(sa.Integer(), "sqlite"), sa.Identity(), primary_key=True),
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("event_id", sa.String(80)),
        sa.Column("ticker", sa.String(64)),
        sa.Column("record", sa.String(2000)),
        sa.Column("reasons", sa.String(400), nullable=False),
        sa.Column("rejected_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "adjustment_factors",
        sa.Column("ticker", TICKER, nullable=False),
        sa.Column("valid_from", sa.Date, nullable=False),
        sa.Column("valid_to", sa.Date, nullable=False),
        sa.Column("split_factor", Number, nullable=False),
        sa.Column("total_factor", Number, nullable=False),
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.PrimaryKeyConstraint("ticker", "valid_from", name="pk_adjustment_factors"),
    )
    op.create_table(
        "ledger_tickers",
        sa.Column("ticker", TICKER, primary_key=True),
        sa.Column("ledger_from", sa.Date, nullable=False),
    )
    op.create_table(
        "cell_gaps",
        sa.Column("ticker", TICKER, nullable=False),
        sa.Column("trade_date", sa.Date, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(400)),
        sa.Column("tries", sa.Integer, nullable=False),
        sa.Column("next_try", sa.Date, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("first_run_id", RUN_ID, nullable=False),
        sa.Column("last_run_id", RUN_ID, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("ticker", "trade_date", name="pk_cell_gaps"),
    )
    with op.batch_alter_table("ingestion_runs") as runs:
        runs.add_column(sa.Column("exit_code", sa.Integer))
        runs.add_column(sa.Column("failed_stage", sa.String(32)))
        runs.add_column(sa.Column("pending_cells", sa.Integer))
        runs.add_column(sa.Column("vendor_holes", sa.Integer))
        runs.add_column(sa.Column("abandoned_by", RUN_ID))
        runs.add_column(sa.Column("abandoned_at", sa.DateTime))
    for statement in create_view_statements(context.dialect):
        op.execute(statement)
