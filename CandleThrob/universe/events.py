"""Renames whose day the constituents page cannot give, settled by the vendor's ticker events.

When the tool saw a company under one symbol and, after a gap in its own scrapes, under
another (and the changes table has no rename), the switch happened somewhere in the gap.
One call to ``/vX/reference/tickers/{id}/events`` for the security's current symbol gives
the day: it is stored in ``symbol_changes`` and the membership is rebuilt with it as if
the changes table had listed it. Each security is asked once; an answer that settles
nothing is remembered too, so the call is never repeated.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Callable, Optional

import pandas as pd
from sqlalchemy import select

from CandleThrob.errors import RetriableError, SkippableError
from CandleThrob.source.polygon import PolygonSource
from CandleThrob.universe.pit import Membership, by_security
from CandleThrob.warehouse import bulk
from CandleThrob.warehouse.schema import symbol_changes
from CandleThrob.warehouse.storage import Warehouse

log = logging.getLogger("CandleThrob.universe")
ASKED = "ticker_events_asked"  # new symbols whose events were asked already


@dataclass(frozen=True)
class Rename:
    old: str
    new: str
    security_id: str
    after: pd.Timestamp  # the old symbol's last known day
    before: pd.Timestamp  # the new symbol's first known day


def unsettled_renames(membership: Membership, asked: set[str]) -> list[Rename]:
    """Securities that changed symbol inside a gap of days (not on one known day), not asked yet."""
    found = []
    for rows in by_security(membership.history):
        tickers, starts, ends = rows["ticker"], rows["valid_from"], rows["valid_to"]
        for i in range(len(tickers) - 1):
            if (tickers[i] != tickers[i + 1] and pd.notna(ends[i]) and pd.notna(starts[i + 1])
                    and starts[i + 1] - ends[i] > pd.Timedelta(days=1) and tickers[i + 1] not in asked):
                found.append(Rename(tickers[i], tickers[i + 1], str(rows["security_id"][i]), ends[i], starts[i + 1]))
    return found


def settled_changes(warehouse: Warehouse) -> pd.DataFrame:
    """The renames the events settled, as rows of a changes table (a rename is an add and a removal of
    one company on one day): they join the page's own changes when the membership is rebuilt."""
    c = symbol_changes.c
    with warehouse.engine.connect() as conn:
        rows = conn.execute(select(c.change_date, c.new_ticker, c.old_ticker).order_by(c.change_date)).all()
    return pd.DataFrame([{"date": pd.Timestamp(day), "added_ticker": new, "added_name": f"{old} renamed {new}",
                          "removed_ticker": old, "removed_name": f"{old} renamed {new}", "reason": "ticker events"}
                         for day, new, old in rows],
                        columns=["date", "added_ticker", "added_name", "removed_ticker", "removed_name", "reason"])


class TickerEventsStage:
    def __init__(self, source: Callable[[], PolygonSource], warehouse: Warehouse):
        self.source = source
        self.warehouse = warehouse

    def asked(self) -> set[str]:
        return set(json.loads(self.warehouse.get_state(ASKED) or "[]"))

    def run(self, renames: list[Rename], run_id: str) -> int:
        """Ask the events of each rename's security; returns how many renames got their day."""
        settled, asked = [], self.asked()
        for rename in renames:
            try:
                events = self.source().fetch_ticker_events(rename.new)
            except (RetriableError, SkippableError) as exc:
                log.warning("ticker events of %s could not be read (%s); asked again next run", rename.new, exc)
                continue
            asked.add(rename.new)
            day = _switch_day(events, rename)
            if day is None:
                log.warning("ticker events of %s do not date its change from %s between %s and %s; the days "
                            "between stay unattributed", rename.new, rename.old, rename.after.date(),
                            rename.before.date())
                continue
            settled.append({"new_ticker": rename.new, "change_date": day, "old_ticker": rename.old,
                            "security_id": rename.security_id, "source": "polygon_ticker_events", "run_id": run_id})
            log.info("ticker events: %s became %s on %s", rename.old, rename.new, day)
        with self.warehouse.transaction() as conn:
            if settled:
                bulk.upsert_rows(conn, symbol_changes, settled, key=("new_ticker", "change_date"))
            self.warehouse.set_state(conn, ASKED, json.dumps(sorted(asked)))
        return len(settled)


def _switch_day(events: list[tuple], rename: Rename) -> Optional[object]:
    """The day the security started trading as the new symbol, if it falls inside the gap."""
    for day, ticker in events:
        if ticker == rename.new and rename.after < pd.Timestamp(day) <= rename.before:
            return day
    return None
