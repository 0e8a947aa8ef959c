"""The warehouse tables (SQLAlchemy Core), valid on SQLite, PostgreSQL and Oracle.

Identifiers avoid Oracle reserved words (START, ROWS, SIZE, LEVEL, ...) and stay
under 30 characters; prices are NUMBER on Oracle and double precision elsewhere.

``metadata`` is what the migrations (``warehouse/migrations``) build; a test
checks that they agree. Bars are stored as traded in ``ticker_data_raw``; the
views ``ticker_data`` (split-adjusted, the columns readers always had) and
``ticker_data_total`` (split- and dividend-adjusted) read them through
``adjustment_factors``. The views are described in ``views`` for reading only.
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

def _bar_columns() -> list[Column]:
    return [
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
    ]


# Bars as traded: never rewritten because of a corporate action.
ticker_data_raw = Table(
    "ticker_data_raw", metadata, *_bar_columns(),
    PrimaryKeyConstraint("ticker", "trade_date", name="pk_ticker_data_raw"),
)

views = MetaData()
# Split-adjusted (prices and volume), the same columns as ever: what readers of ticker_data know.
ticker_data = Table("ticker_data", views, *_bar_columns())
# Split- and dividend-adjusted prices (total return, CRSP's convention); volume split-adjusted.
ticker_data_total = Table("ticker_data_total", views, *_bar_columns())


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
    Column("exit_code", Integer),
    Column("failed_stage", String(32)),
    Column("pending_cells", Integer),
    Column("vendor_holes", Integer),
    # A run whose process died: which run took its lock over, and when.
    Column("abandoned_by", RUN_ID),
    Column("abandoned_at", DateTime),
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
    Column("cik", String(10)),  # the SEC's id of the company, from the constituents page
)

# Who was in the index on which days (universe/membership.py): one row per stay of a
# symbol, rebuilt from each believed constituents page and the tool's own sightings.
# first_day NULL: before the changes table begins; last_day NULL: still a member.
index_members = Table(
    "index_members", metadata,
    Column("ticker", TICKER, nullable=False),
    Column("stay", Integer, nullable=False),  # 0, 1, ... per ticker, in date order
    Column("security_id", String(32), nullable=False),
    Column("cik", String(10)),
    Column("name", String(255)),
    Column("sector", String(128)),
    Column("first_day", Date),
    Column("last_day", Date),
    PrimaryKeyConstraint("ticker", "stay", name="pk_index_members"),
)

# Which symbol each security had, when (universe/securities.py). Bars stay keyed by the
# symbol as traded; reading a security across renames goes through this table.
symbol_history = Table(
    "symbol_history", metadata,
    Column("ticker", TICKER, nullable=False),
    Column("stay", Integer, nullable=False),
    Column("security_id", String(32), nullable=False),
    Column("valid_from", Date),
    Column("valid_to", Date),
    PrimaryKeyConstraint("ticker", "stay", name="pk_symbol_history"),
)

# What the membership reconstruction met and did with it (universe/anomalies.py).
membership_anomalies = Table(
    "membership_anomalies", metadata,
    Column("anomaly_id", String(40), primary_key=True),  # a digest of the row: stable across rebuilds
    Column("kind", String(32), nullable=False),
    Column("event_date", Date),
    Column("ticker", TICKER),
    Column("detail", String(2000)),
    Column("action", String(255)),
)

# Renames the vendor's ticker events settled (a date the constituents page cannot give).
symbol_changes = Table(
    "symbol_changes", metadata,
    Column("new_ticker", TICKER, nullable=False),
    Column("change_date", Date, nullable=False),
    Column("old_ticker", TICKER),
    Column("security_id", String(32)),
    Column("source", String(32), nullable=False),
    Column("run_id", RUN_ID, nullable=False),
    PrimaryKeyConstraint("new_ticker", "change_date", name="pk_symbol_changes"),
)

# The corporate-actions ledger, one row per vendor event (its id, or one derived
# from the event when the vendor sent none). Records that cannot be right go to
# rejected_actions instead, with the reasons.
split_events = Table(
    "split_events", metadata,
    Column("event_id", String(80), primary_key=True),
    Column("ticker", TICKER, nullable=False),
    Column("execution_date", Date, nullable=False),
    Column("split_from", Number, nullable=False),
    Column("split_to", Number, nullable=False),
    Column("adjustment_type", String(32)),
    Column("vendor_factor", Number),  # the vendor's historical_adjustment_factor
    Column("run_id", RUN_ID, nullable=False),
    Column("recorded_at", DateTime, nullable=False),
)

dividend_events = Table(
    "dividend_events", metadata,
    Column("event_id", String(80), primary_key=True),
    Column("ticker", TICKER, nullable=False),
    Column("ex_dividend_date", Date, nullable=False),
    Column("cash_amount", Number, nullable=False),
    Column("currency", String(8), nullable=False),
    Column("declaration_date", Date),
    Column("record_date", Date),
    Column("pay_date", Date),
    Column("frequency", Integer),
    Column("distribution_type", String(32)),
    Column("split_adjusted_cash", Number),
    Column("vendor_factor", Number),
    Column("run_id", RUN_ID, nullable=False),
    Column("recorded_at", DateTime, nullable=False),
)

rejected_actions = Table(
    "rejected_actions", metadata,
    Column("rejection_id", Count.with_variant(Integer(), "sqlite"), Identity(), primary_key=True),
    Column("run_id", RUN_ID, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("event_id", String(80)),
    Column("ticker", String(64)),
    Column("record", String(2000)),
    Column("reasons", String(400), nullable=False),
    Column("rejected_at", DateTime, nullable=False),
)

# Piecewise-constant factors per ticker: a bar on a date in [valid_from, valid_to]
# is multiplied by them; after a ticker's last event there is no row (factor 1).
adjustment_factors = Table(
    "adjustment_factors", metadata,
    Column("ticker", TICKER, nullable=False),
    Column("valid_from", Date, nullable=False),
    Column("valid_to", Date, nullable=False),
    Column("split_factor", Number, nullable=False),
    Column("total_factor", Number, nullable=False),
    Column("run_id", RUN_ID, nullable=False),
    PrimaryKeyConstraint("ticker", "valid_from", name="pk_adjustment_factors"),
)

# From which date the ledger is complete for a ticker (its events were asked for).
ledger_tickers = Table(
    "ledger_tickers", metadata,
    Column("ticker", TICKER, primary_key=True),
    Column("ledger_from", Date, nullable=False),
)

# Cells that were asked but yielded no valid bar: asked again with backoff
# (pending), then recorded as the vendor's holes.
cell_gaps = Table(
    "cell_gaps", metadata,
    Column("ticker", TICKER, nullable=False),
    Column("trade_date", Date, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("reason", String(400)),
    Column("tries", Integer, nullable=False),
    Column("next_try", Date, nullable=False),
    Column("status", String(8), nullable=False),
    Column("first_run_id", RUN_ID, nullable=False),
    Column("last_run_id", RUN_ID, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    PrimaryKeyConstraint("ticker", "trade_date", name="pk_cell_gaps"),
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

# Macro series from FRED, every vintage kept (ALFRED's real-time periods), so a reader
# sees a value only from the day FRED published it. One row per series: FRED's
# description of it, and the checkpoint of the incremental fetch.
SERIES_ID = String(64)
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

# A value and the real-time period (closed at both ends) in which it was FRED's value
# for that observation; 9999-12-31 ends a current vintage. A revision is a new row.
macro_observations = Table(
    "macro_observations", metadata,
    Column("series_id", SERIES_ID, nullable=False),
    Column("observation_date", Date, nullable=False),
    Column("realtime_start", Date, nullable=False),
    Column("realtime_end", Date, nullable=False),
    Column("value", Number),  # NULL where FRED wrote "."
    Column("value_note", String(32)),  # why value is NULL
    Column("run_id", RUN_ID, nullable=False),
    Column("ingested_at", DateTime, nullable=False),
    PrimaryKeyConstraint("series_id", "observation_date", "realtime_start", name="pk_macro_observations"),
)

# What one run did for one series, as ingestion_audit is for one ticker.
macro_audit = Table(
    "macro_audit", metadata,
    Column("run_id", RUN_ID, nullable=False),
    Column("series_id", SERIES_ID, nullable=False),
    Column("status", String(16), nullable=False),
    Column("api_calls", Integer, nullable=False),
    Column("rows_fetched", Integer, nullable=False),
    Column("observations_added", Integer, nullable=False),
    Column("vintages_added", Integer, nullable=False),
    Column("vintages_closed", Integer, nullable=False),
    Column("rows_rejected", Integer, nullable=False),
    Column("last_updated", DateTime),
    Column("error", String(2000)),
    Column("flags", LongText),
    Column("updated_at", DateTime, nullable=False),
    PrimaryKeyConstraint("run_id", "series_id", name="pk_macro_audit"),
)

BAR_COLUMNS_DB = ("ticker", "trade_date", "open_price", "high_price", "low_price",
                  "close_price", "volume", "vwap", "num_transactions", "run_id",
                  "source", "ingested_at")
