"""Adjustment factors computed from the ledger: split-adjusted and total-return (CRSP) prices.

For a bar on date ``t`` of a ticker::

    split factor  = product over its splits executed after t of  split_from / split_to
    total factor  = split factor * product over its ex-dates after t of
                    (1 - cash / raw close of the session before the ex-date)

The factors are piecewise constant between event dates, so they are stored as
spans ``[valid_from, valid_to]``: the span before the first event runs from
``FIRST_DAY``; after the last event there is no span (both factors are 1).
A dividend whose previous close is not stored cannot be applied yet: it is
left out (and listed) until that close arrives.

The vendor sends its own cumulative factor with each event
(``historical_adjustment_factor``: what prices before the event are
multiplied by). ``vendor_differences`` compares ours with it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pandas as pd

FIRST_DAY = dt.date(1900, 1, 1)
VENDOR_TOLERANCE = 1e-6


@dataclass
class Factors:
    spans: pd.DataFrame  # ticker, valid_from, valid_to, split_factor, total_factor
    unapplied: list[dict] = field(default_factory=list)  # dividends that cannot be applied, with why
    # (ticker, event date) -> our cumulative split / dividend factor at that event
    cumulative: dict[tuple[str, str, dt.date], float] = field(default_factory=dict)


def compute(splits: pd.DataFrame, dividends: pd.DataFrame, previous_close: dict[tuple[str, dt.date], float],
            first_bar: dict[str, dt.date]) -> Factors:
    """Spans for every ticker in ``splits`` or ``dividends`` (ledger frames)."""
    events: dict[str, dict[dt.date, list[float]]] = {}
    unapplied, cumulative = [], {}
    for ticker, day, split_from, split_to in splits[["ticker", "execution_date", "split_from", "split_to"]].itertuples(
            index=False):
        events.setdefault(ticker, {}).setdefault(day, [1.0, 1.0])[0] *= split_from / split_to
    for ticker, day, cash in dividends[["ticker", "ex_dividend_date", "cash_amount"]].itertuples(index=False):
        close = previous_close.get((ticker, day))
        if close is None:
            if first_bar.get(ticker) is not None and first_bar[ticker] < day:
                unapplied.append({"ticker": ticker, "ex_dividend_date": str(day), "why": "no stored close before it"})
            continue
        if not 0 < cash < close:
            unapplied.append({"ticker": ticker, "ex_dividend_date": str(day),
                              "why": f"cash {cash} is not below the previous close {close}"})
            continue
        events.setdefault(ticker, {}).setdefault(day, [1.0, 1.0])[1] *= 1 - cash / close
    rows = []
    for ticker, by_day in events.items():
        days = sorted(by_day)
        split_cum = total_cum = dividend_cum = 1.0
        spans = []
        for i in range(len(days) - 1, -1, -1):  # from the latest event back
            split, dividend = by_day[days[i]]
            split_cum *= split
            dividend_cum *= dividend
            total_cum = split_cum * dividend_cum
            cumulative[(ticker, "split", days[i])] = split_cum
            cumulative[(ticker, "dividend", days[i])] = dividend_cum
            start = days[i - 1] if i > 0 else FIRST_DAY
            spans.append((ticker, start, days[i] - dt.timedelta(days=1), split_cum, total_cum))
        rows.extend(reversed(spans))
    frame = pd.DataFrame(rows, columns=["ticker", "valid_from", "valid_to", "split_factor", "total_factor"])
    return Factors(spans=frame, unapplied=unapplied, cumulative=cumulative)


def vendor_differences(factors: Factors, splits: pd.DataFrame, dividends: pd.DataFrame) -> list[dict]:
    """Events whose vendor factor differs from ours by more than ``VENDOR_TOLERANCE``."""
    out = []
    for kind, frame, day_column in (("split", splits, "execution_date"), ("dividend", dividends, "ex_dividend_date")):
        for event_id, ticker, day, vendor in frame[["event_id", "ticker", day_column, "vendor_factor"]].itertuples(
                index=False):
            ours = factors.cumulative.get((ticker, kind, day))
            if vendor is None or pd.isna(vendor) or ours is None:
                continue
            if abs(ours - float(vendor)) > VENDOR_TOLERANCE:
                out.append({"ticker": ticker, "kind": kind, "event_id": event_id, "date": str(day),
                            "ours": round(ours, 12), "vendor": float(vendor)})
    return out
