"""The ticker universe: S&P 500 members from Wikipedia's constituents page, plus 20 ETFs.

Tickers are kept in Polygon's form (``BRK.B``), whatever the source wrote
(``BRK-B`` on Yahoo, ``BRK/B`` elsewhere). Anything that does not look like a US
equity/ETF symbol is refused rather than rewritten: a guessed symbol would cost an
API call and could store bars under the wrong name.
"""

from __future__ import annotations

import io
import os
import re
from typing import Optional, Union

import pandas as pd
import requests
from lxml import etree

from CandleThrob import __version__

ETF_TICKERS = (
    "SPY", "QQQ", "DIA", "IWM", "VTI", "TLT", "GLD", "XLF", "XLE", "XLK",
    "XLV", "ARKK", "VXX", "TQQQ", "SQQQ", "SOXL", "XLI", "XLY", "XLP", "SLV",
)

DEFAULT_SP500_URL = "https://en.wikipedia.org/wiki/List_of_S%26P_500_companies"
# Wikimedia's policy asks automated clients to say who they are and how to reach them.
USER_AGENT = f"CandleThrob/{__version__} (+https://github.com/candlethrob; market-data ingestion)"
# The index has ~503 symbols; a page with far fewer is a broken or vandalised page,
# and trusting it would silently drop members from every later run.
MIN_SP500_SYMBOLS = 450

# Header of the symbol column: 2024 layout first, then the 2018 one.
SYMBOL_COLUMNS = ("Symbol", "Ticker symbol")

_ALLOWED = "1-5 letters, optionally followed by '.' and a 1-2 letter share class (e.g. MMM, BRK.B)"
_SYMBOL = re.compile(r"[A-Z]{1,5}(\.[A-Z]{1,2})?")
# Class-share separators in the wild: BRK-B (Yahoo), BRK/B (Bloomberg-style), and the
# Unicode hyphens and dashes that word processors and web pages substitute for '-'.
_SEPARATORS = re.compile("[-/\u2010\u2011\u2012\u2013\u2014\u2212]")
# Invisible characters that survive copy-paste from web pages and str.strip().
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"


class InvalidTickerError(ValueError):
    """Not a valid ticker symbol."""

    def __init__(self, value: object, reason: str):
        super().__init__(f"{value!r} is not a valid ticker symbol: {reason}; allowed: {_ALLOWED}")
        self.value = value
        self.reason = reason


class UniverseError(Exception):
    """The S&P 500 constituents page cannot be used."""


def get_etf_tickers() -> list[str]:
    """The 20 ETFs, in their fixed order (a new list each call, safe to modify)."""
    return list(ETF_TICKERS)


def clean_ticker(raw: object) -> str:
    """Return ``raw`` in Polygon's form (``' brk-b '`` -> ``'BRK.B'``) or raise InvalidTickerError."""
    if not isinstance(raw, str):
        raise InvalidTickerError(raw, f"expected a string, got {type(raw).__name__}")
    text = raw.strip().strip(_INVISIBLE).strip()
    if not text:
        raise InvalidTickerError(raw, "empty")
    if ":" in text:
        raise InvalidTickerError(raw, "exchange prefixes are not allowed (write 'LMT', not 'NYSE:LMT')")
    if any(ch.isspace() for ch in text):
        raise InvalidTickerError(raw, "contains whitespace")
    if any(ch.isdigit() for ch in text):
        raise InvalidTickerError(raw, "contains digits")
    # Check for ASCII letters before upper-casing: 'ß'.upper() is the valid-looking 'SS'.
    symbol = _SEPARATORS.sub(".", text)
    strange = sorted(set(re.sub(r"[A-Za-z.]", "", symbol)))
    if strange:
        raise InvalidTickerError(raw, f"unexpected characters {''.join(strange)!r}")
    symbol = symbol.upper()
    if _SYMBOL.fullmatch(symbol):
        return symbol
    base, *share_class = symbol.split(".")
    if not base or len(share_class) > 1 or share_class == [""]:
        raise InvalidTickerError(raw, "misplaced share-class separator")
    raise InvalidTickerError(raw, "too long")


def parse_ticker_list(text: str) -> list[str]:
    """Tickers from a ``--tickers`` value (``"AAPL, brk-b MSFT"``): cleaned, deduped, in order."""
    entries = [entry for entry in re.split(r"[,\s]+", text or "") if entry]
    if not entries:
        raise InvalidTickerError(text, "no tickers given")
    # dict keeps first-seen order, so the user's order is the processing order.
    return list(dict.fromkeys(clean_ticker(entry) for entry in entries))


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
