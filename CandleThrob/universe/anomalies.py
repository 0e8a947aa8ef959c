"""The inconsistencies met while building membership intervals, and what was done with each.

A table ``kind, date, ticker, detail, action``, one row per inconsistency. The kinds,
and why the walk treats each one as it does:

``duplicate``
    The same ticker added (or removed) twice on one date. The repeat is skipped.
``future_date``
    A change after the current list's date: the list cannot reflect it yet. Skipped.
``before_index``
    A change before 1957-03-04, when the index began: a typo. Skipped.
``not_a_session``
    A weekend or an NYSE holiday. Applied as written: the pages give the effective
    date, and a Saturday means "before the next open", which calendar days keep right.
``unbalanced_date``
    More additions than removals on a date, or the reverse: spin-offs (SOLV, GEV) or a
    replacement announced over two dates. The index keeps about 500 names, so this is
    worth a look, but each event is applied.
``added_while_member``
    An addition of a ticker that was a member already (added earlier, no removal
    between). The stay starts at the later addition and the earlier one is skipped:
    on the pages every case is a symbol that passed to another company after its
    first holder renamed (CCI: Countrywide 1997, Crown Castle 2012; UA; IR), so an
    earlier start would give the second holder the first one's days.
``removed_non_member``
    A removal of a ticker that had been removed already (no addition between),
    typically a symbol reused by another company (AN: Amoco 1998, AutoNation 2017).
    Applied: a removal proves membership the day before, so the later stay is kept,
    starting on the earlier removal date (a lower bound; its addition is missing).
``missing_addition``
    A ticker of the current list whose last change is a removal (T: AT&T Corp left in
    2005, SBC took the symbol). Applied the same way: the current stay starts on the
    removal date at the earliest.
``not_in_current_list``
    A ticker added and never removed, yet absent from the current list: a rename or a
    removal the table lacks. Skipped, since the stay's end is unknown; a member list
    may later place it (see ``renamed_unrecorded``).
``cik_change``
    One stay of a ticker seen with two CIKs in the member lists (a new holding company,
    or another company taking the symbol: FOX in 2019). Split: each CIK up to its last
    sighting, and no CIK between two sightings that disagree.
``renamed_unrecorded``
    An earlier list has a ticker the walk lacks on that day, and the walk has, under
    another ticker, the same CIK (FB on 2018-02-01, META in the walk). Split: the
    listed ticker up to the list date, the walk's ticker from its next sighting, and no
    CIK between, where the symbol is not known.
``listed_not_member``
    An earlier list has a ticker the walk lacks on that day, with no CIK link: reported.
``member_not_listed``
    The walk has a member an earlier list lacks: reported.
"""

from __future__ import annotations

import pandas as pd

ANOMALY_COLUMNS = ["kind", "date", "ticker", "detail", "action"]

ACTIONS = {
    "duplicate": "skipped",
    "future_date": "skipped",
    "before_index": "skipped",
    "not_a_session": "applied as written",
    "unbalanced_date": "applied",
    "added_while_member": "earlier addition skipped",
    "removed_non_member": "applied; later stay starts at the earlier removal (lower bound)",
    "missing_addition": "applied; current stay starts at the removal (lower bound)",
    "not_in_current_list": "skipped",
    "cik_change": "split; no CIK between the sightings",
    "renamed_unrecorded": "split; no CIK between the sightings",
    "listed_not_member": "reported",
    "member_not_listed": "reported",
}


class AnomalyLog:
    """Collects anomalies while the intervals are built."""

    def __init__(self) -> None:
        self._rows: list[dict] = []

    def add(self, kind: str, date: pd.Timestamp | None, ticker: str | None, detail: str) -> None:
        self._rows.append({"kind": kind, "date": date, "ticker": ticker, "detail": detail, "action": ACTIONS[kind]})

    def frame(self) -> pd.DataFrame:
        """The anomalies by date (undated last), then kind and ticker."""
        frame = pd.DataFrame(self._rows, columns=ANOMALY_COLUMNS)
        frame["date"] = pd.to_datetime(frame["date"])
        return frame.sort_values(["date", "kind", "ticker"], na_position="last", kind="stable").reset_index(drop=True)
