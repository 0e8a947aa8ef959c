"""The quality gate: which fetched bars may be stored, and how good each ticker's data is.

Row rules
---------
Each rule rejects single bars. A rejected bar carries *all* its reasons, as
stable codes (``REASONS``, joined with ``;``) and a human ``detail``:

====================  ========================================================
missing_value         open, high, low, close, volume or the date is absent
                      (a bars frame already holds junk the source sent as NaN,
                      and a timestamp outside 1970..2100 as no date)
non_finite_value      a value is infinite (``1e999`` in JSON)
value_out_of_range    a price above 10,000,000 or a volume above 10**13: no
                      listed share trades there, a vendor's junk does
vwap_out_of_range     vwap present but not above 0, or outside [low, high]
transactions_out_of_  the trade count is negative, not whole, above the volume
range                 (each trade is at least one share) or beyond 2**53
non_positive_price    a price <= 0
negative_volume       volume < 0 (zero volume alone is fine: halts have it)
high_below_low        high < low
open_outside_range    open outside [low, high]
close_outside_range   close outside [low, high]
not_a_session         the date is not a session of the calendar
after_end             the date is after the run's ``end``
duplicate_date        the same (ticker, trade_date) more than once: every copy
                      is rejected, since nothing tells which one is right
====================  ========================================================

The price comparisons allow a relative ``price_tolerance`` for the vendor's
rounding (``high < low * (1 - tol)``, ``open > high * (1 + tol)``, ...).

Ticker score
------------
Per ticker in the frame, with no rounding::

    validity     = accepted bars / fetched bars
    completeness = present sessions / expected sessions
    score        = validity * completeness                  (in [0, 1])

*Expected sessions* are the calendar sessions from the ticker's first to its
last accepted bar, so a ticker listed (or delisted) inside the run's range is
not incomplete. A session is *present* when the frame holds any bar of the
ticker on it; the *missing sessions* are the ones the source sent nothing for.
A bar that was sent but rejected therefore lowers validity only, not both.
With no fetched bar, validity is 1; with no accepted bar, completeness is 1.
So a clean complete ticker scores 1, a ticker with nothing fetched scores 1
and has nothing to write, and one whose every bar is rejected scores 0.

A bar asked again for a cell already on record as a gap (``retried``) that is
rejected again is left out of ``fetched``: a known hole in the vendor's data
is already counted, and must not quarantine the fresh sessions beside it.

A ticker is ``ok`` when ``score >= min_score``. ``quarantine_low_scores``
moves the accepted bars of the others to the rejected ones with reason
``low_quality_score``: a ticker below the minimum writes nothing.

Warnings
--------
Kept bars that deserve a look; they do not lower the score. Each accepted
close is compared with the previous accepted close of its ticker (for the
first bar: with ``previous_close`` from storage, when that is dated before it),
as ``ratio = close / previous close``, on days with no split on record:

* ``big_moves``: ``abs(ratio - 1) > big_move`` (default: beyond +-50%);
* ``split_like_moves``: the ratio is within 3% (relative) of a common split's
  ``split_from / split_to`` (see ``split_like_ratio``): a possible split the
  vendor did not report or the data does not reflect.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Collection, Iterable, Mapping, Optional

import numpy as np
import pandas as pd

from CandleThrob.bars import BAR_COLUMNS, PRICE_COLUMNS
from CandleThrob.planning.trading_calendar import DateLike, TradingCalendar

VALUE_COLUMNS = PRICE_COLUMNS + ("volume",)
REASONS = ("missing_value", "non_finite_value", "value_out_of_range", "non_positive_price", "negative_volume",
           "high_below_low", "open_outside_range", "close_outside_range", "vwap_out_of_range",
           "transactions_out_of_range", "not_a_session", "after_end", "duplicate_date")
MAX_PRICE = 1e7  # Berkshire's A shares trade below 1e6
MAX_VOLUME = 1e13
MAX_TRANSACTIONS = 2.0 ** 53  # beyond it a count is not even a whole number as a float
LOW_QUALITY_SCORE = "low_quality_score"

# (split_from, split_to) as Polygon records them: a 2-for-1 split is (1, 2),
# and it multiplies the price by split_from / split_to.
_SPLIT_FACTORS = (2, 3, 4, 5, 7, 8, 10, 20)
SPLIT_RATIOS = (tuple((1, n) for n in _SPLIT_FACTORS) + ((2, 3), (3, 2))
                + tuple((n, 1) for n in _SPLIT_FACTORS))
SPLIT_TOLERANCE = 0.03
_PRICE_FACTORS = np.array([split_from / split_to for split_from, split_to in SPLIT_RATIOS])


def _split_index(ratio: np.ndarray, tol: float) -> np.ndarray:
    """Index into SPLIT_RATIOS of the split each price ratio matches, or -1."""
    ratio = np.asarray(ratio, dtype="float64")
    index = np.full(len(ratio), -1)
    # Only ratios beyond the factors nearest 1 can match, and most days are not.
    near = ((ratio <= _PRICE_FACTORS[_PRICE_FACTORS < 1].max() * (1 + tol))
            | (ratio >= _PRICE_FACTORS[_PRICE_FACTORS > 1].min() * (1 - tol)))
    off = np.abs(ratio[near, None] / _PRICE_FACTORS - 1)
    # The factors are far enough apart that at most one lies within a sane tol;
    # argmin still picks the nearest if a caller passes a huge one.
    index[near] = np.where(off.min(axis=1, initial=np.inf) <= tol, off.argmin(axis=1), -1)
    return index


def split_like_ratio(prev_close: float, close: float,
                     tol: float = SPLIT_TOLERANCE) -> Optional[tuple[int, int]]:
    """``(split_from, split_to)`` of the common split whose price factor is within
    ``tol`` (relative) of ``close / prev_close``; None when there is none."""
    if not (prev_close > 0 and close > 0):  # also False for NaN
        return None
    index = _split_index(np.array([close / prev_close]), tol)[0]
    return SPLIT_RATIOS[index] if index >= 0 else None


def _day(stamp: object) -> str:
    return "no date" if pd.isna(stamp) else f"{stamp:%Y-%m-%d}"


@dataclass
class TickerQuality:
    """One ticker's verdict; the module docstring defines the score."""

    ticker: str
    fetched: int
    accepted: int
    expected_sessions: int
    missing_sessions: list[pd.Timestamp]
    first_date: Optional[pd.Timestamp]  # first and last accepted bar
    last_date: Optional[pd.Timestamp]
    reasons_count: dict[str, int]
    big_moves: list[tuple[pd.Timestamp, float]]  # (date, close / previous close)
    split_like_moves: list[tuple[pd.Timestamp, int, int]]  # (date, split_from, split_to)
    min_score: float
    rejected: int = field(init=False)
    validity: float = field(init=False)
    completeness: float = field(init=False)
    score: float = field(init=False)
    ok: bool = field(init=False)

    def __post_init__(self) -> None:
        self.rejected = self.fetched - self.accepted
        self.validity = self.accepted / self.fetched if self.fetched else 1.0
        present = self.expected_sessions - len(self.missing_sessions)
        self.completeness = present / self.expected_sessions if self.expected_sessions else 1.0
        self.score = self.validity * self.completeness
        self.ok = self.score >= self.min_score


