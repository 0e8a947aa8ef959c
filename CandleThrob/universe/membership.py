"""Who was in the S&P 500 on any day: a walk back from a current member list through the dated changes.

The changes tables list additions and removals, not who was a member; the current list
says who is a member now. Undoing the changes one by one, latest first, gives every
ticker's stays in the index, former members included, so that a backtest over 2015
sees the companies that later left (no survivorship bias). What the walk does with
dates, duplicates and changes that contradict each other is listed in ``anomalies``.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from CandleThrob.planning.trading_calendar import DateLike, TradingCalendar

from .anomalies import AnomalyLog
from .frames import MEMBER_COLUMNS, ONE_DAY, day_of, interval_frame, on_day
from .sightings import apply_member_lists

# The S&P 500 was launched on this day; a change dated earlier is a typo.
INDEX_START = pd.Timestamp("1957-03-04")

def membership_intervals(current_members: pd.DataFrame, changes: pd.DataFrame, as_of: DateLike, *,
                         earlier_members: Iterable[tuple[DateLike, pd.DataFrame]] = (),
                         calendar: TradingCalendar | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Membership intervals (``ticker, cik, name, sector, first_day, last_day``) and the anomalies met.

    ``current_members`` is the member list valid on ``as_of`` (``ticker``, and
    ``cik``, ``name``, ``sector`` when known), ``changes`` a changes table as
    ``parse_changes_table`` gives it. Each change is undone in reverse date order; on
    one date additions are undone before removals, so a symbol handed from one company
    to another that day (GAS in 2011) gives two stays. Tickers do not interact, so the
    walk runs ticker by ticker.

    ``earlier_members`` are older lists as ``(date, members)``. They give former
    members the CIK the changes table cannot, split a stay whose CIK changed, place
    renames the changes table does not record, and are compared with the walk (see
    ``anomalies``). ``calendar`` tells NYSE sessions (default: a new TradingCalendar).
    """
    as_of = day_of(as_of)
    log = AnomalyLog()
    events = _usable_events(changes, as_of, calendar or TradingCalendar(), log)
    current = {row["ticker"]: row for row in current_members.drop_duplicates("ticker").to_dict("records")}
    by_ticker: dict[str, list] = {}
    for event in events.itertuples(index=False):  # already latest first
        by_ticker.setdefault(event.ticker, []).append(event)
    stays: list[dict] = []
    skipped: list[dict] = []
    for ticker in sorted(set(current) | set(by_ticker)):
        ticker_stays, ticker_skipped = _walk_ticker(ticker, current.get(ticker), by_ticker.get(ticker, []), log)
        stays += ticker_stays
        skipped += ticker_skipped
    lists = [(as_of, current_members)] + [(day_of(day), members) for day, members in earlier_members]
    intervals = apply_member_lists(interval_frame(stays), lists, pd.DataFrame(skipped, columns=["ticker", "date"]),
                                   log)
    return intervals, log.frame()


def members_as_of(intervals: pd.DataFrame, date: DateLike) -> pd.DataFrame:
    """The members on ``date``: ``ticker, cik, name, sector``, sorted by ticker."""
    members = intervals.loc[on_day(intervals, day_of(date)), MEMBER_COLUMNS]
    return members.sort_values("ticker").reset_index(drop=True)


