"""What dated member lists add to the walk: CIKs, changes of CIK, renames the changes tables omit.

A member list of date D is a sighting of each of its (ticker, CIK) pairs on D. The
changes tables carry no CIK, so sightings are what ties a stay to a company. Where two
sightings disagree (one stay of FOX seen under two CIKs; FB listed in 2018 where the
walk has META), the days between them are given no CIK, because the symbol changed
hands, or was renamed, on an unknown day in that gap.
"""

from __future__ import annotations

import pandas as pd

from .anomalies import AnomalyLog
from .frames import ONE_DAY, covers, interval_frame, on_day
from .pages import clean_cik

Sightings = dict[str, list[tuple[pd.Timestamp, str, str | None]]]  # ticker -> (day, cik, name), by day


def apply_member_lists(intervals: pd.DataFrame, lists: list[tuple[pd.Timestamp, pd.DataFrame]],
                       skipped_additions: pd.DataFrame, log: AnomalyLog) -> pd.DataFrame:
    """The intervals with CIKs from ``lists`` (current list first), renames placed, differences logged.

    ``skipped_additions`` (``ticker, date``) are the additions the walk could not
    place; a rename found in a list may start at one of them (FB added 2013-12-23).
    """
    lists = [(day, members.assign(cik=members["cik"].map(clean_cik)) if "cik" in members.columns else members)
             for day, members in lists]
    sightings = _sightings(lists)
    intervals = _attach_ciks(intervals, sightings, log)
    for day, members in lists[1:]:
        intervals = _place_renames(intervals, day, members, sightings, skipped_additions, log)
        _log_differences(intervals, day, members, log)
    return intervals


def _sightings(lists: list[tuple[pd.Timestamp, pd.DataFrame]]) -> Sightings:
    sightings: Sightings = {}
    for day, members in sorted(lists, key=lambda pair: pair[0]):
        if "cik" not in members.columns:
            continue
        names = members["name"] if "name" in members.columns else [None] * len(members)
        for ticker, cik, name in zip(members["ticker"], members["cik"], names):
            if pd.notna(cik):
                sightings.setdefault(ticker, []).append((day, cik, name))
    return sightings


def _attach_ciks(intervals: pd.DataFrame, sightings: Sightings, log: AnomalyLog) -> pd.DataFrame:
    """Each stay takes the CIK its ticker is seen with while it lasts; a stay seen with several is split.

    Each CIK holds from the stay's start, or its own first sighting, to its last
    sighting (the last CIK to the stay's end); the days between two sightings that
    disagree get no CIK, so no bars of one filer are attached to the other.
    """
    pieces = []
    for stay in intervals.to_dict("records"):
        seen = [s for s in sightings.get(stay["ticker"], []) if covers(stay["first_day"], stay["last_day"], s[0])]
        runs = _runs(seen)
        if len(runs) <= 1:
            pieces.append({**stay, "cik": runs[0][0] if runs else stay["cik"]})
            continue
        start = stay["first_day"]
        for (cik, name, _, last_seen), following in zip(runs, runs[1:] + [None]):
            if following is None:
                pieces.append({**stay, "cik": cik, "first_day": start})
                break
            next_cik, _, next_seen, _ = following
            pieces.append({**stay, "cik": cik, "name": name or stay["name"], "first_day": start,
                           "last_day": last_seen})
            if last_seen + ONE_DAY < next_seen:
                pieces.append({**stay, "cik": None, "first_day": last_seen + ONE_DAY,
                               "last_day": next_seen - ONE_DAY})
            log.add("cik_change", next_seen, stay["ticker"],
                    f"CIK {cik} on {last_seen:%Y-%m-%d}, CIK {next_cik} on {next_seen:%Y-%m-%d}")
            start = next_seen
    return interval_frame(pieces)


def _runs(seen: list[tuple[pd.Timestamp, str, str | None]]) -> list[tuple]:
    """(cik, name, first sighting, last sighting) for each run of equal CIKs, in date order."""
    runs: list[tuple] = []
    for day, cik, name in seen:
        if runs and runs[-1][0] == cik:
            runs[-1] = (cik, name, runs[-1][2], day)
        else:
            runs.append((cik, name, day, day))
    return runs