@dataclass
class QualityResult:
    """``accepted``: the bars passing every row rule, in input order, input index kept.
    ``rejected``: the others, with ``reasons`` (codes joined by ';') and ``detail``."""

    accepted: pd.DataFrame
    rejected: pd.DataFrame
    tickers: dict[str, TickerQuality]

    def quarantine_low_scores(self) -> list[str]:
        """Move the accepted bars of every ticker that is not ok to ``rejected``
        (reason ``low_quality_score``) and return those tickers, sorted.

        Bars rejected before keep their own reasons. Calling it again moves nothing."""
        low = sorted(t for t, quality in self.tickers.items() if not quality.ok)
        moving = self.accepted["ticker"].isin(low)
        if moving.any():
            moved = self.accepted[moving]
            detail = {t: f"{LOW_QUALITY_SCORE} (ticker score {self.tickers[t].score!r} "
                         f"< minimum {self.tickers[t].min_score!r})" for t in low}
            moved = moved.assign(reasons=LOW_QUALITY_SCORE,
                                 detail=moved["ticker"].map(detail).astype(object))
            self.rejected = pd.concat([self.rejected, moved])
            self.accepted = self.accepted[~moving]
        return low


class DataQualityValidator:
    """Row rules, ticker scores and warnings for bars frames (see the module docstring)."""

    def __init__(self, calendar: Optional[TradingCalendar] = None, min_score: float = 0.8,
                 price_tolerance: float = 0.0005, big_move: float = 0.5):
        self.calendar = calendar if calendar is not None else TradingCalendar()
        self.min_score = min_score
        self.price_tolerance = price_tolerance
        self.big_move = big_move

    def validate_ticker_data(self, df: pd.DataFrame) -> tuple[bool, float, list[str]]:
        """The seed's API for one ticker's bars: ``(score >= min_score, score, issues)``.

        ``df`` is a bars frame, or the seed's shape (capitalised OHLCV columns,
        dates in a ``date`` column or a DatetimeIndex). ``issues`` holds one
        human line per rejected reason, run of missing sessions and warning,
        in date order."""
        bars = _as_bars(df)
        if bars["ticker"].nunique() > 1:
            raise ValueError("validate_ticker_data takes one ticker's bars; use check() for more")
        result = self.check(bars)
        if not result.tickers:
            return True, 1.0, []
        (quality,) = result.tickers.values()
        rejected = result.rejected
        issues = [f"{_day(day)}: {part}" for day, detail in zip(rejected["trade_date"], rejected["detail"])
                  for part in detail.split("; ")]
        issues += [f"{_day(run[0])}: missing_session "
                   f"({len(run)} session(s) without a bar, to {_day(run[-1])})"
                   for run in self._session_runs(quality.missing_sessions)]
        issues += [f"{_day(day)}: big_move (close/previous close {ratio!r})"
                   for day, ratio in quality.big_moves]
        issues += [f"{_day(day)}: split_like_move (as a {split_to}-for-{split_from} split)"
                   for day, split_from, split_to in quality.split_like_moves]
        # By date only: a bar's reasons keep the order of REASONS.
        return quality.ok, quality.score, sorted(issues, key=lambda line: line.split(":")[0])

    def check(self, bars: pd.DataFrame, *, end: Optional[DateLike] = None,
              splits: Optional[Mapping[str, Iterable[DateLike]]] = None,
              previous_close: Optional[Mapping[str, tuple[DateLike, float]]] = None,
              gaps: bool = True, retried: Collection = frozenset()) -> QualityResult:
        """Apply the row rules to a multi-ticker bars frame and score each ticker.

        ``splits``: ticker -> dates of the splits on record (their moves are expected).
        ``previous_close``: ticker -> (date, close) of the last stored bar, the
        reference for the first new bar of an incremental run.
        ``gaps=False`` when the frame is not each ticker's own series (grouped
        days, one answer per session): a ticker absent from one of them is a
        fact about that day, not a hole in an answer, so completeness is 1.
        ``retried``: (ticker, session) cells asked again after a bad answer."""
        end = pd.Timestamp(end).normalize() if end is not None else None
        dates = bars["trade_date"].dropna()
        sessions = (self.calendar.sessions_in_range(dates.min(), dates.max()) if len(dates)
                    else pd.DatetimeIndex([]))
        flags = self._row_flags(bars, end, sessions)
        bad = flags.any(axis=1)
        reasons, detail = self._explain(bars[bad], flags[bad], end)
        rejected = bars[bad].assign(reasons=reasons, detail=detail)
        tickers = self._ticker_quality(bars, flags, ~bad, sessions, splits or {}, previous_close or {}, gaps,
                                       _known_bad(rejected, retried))
        return QualityResult(accepted=bars[~bad], rejected=rejected, tickers=tickers)

    def _row_flags(self, bars: pd.DataFrame, end: Optional[pd.Timestamp],
                   sessions: pd.DatetimeIndex) -> pd.DataFrame:
        """One boolean column per reason code."""
        low_bound = bars["low"] * (1 - self.price_tolerance)
        high_bound = bars["high"] * (1 + self.price_tolerance)
        date = bars["trade_date"]
        dated = date.notna()
        values = bars[list(VALUE_COLUMNS)]
        vwap, transactions = bars["vwap"], bars["transactions"]
        every = bars[list(VALUE_COLUMNS) + ["vwap", "transactions"]]
        flags = {
            "missing_value": values.isna().any(axis=1) | ~dated,
            "non_finite_value": np.isinf(every.to_numpy(dtype="float64")).any(axis=1),
            "value_out_of_range": (bars[list(PRICE_COLUMNS)] > MAX_PRICE).any(axis=1) | (bars["volume"] > MAX_VOLUME),
            "non_positive_price": (bars[list(PRICE_COLUMNS)] <= 0).any(axis=1),
            "negative_volume": bars["volume"] < 0,
            "high_below_low": bars["high"] < low_bound,
            "open_outside_range": (bars["open"] < low_bound) | (bars["open"] > high_bound),
            "close_outside_range": (bars["close"] < low_bound) | (bars["close"] > high_bound),
            "vwap_out_of_range": (vwap <= 0) | (vwap < low_bound) | (vwap > high_bound),
            "transactions_out_of_range": (transactions < 0) | (transactions > MAX_TRANSACTIONS)
            | (transactions.notna() & (transactions != np.floor(transactions))) | (transactions > bars["volume"]),
            "not_a_session": dated & ~date.isin(sessions),
            "after_end": date > end if end is not None else False,
            # NaT rows already fail missing_value; they are not copies of each other.
            "duplicate_date": dated & bars.duplicated(["ticker", "trade_date"], keep=False),
        }
        return pd.DataFrame(flags, index=bars.index, columns=list(REASONS))

    def _explain(self, rows: pd.DataFrame, flags: pd.DataFrame,
                 end: Optional[pd.Timestamp]) -> tuple[pd.Series, pd.Series]:
        """``reasons`` and ``detail`` for the rejected ``rows``."""
        if rows.empty:
            return pd.Series(dtype=object), pd.Series(dtype=object)
        text = {column: rows[column].astype(str).astype(object) for column in VALUE_COLUMNS}
        span = " outside low " + text["low"] + " .. high " + text["high"]
        copies = rows.groupby(["ticker", "trade_date"])["ticker"].transform("size")
        explanation = {
            "missing_value": "missing " + _names(rows[list(VALUE_COLUMNS) + ["trade_date"]].isna()),
            "non_finite_value": _names(rows[list(VALUE_COLUMNS) + ["vwap", "transactions"]].apply(np.isinf))
            + " infinite",
            "value_out_of_range": _names(pd.concat([rows[list(PRICE_COLUMNS)] > MAX_PRICE,
                                                    rows[["volume"]] > MAX_VOLUME], axis=1))
            + f" beyond a price of {MAX_PRICE:,.0f} or a volume of {MAX_VOLUME:,.0f}",
            "vwap_out_of_range": "vwap " + rows["vwap"].astype(str).astype(object)
            + " not above 0 and within low .. high",
            "transactions_out_of_range": "transactions " + rows["transactions"].astype(str).astype(object)
            + " not a whole count from 0 to the volume",
            "non_positive_price": _names(rows[list(PRICE_COLUMNS)] <= 0) + " <= 0",
            "negative_volume": "volume " + text["volume"],
            "high_below_low": "high " + text["high"] + " < low " + text["low"],
            "open_outside_range": "open " + text["open"] + span,
            "close_outside_range": "close " + text["close"] + span,
            "not_a_session": f"not a {self.calendar.name} session",
            "after_end": f"after the run's end {_day(end)}",
            "duplicate_date": copies.astype(str).astype(object) + " bars for this ticker and date",
        }
        parts = pd.DataFrame({code: pd.Series(f"{code} (", index=rows.index, dtype=object)
                              + explanation[code] + ")" for code in REASONS})
        parts = parts.where(flags, "")
        # Object-dtype dot product concatenates the names of the True columns.
        reasons = flags.dot(pd.Index([code + ";" for code in REASONS])).str[:-1]
        detail = parts.where(parts.eq(""), parts + "; ").sum(axis=1).str[:-2]
        return reasons, detail

    def _ticker_quality(self, bars: pd.DataFrame, flags: pd.DataFrame, good: pd.Series,
                        sessions: pd.DatetimeIndex, splits: Mapping, previous_close: Mapping,
                        gaps: bool = True, known_bad: Optional[Mapping[str, int]] = None
                        ) -> dict[str, TickerQuality]:
        accepted = bars[good]
        span = accepted.groupby("ticker")["trade_date"].agg(["min", "max", "size"])
        span["expected"] = (sessions.searchsorted(span["max"], side="right")
                            - sessions.searchsorted(span["min"]))
        missing = self._missing(bars, span, sessions) if gaps else {}
        # Reasons counted over the rejected rows only: most batches have none.
        counts = flags[~good].groupby(bars.loc[~good, "ticker"]).sum().to_dict("index")
        big_moves, split_like = self._moves(accepted, splits, previous_close)

        # Plain dicts: per-ticker .at lookups would cost more than all the rules.
        spans = span.to_dict("index")
        nothing_accepted = {"min": None, "max": None, "size": 0, "expected": 0}
        tickers = {}
        for ticker, fetched in bars["ticker"].value_counts(sort=False).sort_index().items():
            ticker_span = spans.get(ticker, nothing_accepted)
            tickers[ticker] = TickerQuality(
                ticker=ticker, fetched=int(fetched) - (known_bad or {}).get(ticker, 0),
                accepted=int(ticker_span["size"]),
                expected_sessions=int(ticker_span["expected"]),
                missing_sessions=missing.get(ticker, []),
                first_date=ticker_span["min"], last_date=ticker_span["max"],
                reasons_count={code: int(n) for code, n in counts.get(ticker, {}).items() if n},
                big_moves=big_moves.get(ticker, []), split_like_moves=split_like.get(ticker, []),
                min_score=self.min_score)
        return tickers

    @staticmethod
    def _missing(bars: pd.DataFrame, span: pd.DataFrame, sessions: pd.DatetimeIndex) -> dict[str, list]:
        """Per ticker, the sessions inside its span without any bar sent, accepted or not."""
        sent = bars.loc[bars["trade_date"].isin(sessions), ["ticker", "trade_date"]].drop_duplicates()
        sent = sent.join(span[["min", "max"]], on="ticker")
        return _gaps(sent[sent["trade_date"].between(sent["min"], sent["max"])], sessions)

    def _moves(self, accepted: pd.DataFrame, splits: Mapping, previous_close: Mapping):
        """Per ticker: big moves and split-like moves on days with no split on record."""
        bars = accepted[["ticker", "trade_date", "close"]].sort_values(["ticker", "trade_date"])
        first = bars["ticker"].ne(bars["ticker"].shift())
        previous = bars["close"].shift().mask(first)
        if previous_close:
            stored = pd.DataFrame([(t, pd.Timestamp(day), close)
                                   for t, (day, close) in previous_close.items()],
                                  columns=["ticker", "day", "close"]).set_index("ticker")
            use_stored = first & (bars["ticker"].map(stored["day"]) < bars["trade_date"])
            previous = previous.mask(use_stored, bars["ticker"].map(stored["close"]))
        ratio = (bars["close"] / previous).to_numpy()
        big = np.abs(ratio - 1) > self.big_move
        split = _split_index(ratio, SPLIT_TOLERANCE)
        flagged = bars.assign(ratio=ratio, big=big, split=split)[big | (split >= 0)]
        if splits:
            recorded = [(t, pd.Timestamp(day).normalize()) for t, days in splits.items() for day in days]
            on_record = pd.MultiIndex.from_frame(flagged[["ticker", "trade_date"]]).isin(recorded)
            flagged = flagged[~on_record]

        big_moves, split_like = defaultdict(list), defaultdict(list)
        for ticker, day, r, is_big, s in zip(flagged["ticker"], flagged["trade_date"], flagged["ratio"],
                                            flagged["big"], flagged["split"]):
            if is_big:
                big_moves[ticker].append((day, float(r)))
            if s >= 0:
                split_like[ticker].append((day, *SPLIT_RATIOS[s]))
        return big_moves, split_like

    def _session_runs(self, days: list[pd.Timestamp]) -> list[list[pd.Timestamp]]:
        """``days`` (sorted sessions) cut into runs of consecutive sessions."""
        if not days:
            return []
        position = self.calendar.sessions_in_range(days[0], days[-1]).get_indexer(days)
        cuts = np.flatnonzero(np.diff(position) != 1) + 1
        return [list(run) for run in np.split(np.array(days, dtype=object), cuts)]


