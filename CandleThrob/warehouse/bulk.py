"""The fastest correct idempotent upsert of bars, one per database.

* SQLite: ``executemany`` of ``INSERT ... ON CONFLICT DO UPDATE`` on the raw
  sqlite3 cursor, rows built column-wise (no per-row pandas access).
* PostgreSQL: ``COPY`` into a temporary staging table, then one
  ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``.
* Oracle: one ``MERGE`` driven by ``executemany`` array binds.

Everything runs on the caller's connection, inside the caller's transaction.
Other tables use ``upsert_rows``, the same idea through SQLAlchemy constructs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from sqlalchemy import Table
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from CandleThrob.warehouse.schema import BAR_COLUMNS_DB

_KEY = ("ticker", "trade_date")
CHUNK_ROWS = 10_000  # rows turned into driver tuples at a time
_UPDATED = tuple(c for c in BAR_COLUMNS_DB if c not in _KEY)

ORACLE_ARRAY_ROWS = 50_000
"""Rows per ``executemany`` on Oracle: each chunk is one round trip, and the
driver's bind buffers stay bounded however large the batch."""


def bar_rows(bars: pd.DataFrame, run_id: str, ingested_at: Any, date_as: str = "iso") -> list[tuple]:
    """Bars frame (plus a ``source`` column) -> tuples in BAR_COLUMNS_DB order.
    Dates become ISO strings (``iso``) or ``datetime.date`` objects (``date``)."""
    n = len(bars)
    # A batch spans a few dozen sessions: each distinct date is converted once.
    dates, position = np.unique(bars["trade_date"].to_numpy(dtype="datetime64[D]"), return_inverse=True)
    dates = dates.astype(str) if date_as == "iso" else dates.astype(object)
    date_values = dates.astype(object)[position].tolist()
    columns = [
        bars["ticker"].astype(object).tolist(), date_values,
        *(bars[c].to_numpy(dtype="float64").tolist() for c in ("open", "high", "low", "close", "volume")),
        _nullable(bars["vwap"]), _nullable(bars["transactions"], as_int=True),
        [run_id] * n, bars["source"].astype(object).tolist(), [ingested_at] * n,
    ]
    return list(zip(*columns))


def _nullable(series: pd.Series, as_int: bool = False) -> list:
    values = series.to_numpy(dtype="float64")
    missing = np.isnan(values)
    # A count the vendor sent as a fraction is rounded here, the same on every database.
    out = np.rint(np.where(missing, 0, values)).astype(np.int64).tolist() if as_int else values.tolist()
    if missing.any():
        for i in np.flatnonzero(missing).tolist():
            out[i] = None
    return out


def upsert_bars(conn: Connection, bars: pd.DataFrame, run_id: str, ingested_at: dt.datetime) -> int:
    """Upsert a bars frame that carries a ``source`` column (the endpoint it came from)."""
    if bars.empty:
        return 0
    # Sorted keys make concurrent writers (shards) lock rows in the same order.
    bars = bars.sort_values(["ticker", "trade_date"], kind="stable")
    backend = conn.dialect.name
    if backend == "sqlite":
        stamp, sql = ingested_at.isoformat(sep=" "), sqlite_upsert_sql()
        # Tuples for a whole batch of grouped days would cost more memory than the bars.
        for start in range(0, len(bars), CHUNK_ROWS):
            conn.exec_driver_sql(sql, bar_rows(bars.iloc[start:start + CHUNK_ROWS], run_id, stamp))
    elif backend == "postgresql":
        _postgres_copy_upsert(conn, bars, run_id, ingested_at)
    elif backend == "oracle":
        _oracle_executemany(conn, oracle_merge_sql(), bar_rows(bars, run_id, ingested_at, date_as="date"))
    else:  # pragma: no cover - engine.py refuses other backends
        raise ValueError(f"unsupported database {backend}")
    return len(bars)


def sqlite_upsert_sql() -> str:
    cols = ", ".join(BAR_COLUMNS_DB)
    marks = ", ".join("?" * len(BAR_COLUMNS_DB))
    updates = ", ".join(f"{c} = excluded.{c}" for c in _UPDATED)
    return (f"INSERT INTO ticker_data_raw ({cols}) VALUES ({marks}) "
            f"ON CONFLICT (ticker, trade_date) DO UPDATE SET {updates}")


def oracle_merge_sql() -> str:
    binds = ", ".join(f":{i + 1} AS {c}" for i, c in enumerate(BAR_COLUMNS_DB))
    updates = ", ".join(f"t.{c} = s.{c}" for c in _UPDATED)
    cols = ", ".join(BAR_COLUMNS_DB)
    values = ", ".join(f"s.{c}" for c in BAR_COLUMNS_DB)
    return (f"MERGE INTO ticker_data_raw t USING (SELECT {binds} FROM dual) s "
            f"ON (t.ticker = s.ticker AND t.trade_date = s.trade_date) "
            f"WHEN MATCHED THEN UPDATE SET {updates} "
            f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values})")


