"""The S&P 500 members, from Wikipedia's "List of S&P 500 companies" page."""

from __future__ import annotations

import io
from http.client import responses as http_reasons
from typing import Optional

import pandas as pd
from lxml import etree

from CandleThrob import __version__
from CandleThrob.config import MIN_SP500_SYMBOLS, AdvancedBatchConfig, redact_http_url
from CandleThrob.errors import CandleThrobError, InvalidTickerError, UniverseError, UniversePageRefused
from CandleThrob.source.http import HttpGuard
from CandleThrob.universe.tickers import clean_ticker

# Wikimedia's policy asks automated clients to say who they are and how to reach them.
USER_AGENT = f"CandleThrob/{__version__} (+https://github.com/candlethrob; market-data ingestion)"
PAGE_MAX_BYTES = 16 * 2**20
_FOOTNOTE = r"\[[^\]]*\]"

# Header of the symbol column: 2024 layout first, then the 2018 one.
SYMBOL_COLUMNS = ("Symbol", "Ticker symbol")

def parse_constituents_html(html: str) -> pd.DataFrame:
    """The constituents table of a Wikipedia "List of S&P 500 companies" page.

    Returns columns ``ticker`` (cleaned), ``name``, ``sector``, one row per ticker in
    page order. Works on the 2024 layout (``table#constituents``, column ``Symbol``)
    and the 2018 one (first ``wikitable``, column ``Ticker symbol``). Raises
    UniverseError when no such table exists or a symbol is not a valid ticker.
    """
    return constituents_from_table(_constituents_table(html))


def constituents_from_table(table: pd.DataFrame) -> pd.DataFrame:
    """``parse_constituents_html`` on a table already read from the page."""
    symbol_column = next(c for c in SYMBOL_COLUMNS if c in table.columns)
    frame = pd.DataFrame({
        "ticker": table[symbol_column],
        # Absent columns become NA rather than failing: only the ticker is essential.
        "name": table.get("Security"),
        "sector": table.get("GICS Sector"),
    })
    # A footnote marker is page furniture: "MMM[1]" is MMM.
    frame["ticker"] = frame["ticker"].str.replace(_FOOTNOTE, "", regex=True).str.strip()
    blank = frame["ticker"] == ""
    # A row with nothing in it is a spacer; a company row without a symbol is a broken page.
    spacer = blank & frame[["name", "sector"]].fillna("").astype(str).apply(lambda c: c.str.strip() == "").all(axis=1)
    if (blank & ~spacer).any():
        raise UniversePageRefused(f"constituents table has {int((blank & ~spacer).sum())} company rows without a "
                                  "symbol")
    frame = frame[~blank]
    try:
        frame["ticker"] = frame["ticker"].map(clean_ticker)
    except InvalidTickerError as exc:
        # One junk cell means vandalism or a layout change; the caller falls back to the
        # stored universe instead of ingesting a universe we cannot vouch for.
        raise UniversePageRefused(f"constituents table has an invalid symbol: {exc}") from exc
    # A symbol listed twice counts once; padding a page with copies to pass the floor
    # still shows as removals, which UniverseStage limits.
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
        raise UniversePageRefused(f"no tables in the constituents page: {exc}") from exc
    for table in candidates:
        if any(column in table.columns for column in SYMBOL_COLUMNS):
            return table
    raise UniversePageRefused(f"no table with a {' or '.join(SYMBOL_COLUMNS)} column in the constituents page")


def fetch_page(url: str, *, http: Optional[HttpGuard] = None, timeout: float = 30.0) -> str:
    """The constituents page's HTML, fetched under a deadline and a size cap (16 MB: the
    real page is under 1 MB). Raises UniverseError on any failure."""
    guard = http or HttpGuard(timeout=timeout, max_bytes=PAGE_MAX_BYTES, headers={"User-Agent": USER_AGENT})
    try:
        answer = guard.request("GET", url)
    except CandleThrobError as exc:
        raise UniverseError(f"cannot fetch the S&P 500 constituents from {redact_http_url(url)}: {exc}") from None
    finally:
        if http is None:
            guard.close()
    if answer.status != 200:
        raise UniverseError(f"cannot fetch the S&P 500 constituents from {redact_http_url(url)}: "
                            f"{answer.status} {http_reasons.get(answer.status, 'HTTP error')}")
    # The pages are UTF-8 whatever the headers say; a byte that is not becomes U+FFFD, not a crash.
    return answer.text()


def fetch_constituents(url: Optional[str] = None, *, http: Optional[HttpGuard] = None, timeout: float = 30.0,
                       min_symbols: int = MIN_SP500_SYMBOLS) -> pd.DataFrame:
    """Download and parse the constituents page: columns ``ticker``, ``name``, ``sector``.

    ``url`` defaults to ``SP500_URL``, else Wikipedia. Raises UniverseError on HTTP or connection
    errors, a deadline or size overrun, an unparseable page, or fewer than
    ``min_symbols`` symbols.
    """
    url = url or AdvancedBatchConfig().sp500_url  # SP500_URL, else Wikipedia
    try:
        constituents = parse_constituents_html(fetch_page(url, http=http, timeout=timeout))
    except UniversePageRefused as exc:
        raise UniversePageRefused(f"{exc} (from {redact_http_url(url)})") from None
    check_size(constituents, url, min_symbols)
    return constituents


def check_size(constituents: pd.DataFrame, url: str, min_symbols: int) -> None:
    if len(constituents) < min_symbols:
        raise UniversePageRefused(
            f"only {len(constituents)} S&P 500 symbols found at {redact_http_url(url)}, at least {min_symbols} "
            "required; refusing to shrink the universe")


def get_sp500_tickers(url: Optional[str] = None, *, http: Optional[HttpGuard] = None, timeout: float = 30.0,
                      min_symbols: int = MIN_SP500_SYMBOLS) -> list[str]:
    """The S&P 500 symbols in Polygon's form, in page order (see fetch_constituents)."""
    return fetch_constituents(url, http=http, timeout=timeout, min_symbols=min_symbols)["ticker"].tolist()
