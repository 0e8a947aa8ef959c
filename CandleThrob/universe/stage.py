"""The universe stage: which tickers a run keeps current."""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

import pandas as pd

from CandleThrob.clock import Clock
from CandleThrob.errors import UniverseError, UniverseUnavailableError
from CandleThrob.universe.tickers import ETF_TICKERS
from CandleThrob.warehouse.storage import Warehouse

log = logging.getLogger("CandleThrob.universe")


class UniverseStage:
    """The constituents page plus the ETFs, recorded in ``ticker_universe``; the
    stored universe when the page cannot be used."""

    def __init__(self, warehouse: Warehouse, fetch_constituents: Callable[[], pd.DataFrame], clock: Clock):
        self.warehouse = warehouse
        self.fetch_constituents = fetch_constituents
        self.clock = clock

    def resolve(self, tickers: Optional[Sequence[str]] = None, record: bool = True) -> list[str]:
        """``tickers`` when given; else today's members. ``record=False`` (``--plan``) writes nothing."""
        if tickers:
            return list(tickers)
        try:
            constituents = self.fetch_constituents()
        except UniverseError as exc:
            stored = self.warehouse.universe(active_only=True)
            if stored.empty:
                raise UniverseUnavailableError(
                    f"cannot build the ticker universe: {exc}; and no universe is stored yet. "
                    "Pass --tickers A,B,... to choose tickers yourself.") from None
            log.warning("constituents page unavailable (%s); using the %d stored members", exc, len(stored))
            return list(stored["ticker"])
        members = pd.concat([
            constituents.assign(kind="sp500")[["ticker", "name", "sector", "kind"]],
            pd.DataFrame({"ticker": list(ETF_TICKERS), "name": None, "sector": "ETF", "kind": "etf"}),
        ], ignore_index=True).drop_duplicates("ticker")
        if not record:
            return list(members["ticker"])
        changes = self.warehouse.sync_universe(members, self.clock.today_in_new_york(), kinds=("sp500", "etf"))
        if changes["added"] or changes["removed"]:
            log.info("universe: %d added %s, %d removed %s", len(changes["added"]),
                     changes["added"][:10], len(changes["removed"]), changes["removed"][:10])
        return list(self.warehouse.universe(active_only=True)["ticker"])
