"""The point-in-time universe: membership built from a page, and the days each symbol is wanted.

``build_membership`` turns one believed constituents page (its member list with CIKs
and its changes table) and the tool's own sightings into stays, security ids and a
symbol history (``membership``, ``reconcile``, ``securities``). ``wanted_spans`` says,
per symbol, which days of a run's window its bars are wanted:

* a current member: the whole window, except the days before its symbol became this
  company's (META before 2022-06-09 was another security: never fetched as Meta's);
* a former member (a stay that ended): from the window's start, or from its first day
  as a member when ``FORMER_MEMBERS=membership`` (the default), through its last day in
  the index; with ``FORMER_MEMBERS=window``, through the window's end, unless its symbol
  passed to a new name or another company after it left.

Symbols with no stay (the ETFs, or tickers chosen with ``--tickers``) are not limited.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

import pandas as pd

from CandleThrob.planning.trading_calendar import DateLike, TradingCalendar

from .anomalies import ACTIONS, ANOMALY_COLUMNS
from .frames import INTERVAL_COLUMNS, ONE_DAY, day_of, interval_frame
from .membership import membership_intervals
from .reconcile import reconcile
from .securities import SymbolConflictError, assign_security_ids, symbol_history

MEMBERSHIP, WINDOW = "membership", "window"
Span = tuple[Optional[pd.Timestamp], Optional[pd.Timestamp]]  # None: open on that side

# What the reconciliation with the tool's own sightings did, in the anomalies' words.
RECONCILE_ACTIONS = {
    "walk_only": "the tool's own lists win: not a member on the days they cover",
    "observed_only": "the tool's own lists win: a member on the days it was seen",
    "relabelled": "the stay takes the symbol the tool saw; its later symbol belonged to another security",
}


@dataclass(frozen=True)
class Membership:
    intervals: pd.DataFrame  # INTERVAL_COLUMNS + security_id
    history: pd.DataFrame  # security_id, ticker, valid_from, valid_to
    anomalies: pd.DataFrame  # ANOMALY_COLUMNS + anomaly_id

    def former_tickers(self, current: set[str]) -> list[str]:
        """Symbols with a stay but not among ``current``: companies that left, or old names."""
        return sorted(set(self.intervals["ticker"]) - set(current))


def build_membership(members: pd.DataFrame, changes: Optional[pd.DataFrame], as_of: DateLike,
                     observations: pd.DataFrame, calendar: Optional[TradingCalendar] = None) -> Membership:
    """Stays, security ids, symbol history and anomalies from one page and the tool's sightings.

    ``members``: the page's list (``ticker``, ``cik``, ``name``, ``sector``); ``changes``: its
    changes table (None when the page has none: every member then has an unknown start);
    ``observations``: ``ticker, cik, first_seen, last_seen`` from the tool's own scrapes."""
    if (changes is None or changes.empty) and set(observations["ticker"]) <= set(members["ticker"]):
        return _members_only(members)  # nothing dated and nobody left: every member, open-ended
    changes = changes if changes is not None else pd.DataFrame(
        columns=["date", "added_ticker", "added_name", "removed_ticker", "removed_name", "reason"])
    walked, anomalies = membership_intervals(members, changes, as_of, calendar=calendar)
    walked, renames = _renames_by_name(walked, changes)
    intervals, disagreements = reconcile(walked, observations)
    intervals, unknown = _unknown_between_sightings(intervals, observations, changes)
    found = [anomalies.assign(action=anomalies["kind"].map(ACTIONS)), renames, unknown]
    if len(disagreements):
        found.append(pd.DataFrame({
            "kind": disagreements["kind"], "date": disagreements["first_day"], "ticker": disagreements["ticker"],
            "detail": disagreements["detail"], "action": disagreements["kind"].map(RECONCILE_ACTIONS)}))
    try:
        history = symbol_history(intervals)
    except SymbolConflictError as exc:
        # Two securities claim one symbol on one day: keep the stays, give up on continuity.
        found.append(pd.DataFrame([{"kind": "symbol_conflict", "date": pd.NaT, "ticker": None, "detail": str(exc),
                                    "action": "no symbol history: renames are not followed"}]))
        history = pd.DataFrame(columns=["security_id", "ticker", "valid_from", "valid_to"])
    table = pd.concat([f for f in found if len(f)], ignore_index=True) if any(len(f) for f in found) \
        else pd.DataFrame(columns=ANOMALY_COLUMNS)
    table = table[ANOMALY_COLUMNS].assign(anomaly_id=[_digest(row) for row in table.itertuples(index=False)])
    return Membership(assign_security_ids(intervals), history, table.drop_duplicates("anomaly_id"))


