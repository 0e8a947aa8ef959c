"""Everything the pipeline reads from and writes to the warehouse.

Reads are single queries (coverage, latest closes, universe, splits). Writes
happen in ``Warehouse.transaction()``: each batch commits its bars, rejected
bars, audit rows, coverage (the checkpoint) and lock heartbeat together, so a
killed run leaves either all of a batch or none of it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import pandas as pd
from sqlalchemy import and_, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DatabaseError, DBAPIError, IntegrityError, ProgrammingError

from CandleThrob.clock import Clock
from CandleThrob.planning.coverage import Interval
from CandleThrob.errors import DatabaseUnavailableError
from CandleThrob.warehouse import bulk, migrate
from CandleThrob.warehouse.schema import (ingestion_audit, ingestion_coverage, ingestion_runs, ingestion_state,
                                          rejected_bars, ticker_data, ticker_data_raw, ticker_data_total,
                                          ticker_universe)

# What a read asks for: prices as traded, split-adjusted, or total return.
ADJUSTMENTS = {"none": ticker_data_raw, "split": ticker_data, "total": ticker_data_total}


def _date(value: Any) -> Optional[dt.date]:
    if value is None or value is pd.NaT or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.date()
    return dt.date.fromisoformat(str(value)[:10])


class Warehouse:
    """The SQL side of CandleThrob, over one SQLAlchemy engine."""

    def __init__(self, engine: Engine, clock: Optional[Clock] = None, label: Optional[str] = None):
        self.engine = engine
        self.label = label  # how messages name the database (engine.database_label)
        self.backend = engine.dialect.name
        self.clock = clock or Clock()

    def now(self) -> dt.datetime:
        """The stamp for rows written now (naive UTC, whole seconds, as every backend stores it)."""
        return self.clock.utcnow().replace(microsecond=0)

    # ---- lifecycle -------------------------------------------------------
    def create_schema(self) -> Optional[str]:
        """Bring the schema to this release's (Alembic); returns the version found before.
        Runs starting together on an empty database take turns; on a backend that
        cannot (Oracle), a loser of the race looks again."""
        try:
            with self.engine.connect() as conn:
                if migrate.up_to_date(conn):  # the usual night: one row read, no Alembic
                    return migrate.HEAD
            for attempt in range(3):
                try:
                    with self.engine.begin() as conn:
                        return migrate.upgrade(conn)
                except (IntegrityError, ProgrammingError, DatabaseError) as exc:
                    # Another run created the table first (Oracle: ORA-00955): look again.
                    if attempt == 2 or not any(sign in str(exc.orig) for sign in ("ORA-00955", "already exists")):
                        raise
        except DBAPIError as exc:
            raise DatabaseUnavailableError(
                f"cannot use the database ({self.describe()}): {exc.orig}") from None
        except OSError as exc:  # a driver that lets a socket error through (host not found)
            raise DatabaseUnavailableError(f"cannot reach the database ({self.describe()}): {exc}") from None
        return None

    def describe(self) -> str:
        return self.label or self.engine.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def serialize_coverage_writes(self, conn: Connection) -> None:
        """Coverage rows are read-merged-written; concurrent shards must take turns.
        SQLite already serialises writers (BEGIN IMMEDIATE)."""
        if self.backend == "postgresql":
            conn.exec_driver_sql("LOCK TABLE ingestion_coverage IN SHARE ROW EXCLUSIVE MODE")
        elif self.backend == "oracle":
            conn.exec_driver_sql("LOCK TABLE ingestion_coverage IN EXCLUSIVE MODE")

    # ---- coverage (the checkpoint) ---------------------------------------
    def coverage(self) -> dict[str, list[Interval]]:
        """Every ticker's covered intervals, in one query."""
        query = select(ingestion_coverage.c.ticker, ingestion_coverage.c.covered_from,
                       ingestion_coverage.c.covered_to).order_by(
            ingestion_coverage.c.ticker, ingestion_coverage.c.covered_from)
        out: dict[str, list[Interval]] = {}
        with self.engine.connect() as conn:
            for ticker, start, end in conn.execute(query):
                out.setdefault(ticker, []).append((_date(start), _date(end)))
        return out

    def has_coverage(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(ingestion_coverage.c.ticker).limit(1)).first() is not None

    def add_coverage(self, conn: Connection, new: Mapping[str, Sequence[Interval]], run_id: str,
                     merge: Callable[[list[Interval]], list[Interval]]) -> None:
        """Union ``new`` intervals into the stored ones (merged by ``merge``)."""
        if not new:
            return
        self.serialize_coverage_writes(conn)
        tickers = sorted(new)
        existing: dict[str, list[Interval]] = {t: [] for t in tickers}
        for chunk in _chunks(tickers, 500):
            rows = conn.execute(select(ingestion_coverage.c.ticker, ingestion_coverage.c.covered_from,
                                       ingestion_coverage.c.covered_to)
                                .where(ingestion_coverage.c.ticker.in_(chunk)))
            for ticker, start, end in rows:
                existing[ticker].append((_date(start), _date(end)))
        replace: list[dict] = []
        changed: list[str] = []
        merges: dict[tuple, list[Interval]] = {}  # most tickers share their intervals: merge each set once
        for ticker in tickers:
            key = (tuple(existing[ticker]), tuple(new[ticker]))
            if key not in merges:
                merges[key] = merge(list(key[0]) + list(key[1]))
            merged = merges[key]
            if merged != sorted(existing[ticker]):
                changed.append(ticker)
                replace.extend({"ticker": ticker, "covered_from": a, "covered_to": b, "run_id": run_id}
                               for a, b in merged)
        for chunk in _chunks(changed, 500):
            conn.execute(delete(ingestion_coverage).where(ingestion_coverage.c.ticker.in_(chunk)))
        if replace:
            conn.execute(insert(ingestion_coverage), replace)

    # ---- bars ------------------------------------------------------------
    def write_bars(self, conn: Connection, bars: pd.DataFrame, run_id: str,
                   ingested_at: Optional[dt.datetime] = None) -> int:
        return bulk.upsert_bars(conn, bars, run_id, ingested_at or self.now())

    def write_rejected(self, conn: Connection, rejected: pd.DataFrame, run_id: str) -> int:
        if rejected.empty:
            return 0
        now = self.now()

        def num(value: Any) -> Optional[float]:
            return None if value is None or value != value else float(value)

        rows = [{
            "run_id": run_id, "ticker": str(r.ticker), "trade_date": _date(r.trade_date),
            "open_price": num(r.open), "high_price": num(r.high), "low_price": num(r.low),
            "close_price": num(r.close), "volume": num(r.volume), "vwap": num(r.vwap),
            "num_transactions": num(r.transactions), "reasons": str(r.reasons)[:400],
            "detail": _text(r.detail, 2000),
            "source": getattr(r, "source", None), "rejected_at": now,
        } for r in rejected.itertuples(index=False)]
        conn.execute(insert(rejected_bars), rows)
        return len(rows)

    def bars(self, tickers: Optional[Sequence[str]] = None, start: Optional[dt.date] = None,
             end: Optional[dt.date] = None, adjust: str = "split") -> pd.DataFrame:
        """Stored bars as a bars frame (plus lineage columns), sorted by ticker and date:
        split-adjusted (``ticker_data``), total return, or as traded (``adjust="none"``)."""
        t = ADJUSTMENTS[adjust].c
        query = select(t.ticker, t.trade_date, t.open_price, t.high_price, t.low_price,
                       t.close_price, t.volume, t.vwap, t.num_transactions, t.run_id, t.source)
        if tickers is not None:
            query = query.where(t.ticker.in_(list(tickers)))
        if start is not None:
            query = query.where(t.trade_date >= start)
        if end is not None:
            query = query.where(t.trade_date <= end)
        query = query.order_by(t.ticker, t.trade_date)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        frame = pd.DataFrame(rows, columns=["ticker", "trade_date", "open", "high", "low", "close",
                                            "volume", "vwap", "transactions", "run_id", "source"])
        frame["trade_date"] = pd.to_datetime(frame["trade_date"]).astype("datetime64[ns]")
        for c in ("open", "high", "low", "close", "volume", "vwap", "transactions"):
            frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
        return frame

    def latest_closes(self) -> dict[str, tuple[pd.Timestamp, float]]:
        """Each ticker's last stored (date, close as traded), in one query."""
        t = ticker_data_raw.c
        last = select(t.ticker.label("ticker"), func.max(t.trade_date).label("last_date")) \
            .group_by(t.ticker).subquery()
        query = select(t.ticker, t.trade_date, t.close_price).join(
            last, and_(t.ticker == last.c.ticker, t.trade_date == last.c.last_date))
        with self.engine.connect() as conn:
            return {ticker: (pd.Timestamp(_date(day)), float(close))
                    for ticker, day, close in conn.execute(query)}

    def stored_span(self, ticker: str) -> Optional[Interval]:
        t = ticker_data_raw.c
        with self.engine.connect() as conn:
            first, last = conn.execute(select(func.min(t.trade_date), func.max(t.trade_date))
                                       .where(t.ticker == ticker)).one()
        return (_date(first), _date(last)) if first is not None else None

    def count_bars(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(ticker_data_raw)).scalar_one()

    # ---- runs and audit ---------------------------------------------------
    def start_run(self, row: dict) -> None:
        with self.transaction() as conn:
            conn.execute(insert(ingestion_runs), [row])

    def update_run(self, run_id: str, values: dict, conn: Optional[Connection] = None) -> None:
        stmt = update(ingestion_runs).where(ingestion_runs.c.run_id == run_id).values(**values)
        if conn is not None:
            conn.execute(stmt)
            return
        with self.transaction() as own:
            own.execute(stmt)

    def mark_abandoned(self, run_id: str, by: str, at: dt.datetime) -> None:
        """A run whose process died holding the lock: say so, and who took over."""
        with self.transaction() as conn:
            conn.execute(update(ingestion_runs).where(and_(ingestion_runs.c.run_id == run_id,
                                                           ingestion_runs.c.status == "running"))
                         .values(status="abandoned", abandoned_by=by, abandoned_at=at, finished_at=at,
                                 error=f"the process died; its lock was taken over by run {by}"))

    def run(self, run_id: str) -> Optional[dict]:
        with self.engine.connect() as conn:
            row = conn.execute(select(ingestion_runs).where(ingestion_runs.c.run_id == run_id)).mappings().first()
        return dict(row) if row else None

    def write_audit(self, conn: Connection, rows: Sequence[dict]) -> None:
        rows = [{**r, "flags": json.dumps(r.get("flags") or {}, default=str, sort_keys=True),
                 "updated_at": self.now()} for r in rows]
        bulk.upsert_rows(conn, ingestion_audit, rows, key=("run_id", "ticker"))

    def audit(self, run_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(ingestion_audit).where(ingestion_audit.c.run_id == run_id)
                                .order_by(ingestion_audit.c.ticker)).mappings().all()
        return [dict(r) for r in rows]

    # ---- universe ----------------------------------------------------------
    def universe(self, active_only: bool = True) -> pd.DataFrame:
        u = ticker_universe.c
        query = select(u.ticker, u.name, u.sector, u.kind, u.first_seen, u.last_seen, u.active, u.cik) \
            .order_by(u.kind.desc(), u.ticker)
        if active_only:
            query = query.where(u.active == True)  # noqa: E712 - SQL expression
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return pd.DataFrame(rows, columns=["ticker", "name", "sector", "kind", "first_seen",
                                           "last_seen", "active", "cik"])

    def sync_universe(self, members: pd.DataFrame, today: dt.date, kinds: Iterable[str]) -> dict:
        """Record today's members (columns ticker, name, sector, kind). Members of
        ``kinds`` no longer listed become inactive; their history stays."""
        kinds = tuple(kinds)
        stored = self.universe(active_only=False)
        stored = stored[stored["kind"].isin(kinds)]
        current = set(members["ticker"])
        previously_active = set(stored.loc[stored["active"].astype(bool), "ticker"])
        known = set(stored["ticker"])
        ciks = dict(zip(members["ticker"], members["cik"])) if "cik" in members.columns else {}
        rows = [{"ticker": r.ticker, "name": _text(r.name, 255), "sector": _text(r.sector, 128), "kind": r.kind,
                 "first_seen": today, "last_seen": today, "active": True, "cik": _text(ciks.get(r.ticker), 10)}
                for r in members.itertuples(index=False) if r.ticker not in known]
        stored_ciks = dict(zip(stored["ticker"], stored["cik"]))
        new_ciks = [{"t": t, "c": c} for t, c in ciks.items()
                    if t in known and isinstance(c, str) and stored_ciks.get(t) != c]
        with self.transaction() as conn:
            # Shards sync concurrently: a row another shard just added is kept as is.
            bulk.upsert_rows(conn, ticker_universe, rows, key=("ticker",), update_existing=False)
            renewed = sorted(current & known)
            for chunk in _chunks(renewed, 500):
                conn.execute(update(ticker_universe).where(ticker_universe.c.ticker.in_(chunk))
                             .values(last_seen=today, active=True))
            if new_ciks:
                conn.execute(update(ticker_universe).where(ticker_universe.c.ticker == bindparam("t"))
                             .values(cik=bindparam("c")), new_ciks)
            removed = sorted(previously_active - current)
            for chunk in _chunks(removed, 500):
                conn.execute(update(ticker_universe).where(ticker_universe.c.ticker.in_(chunk))
                             .values(active=False))
        return {"added": sorted(current - known), "removed": removed,
                "rejoined": sorted((current & known) - previously_active)}

    # ---- small state ----------------------------------------------------------------
    def get_state(self, key: str) -> Optional[str]:
        with self.engine.connect() as conn:
            return conn.execute(select(ingestion_state.c.state_value)
                                .where(ingestion_state.c.state_key == key)).scalar()

    def set_state(self, conn: Connection, key: str, value: str) -> None:
        bulk.upsert_rows(conn, ingestion_state, [{"state_key": key, "state_value": value}],
                         key=("state_key",))


def _text(value: Any, limit: int) -> Optional[str]:
    """A string cut to its column's width; pandas' NaN for a missing one becomes NULL."""
    return value[:limit] if isinstance(value, str) else None


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
