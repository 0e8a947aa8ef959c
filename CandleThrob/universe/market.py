"""``UNIVERSE=all``: every common stock and ETF in the grouped-daily answers.

A grouped answer already lists the whole US market (about 11,000 symbols), so
keeping all of it costs no call more than keeping the S&P 500. What is kept is
decided by the symbol's shape, because the answer carries no security type and
asking the vendor's ticker reference for 11,000 symbols would cost calls a day.

Symbols follow the CQS convention the vendor uses:

* kept: 1-5 capital letters (``AAPL``, ``SPY``), and class shares, a root and
  one class letter (``BRK.B``, ``BF.A``);
* left out: preferreds (``BACpB``: lower-case ``p``), warrants (``ABC.WS``,
  ``ABC.WS.A``), rights (``ABC.RT``, ``ABCr``), units (``ABC.U``), when-issued
  and when-distributed lines (``ABCw``, ``ABC.WD``), called issues (``.CL``),
  Nasdaq's fifth-letter warrants, rights and units (``ABCDW``, ``ABCDR``,
  ``ABCDU``), and the exchanges' test symbols (``ZVZZT``, ``NTEST``), which
  trade on every session and are no security at all.

The coverage of such a run is kept under the pseudo-ticker ``MARKET``: the
sessions whose whole answer was stored. A symbol of the market has no coverage
of its own, so a listing that appears joins, and one that stops trading simply
stops, without any call and without a gap. The S&P 500 members and the ETFs
keep their own coverage, gaps and point-in-time spans as in ``UNIVERSE=sp500``.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

# Symbols are upper case, so no ticker can be this one.
MARKET = "*market*"

_COMMON = re.compile(r"[A-Z]{1,5}|[A-Z]{1,4}\.[A-TV-Z]")  # a class letter, but .U is a unit
_NASDAQ_FIFTH = ("W", "R", "U")  # a 5-letter Nasdaq symbol ending so is a warrant, right or unit
# The exchanges' published test symbols (Nasdaq's Z?ZZT family, NYSE's ?TEST family).
TEST_SYMBOLS = frozenset({"ZVZZT", "ZWZZT", "ZXZZT", "ZBZZT", "ZJZZT", "ZAZZT", "ZXYZ.A",
                          "NTEST", "ATEST", "CTEST", "PTEST", "MTEST"})


def is_common(symbol: object) -> bool:
    """A common stock's or an ETF's symbol (see the module's doc for the rule)."""
    if not isinstance(symbol, str) or symbol in TEST_SYMBOLS or not _COMMON.fullmatch(symbol):
        return False
    return not (len(symbol) == 5 and symbol.endswith(_NASDAQ_FIFTH))


def common_mask(tickers: pd.Series) -> np.ndarray:
    """``is_common`` over a column of symbols (each distinct symbol is judged once)."""
    codes, names = pd.factorize(tickers, use_na_sentinel=True)
    kept = np.array([is_common(n) for n in names], dtype=bool)
    return np.append(kept, False)[codes]  # the sentinel -1 reads the appended False