def _members_only(members: pd.DataFrame) -> Membership:
    """A page with no changes table, and sightings of nobody else: one open stay per member. What the
    walk and the reconciliation give in that case, without their cost on every run of a small page."""
    stays = members.drop_duplicates("ticker")
    intervals = interval_frame([{"ticker": t, "cik": c if isinstance(c, str) else None, "name": n, "sector": s,
                                 "first_day": pd.NaT, "last_day": pd.NaT}
                                for t, c, n, s in zip(stays["ticker"], stays["cik"], stays["name"], stays["sector"])])
    return Membership(assign_security_ids(intervals), symbol_history(intervals),
                      pd.DataFrame(columns=ANOMALY_COLUMNS + ["anomaly_id"]))


def _renames_by_name(intervals: pd.DataFrame, changes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A change that adds and removes one company (same name on both sides) is a rename: the old
    symbol's stay takes the new one's CIK, so both are one security (FB and META, both "Meta
    Platforms", 2022-06-09). Only stays that meet exactly at the change's date are joined."""
    found = []
    intervals = intervals.copy()
    same = changes[(changes["added_name"].fillna("").str.strip().str.casefold()
                    == changes["removed_name"].fillna("").str.strip().str.casefold())
                   & changes["added_name"].fillna("").str.strip().ne("")
                   & changes["added_ticker"].notna() & changes["removed_ticker"].notna()]
    for change in same.itertuples(index=False):
        day = day_of(change.date)
        new = intervals[(intervals["ticker"] == change.added_ticker) & (intervals["first_day"] == day)
                        & intervals["cik"].notna()]
        old = intervals[(intervals["ticker"] == change.removed_ticker) & (intervals["last_day"] == day - ONE_DAY)
                        & intervals["cik"].isna()]
        if len(new) == 1 and len(old) == 1:
            intervals.loc[old.index, "cik"] = new["cik"].iloc[0]
            if pd.isna(old["sector"].iloc[0]) or not old["sector"].iloc[0]:  # one company: one sector
                intervals.loc[old.index, "sector"] = new["sector"].iloc[0]
            found.append({"kind": "rename_by_name", "date": day, "ticker": change.removed_ticker,
                          "detail": f"{change.removed_ticker} became {change.added_ticker} on {day:%Y-%m-%d} "
                                    f"({change.added_name} on both sides of the change)",
                          "action": f"one security: {change.removed_ticker} takes CIK {new['cik'].iloc[0]}"})
    return intervals, pd.DataFrame(found, columns=ANOMALY_COLUMNS)


def _unknown_between_sightings(intervals: pd.DataFrame, observations: pd.DataFrame,
                               changes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tool saw a company (one CIK) as FB, then, after days it did not look, as META: which
    symbol it traded under on those days is not known, so they belong to no security (no CIK)
    rather than being guessed. A changes row that adds the new symbol inside the gap dates it."""
    seen = observations.dropna(subset=["cik"]).sort_values("first_seen")
    rows, found = intervals.to_dict("records"), []
    for cik, sightings in seen.groupby("cik"):
        sightings = sightings.to_dict("records")
        for older, newer in zip(sightings, sightings[1:]):
            gap_from, gap_to = older["last_seen"] + ONE_DAY, newer["first_seen"] - ONE_DAY
            added = changes[(changes["added_ticker"] == newer["ticker"])
                            & pd.to_datetime(changes["date"]).between(gap_from, newer["first_seen"])]
            if older["ticker"] == newer["ticker"] or gap_to < gap_from or len(added):
                continue
            rows = _cut_unknown(rows, newer["ticker"], cik, gap_from, gap_to)
            found.append({"kind": "rename_in_gap", "date": gap_from, "ticker": newer["ticker"],
                          "detail": f"CIK {cik} seen as {older['ticker']} until {older['last_seen']:%Y-%m-%d} and as "
                                    f"{newer['ticker']} from {newer['first_seen']:%Y-%m-%d}; not looked at between",
                          "action": "the days between belong to no security until the vendor's ticker events "
                                    "date the change"})
    return interval_frame(rows), pd.DataFrame(found, columns=ANOMALY_COLUMNS)


def _cut_unknown(rows: list[dict], ticker: str, cik: str, gap_from: pd.Timestamp,
                 gap_to: pd.Timestamp) -> list[dict]:
    """``ticker``'s stays of ``cik`` with the days up to ``gap_to`` made CIK-less (unknown)."""
    out = []
    for row in rows:
        first = row["first_day"]
        if row["ticker"] != ticker or row["cik"] != cik or (pd.notna(first) and first > gap_to) \
                or (pd.notna(row["last_day"]) and row["last_day"] < gap_from):
            out.append(row)
            continue
        out.append({**row, "cik": None, "last_day": gap_to})
        if pd.isna(row["last_day"]) or row["last_day"] > gap_to:
            out.append({**row, "first_day": gap_to + ONE_DAY})
    return out


def wanted_spans(membership: Membership, current: set[str], start: DateLike, end: DateLike,
                 policy: str = MEMBERSHIP) -> dict[str, list[Span]]:
    """Per symbol with a stay in ``[start, end]`` (or a current member): the days its bars are wanted."""
    start, end = day_of(start), day_of(end)
    handed_on = _handed_on(membership.history)
    renamed_from = _renamed_from(membership.history)
    spans: dict[str, list[Span]] = {}
    for stay in membership.intervals[INTERVAL_COLUMNS].to_dict("records"):
        ticker, first, last = stay["ticker"], stay["first_day"], stay["last_day"]
        if (pd.notna(first) and first > end) or (pd.notna(last) and last < start):
            continue
        if pd.isna(last) and ticker in current:
            lo = renamed_from.get(ticker)
            spans.setdefault(ticker, []).append((lo if lo is not None and lo > start else None, None))
            continue
        if ticker in current:
            continue  # an earlier stay of a current member: its current stay covers the window
        lo = first if policy == MEMBERSHIP and pd.notna(first) and first > start else None
        hi = last if policy == MEMBERSHIP or (ticker, last) in handed_on else None
        spans.setdefault(ticker, []).append((lo, hi))
    return {ticker: _merged(parts) for ticker, parts in spans.items()}


def by_security(history: pd.DataFrame, key: str = "security_id") -> list[dict[str, list]]:
    """``history``'s rows with a ``key``, grouped by it, each group in ``valid_from`` order (unknown
    first), as plain lists: the rules below walk each group pair by pair, and a per-group frame
    would cost more than all of that walking (~500 groups a run)."""
    ordered = history.sort_values("valid_from", na_position="first", kind="stable")
    ordered = ordered[ordered[key].notna()].sort_values(key, kind="stable")
    columns = {c: ordered[c].tolist() for c in ("security_id", "ticker", "valid_from", "valid_to")}
    keys, groups, start = columns[key], [], 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            groups.append({c: values[start:i] for c, values in columns.items()})
            start = i
    return groups


def _renamed_from(history: pd.DataFrame) -> dict[str, pd.Timestamp]:
    """Current symbols that a security took by a rename, and since when (META: 2022-06-09)."""
    found = {}
    for rows in by_security(history):
        tickers = rows["ticker"]
        if len({t for t in tickers if isinstance(t, str)}) < 2 or pd.notna(rows["valid_to"][-1]):
            continue
        ticker, first = tickers[-1], len(tickers) - 1
        while first > 0 and tickers[first - 1] == ticker:  # back to the start of its last block
            first -= 1
        if pd.notna(rows["valid_from"][first]):
            found[ticker] = rows["valid_from"][first]
    return found


def _handed_on(history: pd.DataFrame) -> set[tuple[str, pd.Timestamp]]:
    """(symbol, last day) of stays after which the symbol meant something else, or the company
    went on under another symbol: bars after that day are not this stay's."""
    handed = set()
    for key, other in (("security_id", "ticker"), ("ticker", "security_id")):
        for rows in by_security(history, key):
            ends, tickers, others = rows["valid_to"], rows["ticker"], rows[other]
            for i in range(len(ends) - 1):
                if others[i] != others[i + 1] and pd.notna(ends[i]):
                    handed.add((tickers[i], ends[i]))
    return handed


def _merged(parts: list[Span]) -> list[Span]:
    """Spans sorted and joined where they touch or overlap (a symbol that left and came back)."""
    lo_key = lambda span: span[0] if span[0] is not None else pd.Timestamp.min  # noqa: E731
    merged: list[Span] = []
    for lo, hi in sorted(parts, key=lo_key):
        if merged:
            last_lo, last_hi = merged[-1]
            if last_hi is None or lo is None or lo <= last_hi + ONE_DAY:
                merged[-1] = (last_lo, None if last_hi is None or hi is None else max(last_hi, hi))
                continue
        merged.append((lo, hi))
    return merged


def _digest(row: tuple) -> str:
    return hashlib.sha1("|".join("" if pd.isna(v) else str(v) for v in row).encode()).hexdigest()