def _place_renames(intervals: pd.DataFrame, day: pd.Timestamp, members: pd.DataFrame, sightings: Sightings,
                   skipped_additions: pd.DataFrame, log: AnomalyLog) -> pd.DataFrame:
    """Split each stay that the list of ``day`` shows under another ticker with the same CIK.

    Only one-to-one matches are split: when one CIK stands for two listed tickers
    (DISCA and DISCK, both WBD now), which one became the walk's ticker is unknown.
    """
    if "cik" not in members.columns:
        return intervals
    walked = intervals[on_day(intervals, day)]
    listed = members.drop_duplicates("ticker")
    lost = listed[~listed["ticker"].isin(walked["ticker"]) & listed["cik"].notna()]
    extra = walked[~walked["ticker"].isin(listed["ticker"]) & walked["cik"].notna()]
    unique_lost = lost.drop_duplicates("cik", keep=False).set_index("cik")
    unique_extra = extra.drop_duplicates("cik", keep=False)
    replaced, pieces = [], []
    for index, stay in unique_extra.iterrows():
        cik, ticker = stay["cik"], stay["ticker"]
        later = [seen for seen, seen_cik, _ in sightings.get(ticker, []) if seen_cik == cik and seen > day]
        if cik not in unique_lost.index or not later:
            continue
        old, next_seen = unique_lost.loc[cik], min(later)
        start, note = stay["first_day"], ""
        if pd.isna(start):
            start = _skipped_start(intervals, skipped_additions, old["ticker"], day)
            note = f", from its addition on {start:%Y-%m-%d} that the walk had skipped" if pd.notna(start) else ""
        replaced.append(index)
        pieces.append({**stay, "ticker": old["ticker"], "name": old.get("name", stay["name"]),
                       "first_day": start, "last_day": day})
        if day + ONE_DAY < next_seen:
            pieces.append({**stay, "cik": None, "first_day": day + ONE_DAY, "last_day": next_seen - ONE_DAY})
        pieces.append({**stay, "first_day": next_seen})
        log.add("renamed_unrecorded", day, old["ticker"],
                f"{old['ticker']} (CIK {cik}) in the list of {day:%Y-%m-%d}, {ticker} with that CIK on "
                f"{next_seen:%Y-%m-%d}; the changes table has no rename: {old['ticker']} up to {day:%Y-%m-%d}"
                f"{note}, {ticker} from {next_seen:%Y-%m-%d}")
    if not replaced:
        return intervals
    return interval_frame(intervals.drop(index=replaced).to_dict("records") + pieces)


def _skipped_start(intervals: pd.DataFrame, skipped_additions: pd.DataFrame, ticker: str,
                   day: pd.Timestamp) -> pd.Timestamp:
    """The latest skipped addition of ``ticker`` on or before ``day`` that no other stay of it follows."""
    additions = skipped_additions.loc[(skipped_additions["ticker"] == ticker)
                                      & (skipped_additions["date"] <= day), "date"]
    if additions.empty:
        return pd.NaT
    start = additions.max()
    others = intervals[(intervals["ticker"] == ticker) & intervals["last_day"].notna()]
    if ((others["last_day"] >= start) & (others["last_day"] <= day)).any():
        return pd.NaT  # another stay of the symbol ended after that addition: it is not this stay's start
    return start


def _log_differences(intervals: pd.DataFrame, day: pd.Timestamp, members: pd.DataFrame, log: AnomalyLog) -> None:
    walked = intervals[on_day(intervals, day)]
    listed = members.drop_duplicates("ticker")
    listed_ciks = listed["cik"] if "cik" in listed.columns else pd.Series(None, index=listed.index, dtype=object)
    walked_by_cik = dict(zip(walked["cik"], walked["ticker"]))
    listed_by_cik = dict(zip(listed_ciks, listed["ticker"]))
    walked_tickers, listed_tickers = set(walked["ticker"]), set(listed["ticker"])
    for ticker, cik in zip(listed["ticker"], listed_ciks):
        if ticker not in walked_tickers:
            other = walked_by_cik.get(cik) if pd.notna(cik) else None
            log.add("listed_not_member", day, ticker, f"in the list of {day:%Y-%m-%d}, not a member in the walk"
                    + (f"; the walk has its CIK {cik} as {other}" if other else ""))
    for ticker, cik in zip(walked["ticker"], walked["cik"]):
        if ticker not in listed_tickers:
            other = listed_by_cik.get(cik) if pd.notna(cik) else None
            log.add("member_not_listed", day, ticker, f"a member in the walk, not in the list of {day:%Y-%m-%d}"
                    + (f"; the list has its CIK {cik} as {other}" if other else ""))
