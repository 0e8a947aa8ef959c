"""The S&P 500 members, from Wikipedia's "List of S&P 500 companies" page."""

from __future__ import annotations

import io
import os
from typing import Optional, Union

import pandas as pd
import requests
from lxml import etree

from CandleThrob import __version__
from CandleThrob.config import DEFAULT_SP500_URL, MIN_SP500_SYMBOLS
from CandleThrob.errors import InvalidTickerError, UniverseError
from CandleThrob.universe.tickers import clean_ticker

# Wikimedia's policy asks automated clients to say who they are and how to reach them.
USER_AGENT = f"CandleThrob/{__version__} (+https://github.com/candlethrob; market-data ingestion)"

# Header of the symbol column: 2024 layout first, then the 2018 one.
SYMBOL_COLUMNS = ("Symbol", "Ticker symbol")

def parse_constituents_html(html: str) -> pd.DataFrame:
    """The constituents table of a Wikipedia "List of S&P 500 companies" page.

    Returns columns ``ticker`` (cleaned), ``name``, ``sector``, one row per ticker in
    page order. Works on the 2024 layout (``table#constituents``, column ``Symbol``)
    and the 2018 one (first ``wikitable``, column ``Ticker symbol``). Raises
    UniverseError when no such table exists or a symbol is not a valid ticker.
    """
    table = _constituents_table(html)
    symbol_column = next(c for c in SYMBOL_COLUMNS if c in table.columns)
    frame = pd.DataFrame({
        "ticker": table[symbol_column],
        # Absent columns become NA rather than failing: only the ticker is essential.
        "name": table.get("Security"),
        "sector": table.get("GICS Sector"),
    })
    # Footer or spacer rows have no symbol at all; they are layout, not members.
    frame = frame[frame["ticker"].str.strip() != ""]
    try:
        frame["ticker"] = frame["ticker"].map(clean_ticker)
    except InvalidTickerError as exc:
        # One junk cell means vandalism or a layout change; the caller falls back to the
        # stored universe instead of ingesting a universe we cannot vouch for.
        raise UniverseError(f"constituents table has an invalid symbol: {exc}") from exc
    return frame.drop_duplicates("ticker").reset_index(drop=True)


def _constituents_table(html: str) -> pd.DataFrame:
    options = dict(
        flavor="lxml",
        # Default NA parsing would turn a ticker such as "NA" into a missing value.
        keep_default_na=False,
        converters={column: str for column in SYMBOL_COLUMNS},
    )
    try:
        try:
            candidates = pd.read_html(io.StringIO(html), attrs={"id": "constituents"}, **options)
        except ValueError:  # no table#constituents: the pre-2019 layout
            candidates = pd.read_html(io.StringIO(html), **options)
    except (ValueError, etree.LxmlError) as exc:
        raise UniverseError(f"no tables in the constituents page: {exc}") from exc
    for table in candidates:
        if any(column in table.columns for column in SYMBOL_COLUMNS):
            return table
    raise UniverseError(f"no table with a {' or '.join(SYMBOL_COLUMNS)} column in the constituents page")


def fetch_constituents(url: Optional[str] = None, *, session: Optional[requests.Session] = None,
                       timeout: Union[float, tuple[float, float]] = (5, 30),
                       min_symbols: int = MIN_SP500_SYMBOLS) -> pd.DataFrame:
    """Download and parse the constituents page: columns ``ticker``, ``name``, ``sector``.

    ``url`` defaults to ``$SP500_URL``, else Wikipedia. Raises UniverseError on HTTP or
    connection errors, an unparseable page, or fewer than ``min_symbols`` symbols.
    """
    url = url or os.environ.get("SP500_URL") or DEFAULT_SP500_URL
    try:
        response = (session or requests).get(url, headers={"User-Agent": USER_AGENT}, timeout=timeout)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise UniverseError(f"cannot fetch the S&P 500 constituents from {url}: {exc}") from exc
    # Without a charset header requests assumes ISO-8859-1 for text/html, which garbles
    # names such as "Brown–Forman"; the pages are UTF-8.
    if "charset" not in response.headers.get("Content-Type", "").lower():
        response.encoding = "utf-8"
    try:
        constituents = parse_constituents_html(response.text)
    except UniverseError as exc:
        raise UniverseError(f"{exc} (from {url})") from exc
    if len(constituents) < min_symbols:
        raise UniverseError(
            f"only {len(constituents)} S&P 500 symbols found at {url}, at least {min_symbols} "
            "required; refusing to shrink the universe")
    return constituents


def get_sp500_tickers(url: Optional[str] = None, *, session: Optional[requests.Session] = None,
                      timeout: Union[float, tuple[float, float]] = (5, 30),
                      min_symbols: int = MIN_SP500_SYMBOLS) -> list[str]:
    """The S&P 500 symbols in Polygon's form, in page order (see fetch_constituents)."""
    return fetch_constituents(url, session=session, timeout=timeout,
                              min_symbols=min_symbols)["ticker"].tolist()
