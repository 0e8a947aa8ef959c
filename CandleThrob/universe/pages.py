"""The two tables of a Wikipedia "List of S&P 500 companies" page: members and dated changes.

Both page layouts are read: the one before 2019 (untitled ``wikitable``s, the changes
table's two header rows arriving as data rows) and today's (``table#constituents`` and
``table#changes`` with a two-level header). Tickers are put in Polygon's form with
``clean_ticker``; CIKs become digit strings without leading zeros, so ``0001326801``,
``1326801`` and ``1326801.0`` are one company.
"""

from __future__ import annotations

import io
import math
import re
from typing import NamedTuple, Optional

import pandas as pd
from lxml import etree

from CandleThrob.config import MIN_SP500_SYMBOLS, AdvancedBatchConfig, redact_http_url
from CandleThrob.errors import InvalidTickerError, UniverseError, UniversePageRefused
from CandleThrob.source.http import HttpGuard
from CandleThrob.universe.constituents import (
    SYMBOL_COLUMNS, _constituents_table, check_size, constituents_from_table, fetch_page,
)
from CandleThrob.universe.tickers import clean_ticker

CHANGE_COLUMNS = ["date", "added_ticker", "added_name", "removed_ticker", "removed_name", "reason"]
MEMBER_COLUMNS = ["ticker", "name", "sector", "cik", "date_added"]
REJECTED_COLUMNS = ["row", "cells", "reason"]

# (group, field) of a header cell -> our column; the date and reason cells span both
# header rows, so their group is their own name.
_HEADER = {
    ("Date", "Date"): "date",
    ("Added", "Ticker"): "added_ticker",
    ("Added", "Security"): "added_name",
    ("Removed", "Ticker"): "removed_ticker",
    ("Removed", "Security"): "removed_name",
    ("Reason", "Reason"): "reason",
}
_HEADER_WORDS = {"", "Date", "Added", "Removed", "Ticker", "Security", "Reason"}
_FOOTNOTE = re.compile(r"\[[^\]]*\]")
# Dates as the pages write them ("January 3, 2018"), and two spellings editors use too.
_DATE_FORMATS = ("%B %d, %Y", "%d %B %Y", "%Y-%m-%d")
# The first-added column's header in the 2024 layout, then in the 2018 one.
_DATE_ADDED_COLUMNS = ("Date added", "Date first added")


class ChangesTable(NamedTuple):
    """A parsed changes table: the usable rows, and the rows that could not be read."""

    changes: pd.DataFrame   # CHANGE_COLUMNS, in page order
    rejected: pd.DataFrame  # REJECTED_COLUMNS: position in the table, its cells, why


class ConstituentsPage(NamedTuple):
    """What one constituents page says: today's members, and the dated changes that led to them."""

    members: pd.DataFrame  # MEMBER_COLUMNS, page order
    changes: Optional[pd.DataFrame]  # CHANGE_COLUMNS; None when the page has no changes table


def read_page(html: str) -> ConstituentsPage:
    """Both tables of a page. A page without a changes table still gives its members."""
    members = parse_members(html)
    try:
        changes: Optional[pd.DataFrame] = parse_changes_table(html).changes
    except UniverseError:
        changes = None
    return ConstituentsPage(members, changes)


def fetch_constituents_page(url: Optional[str] = None, *, http: Optional[HttpGuard] = None, timeout: float = 30.0,
                            min_symbols: int = MIN_SP500_SYMBOLS) -> ConstituentsPage:
    """Download and read the page (``SP500_URL`` by default); errors as ``fetch_constituents``."""
    url = url or AdvancedBatchConfig().sp500_url
    html = fetch_page(url, http=http, timeout=timeout)
    try:
        page = read_page(html)
    except UniversePageRefused as exc:
        raise UniversePageRefused(f"{exc} (from {redact_http_url(url)})") from None
    check_size(page.members, url, min_symbols)
    return page


