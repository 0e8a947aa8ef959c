"""The schema: built by the migrations, equal to the tables the code declares, versioned,
and created once even when several runs start on an empty database together."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from CandleThrob.config import AdvancedBatchConfig
from CandleThrob.warehouse import migrate
from CandleThrob.warehouse.engine import create_db_engine
from CandleThrob.warehouse.schema import metadata
from CandleThrob.warehouse.storage import Warehouse


def test_concurrent_schema_creation_on_an_empty_database(database_url):
    errors: list[BaseException] = []
    start = threading.Barrier(4)
    config = AdvancedBatchConfig.from_env({}, database_url=database_url)

    def create() -> None:
        warehouse = Warehouse(create_db_engine(config))
        try:
            start.wait()
            warehouse.create_schema()
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)
        finally:
            warehouse.dispose()

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    engine = create_engine(database_url)
    assert sorted(inspect(engine).get_table_names()) == sorted(set(metadata.tables) | {"alembic_version"})
    engine.dispose()


def test_the_migrations_build_exactly_the_declared_schema(database_url):
    engine = create_engine(database_url)
    assert Warehouse(engine).create_schema() is None  # a new database: no version found before
    with engine.connect() as conn:
        assert migrate.current(conn) == migrate.head() == migrate.HEAD == "0004"
        # Alembic's own autogenerate finds nothing to change between the database and the code.
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        assert sorted(inspect(conn).get_view_names()) == ["ticker_data", "ticker_data_total"]
    assert Warehouse(engine).create_schema() == "0004"  # a second time: nothing to do
    engine.dispose()


def test_oracle_ddl_of_every_revision_compiles_offline():
    sql = migrate.offline_sql("oracle")
    assert "CREATE TABLE ticker_data_raw (" in sql and "CREATE TABLE adjustment_factors (" in sql
    assert "ALTER TABLE ticker_data RENAME TO ticker_data_legacy" in sql
    view = sql.split("CREATE VIEW ticker_data AS ", 1)[1].split("\n/\n", 1)[0]
    assert " ".join(view.split()) == (
        "SELECT ticker_data_raw.ticker, ticker_data_raw.trade_date, "
        "ticker_data_raw.open_price * coalesce(adjustment_factors.split_factor, 1.0) AS open_price, "
        "ticker_data_raw.high_price * coalesce(adjustment_factors.split_factor, 1.0) AS high_price, "
        "ticker_data_raw.low_price * coalesce(adjustment_factors.split_factor, 1.0) AS low_price, "
        "ticker_data_raw.close_price * coalesce(adjustment_factors.split_factor, 1.0) AS close_price, "
        "ticker_data_raw.volume / coalesce(adjustment_factors.split_factor, 1.0) AS volume, "
        "ticker_data_raw.vwap * coalesce(adjustment_factors.split_factor, 1.0) AS vwap, "
        "ticker_data_raw.num_transactions, ticker_data_raw.run_id, ticker_data_raw.source, "
        "ticker_data_raw.ingested_at FROM ticker_data_raw LEFT OUTER JOIN adjustment_factors "
        "ON adjustment_factors.ticker = ticker_data_raw.ticker "
        "AND ticker_data_raw.trade_date >= adjustment_factors.valid_from "
        "AND ticker_data_raw.trade_date <= adjustment_factors.valid_to")
    assert '"' not in sql  # a quoted identifier would be case-sensitive in Oracle
    assert "UPDATE alembic_version SET version_num='0004'" in sql


def test_oracle_ddl_of_the_macro_tables_snapshot():
    sql = migrate.offline_sql("oracle", "0002")
    assert [line.split(" (")[0] for line in sql.splitlines() if line.startswith("CREATE TABLE")] == [
        "CREATE TABLE macro_series", "CREATE TABLE macro_observations", "CREATE TABLE macro_audit",
        "CREATE TABLE index_members", "CREATE TABLE symbol_history", "CREATE TABLE membership_anomalies",
        "CREATE TABLE symbol_changes"]
    observations = sql.split("CREATE TABLE macro_observations (", 1)[1].split("\n)", 1)[0]
    assert [" ".join(line.split()).rstrip(",") for line in observations.strip().splitlines()] == [
        "series_id VARCHAR2(64 CHAR) NOT NULL",
        "observation_date DATE NOT NULL",
        "realtime_start DATE NOT NULL",
        "realtime_end DATE NOT NULL",
        "value NUMBER",
        "value_note VARCHAR2(32 CHAR)",
        "run_id VARCHAR2(36 CHAR) NOT NULL",
        "ingested_at DATE NOT NULL",
        "CONSTRAINT pk_macro_observations PRIMARY KEY (series_id, observation_date, realtime_start)"]
    assert "last_updated DATE NOT NULL" in sql and "CONSTRAINT pk_macro_audit PRIMARY KEY (run_id, series_id)" in sql
    assert "UPDATE alembic_version SET version_num='0003' WHERE alembic_version.version_num = '0002'" in sql
