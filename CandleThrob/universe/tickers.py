"""Ticker symbols in Polygon's form, and the 20 ETFs every run keeps.

Tickers are kept in Polygon's form (``BRK.B``), whatever the source wrote
(``BRK-B`` on Yahoo, ``BRK/B`` elsewhere). Anything that does not look like a US
equity/ETF symbol is refused rather than rewritten: a guessed symbol would cost an
API call and could store bars under the wrong name.
"""

from __future__ import annotations

import re

from CandleThrob.errors import InvalidTickerError

ETF_TICKERS = (
    "SPY", "QQQ", "DIA", "IWM", "VTI", "TLT", "GLD", "XLF", "XLE", "XLK",
    "XLV", "ARKK", "VXX", "TQQQ", "SQQQ", "SOXL", "XLI", "XLY", "XLP", "SLV",
)

_ALLOWED = "1-5 letters, optionally followed by '.' and a 1-2 letter share class (e.g. MMM, BRK.B)"
_SYMBOL = re.compile(r"[A-Z]{1,5}(\.[A-Z]{1,2})?")
# Class-share separators in the wild: BRK-B (Yahoo), BRK/B (Bloomberg-style), and the
# Unicode hyphens and dashes that word processors and web pages substitute for '-'.
_SEPARATORS = re.compile("[-/\u2010\u2011\u2012\u2013\u2014\u2212]")
# Invisible characters that survive copy-paste from web pages and str.strip().
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"


def get_etf_tickers() -> list[str]:
    """The 20 ETFs, in their fixed order (a new list each call, safe to modify)."""
    return list(ETF_TICKERS)


def clean_ticker(raw: object) -> str:
    """Return ``raw`` in Polygon's form (``' brk-b '`` -> ``'BRK.B'``) or raise InvalidTickerError."""
    if not isinstance(raw, str):
        raise _invalid(raw, f"expected a string, got {type(raw).__name__}")
    text = raw.strip().strip(_INVISIBLE).strip()
    if not text:
        raise _invalid(raw, "empty")
    if ":" in text:
        raise _invalid(raw, "exchange prefixes are not allowed (write 'LMT', not 'NYSE:LMT')")
    if any(ch.isspace() for ch in text):
        raise _invalid(raw, "contains whitespace")
    if any(ch.isdigit() for ch in text):
        raise _invalid(raw, "contains digits")
    # Check for ASCII letters before upper-casing: 'ß'.upper() is the valid-looking 'SS'.
    symbol = _SEPARATORS.sub(".", text)
    strange = sorted(set(re.sub(r"[A-Za-z.]", "", symbol)))
    if strange:
        raise _invalid(raw, f"unexpected characters {''.join(strange)!r}")
    symbol = symbol.upper()
    if _SYMBOL.fullmatch(symbol):
        return symbol
    base, *share_class = symbol.split(".")
    if not base or len(share_class) > 1 or share_class == [""]:
        raise _invalid(raw, "misplaced share-class separator")
    raise _invalid(raw, "too long")


def parse_ticker_list(text: str) -> list[str]:
    """Tickers from a ``--tickers`` value (``"AAPL, brk-b MSFT"``): cleaned, deduped, in order."""
    entries = [entry for entry in re.split(r"[,\s]+", text or "") if entry]
    if not entries:
        raise _invalid(text, "no tickers given")
    # dict keeps first-seen order, so the user's order is the processing order.
    return list(dict.fromkeys(clean_ticker(entry) for entry in entries))


def _invalid(value: object, reason: str) -> InvalidTickerError:
    return InvalidTickerError(value, reason, _ALLOWED)