def clean_cik(value: object) -> str | None:
    """A CIK as digits without leading zeros (``'0001326801'`` -> ``'1326801'``), None if absent or not a CIK."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, float):
        # read_html turns a CIK column with a gap into floats: 1326801.0.
        value = int(value) if value.is_integer() else value
    text = str(value).strip()
    if not text.isdigit() or int(text) == 0:
        return None
    return str(int(text))


def parse_members(html: str) -> pd.DataFrame:
    """The constituents table with CIK: columns ``ticker, name, sector, cik, date_added``, page order.

    ``cik`` is a digit string (None when the page has none), ``date_added`` a datetime
    (NaT when blank or absent). Raises UniverseError like ``parse_constituents_html``.
    """
    table = _constituents_table(html)
    members = constituents_from_table(table)  # validates and cleans the tickers
    symbols = table[next(c for c in SYMBOL_COLUMNS if c in table.columns)].str.replace(_FOOTNOTE, "", regex=True)
    has_symbol = symbols.str.strip() != ""
    date_column = next((c for c in _DATE_ADDED_COLUMNS if c in table.columns), None)
    extra = pd.DataFrame({
        "ticker": symbols[has_symbol].map(clean_ticker),
        "cik": table["CIK"][has_symbol].map(clean_cik) if "CIK" in table.columns else None,
        "date_added": (pd.to_datetime(table[date_column][has_symbol], format="%Y-%m-%d", errors="coerce")
                       if date_column else pd.NaT),
    }).drop_duplicates("ticker")  # the first row of a ticker wins, as in parse_constituents_html
    members = members.merge(extra, on="ticker", how="left")
    members["cik"] = members["cik"].astype(object).where(members["cik"].notna(), None)
    return members[MEMBER_COLUMNS]


def parse_changes_table(html: str) -> ChangesTable:
    """The "Selected changes" table of the page, one row per table row, in page order.

    ``date`` is the date as written (the first session with the new composition);
    tickers are cleaned, and missing (NA) on a side without a ticker (add-only or
    remove-only rows); names and reason have footnote markers such as ``[9]``
    removed. A row with an unreadable date or ticker, or no ticker at all, goes to
    ``rejected`` with the reason: one vandalised row must not cost the other 350.
    Raises UniverseError only when the page has no changes table.
    """
    table = _flatten_header(_changes_table(html))
    rows, rejected = [], []
    for position, cells in enumerate(table.itertuples(index=False)):
        cells = [_FOOTNOTE.sub("", str(cell)).strip() for cell in cells]
        record = dict(zip(CHANGE_COLUMNS, cells))
        try:
            rows.append(_change_row(record))
        except ValueError as exc:
            rejected.append({"row": position, "cells": " | ".join(cells), "reason": str(exc)})
    changes = pd.DataFrame(rows, columns=CHANGE_COLUMNS)
    changes["date"] = pd.to_datetime(changes["date"])
    return ChangesTable(changes, pd.DataFrame(rejected, columns=REJECTED_COLUMNS))


def _change_row(record: dict) -> dict:
    if set(record.values()) <= _HEADER_WORDS:
        raise ValueError("a repeated header row")
    record["date"] = _parse_date(record["date"])
    for side in ("added", "removed"):
        raw = record[f"{side}_ticker"]
        try:
            record[f"{side}_ticker"] = clean_ticker(raw) if raw else None
        except InvalidTickerError as exc:
            raise ValueError(f"{side} ticker: {exc}") from None
        record[f"{side}_name"] = record[f"{side}_name"] or None
    if record["added_ticker"] is None and record["removed_ticker"] is None:
        raise ValueError("no ticker added or removed")
    record["reason"] = record["reason"] or None
    return record


def _parse_date(text: str) -> pd.Timestamp:
    for layout in _DATE_FORMATS:
        try:
            return pd.to_datetime(text, format=layout)
        except ValueError:
            continue
    raise ValueError(f"unreadable date {text!r}")


def _changes_table(html: str) -> pd.DataFrame:
    # Default NA parsing would turn a ticker such as "NA" into a missing value.
    options = {"flavor": "lxml", "keep_default_na": False}
    try:
        try:
            return pd.read_html(io.StringIO(html), attrs={"id": "changes"}, **options)[0]
        except ValueError:  # no table#changes: the pre-2019 layout
            candidates = pd.read_html(io.StringIO(html), **options)
    except (ValueError, etree.LxmlError) as exc:
        raise UniverseError(f"no tables in the page: {exc}") from exc
    for table in candidates:
        if _is_changes_header(_header_cells(table)):
            return table
    raise UniverseError("no changes table (with Date, Added and Removed columns) in the page")


def _header_cells(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(group, field) per column: from a two-level header, or from the leading header-only rows."""
    if isinstance(table.columns, pd.MultiIndex):
        pairs = [(str(top), str(sub)) for top, sub, *_ in table.columns]
    else:
        leading = table.head(2).astype(str).values.tolist()
        if len(leading) < 2 or not all(set(row) <= _HEADER_WORDS for row in leading):
            return []
        pairs = list(zip(*leading))
    # A cell spanning both header rows comes through once, with an empty group.
    return [(top or sub, sub) for top, sub in pairs]


def _is_changes_header(header: list[tuple[str, str]]) -> bool:
    return {"date", "added_ticker", "removed_ticker"} <= {_HEADER.get(cell) for cell in header}


def _flatten_header(table: pd.DataFrame) -> pd.DataFrame:
    header = _header_cells(table)
    if not _is_changes_header(header):
        raise UniverseError(f"the changes table has an unknown header: {header}")
    if not isinstance(table.columns, pd.MultiIndex):
        table = table.iloc[2:]  # the header rows that came through as data
    table = table.set_axis([_HEADER.get(cell, f"extra {i}") for i, cell in enumerate(header)], axis=1)
    for column in CHANGE_COLUMNS:  # a page without names or reasons still gives its tickers
        if column not in table.columns:
            table[column] = ""
    return table[CHANGE_COLUMNS]
