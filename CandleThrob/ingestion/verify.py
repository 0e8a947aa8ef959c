"""``--verify-adjustments``: our split-adjusted series against the vendor's own.

One range call with ``adjusted=true`` per ticker over its stored span,
compared bar by bar with ``ticker_data`` (raw bars and our factors). Nothing
is overwritten: raw bars are the truth and the factors come from the ledger;
a difference is reported (a split the ledger lacks, or a vendor error) for a
person to look at.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import pandas as pd

from CandleThrob.errors import RetriableError, SkippableError
from CandleThrob.ingestion.state import RunState
from CandleThrob.source.polygon import PolygonSource
from CandleThrob.warehouse.storage import Warehouse

log = logging.getLogger("CandleThrob.verify")
TOLERANCE = 1e-6  # relative: the vendor rounds its adjusted prices
COLUMNS = ("open", "high", "low", "close", "volume")


def verify_adjustments(state: RunState, tickers: Sequence[str], source: Callable[[], PolygonSource],
                       warehouse: Warehouse, check_stop: Callable[[], None]) -> None:
    for ticker in tickers:
        check_stop()
        span = warehouse.stored_span(ticker)
        if span is None:
            continue
        outcome = state.outcome(ticker)
        outcome.api_calls += 1
        try:
            vendor = source().fetch_range(ticker, span[0], min(span[1], state.end.date()), adjusted=True)
        except (RetriableError, SkippableError) as exc:
            outcome.status, outcome.error = "failed", f"verify-adjustments: {exc}"
            continue
        ours = warehouse.bars([ticker], span[0], span[1], adjust="split")
        differences = compare(ours, vendor)
        state.verified[ticker] = len(differences)
        if differences:
            outcome.flag("adjustment_differs_from_vendor", differences)
            log.warning("%s: %d bars differ from the vendor's adjusted series (first on %s)", ticker,
                        len(differences), differences[0]["date"])
        else:
            outcome.flags["verified_unchanged"] = True


def compare(ours: pd.DataFrame, vendor: pd.DataFrame) -> list[dict]:
    """Bars that differ (beyond the vendor's rounding) or that only one side has."""
    joined = ours[["trade_date", *COLUMNS]].merge(vendor[["trade_date", *COLUMNS]], on="trade_date", how="outer",
                                                  suffixes=("_ours", "_vendor"), indicator=True)
    out = []
    for row in joined.itertuples(index=False):
        ours_values = {c: getattr(row, f"{c}_ours") for c in COLUMNS}
        vendor_values = {c: getattr(row, f"{c}_vendor") for c in COLUMNS}
        differs = row[-1] != "both" or any(
            abs(ours_values[c] - vendor_values[c]) > TOLERANCE * max(1.0, abs(vendor_values[c])) for c in COLUMNS)
        if differs:
            out.append({"date": str(row.trade_date.date()),
                        "ours": {c: None if pd.isna(v) else float(v) for c, v in ours_values.items()},
                        "vendor": {c: None if pd.isna(v) else float(v) for c, v in vendor_values.items()}})
    return out
