"""Database engines: SQLite (default), PostgreSQL (psycopg 3) and Oracle (python-oracledb).

The URL comes from ``DATABASE_URL``; without one, the Oracle pieces
(``ORACLE_USER``/``ORACLE_PASSWORD``/``ORACLE_DSN``, wallet in ``TNS_ADMIN``) make
an Oracle engine, and without those an SQLite file under ``./data`` is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, URL, make_url

from CandleThrob.config import DEFAULT_SQLITE_PATH, AdvancedBatchConfig
from CandleThrob.errors import ConfigError

SQLITE_BUSY_TIMEOUT_S = 120


def database_url(config: AdvancedBatchConfig) -> URL:
    if config.database_url:
        try:
            url = make_url(config.database_url)
        except Exception as exc:
            raise ConfigError(
                f"DATABASE_URL is not a valid SQLAlchemy URL ({exc.__class__.__name__}); "
                "expected e.g. sqlite:///data/candlethrob.db, postgresql://user@host/db "
                "or oracle+oracledb://user@dsn") from None
    elif config.oracle_dsn:
        url = URL.create("oracle+oracledb", username=config.oracle_user,
                         password=config.oracle_password)
    else:
        url = make_url(f"sqlite:///{DEFAULT_SQLITE_PATH.as_posix()}")
    # psycopg 3 is the PostgreSQL driver we ship; plain postgresql:// (and +psycopg2) mean psycopg2,
    # which is not installed: the same server through psycopg 3 is what the user wants.
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        url = url.set(drivername="postgresql+psycopg")
    if url.drivername == "oracle":
        url = url.set(drivername="oracle+oracledb")
    if url.get_backend_name() not in ("sqlite", "postgresql", "oracle"):
        raise ConfigError(f"DATABASE_URL uses {url.get_backend_name()!r}; "
                          "supported: sqlite, postgresql, oracle.")
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise ConfigError(f"DATABASE_URL={url.render_as_string(hide_password=True)!r} is not allowed: an "
                          "in-memory SQLite database vanishes when the run ends; expected a file, e.g. "
                          "sqlite:///data/candlethrob.db")
    return url


def database_label(config: AdvancedBatchConfig, url: Optional[URL] = None) -> str:
    """The database as messages name it: the URL without its password, plus ``ORACLE_DSN`` when
    that is where the connection really goes (the URL then names no host)."""
    url = url or database_url(config)
    label = url.render_as_string(hide_password=True)
    dsn = oracle_connect_args(config, url).get("dsn") if url.get_backend_name() == "oracle" else None
    return f"{label} with ORACLE_DSN={dsn}" if dsn else label


def oracle_connect_args(config: AdvancedBatchConfig, url: Optional[URL] = None) -> dict[str, Any]:
    """Connection arguments for python-oracledb, wallet included (Autonomous Database).
    ``ORACLE_DSN`` is used only when the URL names no database itself: a
    ``DATABASE_URL`` like ``oracle+oracledb://user:pass@mydb_high`` wins."""
    args: dict[str, Any] = {}
    if config.oracle_dsn and not (url is not None and (url.host or url.database)):
        args["dsn"] = config.oracle_dsn
    if config.tns_admin:
        # Thin mode reads tnsnames.ora from config_dir and the PEM wallet from
        # wallet_location; for an Autonomous Database both live in the wallet folder.
        args["config_dir"] = config.tns_admin
        args["wallet_location"] = config.tns_admin
    if config.oracle_wallet_password:
        args["wallet_password"] = config.oracle_wallet_password
    return args


def oracle_engine_options(config: AdvancedBatchConfig, url: Optional[URL] = None) -> dict[str, Any]:
    """create_engine options: thin mode by default; thick mode loads the Instant
    Client (``init_oracle_client``) with the wallet's folder as its config dir."""
    options: dict[str, Any] = {"connect_args": oracle_connect_args(config, url)}
    if config.ora_python_driver_type == "thick":
        options["thick_mode"] = {"config_dir": config.tns_admin} if config.tns_admin else True
    return options


def create_db_engine(config: AdvancedBatchConfig, url: Optional[URL] = None) -> Engine:
    url = url or database_url(config)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url)
    if backend == "oracle":
        return create_engine(url, pool_pre_ping=True, **oracle_engine_options(config, url))
    return create_engine(url, pool_pre_ping=True)


def _sqlite_engine(url: URL) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None hands transaction control to us, so every transaction
    # can start with BEGIN IMMEDIATE: the write lock is taken up front and two
    # processes wait for each other instead of failing on a lock upgrade.
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S,
                                              "isolation_level": None,
                                              "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
