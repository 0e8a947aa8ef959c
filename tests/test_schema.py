"""Creating the tables: once, even when several runs start on an empty database together."""

from __future__ import annotations

import threading

from sqlalchemy import create_engine, inspect

from CandleThrob.config import AdvancedBatchConfig
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
    assert sorted(inspect(engine).get_table_names()) == sorted(metadata.tables)
    engine.dispose()
