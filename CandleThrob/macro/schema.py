"""The macro tables, on the warehouse's ``metadata`` and under its Oracle rules (names under
30 characters, no reserved words; NUMBER, DATE and VARCHAR2 only)."""

from __future__ import annotations

from sqlalchemy import Column, Date, DateTime, PrimaryKeyConstraint, String, Table

from CandleThrob.warehouse.schema import RUN_ID, Number, metadata

SERIES_ID = String(64)

# One row per series: FRED's description, and the checkpoint of the incremental fetch.
macro_series = Table(
    "macro_series", metadata,
    Column("series_id", SERIES_ID, primary_key=True),
    Column("title", String(512), nullable=False),
    Column("units", String(255), nullable=False),
    Column("frequency", String(64), nullable=False),
    Column("frequency_short", String(8), nullable=False),
    Column("seasonal_adjustment", String(64), nullable=False),
    Column("observation_start", Date),
    Column("observation_end", Date),
    # FRED's last_updated (UTC) when the stored vintages were last brought up to date,
    # and FRED's date then: the next fetch asks for vintages from that date on.
    Column("last_updated", DateTime, nullable=False),
    Column("last_checked", Date, nullable=False),
    Column("run_id", RUN_ID, nullable=False),
    Column("checked_at", DateTime, nullable=False),
)

# Every vintage ever seen: a value and the real-time period (closed at both ends) in
# which it was FRED's value for that observation. 9999-12-31 ends a current vintage.
macro_observations = Table(
    "macro_observations", metadata,
    Column("series_id", SERIES_ID, nullable=False),
    Column("observation_date", Date, nullable=False),
    Column("realtime_start", Date, nullable=False),
    Column("realtime_end", Date, nullable=False),
    Column("value", Number),  # NULL where FRED wrote "."
    Column("value_note", String(32)),
    Column("run_id", RUN_ID, nullable=False),
    Column("ingested_at", DateTime, nullable=False),
    PrimaryKeyConstraint("series_id", "observation_date", "realtime_start", name="pk_macro_observations"),
)

MACRO_TABLES = (macro_series, macro_observations)
