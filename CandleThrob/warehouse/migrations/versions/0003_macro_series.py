"""Macro series from FRED: each series' description and checkpoint, every vintage, an audit row per run.

Only new tables: a warehouse of the previous release is upgraded in place and its
first run with FRED_API_KEY fetches the series' history.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from CandleThrob.warehouse.schema import RUN_ID, SERIES_ID, LongText, Number

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "macro_series",
        sa.Column("series_id", SERIES_ID, primary_key=True),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("units", sa.String(255), nullable=False),
        sa.Column("frequency", sa.String(64), nullable=False),
        sa.Column("frequency_short", sa.String(8), nullable=False),
        sa.Column("seasonal_adjustment", sa.String(64), nullable=False),
        sa.Column("observation_start", sa.Date),
        sa.Column("observation_end", sa.Date),
        sa.Column("last_updated", sa.DateTime, nullable=False),
        sa.Column("last_checked", sa.Date, nullable=False),
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("checked_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "macro_observations",
        sa.Column("series_id", SERIES_ID, nullable=False),
        sa.Column("observation_date", sa.Date, nullable=False),
        sa.Column("realtime_start", sa.Date, nullable=False),
        sa.Column("realtime_end", sa.Date, nullable=False),
        sa.Column("value", Number),
        sa.Column("value_note", sa.String(32)),
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("ingested_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("series_id", "observation_date", "realtime_start", name="pk_macro_observations"),
    )
    op.create_table(
        "macro_audit",
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("series_id", SERIES_ID, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("api_calls", sa.Integer, nullable=False),
        sa.Column("rows_fetched", sa.Integer, nullable=False),
        sa.Column("observations_added", sa.Integer, nullable=False),
        sa.Column("vintages_added", sa.Integer, nullable=False),
        sa.Column("vintages_closed", sa.Integer, nullable=False),
        sa.Column("rows_rejected", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.DateTime),
        sa.Column("error", sa.String(2000)),
        sa.Column("flags", LongText),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "series_id", name="pk_macro_audit"),
    )