def postgres_upsert_sql(staging: str) -> str:
    cols = ", ".join(BAR_COLUMNS_DB)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _UPDATED)
    return (f"INSERT INTO ticker_data_raw ({cols}) SELECT {cols} FROM {staging} "
            f"ON CONFLICT (ticker, trade_date) DO UPDATE SET {updates}")


# Binary COPY types, in BAR_COLUMNS_DB order.
_PG_COPY_TYPES = ("varchar", "date", "float8", "float8", "float8", "float8", "float8", "float8",
                  "int8", "varchar", "varchar", "timestamp")


def _postgres_copy_upsert(conn: Connection, bars: pd.DataFrame, run_id: str,
                          ingested_at: dt.datetime) -> None:
    staging = "ticker_data_stage"
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} "
        f"(LIKE ticker_data_raw INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor:
        # Binary COPY: doubles travel as their IEEE bits, nothing to format or to lose,
        # and psycopg's C writer packs each row.
        with cursor.copy(f"COPY {staging} ({', '.join(BAR_COLUMNS_DB)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_PG_COPY_TYPES)
            for start in range(0, len(bars), CHUNK_ROWS):
                for row in bar_rows(bars.iloc[start:start + CHUNK_ROWS], run_id, ingested_at, date_as="date"):
                    copy.write_row(row)
        cursor.execute(postgres_upsert_sql(staging))
        cursor.execute(f"DELETE FROM {staging}")


def upsert_rows(conn: Connection, table: Table, rows: Sequence[dict], key: Iterable[str],
                update_existing: bool = True) -> None:
    """Idempotent upsert of small row sets into any of our tables; with
    ``update_existing=False`` rows whose key exists are left as they are."""
    if not rows:
        return
    key = tuple(key)
    backend = conn.dialect.name
    if backend in ("sqlite", "postgresql"):
        if backend == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        stmt = insert(table)
        updates = {c.name: stmt.excluded[c.name] for c in table.columns
                   if update_existing and c.name not in key and c.name in rows[0]}
        stmt = stmt.on_conflict_do_update(index_elements=list(key), set_=updates) if updates \
            else stmt.on_conflict_do_nothing(index_elements=list(key))
        conn.execute(stmt, list(rows))
    else:
        columns = list(rows[0])
        _oracle_executemany(conn, oracle_merge_rows_sql(table, columns, key, update_existing),
                            [tuple(_oracle_value(r[c]) for c in columns) for r in rows])


def oracle_merge_rows_sql(table: Table, columns: Sequence[str], key: Sequence[str],
                          update_existing: bool = True) -> str:
    binds = ", ".join(f":{i + 1} AS {c}" for i, c in enumerate(columns))
    on = " AND ".join(f"t.{c} = s.{c}" for c in key)
    updates = [c for c in columns if c not in key] if update_existing else []
    matched = f" WHEN MATCHED THEN UPDATE SET {', '.join(f't.{c} = s.{c}' for c in updates)}" \
        if updates else ""
    return (f"MERGE INTO {table.name} t USING (SELECT {binds} FROM dual) s ON ({on})"
            f"{matched} WHEN NOT MATCHED THEN INSERT ({', '.join(columns)}) "
            f"VALUES ({', '.join(f's.{c}' for c in columns)})")


def _oracle_value(value: Any) -> Any:
    """Driver SQL skips SQLAlchemy's type processing, so do its part here. A bool
    becomes the 0/1 a NUMBER(1) column holds (python-oracledb would send 23ai a
    SQL BOOLEAN). A NaN, pandas' missing text, becomes NULL, as SQLite stores it:
    Oracle NUMBER has no NaN."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value != value:
        return None
    return value


def _oracle_executemany(conn: Connection, sql: str, rows: Sequence[tuple]) -> None:
    """Run a one-row MERGE as array DML (``executemany``), in chunks.

    A MERGE is not atomic against another session inserting the same key: if a
    concurrent shard inserts and commits a key between our MERGE's read and its
    insert, Oracle raises ORA-00001 and rolls back only that statement. Run again,
    the MERGE sees the committed row and updates (or keeps) it, as ``ON CONFLICT``
    does on PostgreSQL."""
    for start in range(0, len(rows), ORACLE_ARRAY_ROWS):
        chunk = rows[start:start + ORACLE_ARRAY_ROWS]
        for attempt in range(3):
            try:
                conn.exec_driver_sql(sql, chunk)
                break
            except IntegrityError as exc:
                if attempt == 2 or not _is_unique_violation(exc):
                    raise


def _is_unique_violation(exc: IntegrityError) -> bool:
    """ORA-00001 (python-oracledb puts the error object, with ``code``, in args[0])."""
    args = getattr(exc.orig, "args", ())
    return bool(args) and getattr(args[0], "code", None) == 1
