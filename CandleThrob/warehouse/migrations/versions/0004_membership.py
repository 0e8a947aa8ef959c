"""Point-in-time membership: who was in the index when, under which symbol.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from CandleThrob.warehouse.schema import RUN_ID, TICKER

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ticker_universe") as universe:
        universe.add_column(sa.Column("cik", sa.String(10)))
    op.create_table(
        "index_members",
        sa.Column("ticker", TICKER, nullable=False),
        sa.Column("stay", sa.Integer, nullable=False),
        sa.Column("security_id", sa.String(32), nullable=False),
        sa.Column("cik", sa.String(10)),
        sa.Column("name", sa.String(255)),
        sa.Column("sector", sa.String(128)),
        sa.Column("first_day", sa.Date),
        sa.Column("last_day", sa.Date),
        sa.PrimaryKeyConstraint("ticker", "stay", name="pk_index_members"),
    )
    op.create_table(
        "symbol_history",
        sa.Column("ticker", TICKER, nullable=False),
        sa.Column("stay", sa.Integer, nullable=False),
        sa.Column("security_id", sa.String(32), nullable=False),
        sa.Column("valid_from", sa.Date),
        sa.Column("valid_to", sa.Date),
        sa.PrimaryKeyConstraint("ticker", "stay", name="pk_symbol_history"),
    )
    op.create_table(
        "membership_anomalies",
        sa.Column("anomaly_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("event_date", sa.Date),
        sa.Column("ticker", TICKER),
        sa.Column("detail", sa.String(2000)),
        sa.Column("action", sa.String(255)),
        sa.PrimaryKeyConstraint("anomaly_id"),
    )
    op.create_table(
        "symbol_changes",
        sa.Column("new_ticker", TICKER, nullable=False),
        sa.Column("change_date", sa.Date, nullable=False),
        sa.Column("old_ticker", TICKER),
        sa.Column("security_id", sa.String(32)),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.PrimaryKeyConstraint("new_ticker", "change_date", name="pk_symbol_changes"),
    )


def downgrade() -> None:
    for table in ("symbol_changes", "membership_anomalies", "symbol_history", "index_members"):
        op.drop_table(table)
    with op.batch_alter_table("ticker_universe") as universe:
        universe.drop_column("cik")
