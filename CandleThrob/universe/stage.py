"""The universe stage: which tickers a run keeps current.

The constituents page is believed only within bounds, because a page can be
broken, truncated, padded or vandalised while still parsing: more symbols
than any real index (``MAX_SP500_SYMBOLS``), or more additions or removals
against the stored members than the index makes at once
(``MAX_UNIVERSE_CHANGES``), and the run keeps the stored members instead,
says why, and ends partial (exit 1) so cron and Kestra notice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import pandas as pd

from CandleThrob.clock import Clock
from CandleThrob.errors import UniverseError, UniversePageRefused, UniverseUnavailableError
from CandleThrob.universe.tickers import ETF_TICKERS
from CandleThrob.warehouse.storage import Warehouse

log = logging.getLogger("CandleThrob.universe")


@dataclass(frozen=True)
class Universe:
    tickers: list[str]
    refused: Optional[str] = None  # why today's page was not believed


class UniverseStage:
    """The constituents page plus the ETFs, recorded in ``ticker_universe``; the
    stored universe when the page cannot be used or cannot be believed."""

    def __init__(self, warehouse: Warehouse, fetch_constituents: Callable[[], pd.DataFrame], clock: Clock, *,
                 max_symbols: int = 600, max_changes: int = 10):
        self.warehouse = warehouse
        self.fetch_constituents = fetch_constituents
        self.clock = clock
        self.max_symbols = max_symbols
        self.max_changes = max_changes

    def resolve(self, tickers: Optional[Sequence[str]] = None, record: bool = True) -> Universe:
        """``tickers`` when given; else today's members. ``record=False`` (``--plan``) writes nothing."""
        if tickers:
            return Universe(list(tickers))
        stored = self.warehouse.universe(active_only=True)
        try:
            constituents = self.fetch_constituents()
        except UniverseError as exc:
            if stored.empty:
                raise UniverseUnavailableError(
                    f"cannot build the ticker universe: {exc}; and no universe is stored yet. "
                    "Pass --tickers A,B,... to choose tickers yourself.") from None
            if isinstance(exc, UniversePageRefused):
                log.error("constituents page refused: %s; using the %d stored members instead", exc, len(stored))
                return Universe(list(stored["ticker"]), refused=str(exc))
            # Unreachable tonight is not a wrong page: last night's members are still the members.
            log.warning("constituents page unavailable (%s); using the %d stored members", exc, len(stored))
            return Universe(list(stored["ticker"]))
        refused = self._refusal(constituents, stored)
        if refused:
            log.error("%s; using the %d stored members instead", refused, len(stored))
            return Universe(list(stored["ticker"]), refused=refused)
        members = pd.concat([
            constituents.assign(kind="sp500")[["ticker", "name", "sector", "kind"]],
            pd.DataFrame({"ticker": list(ETF_TICKERS), "name": None, "sector": "ETF", "kind": "etf"}),
        ], ignore_index=True).drop_duplicates("ticker")
        if not record:
            return Universe(list(members["ticker"]))
        changes = self.warehouse.sync_universe(members, self.clock.today_in_new_york(), kinds=("sp500", "etf"))
        if changes["added"] or changes["removed"]:
            log.info("universe: %d added %s, %d removed %s", len(changes["added"]),
                     changes["added"][:10], len(changes["removed"]), changes["removed"][:10])
        return Universe(list(self.warehouse.universe(active_only=True)["ticker"]))

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