def _known_bad(rejected: pd.DataFrame, retried: Collection) -> dict[str, int]:
    """Per ticker: rejected bars on cells that were asked again because of an earlier bad answer."""
    if not retried or rejected.empty:
        return {}
    cells = pd.MultiIndex.from_arrays([rejected["ticker"], rejected["trade_date"].dt.normalize()])
    again = rejected["ticker"][cells.isin(list(retried))]
    return again.value_counts().to_dict()


def _gaps(present: pd.DataFrame, sessions: pd.DatetimeIndex) -> dict[str, list[pd.Timestamp]]:
    """Per ticker, the sessions between its ``present`` (ticker, trade_date) rows
    that have no row, found without a loop over tickers."""
    present = present.assign(position=sessions.searchsorted(present["trade_date"]))
    present = present.sort_values(["ticker", "position"])
    follows = present["ticker"].eq(present["ticker"].shift())
    skipped = (present["position"].diff() - 1).where(follows, 0)
    after_hole = present[skipped > 0]
    if after_hole.empty:
        return {}
    lengths = skipped[skipped > 0].to_numpy(dtype="int64")
    # Each hole is the run of positions just before the row that follows it.
    starts = np.repeat(after_hole["position"].to_numpy() - lengths, lengths)
    steps = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    owners = np.repeat(after_hole["ticker"].to_numpy(), lengths)
    cuts = np.flatnonzero(owners[1:] != owners[:-1]) + 1
    return {owner: list(sessions[chunk])
            for owner, chunk in zip(owners[np.r_[0, cuts]], np.split(starts + steps, cuts))}


def _names(mask: pd.DataFrame) -> pd.Series:
    """Per row, the names of the columns that are True, comma-separated."""
    return mask.dot(pd.Index([column + ", " for column in mask.columns])).str[:-2]


def _as_bars(df: pd.DataFrame) -> pd.DataFrame:
    """A bars frame from a bars frame or from the seed's shape: any-case OHLCV
    columns, the date in a ``date`` column or a DatetimeIndex, maybe no ticker."""
    frame = df.rename(columns=str.lower)
    if "trade_date" not in frame:
        if "date" in frame:
            frame = frame.assign(trade_date=frame["date"])
        elif isinstance(frame.index, pd.DatetimeIndex):
            frame = frame.assign(trade_date=frame.index)
        else:
            raise ValueError("bars need a trade_date or date column or a DatetimeIndex")
    frame = frame.reset_index(drop=True)
    bars = pd.DataFrame({"ticker": frame["ticker"] if "ticker" in frame else "",
                         "trade_date": pd.to_datetime(frame["trade_date"]).astype("datetime64[ns]")})
    for column in BAR_COLUMNS[2:]:
        bars[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else np.nan
    return bars
