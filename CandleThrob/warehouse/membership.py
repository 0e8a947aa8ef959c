"""Membership tables: the stays, the symbol history and the anomalies, replaced whole on each rebuild.

The reconstruction is a pure function of the page and the tool's sightings, so storing it
is a replacement in one transaction, never a merge: a rebuild that finds a date corrected
on the page simply writes the corrected stays.
"""

from __future__ import annotations

from typing import Optional

import pandas as pd
from sqlalchemy import Table, delete, insert, select
from sqlalchemy.engine import Connection

from CandleThrob.universe.anomalies import ANOMALY_COLUMNS
from CandleThrob.universe.frames import INTERVAL_COLUMNS
from CandleThrob.universe.pit import Membership
from CandleThrob.warehouse.schema import index_members, membership_anomalies, symbol_history, ticker_universe
from CandleThrob.warehouse.storage import Warehouse

HISTORY_COLUMNS = ["security_id", "ticker", "valid_from", "valid_to"]


class MembershipStore:
    def __init__(self, warehouse: Warehouse):
        self.warehouse = warehouse

    def replace(self, conn: Connection, membership: Membership) -> None:
        for table in (index_members, symbol_history, membership_anomalies):
            conn.execute(delete(table))
        stays = membership.intervals.sort_values(["ticker", "first_day"], na_position="first")
        stays = stays.assign(stay=stays.groupby("ticker").cumcount())
        _insert(conn, index_members, [
            {"ticker": r["ticker"], "stay": int(r["stay"]), "security_id": r["security_id"], "cik": r["cik"],
             "name": _text(r["name"], 255), "sector": _text(r["sector"], 128),
             "first_day": _date(r["first_day"]), "last_day": _date(r["last_day"])}
            for r in stays.to_dict("records")])
        history = membership.history.sort_values(["ticker", "valid_from"], na_position="first")
        history = history.assign(stay=history.groupby("ticker").cumcount())
        _insert(conn, symbol_history, [
            {"ticker": r["ticker"], "stay": int(r["stay"]), "security_id": r["security_id"],
             "valid_from": _date(r["valid_from"]), "valid_to": _date(r["valid_to"])}
            for r in history.to_dict("records")])
        _insert(conn, membership_anomalies, [
            {"anomaly_id": r["anomaly_id"], "kind": r["kind"], "event_date": _date(r["date"]),
             "ticker": _text(r["ticker"], 16), "detail": _text(r["detail"], 2000), "action": _text(r["action"], 255)}
            for r in membership.anomalies.to_dict("records")])

    def load(self) -> Optional[Membership]:
        """The stored reconstruction; None when none was built yet."""
        m, h, a = index_members.c, symbol_history.c, membership_anomalies.c
        with self.warehouse.engine.connect() as conn:
            stays = conn.execute(select(m.ticker, m.cik, m.name, m.sector, m.first_day, m.last_day, m.security_id)
                                 .order_by(m.ticker, m.stay)).all()
            if not stays:
                return None
            history = conn.execute(select(h.security_id, h.ticker, h.valid_from, h.valid_to)
                                   .order_by(h.security_id, h.valid_from)).all()
            anomalies = conn.execute(select(a.kind, a.event_date, a.ticker, a.detail, a.action, a.anomaly_id)
                                     .order_by(a.event_date, a.kind)).all()
        intervals = _dated(pd.DataFrame(stays, columns=INTERVAL_COLUMNS + ["security_id"]), "first_day", "last_day")
        return Membership(
            intervals=intervals,
            history=_dated(pd.DataFrame(history, columns=HISTORY_COLUMNS), "valid_from", "valid_to"),
            anomalies=_dated(pd.DataFrame(anomalies, columns=ANOMALY_COLUMNS + ["anomaly_id"]), "date"))

    def observations(self) -> pd.DataFrame:
        """The tool's own sightings of index members: ``ticker, cik, first_seen, last_seen``."""
        u = ticker_universe.c
        with self.warehouse.engine.connect() as conn:
            rows = conn.execute(select(u.ticker, u.cik, u.first_seen, u.last_seen)
                                .where(u.kind == "sp500").order_by(u.ticker)).all()
        frame = pd.DataFrame(rows, columns=["ticker", "cik", "first_seen", "last_seen"])
        frame["cik"] = frame["cik"].astype(object).where(frame["cik"].notna(), None)
        return _dated(frame, "first_seen", "last_seen")


def _insert(conn: Connection, table: Table, rows: list[dict]) -> None:
    for start in range(0, len(rows), 1000):
        conn.execute(insert(table), rows[start:start + 1000])


def _dated(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    for column in columns:
        frame[column] = pd.to_datetime(frame[column]).astype("datetime64[us]")
    return frame


def _date(value: object):  # noqa: ANN202 - a date or None
    return None if value is None or pd.isna(value) else pd.Timestamp(value).date()


def _text(value: object, limit: int) -> Optional[str]:
    return value[:limit] if isinstance(value, str) else None
