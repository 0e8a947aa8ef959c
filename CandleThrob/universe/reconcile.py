"""The tool's own scrape history wins over the reconstruction on the days it covers.

An observation row ``(ticker, cik, first_seen, last_seen)`` says the tool saw the ticker
in every member list it scraped from ``first_seen`` to ``last_seen``. Each scrape is a
complete list, so on every observed day (any day inside some row's span) the members
are exactly the tickers observed that day: a ticker the walk has but the tool did not
see was not a member. Outside the observed days the walk stands.
"""

from __future__ import annotations

import itertools

import pandas as pd

from .frames import ONE_DAY, interval_frame
from .pages import clean_cik

OBSERVATION_COLUMNS = ["ticker", "cik", "first_seen", "last_seen"]
DISAGREEMENT_COLUMNS = ["kind", "ticker", "first_day", "last_day", "detail"]

# Stand-ins for an open end, so spans compare as plain dates; NaT again on the way out.
_EARLIEST, _LATEST = pd.Timestamp("1000-01-01"), pd.Timestamp("9999-01-01")
Span = tuple[pd.Timestamp, pd.Timestamp]


def reconcile(intervals: pd.DataFrame, observations: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Intervals where the observations win on the observed days, and where the two disagreed.

    Disagreements (``kind, ticker, first_day, last_day, detail``) are ``walk_only``
    (the walk has a member the tool did not see), ``observed_only`` (the reverse) and
    ``relabelled``: a walk stay with no known start, carrying the symbol the company
    has today back in time, that ends where the tool saw the same CIK under another
    symbol (FB until 2022-06-08, then META). The walk had no rename, so it projected
    META backwards; that stay takes the observed symbol, since META belonged to another
    security before 2022-06-09. CIKs are never carried into a piece whose CIK is
    unknown: that piece may be the gap between two filers.
    """
    seen = _observations(observations)
    stays = _records(intervals)
    observed = _union([(row["first_day"], row["last_day"]) for row in seen])
    # Each walk piece remembers its stay: two stays that touch (a symbol handed over) stay apart.
    walk = [{**stay, "first_day": lo, "last_day": hi, "origin": number}
            for number, stay in enumerate(stays)
            for lo, hi in _subtract((stay["first_day"], stay["last_day"]), observed)]
    disagreements = _disagreements(stays, seen, observed)
    walk = _relabel_projected(walk, seen, disagreements)
    for row in seen:  # an observed row takes name and sector from the walk's stay of that ticker and CIK
        match = next((stay for stay in stays if stay["ticker"] == row["ticker"] and stay["cik"] in (row["cik"], None)
                      and _overlap((stay["first_day"], stay["last_day"]), (row["first_day"], row["last_day"]))), None)
        if match is not None:
            row.update(name=match["name"], sector=match["sector"])
        row["origin"] = None
    merged = _merge_adjacent(walk + seen)
    frame = pd.DataFrame(disagreements, columns=DISAGREEMENT_COLUMNS)
    frame = frame.sort_values(["ticker", "first_day", "kind"], na_position="first", kind="stable")
    return interval_frame([_open_ends(row) for row in merged]), _open_ends_frame(frame.reset_index(drop=True))


def _observations(observations: pd.DataFrame) -> list[dict]:
    rows = []
    for ticker, cik, first_seen, last_seen in observations[OBSERVATION_COLUMNS].itertuples(index=False):
        first_day, last_day = pd.Timestamp(first_seen).normalize(), pd.Timestamp(last_seen).normalize()
        if last_day < first_day:
            raise ValueError(f"observation of {ticker}: last_seen {last_day:%Y-%m-%d} before first_seen "
                             f"{first_day:%Y-%m-%d}")
        rows.append({"ticker": ticker, "cik": clean_cik(cik), "name": None, "sector": None,
                     "first_day": first_day, "last_day": last_day})
    rows.sort(key=lambda row: (row["ticker"], row["first_day"]))
    for before, after in itertools.pairwise(rows):
        if before["ticker"] == after["ticker"] and after["first_day"] <= before["last_day"]:
            raise ValueError(f"observations of {before['ticker']} overlap on {after['first_day']:%Y-%m-%d}")
    return rows


def _records(intervals: pd.DataFrame) -> list[dict]:
    """Interval rows with open ends as the stand-in dates, and None for an unknown CIK."""
    rows = intervals.to_dict("records")
    for row in rows:
        row["cik"] = clean_cik(row["cik"])  # a missing CIK may come as NaN, which equals nothing
        row["first_day"] = _EARLIEST if pd.isna(row["first_day"]) else row["first_day"]
        row["last_day"] = _LATEST if pd.isna(row["last_day"]) else row["last_day"]
    return rows


def _open_ends(row: dict) -> dict:
    return {**row, "first_day": pd.NaT if row["first_day"] == _EARLIEST else row["first_day"],
            "last_day": pd.NaT if row["last_day"] == _LATEST else row["last_day"]}


def _open_ends_frame(frame: pd.DataFrame) -> pd.DataFrame:
    frame["first_day"] = pd.to_datetime(frame["first_day"].where(frame["first_day"] != _EARLIEST))
    frame["last_day"] = pd.to_datetime(frame["last_day"].where(frame["last_day"] != _LATEST))
    return frame


def _overlap(a: Span, b: Span) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _union(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1] + ONE_DAY:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _subtract(span: Span, holes: list[Span]) -> list[Span]:
    """The parts of ``span`` outside ``holes`` (sorted, disjoint)."""
    parts, lo = [], span[0]
    for hole_lo, hole_hi in holes:
        if hole_hi < lo or hole_lo > span[1]:
            continue
        if hole_lo > lo:
            parts.append((lo, hole_lo - ONE_DAY))
        lo = hole_hi + ONE_DAY
    if lo <= span[1]:
        parts.append((lo, span[1]))
    return parts


def _intersect(span: Span, spans: list[Span]) -> list[Span]:
    return [(max(span[0], lo), min(span[1], hi)) for lo, hi in spans if _overlap(span, (lo, hi))]


def _disagreements(stays: list[dict], seen: list[dict], observed: list[Span]) -> list[dict]:
    found = []
    for stay in stays:
        inside = _intersect((stay["first_day"], stay["last_day"]), observed)
        saw = _union([(row["first_day"], row["last_day"]) for row in seen if row["ticker"] == stay["ticker"]])
        for part in inside:
            for lo, hi in _subtract(part, saw):
                found.append({"kind": "walk_only", "ticker": stay["ticker"], "first_day": lo, "last_day": hi,
                              "detail": "a member in the walk, not in the tool's lists"})
    for row in seen:
        walked = _union([(stay["first_day"], stay["last_day"]) for stay in stays if stay["ticker"] == row["ticker"]])
        for lo, hi in _subtract((row["first_day"], row["last_day"]), walked):
            found.append({"kind": "observed_only", "ticker": row["ticker"], "first_day": lo, "last_day": hi,
                          "detail": "in the tool's lists, not a member in the walk"})
    return found


def _relabel_projected(walk: list[dict], seen: list[dict], disagreements: list[dict]) -> list[dict]:
    """Give a start-less walk piece the symbol its company was seen with right after it."""
    for piece in walk:
        if piece["first_day"] != _EARLIEST or piece["cik"] is None:
            continue
        successor = [row for row in seen
                     if row["cik"] == piece["cik"] and row["first_day"] == piece["last_day"] + ONE_DAY]
        if len(successor) != 1 or successor[0]["ticker"] == piece["ticker"]:
            continue
        symbol = successor[0]["ticker"]
        # The symbol may have had an earlier holder: start after its last day.
        before = [other["last_day"] for other in walk + seen
                  if other["ticker"] == symbol and other["last_day"] <= piece["last_day"]]
        start = max(before) + ONE_DAY if before else _EARLIEST
        disagreements.append({"kind": "relabelled", "ticker": symbol, "first_day": piece["first_day"],
                              "last_day": piece["last_day"],
                              "detail": f"the walk had {piece['ticker']} (CIK {piece['cik']}) with no start; "
                                        f"the tool saw that CIK as {symbol} next"})
        piece.update(ticker=symbol, first_day=start)
    # A piece the earlier holder covers entirely is dropped: none of its days were this company's symbol.
    return [piece for piece in walk if piece["first_day"] <= piece["last_day"]]


def _known(value: object, fallback: object) -> object:
    return value if value is not None and pd.notna(value) else fallback


def _merge_adjacent(rows: list[dict]) -> list[dict]:
    """Join touching pieces of one ticker and one CIK, unless they come from two different walk stays.

    Two walk stays that touch were kept apart by the walk (a symbol passed from one
    company to another that day), so they are not joined here either; a piece joined
    to an observed one keeps its stay's origin.
    """
    merged: list[dict] = []
    for row in sorted(rows, key=lambda r: (r["ticker"], r["first_day"])):
        last = merged[-1] if merged else None
        if (last is not None and last["ticker"] == row["ticker"] and last["cik"] == row["cik"]
                and last["last_day"] + ONE_DAY == row["first_day"]
                and (None in (last["origin"], row["origin"]) or last["origin"] == row["origin"])):
            last.update(last_day=row["last_day"], name=_known(last["name"], row["name"]),
                        sector=_known(last["sector"], row["sector"]), origin=_known(last["origin"], row["origin"]))
        else:
            merged.append(dict(row))
    return merged
