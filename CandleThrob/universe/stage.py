"""The universe stage: which tickers a run keeps current.

The constituents page is believed only within bounds, because a page can be
broken, truncated, padded or vandalised while still parsing: more symbols
than any real index (``MAX_SP500_SYMBOLS``), or more additions or removals
against the stored members than the index makes at once
(``MAX_UNIVERSE_CHANGES``), and the run keeps the stored members instead,
says why, and ends partial (exit 1) so cron and Kestra notice.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import pandas as pd

from CandleThrob.clock import Clock
from CandleThrob.errors import UniverseError, UniversePageRefused, UniverseUnavailableError
from CandleThrob.planning.trading_calendar import TradingCalendar
from CandleThrob.universe.pages import ConstituentsPage
from CandleThrob.universe.pit import Membership, build_membership
from CandleThrob.universe.tickers import ETF_TICKERS
from CandleThrob.warehouse.membership import MembershipStore
from CandleThrob.warehouse.storage import Warehouse

PAGE_DIGEST = "constituents_page_digest"  # the page the stored membership was built from

log = logging.getLogger("CandleThrob.universe")


@dataclass(frozen=True)
class Universe:
    tickers: list[str]
    refused: Optional[str] = None  # why today's page was not believed
    membership: Optional[Membership] = None  # who was a member when (None: --tickers, or never built)


class UniverseStage:
    """The constituents page plus the ETFs, recorded in ``ticker_universe``; the
    stored universe when the page cannot be used or cannot be believed."""

    def __init__(self, warehouse: Warehouse, fetch_page: Callable[[], ConstituentsPage], clock: Clock, *,
                 max_symbols: int = 600, max_changes: int = 10, calendar: Optional[TradingCalendar] = None):
        self.warehouse = warehouse
        self.fetch_page = fetch_page
        self.calendar = calendar or TradingCalendar()
        self.store = MembershipStore(warehouse)
        self.clock = clock
        self.max_symbols = max_symbols
        self.max_changes = max_changes

    def resolve(self, tickers: Optional[Sequence[str]] = None, record: bool = True) -> Universe:
        """``tickers`` when given; else today's members. ``record=False`` (``--plan``) writes nothing."""
        if tickers:
            return Universe(list(tickers))
        stored = self.warehouse.universe(active_only=True)
        try:
            page = self.fetch_page()
        except UniverseError as exc:
            if stored.empty:
                raise UniverseUnavailableError(
                    f"cannot build the ticker universe: {exc}; and no universe is stored yet. "
                    "Pass --tickers A,B,... to choose tickers yourself.") from None
            if isinstance(exc, UniversePageRefused):
                log.error("constituents page refused: %s; using the %d stored members instead", exc, len(stored))
                return Universe(list(stored["ticker"]), refused=str(exc), membership=self.store.load())
            # Unreachable tonight is not a wrong page: last night's members are still the members.
            log.warning("constituents page unavailable (%s); using the %d stored members", exc, len(stored))
            return Universe(list(stored["ticker"]), membership=self.store.load())
        refused = self._refusal(page.members, stored)
        if refused:
            log.error("%s; using the %d stored members instead", refused, len(stored))
            return Universe(list(stored["ticker"]), refused=refused, membership=self.store.load())
        members = pd.concat([
            page.members.assign(kind="sp500")[["ticker", "name", "sector", "kind", "cik"]],
            pd.DataFrame({"ticker": list(ETF_TICKERS), "name": None, "sector": "ETF", "kind": "etf", "cik": None}),
        ], ignore_index=True).drop_duplicates("ticker")
        if not record:
            return Universe(list(members["ticker"]), membership=self._membership(page, changed=False, record=False))
        today = self.clock.today_in_new_york()
        changes = self.warehouse.sync_universe(members, today, kinds=("sp500", "etf"))
        if changes["added"] or changes["removed"]:
            log.info("universe: %d added %s, %d removed %s", len(changes["added"]),
                     changes["added"][:10], len(changes["removed"]), changes["removed"][:10])
        changed = bool(changes["added"] or changes["removed"] or changes["rejoined"])
        return Universe(list(self.warehouse.universe(active_only=True)["ticker"]),
                        membership=self._membership(page, changed=changed, record=True))

    def _membership(self, page: ConstituentsPage, changed: bool, record: bool) -> Membership:
        """The stored membership, rebuilt when the page or the members changed since it was built."""
        digest = hashlib.sha1(pd.util.hash_pandas_object(page.members, index=False).values.tobytes()
                              + (pd.util.hash_pandas_object(page.changes, index=False).values.tobytes()
                                 if page.changes is not None else b"")).hexdigest()
        if not changed and self.warehouse.get_state(PAGE_DIGEST) == digest:
            stored = self.store.load()
            if stored is not None:
                return stored
        membership = build_membership(page.members, page.changes, self.clock.today_in_new_york(),
                                      self.store.observations(), self.calendar)
        if record:
            with self.warehouse.transaction() as conn:
                self.store.replace(conn, membership)
                self.warehouse.set_state(conn, PAGE_DIGEST, digest)
            former = membership.former_tickers(set(page.members["ticker"]))
            log.info("membership rebuilt: %d stays, %d former members or earlier symbols, %d anomalies",
                     len(membership.intervals), len(former), len(membership.anomalies))
        return membership

    def _refusal(self, constituents: pd.DataFrame, stored: pd.DataFrame) -> Optional[str]:
        page = set(constituents["ticker"])
        if len(page) > self.max_symbols:
            return (f"the constituents page lists {len(page)} symbols, more than MAX_SP500_SYMBOLS="
                    f"{self.max_symbols}: a flooded or broken page")
        members = set(stored.loc[stored["kind"] == "sp500", "ticker"])
        if not members:
            return None  # nothing stored yet to compare with
        added, removed = sorted(page - members), sorted(members - page)
        if len(added) > self.max_changes or len(removed) > self.max_changes:
            return (f"the constituents page adds {len(added)} and removes {len(removed)} members at once "
                    f"(e.g. {', '.join((removed or added)[:5])}), more than MAX_UNIVERSE_CHANGES={self.max_changes}: "
                    "the index changes a handful of names at a time, so the page is not believed")
        return None