def _usable_events(changes: pd.DataFrame, as_of: pd.Timestamp, calendar: TradingCalendar,
                   log: AnomalyLog) -> pd.DataFrame:
    """One row per (date, side, ticker, name), without the events the walk cannot place, latest first."""
    sides = [changes[["date", f"{side}_ticker", f"{side}_name"]]
             .set_axis(["date", "ticker", "name"], axis=1).assign(side=side)
             for side in ("added", "removed")]
    events = pd.concat(sides, ignore_index=True).dropna(subset=["ticker"])
    events["date"] = pd.to_datetime(events["date"]).dt.normalize()
    late, early = events["date"] > as_of, events["date"] < INDEX_START
    for event in events[late].itertuples():
        log.add("future_date", event.date, event.ticker,
                f"{event.side} on {event.date:%Y-%m-%d}, after the current list of {as_of:%Y-%m-%d}")
    for event in events[early].itertuples():
        log.add("before_index", event.date, event.ticker,
                f"{event.side} on {event.date:%Y-%m-%d}, before the index began on {INDEX_START:%Y-%m-%d}")
    events = events[~late & ~early]
    repeated = events.duplicated(["date", "side", "ticker"])
    for event in events[repeated].itertuples():
        log.add("duplicate", event.date, event.ticker, f"{event.side} twice on {event.date:%Y-%m-%d}")
    events = events[~repeated]
    for day, group in events.groupby("date"):
        if not _is_session(calendar, day):
            log.add("not_a_session", day, None, f"{day:%A %Y-%m-%d} is not an NYSE session: {_listing(group)}")
        if (group["side"] == "added").sum() != (group["side"] == "removed").sum():
            log.add("unbalanced_date", day, None, _listing(group))
    # "added" sorts before "removed": on one date, additions are undone first.
    return events.sort_values(["date", "side"], ascending=[False, True], kind="stable")


def _listing(group: pd.DataFrame) -> str:
    added = group.loc[group["side"] == "added", "ticker"].tolist()
    removed = group.loc[group["side"] == "removed", "ticker"].tolist()
    return f"{len(added)} added ({', '.join(added) or '-'}), {len(removed)} removed ({', '.join(removed) or '-'})"


def _is_session(calendar: TradingCalendar, day: pd.Timestamp) -> bool:
    if day < calendar.first_session:  # before the calendar's window only weekends are known
        return day.weekday() < 5
    return calendar.is_session(day)


def _walk_ticker(ticker: str, present: dict | None, events: list,
                 log: AnomalyLog) -> tuple[list[dict], list[dict]]:
    """One ticker's stays, from its state in the current list back through its changes (latest first).

    Also returns the additions the walk skipped (``ticker, date``): a member list may
    show later that they began a stay under a symbol the changes table never renamed.
    """
    stays: list[dict] = []
    skipped: list[dict] = []
    open_stay = None
    if present is not None:
        open_stay = {"ticker": ticker, "cik": None, "name": present.get("name"), "sector": present.get("sector"),
                     "first_day": pd.NaT, "last_day": pd.NaT}
    later = None  # the change undone just before this one
    for event in events:
        day = event.date
        if event.side == "added":
            if open_stay is not None:
                open_stay.update(first_day=day, name=open_stay["name"] if pd.notna(open_stay["name"]) else event.name)
                stays.append(open_stay)
                open_stay = None
            elif later is not None and later.side == "added":
                log.add("added_while_member", later.date, ticker,
                        f"added on {later.date:%Y-%m-%d} while a member since its addition on {day:%Y-%m-%d}, "
                        "no removal between (the first holder renamed and the symbol passed on?)")
                skipped.append({"ticker": ticker, "date": day})
            else:
                log.add("not_in_current_list", day, ticker,
                        f"added on {day:%Y-%m-%d}, never removed, absent from the current list "
                        "(a rename or a removal missing from the table)")
                skipped.append({"ticker": ticker, "date": day})
        else:
            if open_stay is not None:
                if later is None:
                    log.add("missing_addition", day, ticker,
                            f"in the current list, but removed on {day:%Y-%m-%d} and not added since "
                            "(the symbol may belong to another company now)")
                else:
                    log.add("removed_non_member", later.date, ticker,
                            f"removed on {later.date:%Y-%m-%d} though removed already on {day:%Y-%m-%d}, "
                            "no addition between (a reused symbol?)")
                open_stay["first_day"] = day
                stays.append(open_stay)
            open_stay = {"ticker": ticker, "cik": None, "name": event.name, "sector": None,
                         "first_day": pd.NaT, "last_day": day - ONE_DAY}
        later = event
    if open_stay is not None:
        stays.append(open_stay)
    return stays, skipped
