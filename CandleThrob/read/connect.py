"""Open an existing warehouse for reading: never create one, never take a write lock.

The ingest opens SQLite so that every transaction starts with ``BEGIN IMMEDIATE``
(the write lock first). A reader must not: an export that held that lock for
seconds would make the nightly run wait. SQLite is therefore opened read-only
(``mode=ro``), which also means a mistyped path fails instead of leaving an empty
file behind. In WAL mode readers and the one writer do not block each other.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from typing import Mapping, Optional
from urllib.parse import quote

from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError

from CandleThrob.clock import Clock
from CandleThrob.config import AdvancedBatchConfig, read_environment
from CandleThrob.errors import DatabaseUnavailableError, WarehouseNotFoundError
from CandleThrob.warehouse.engine import create_db_engine, database_url
from CandleThrob.warehouse.storage import Warehouse

# Tables a reader needs: raw bars and the factors the adjusted views multiply them by.
REQUIRED_TABLES = ("ticker_data_raw", "adjustment_factors")
# PostgreSQL's SQLSTATE for "database does not exist"; a refused connection carries no SQLSTATE,
# only the server's message (English unless the server's lc_messages says otherwise).
_NO_SUCH_DATABASE = "3D000"
_NO_SUCH_DATABASE_MESSAGE = re.compile(r'database "[^"]*" does not exist')


def load_config(database_url_flag: Optional[str] = None, environ: Optional[Mapping[str, str]] = None,
                dotenv: Optional[Path] = None) -> AdvancedBatchConfig:
    """The ingest's configuration: the environment over ``.env`` in the working directory; a flag wins."""
    env = read_environment(dotenv or Path.cwd() / ".env", os.environ if environ is None else environ)
    overrides = {"database_url": database_url_flag} if database_url_flag else {}
    return AdvancedBatchConfig.from_env(env, **overrides)


def open_warehouse(config: AdvancedBatchConfig, clock: Optional[Clock] = None) -> Warehouse:
    """The configured warehouse, opened for reading; raises WarehouseNotFoundError (exit 2) when
    there is none, DatabaseUnavailableError (exit 3) when the server cannot be reached."""
    url = database_url(config)
    engine = _sqlite_reader(url) if url.get_backend_name() == "sqlite" else create_db_engine(config, url)
    warehouse = Warehouse(engine, clock)
    try:
        _check_tables(warehouse)
    except BaseException:
        warehouse.dispose()
        raise
    return warehouse


def _sqlite_reader(url: URL) -> Engine:
    path = Path(url.database)
    if not path.is_file():
        raise WarehouseNotFoundError(
            f"no warehouse at {url.render_as_string(hide_password=True)}: {path} does not exist; expected "
            "the DATABASE_URL (or --database-url) of a warehouse that candlethrob ingest has loaded")
    location = f"file:{quote(path.resolve().as_posix())}?mode=ro"

    def connect() -> sqlite3.Connection:
        # check_same_thread: a caller's thread pool may use a connection another thread opened,
        # one thread at a time, which SQLite allows.
        return sqlite3.connect(location, uri=True, check_same_thread=False)

    # The engine keeps the configured URL, so that messages name the file the user gave.
    return create_engine(url, creator=connect)


def _check_tables(warehouse: Warehouse) -> None:
    try:
        with warehouse.engine.connect() as conn:
            present = set(inspect(conn).get_table_names())
    except DBAPIError as exc:
        if _no_such_database(exc.orig):
            raise WarehouseNotFoundError(f"no warehouse at {warehouse.describe()}: {_one_line(exc.orig)}") from None
        raise DatabaseUnavailableError(f"cannot read the database ({warehouse.describe()}): {_one_line(exc.orig)}") \
            from None
    except OSError as exc:
        raise DatabaseUnavailableError(f"cannot reach the database ({warehouse.describe()}): {exc}") from None
    missing = [t for t in REQUIRED_TABLES if t not in present]
    if missing:
        what = "is not a CandleThrob warehouse" if "ticker_data" not in present else \
            "predates raw bars and the corporate-actions ledger; run candlethrob ingest once to upgrade it"
        raise WarehouseNotFoundError(f"{warehouse.describe()} {what} (no table {', '.join(missing)})")


def _one_line(error: BaseException) -> str:
    """A driver's message (PostgreSQL's spans lines, with hints) as one line."""
    return " ".join(str(error).split())


def _no_such_database(error: BaseException) -> bool:
    return getattr(error, "sqlstate", None) == _NO_SUCH_DATABASE or bool(_NO_SUCH_DATABASE_MESSAGE.search(str(error)))
