"""The raw driver paths the benchmarks hold CandleThrob against, and the raw loader process.

The writers upsert bar tuples by each driver's fastest bulk path in one
transaction: SQLite ``executemany`` of ``INSERT ... ON CONFLICT DO UPDATE``
(with the WAL / ``synchronous=NORMAL`` pragmas CandleThrob's engine sets);
psycopg binary ``COPY`` (``write_row`` per row) into a temporary staging table,
then ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``. The schema must exist.

Run as a script, this is ``bench_cpu.py``'s raw loader, one process doing what
any client of the saved grouped answers must do and nothing more: read each
body, ``json.loads`` it, keep the universe's tickers, build the driver's tuples,
upsert them::

    python bench/_raw.py JOB.json

(JOB: ``db``, ``target`` (a SQLite path or psycopg connection keywords),
``columns``, ``tickers``, ``bodies``: [file, session date of a grouped answer
or null, ticker of a range answer or null]). It imports
only the standard library and the driver, so its CPU is the floor itself.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import uuid
from typing import Sequence

# Binary COPY types, in ticker_data_raw's column order.
PG_TYPES = ("varchar", "date", "float8", "float8", "float8", "float8", "float8", "float8", "int8",
            "varchar", "varchar", "timestamp")
KEY = ("ticker", "trade_date")


def _updates(columns: Sequence[str], excluded: str) -> str:
    return ", ".join(f"{c} = {excluded}.{c}" for c in columns if c not in KEY)


def sqlite_upsert(path: str, columns: Sequence[str], rows: list[tuple]) -> float:
    """Seconds of one transaction upserting ``rows`` (dates as ISO text)."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    sql = (f"INSERT INTO ticker_data_raw ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
           f"ON CONFLICT (ticker, trade_date) DO UPDATE SET {_updates(columns, 'excluded')}")
    began = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(sql, rows)
    conn.execute("COMMIT")
    seconds = time.perf_counter() - began
    conn.close()
    return seconds


def postgres_upsert(conninfo: dict, columns: Sequence[str], rows: list[tuple]) -> float:
    """Seconds of one transaction upserting ``rows`` (dates as ``datetime.date``)."""
    import psycopg

    cols = ", ".join(columns)
    upsert = (f"INSERT INTO ticker_data_raw ({cols}) SELECT {cols} FROM stage "
              f"ON CONFLICT (ticker, trade_date) DO UPDATE SET {_updates(columns, 'EXCLUDED')}")
    with psycopg.connect(**conninfo) as conn:
        began = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute("CREATE TEMPORARY TABLE stage (LIKE ticker_data_raw INCLUDING DEFAULTS) ON COMMIT DROP")
            with cur.copy(f"COPY stage ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(PG_TYPES)
                for row in rows:
                    copy.write_row(row)
            cur.execute(upsert)
        conn.commit()
        return time.perf_counter() - began


def load(job: dict) -> dict:
    """Read, parse, filter and upsert every body of ``job``; counts for the parent."""
    from zoneinfo import ZoneInfo

    wanted = set(job["tickers"])
    as_text = job["db"] == "sqlite"
    run_id, source = str(uuid.uuid4()), "grouped"
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    stamp = now.isoformat(sep=" ") if as_text else now
    new_york = ZoneInfo("America/New_York")
    days: dict[int, object] = {}  # a range answer's stamps: each converted once

    def day_of(t: int) -> object:
        if t not in days:
            day = dt.datetime.fromtimestamp(t / 1000, new_york).date()
            days[t] = day.isoformat() if as_text else day
        return days[t]

    rows, results_seen = [], 0
    for path, session, ticker in job["bodies"]:
        with open(path, "rb") as body:
            results = json.loads(body.read()).get("results") or []
        results_seen += len(results)
        fixed = (session if as_text else dt.date.fromisoformat(session)) if session else None
        for r in results:
            symbol = ticker or r["T"]
            if symbol in wanted:
                n = r.get("n")
                rows.append((symbol, fixed or day_of(r["t"]), r.get("o"), r.get("h"), r.get("l"), r.get("c"),
                             r.get("v"), r.get("vw"), None if n is None else int(n), run_id, source, stamp))
    writer = sqlite_upsert if as_text else postgres_upsert
    seconds = writer(job["target"], job["columns"], rows)
    return {"rows": len(rows), "results": results_seen, "write_s": seconds}


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as spec:
        print(json.dumps(load(json.load(spec))))
