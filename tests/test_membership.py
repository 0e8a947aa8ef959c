"""Point-in-time S&P 500 membership: the pages' tables, the walk, renames, securities, and real-data agreement.

The real-data tests read ../shared/data and skip when it is absent. Their figures are
explained in docs/membership-agreement.md.
"""

from __future__ import annotations

import pandas as pd
import pytest

from CandleThrob.errors import UniverseError
from CandleThrob.universe.membership import members_as_of, membership_intervals
from CandleThrob.universe.pages import (
    CHANGE_COLUMNS,
    MEMBER_COLUMNS,
    REJECTED_COLUMNS,
    clean_cik,
    parse_changes_table,
    parse_members,
)
from CandleThrob.universe.reconcile import reconcile
from CandleThrob.universe.securities import (
    SymbolConflictError,
    assign_security_ids,
    symbol_history,
    symbol_pieces,
)

PAGE_2018 = "sp500_wikipedia_html/List_of_SP500_companies_2018-02_rev821321383.html"
PAGE_2024 = "sp500_wikipedia_html/List_of_SP500_companies_2024-10_rev1250356709.html"
# The 2018 page's own list is contemporaneous with its last change (2018-01-03) and the
# next one (2018-03-07); the 2024 page was cached on 2024-10-10 (see its SOURCE.md).
AS_OF_2018, AS_OF_2024 = "2018-02-01", "2024-10-10"
FJA = "sp500_membership_history_fja05680"
KAGGLE = "kaggle_sp500_all_stocks_5yr/all_stocks_5yr.csv.gz"
T = pd.Timestamp
NAT = pd.NaT


def rows(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    """Rows as tuples, missing values as None, for exact comparisons."""
    return [tuple(None if pd.isna(value) else value for value in row)
            for row in frame[columns].itertuples(index=False)]


def stays(intervals: pd.DataFrame) -> list[tuple]:
    return rows(intervals, ["ticker", "cik", "first_day", "last_day"])


def members(*entries: tuple[str, str | None]) -> pd.DataFrame:
    return pd.DataFrame([{"ticker": ticker, "cik": cik, "name": f"{ticker} Inc", "sector": "Industrials"}
                         for ticker, cik in entries])


def changes(*entries: tuple[str, str | None, str | None]) -> pd.DataFrame:
    return pd.DataFrame([{"date": T(day), "added_ticker": added, "added_name": added and f"{added} Inc",
                          "removed_ticker": removed, "removed_name": removed and f"{removed} Inc", "reason": None}
                         for day, added, removed in entries], columns=CHANGE_COLUMNS)


# --- the pages' tables -----------------------------------------------------------

@pytest.fixture(scope="module")
def pages(shared_data) -> dict:
    html = {year: (shared_data / path).read_text(encoding="utf-8")
            for year, path in ((2018, PAGE_2018), (2024, PAGE_2024))}
    return {year: {"members": parse_members(text), "changes": parse_changes_table(text)}
            for year, text in html.items()}


def test_changes_table_of_the_2018_layout(pages):
    table = pages[2018]["changes"]
    assert list(table.changes.columns) == CHANGE_COLUMNS
    assert table.rejected.empty  # the two header rows that arrive as data are not rows
    assert len(table.changes) == 180
    assert str(table.changes["date"].dtype).startswith("datetime64")
    assert rows(table.changes.head(1), CHANGE_COLUMNS) == [
        (T("2018-01-03"), "HII", "Huntington Ingalls Industries", "BCR", "CR Bard", "Becton Dickinson acquired BCR.")]
    assert rows(table.changes.tail(1), CHANGE_COLUMNS) == [
        (T("2000-12-05"), "ABK", "Ambac Financial", "CCK", "Crown Holdings", "Market Cap changes.")]
    remove_only = table.changes[table.changes["added_ticker"].isna()]
    assert rows(remove_only, CHANGE_COLUMNS) == [
        (T("2017-08-08"), None, None, "AN", "AutoNation Inc", "BHF replaced AN"),
        (T("2015-12-15"), None, None, "CMCSK", "Comcast K Corp", "CMCSK shares no longer listed")]
    # "UA-C" in Polygon's form; footnote markers such as "[9]" are gone everywhere.
    assert table.changes.loc[table.changes["added_name"] == "Under Armour Class C", "added_ticker"].tolist() == ["UA.C"]
    assert not table.changes[["added_name", "removed_name", "reason"]].stack().str.contains(r"\[").any()


def test_changes_table_of_the_2024_layout(pages):
    table = pages[2024]["changes"]
    assert table.rejected.empty
    assert len(table.changes) == 353
    assert rows(table.changes.head(2), CHANGE_COLUMNS) == [
        (T("2024-10-01"), None, None, "BBWI", "Bath & Body Works, Inc.", "Market capitalization change."),
        (T("2024-09-30"), "AMTM", "Amentum", None, None,
         ("S&P 500 constituent Jacobs Solutions spun off its Critical Mission Solutions and Cyber Intelligence "
         "business, which merged with private Amentum to create newly publicly traded Amentum Holdings."))]
    assert rows(table.changes.tail(1), CHANGE_COLUMNS) == [
        (T("1997-06-17"), "CCI", "Countrywide Credit Industries", "USL", "USLife", "AIG acquired USLife.")]
    assert (table.changes["added_ticker"].isna().sum(), table.changes["removed_ticker"].isna().sum()) == (14, 19)
    assert rows(table.changes[table.changes["added_ticker"] == "GAS"], CHANGE_COLUMNS) == [
        (T("2011-12-12"), "GAS", "AGL Resources.", "GAS", "Nicor Gas",
         "Nicor acquired by AGL, which retained the GAS ticker.")]


def test_the_2024_page_records_no_rename_of_fb_to_meta(pages):
    """The page's changes table lists index changes only: FB appears once, for its 2013 addition."""
    frame = pages[2024]["changes"].changes
    tickers = frame[["added_ticker", "removed_ticker"]]
    assert not tickers.isin(["META"]).any().any()
    assert rows(frame[tickers.isin(["FB"]).any(axis=1)], ["date", "added_ticker", "removed_ticker"]) == [
        (T("2013-12-23"), "FB", "TER")]


CHANGES_PAGE = """<table class="wikitable" id="changes">
<tr><th rowspan="2">Date</th><th colspan="2">Added</th><th colspan="2">Removed</th><th rowspan="2">Reason</th></tr>
<tr><th>Ticker</th><th>Security</th><th>Ticker</th><th>Security</th></tr>
<tr><td>March 4, 2019</td><td>brk-b</td><td>Berkshire[1]</td><td>ABC</td><td>Abc</td><td>Swap.[2]</td></tr>
<tr><td>Marhc 5, 2019</td><td>XYZ</td><td>Xyz</td><td></td><td></td><td>typo in the date</td></tr>
<tr><td>March 6, 2019</td><td>NYSE:LMT</td><td>Lockheed</td><td></td><td></td><td>prefixed</td></tr>
<tr><td>March 7, 2019</td><td></td><td></td><td></td><td></td><td>no ticker</td></tr>
<tr><td>8 March 2019</td><td></td><td></td><td>NA</td><td>Na Corp</td><td></td></tr>
</table>"""


def test_unreadable_change_rows_are_returned_with_a_reason_not_raised():
    table = parse_changes_table(CHANGES_PAGE)
    assert rows(table.changes, CHANGE_COLUMNS) == [
        (T("2019-03-04"), "BRK.B", "Berkshire", "ABC", "Abc", "Swap."),
        (T("2019-03-08"), None, None, "NA", "Na Corp", None)]  # "NA" is a ticker, not a missing value
    assert list(table.rejected.columns) == REJECTED_COLUMNS
    assert rows(table.rejected, ["row", "reason"]) == [
        (1, "unreadable date 'Marhc 5, 2019'"),
        (2, ("added ticker: 'NYSE:LMT' is not a valid ticker symbol: exchange prefixes are not allowed "
            "(write 'LMT', not 'NYSE:LMT'); allowed: 1-5 letters, optionally followed by '.' and a 1-2 letter "
            "share class (e.g. MMM, BRK.B)")),
        (3, "no ticker added or removed")]
    assert table.rejected.loc[0, "cells"] == "Marhc 5, 2019 | XYZ | Xyz |  |  | typo in the date"


@pytest.mark.parametrize("page, message", [
    ("<p>maintenance</p>", "no tables in the page"),
    ("<table><tr><th>Symbol</th></tr><tr><td>MMM</td></tr></table>", "no changes table"),
])
def test_a_page_without_a_changes_table_is_refused(page, message):
    with pytest.raises(UniverseError, match=message):
        parse_changes_table(page)


def test_members_of_both_layouts_with_cik(pages):
    old, new = pages[2018]["members"], pages[2024]["members"]
    assert list(old.columns) == MEMBER_COLUMNS
    assert (len(old), len(new)) == (505, 503)
    # CIKs are written with leading zeros on both pages; they become plain digit strings.
    assert old["cik"].str.fullmatch(r"[1-9][0-9]*").all() and new["cik"].str.fullmatch(r"[1-9][0-9]*").all()
    assert rows(old[old["ticker"].isin(["MMM", "ABT", "FB"])], MEMBER_COLUMNS) == [
        ("MMM", "3M Company", "Industrials", "66740", None),  # blank "Date first added"
        ("ABT", "Abbott Laboratories", "Health Care", "1800", T("1964-03-31")),
        ("FB", "Facebook, Inc.", "Information Technology", "1326801", T("2013-12-23"))]
    assert rows(new[new["ticker"].isin(["META", "BRK.B"])], MEMBER_COLUMNS) == [
        ("BRK.B", "Berkshire Hathaway", "Financials", "1067983", T("2010-02-16")),
        ("META", "Meta Platforms", "Communication Services", "1326801", T("2013-12-23"))]
    assert old["date_added"].isna().sum() == 136 and new["date_added"].notna().all()


@pytest.mark.parametrize("raw, expected", [
    ("0001326801", "1326801"), (1326801, "1326801"), (1326801.0, "1326801"), (" 66740 ", "66740"),
    ("", None), (None, None), (float("nan"), None), (pd.NA, None), ("0000000000", None), ("12a4", None),
])
def test_clean_cik(raw, expected):
    assert clean_cik(raw) == expected


# --- the walk on small histories -----------------------------------------------------

def test_the_walk_undoes_changes_latest_first():
    intervals, anomalies = membership_intervals(
        members(("AAA", "1"), ("BBB", "2"), ("NEW", "3")),
        changes(("2020-03-02", "NEW", "OLD"), ("2019-07-01", "BBB", "CCC"), ("2018-01-02", "CCC", "DDD")),
        "2020-06-30")
    assert list(intervals.columns) == ["ticker", "cik", "name", "sector", "first_day", "last_day"]
    assert stays(intervals) == [
        ("AAA", "1", None, None),
        ("BBB", "2", T("2019-07-01"), None),
        ("CCC", None, T("2018-01-02"), T("2019-06-30")),
        ("DDD", None, None, T("2018-01-01")),
        ("NEW", "3", T("2020-03-02"), None),
        ("OLD", None, None, T("2020-03-01"))]
    assert rows(intervals[intervals["ticker"].isin(["OLD", "BBB"])], ["ticker", "name", "sector"]) == [
        ("BBB", "BBB Inc", "Industrials"), ("OLD", "OLD Inc", None)]
    assert anomalies.empty
    # A change takes effect on its date; calendar days answer for the weekend before it.
    assert members_as_of(intervals, "2020-03-01")["ticker"].tolist() == ["AAA", "BBB", "OLD"]  # a Sunday
    assert members_as_of(intervals, "2020-03-02")["ticker"].tolist() == ["AAA", "BBB", "NEW"]
    assert rows(members_as_of(intervals, "2018-01-01"), ["ticker", "cik", "name", "sector"]) == [
        ("AAA", "1", "AAA Inc", "Industrials"), ("DDD", None, "DDD Inc", None), ("OLD", None, "OLD Inc", None)]


def test_each_anomaly_is_reported_and_handled_as_documented():
    intervals, anomalies = membership_intervals(
        members(("AAA", "1"), ("NEW", "3"), ("REUSE", "4"), ("TWICE", "5"), ("DUP", "6"), ("HOL", "7"),
                ("SPIN", "8")),
        changes(("2021-01-04", "FUT", "FUTX"),     # after the current list
                ("2020-03-02", "NEW", "OLD"),
                ("2019-06-03", "SPIN", None),      # a spin-off: nobody removed
                ("2018-12-25", "HOL", "ZZZ"),      # Christmas
                ("2017-03-01", "DUP", "XXX"),
                ("2017-03-01", "DUP", "XXX"),      # the same row twice
                ("2015-01-02", "TWICE", "REUSE"),  # TWICE a member since 2012; REUSE is current
                ("2013-01-02", "GONE", "SYM"),     # GONE never removed nor current; SYM removed twice
                ("2012-01-03", "TWICE", "SYM"),
                ("1950-01-03", "ANC", "OLDIE")),   # before the index
        "2020-06-30")
    assert rows(anomalies, ["kind", "date", "ticker", "action"]) == [
        ("before_index", T("1950-01-03"), "ANC", "skipped"),
        ("before_index", T("1950-01-03"), "OLDIE", "skipped"),
        ("not_in_current_list", T("2013-01-02"), "GONE", "skipped"),
        ("removed_non_member", T("2013-01-02"), "SYM",
         "applied; later stay starts at the earlier removal (lower bound)"),
        ("added_while_member", T("2015-01-02"), "TWICE", "earlier addition skipped"),
        ("missing_addition", T("2015-01-02"), "REUSE", "applied; current stay starts at the removal (lower bound)"),
        ("duplicate", T("2017-03-01"), "DUP", "skipped"),
        ("duplicate", T("2017-03-01"), "XXX", "skipped"),
        ("not_a_session", T("2018-12-25"), None, "applied as written"),
        ("unbalanced_date", T("2019-06-03"), None, "applied"),
        ("future_date", T("2021-01-04"), "FUT", "skipped"),
        ("future_date", T("2021-01-04"), "FUTX", "skipped")]
    details = dict(zip(anomalies["kind"] + " " + anomalies["ticker"].fillna(""), anomalies["detail"]))
    assert details["added_while_member TWICE"] == (
        "added on 2015-01-02 while a member since its addition on 2012-01-03, no removal between "
        "(the first holder renamed and the symbol passed on?)")
    assert details["not_a_session "] == "Tuesday 2018-12-25 is not an NYSE session: 1 added (HOL), 1 removed (ZZZ)"
    assert details["unbalanced_date "] == "1 added (SPIN), 0 removed (-)"
    assert stays(intervals) == [
        ("AAA", "1", None, None),
        ("DUP", "6", T("2017-03-01"), None),
        ("HOL", "7", T("2018-12-25"), None),
        ("NEW", "3", T("2020-03-02"), None),
        ("OLD", None, None, T("2020-03-01")),
        ("REUSE", None, None, T("2015-01-01")),
        ("REUSE", "4", T("2015-01-02"), None),
        ("SPIN", "8", T("2019-06-03"), None),
        ("SYM", None, None, T("2012-01-02")),
        ("SYM", None, T("2012-01-03"), T("2013-01-01")),
        ("TWICE", "5", T("2015-01-02"), None),
        ("XXX", None, None, T("2017-02-28")),
        ("ZZZ", None, None, T("2018-12-24"))]


def test_earlier_lists_give_ciks_split_cik_changes_and_place_unrecorded_renames():
    intervals, anomalies = membership_intervals(
        members(("AAA", "1"), ("FOX", "200"), ("NEWNAME", "300"), ("NEWCO", "500"), ("EXTRA", "700")),
        changes(("2018-01-02", "NEWCO", "XXX"), ("2014-03-03", "OLDNAME", "GONER")),
        "2020-06-30",
        earlier_members=[("2016-06-30", members(("AAA", "1"), ("FOX", "100"), ("OLDNAME", "300"), ("XXX", "400"),
                                                ("LOST", "600")))])
    assert stays(intervals) == [
        ("AAA", "1", None, None),
        ("EXTRA", "700", None, None),
        ("FOX", "100", None, T("2016-06-30")),        # another filer had the symbol on the list's day
        ("FOX", None, T("2016-07-01"), T("2020-06-29")),  # which one between the sightings is unknown
        ("FOX", "200", T("2020-06-30"), None),
        ("GONER", None, None, T("2014-03-02")),
        ("NEWCO", "500", T("2018-01-02"), None),
        ("NEWNAME", None, T("2016-07-01"), T("2020-06-29")),
        ("NEWNAME", "300", T("2020-06-30"), None),
        ("OLDNAME", "300", T("2014-03-03"), T("2016-06-30")),  # from its addition the walk had skipped
        ("XXX", "400", None, T("2018-01-01"))]             # a former member gets its CIK from the list
    assert rows(anomalies, ["kind", "date", "ticker"]) == [
        ("not_in_current_list", T("2014-03-03"), "OLDNAME"),
        ("listed_not_member", T("2016-06-30"), "LOST"),
        ("member_not_listed", T("2016-06-30"), "EXTRA"),
        ("renamed_unrecorded", T("2016-06-30"), "OLDNAME"),
        ("cik_change", T("2020-06-30"), "FOX")]
    assert anomalies["detail"].tolist()[3:] == [
        ("OLDNAME (CIK 300) in the list of 2016-06-30, NEWNAME with that CIK on 2020-06-30; the changes table has "
        "no rename: OLDNAME up to 2016-06-30, from its addition on 2014-03-03 that the walk had skipped, NEWNAME "
        "from 2020-06-30"),
        "CIK 100 on 2016-06-30, CIK 200 on 2020-06-30"]
    history = symbol_history(intervals)
    assert symbol_pieces(history, "300", "2010-01-01", "2021-12-31") == [
        ("OLDNAME", T("2014-03-03"), T("2016-06-30")), ("NEWNAME", T("2020-06-30"), T("2021-12-31"))]
    assert symbol_pieces(history, "200", "2010-01-01", "2021-12-31") == [("FOX", T("2020-06-30"), T("2021-12-31"))]
    assert symbol_pieces(history, "FOX@2016-07-01", "2010-01-01", "2021-12-31") == [
        ("FOX", T("2016-07-01"), T("2020-06-29"))]


# --- securities and symbols ---------------------------------------------------------------

def test_security_ids_cik_share_classes_and_synthetic():
    intervals = pd.DataFrame([
        ("GOOG", "1652044", None, None, NAT, NAT),
        ("GOOGL", "1652044", None, None, T("2014-04-03"), NAT),
        ("AN", None, None, None, NAT, T("1998-12-10")),
        ("AN", None, None, None, T("1998-12-11"), T("2017-08-07")),
        ("FB", "1326801", None, None, T("2013-12-23"), T("2022-06-08")),
        ("META", "1326801", None, None, T("2022-06-09"), NAT),
    ], columns=["ticker", "cik", "name", "sector", "first_day", "last_day"])
    assert assign_security_ids(intervals)["security_id"].tolist() == [
        "1652044", "1652044.GOOGL", "AN@start", "AN@1998-12-11", "1326801", "1326801"]
    assert rows(symbol_history(intervals), ["security_id", "ticker", "valid_from", "valid_to"]) == [
        ("1326801", "FB", T("2013-12-23"), T("2022-06-08")),
        ("1326801", "META", T("2022-06-09"), None),
        ("1652044", "GOOG", None, None),
        ("1652044.GOOGL", "GOOGL", T("2014-04-03"), None),
        ("AN@1998-12-11", "AN", T("1998-12-11"), T("2017-08-07")),
        ("AN@start", "AN", None, T("1998-12-10"))]


def test_a_symbol_another_security_used_earlier_is_never_attached():
    """NEW was security 111's until 2015-06-30; security 222 renamed OLD -> NEW on 2019-05-01."""
    current = members(("NEW", "222"), ("FILL", "333"))
    history_of_changes = changes(("2019-05-01", "NEW", "OLD"), ("2015-07-01", "FILL", "NEW"))
    intervals, anomalies = membership_intervals(current, history_of_changes, "2020-06-30",
                                                earlier_members=[("2014-01-02", members(("NEW", "111"),
                                                                                        ("OLD", "222")))])
    assert anomalies.empty
    history = symbol_history(intervals)
    assert symbol_pieces(history, "222", "2010-01-01", "2020-12-31") == [
        ("OLD", T("2010-01-01"), T("2019-04-30")), ("NEW", T("2019-05-01"), T("2020-12-31"))]
    assert symbol_pieces(history, "111", "2010-01-01", "2020-12-31") == [("NEW", T("2010-01-01"), T("2015-06-30"))]
    # Without the old list nothing links OLD and NEW, yet NEW's earlier holder is still kept apart.
    alone, _ = membership_intervals(current, history_of_changes, "2020-06-30")
    assert symbol_pieces(symbol_history(alone), "222", "2010-01-01", "2020-12-31") == [
        ("NEW", T("2019-05-01"), T("2020-12-31"))]


def test_two_securities_holding_one_symbol_at_once_are_refused():
    intervals = pd.DataFrame([("XYZ", "1", None, None, NAT, T("2020-01-31")),
                              ("XYZ", "2", None, None, T("2020-01-15"), NAT)],
                             columns=["ticker", "cik", "name", "sector", "first_day", "last_day"])
    with pytest.raises(SymbolConflictError, match="XYZ is held by 1 and 2 on 2020-01-15"):
        symbol_history(intervals)


def test_symbol_pieces_clip_to_the_range_and_skip_unknown_days():
    history = pd.DataFrame([("9", "OLD", NAT, T("2018-02-01")), ("9", "NEW", T("2024-10-10"), NAT)],
                           columns=["security_id", "ticker", "valid_from", "valid_to"])
    assert symbol_pieces(history, "9", "2018-01-01", "2025-01-31") == [
        ("OLD", T("2018-01-01"), T("2018-02-01")), ("NEW", T("2024-10-10"), T("2025-01-31"))]
    assert symbol_pieces(history, "9", "2019-01-01", "2020-01-01") == []
    assert symbol_pieces(history, "unknown", "2019-01-01", "2020-01-01") == []


# --- the tool's own observations ---------------------------------------------------------

def test_observations_win_on_the_days_they_cover():
    walk = pd.DataFrame([
        ("AAA", "1", "Aaa", "Energy", NAT, NAT),
        ("BBB", None, "Bbb", None, NAT, T("2020-06-30")),
        ("CCC", "3", "Ccc", None, T("2020-01-02"), NAT),
        ("NEWSYM", "9", "Newsym", "Energy", NAT, NAT),  # renamed OLDSYM -> NEWSYM, which the walk never saw
        ("HND", None, "Old holder", None, NAT, T("2018-03-01")),  # the symbol passed to another company
        ("HND", None, "New holder", None, T("2018-03-02"), NAT),
    ], columns=["ticker", "cik", "name", "sector", "first_day", "last_day"])
    seen = pd.DataFrame([("AAA", "0000000001", "2020-01-01", "2020-12-31"),
                         ("BBB", "2", "2020-01-01", "2020-09-30"),
                         ("HND", None, "2020-01-01", "2020-12-31"),
                         ("OLDSYM", "9", "2020-01-01", "2020-05-31"),
                         ("NEWSYM", "9", "2020-06-01", "2020-12-31")],
                        columns=["ticker", "cik", "first_seen", "last_seen"])
    intervals, disagreements = reconcile(walk, seen)
    assert stays(intervals) == [
        ("AAA", "1", None, None),
        ("BBB", None, None, T("2019-12-31")),  # no CIK is carried into a piece whose CIK is unknown
        ("BBB", "2", T("2020-01-01"), T("2020-09-30")),
        ("CCC", "3", T("2021-01-01"), None),
        ("HND", None, None, T("2018-03-01")),  # two stays that touch are not joined
        ("HND", None, T("2018-03-02"), None),
        ("NEWSYM", "9", T("2020-06-01"), None),
        ("OLDSYM", "9", None, T("2020-05-31"))]
    assert rows(intervals[intervals["ticker"].isin(["AAA", "HND"])], ["ticker", "name", "sector"]) == [
        ("AAA", "Aaa", "Energy"), ("HND", "Old holder", None), ("HND", "New holder", None)]
    assert rows(disagreements, ["kind", "ticker", "first_day", "last_day"]) == [
        ("observed_only", "BBB", T("2020-07-01"), T("2020-09-30")),
        ("walk_only", "CCC", T("2020-01-02"), T("2020-12-31")),
        ("walk_only", "NEWSYM", T("2020-01-01"), T("2020-05-31")),
        ("relabelled", "OLDSYM", None, T("2019-12-31")),
        ("observed_only", "OLDSYM", T("2020-01-01"), T("2020-05-31"))]
    assert rows(symbol_history(intervals)[lambda h: h["security_id"] == "9"], ["ticker", "valid_from", "valid_to"]) \
        == [("OLDSYM", None, T("2020-05-31")), ("NEWSYM", T("2020-06-01"), None)]


def test_overlapping_observations_of_one_ticker_are_refused():
    seen = pd.DataFrame([("AAA", "1", "2020-01-01", "2020-03-31"), ("AAA", "1", "2020-03-01", "2020-06-30")],
                        columns=["ticker", "cik", "first_seen", "last_seen"])
    with pytest.raises(ValueError, match="observations of AAA overlap on 2020-03-01"):
        reconcile(pd.DataFrame(columns=["ticker", "cik", "name", "sector", "first_day", "last_day"]), seen)


# --- real data: the 2024 page's walk ------------------------------------------------------

@pytest.fixture(scope="module")
def walk_2024(pages) -> tuple[pd.DataFrame, pd.DataFrame]:
    return membership_intervals(pages[2024]["members"], pages[2024]["changes"].changes, AS_OF_2024)


def test_anomalies_of_the_2024_page(walk_2024):
    intervals, anomalies = walk_2024
    assert len(intervals) == 837
    assert anomalies["kind"].value_counts().to_dict() == {
        "unbalanced_date": 28, "not_in_current_list": 19, "added_while_member": 3, "not_a_session": 2,
        "removed_non_member": 2, "missing_addition": 1}
    picked = anomalies[anomalies["kind"].isin(["added_while_member", "removed_non_member", "missing_addition",
                                               "not_a_session"])]
    assert rows(picked, ["kind", "date", "ticker"]) == [
        ("missing_addition", T("2005-11-18"), "T"),
        ("not_a_session", T("2011-12-31"), None),
        ("added_while_member", T("2012-03-13"), "CCI"),
        ("removed_non_member", T("2012-10-10"), "SUN"),
        ("not_a_session", T("2014-09-20"), None),
        ("added_while_member", T("2016-04-08"), "UA"),
        ("removed_non_member", T("2017-08-08"), "AN"),
        ("added_while_member", T("2020-03-02"), "IR")]
    assert sorted(anomalies.loc[anomalies["kind"] == "not_in_current_list", "ticker"]) == [
        "CDAY", "COG", "DISCK", "DLPH", "FB", "FLT", "FSR", "HRS", "JEC", "JOYG", "KFT", "KORS", "LUK", "PCLN",
        "Q", "RE", "TSO", "WLP", "WLTW"]
    # GAS passed from Nicor to AGL on one date; CCI's 1997 holder is not Crown Castle's past.
    assert stays(intervals[intervals["ticker"].isin(["GAS", "CCI", "T"])]) == [
        ("CCI", "1051470", T("2012-03-13"), None),
        ("GAS", None, None, T("2011-12-11")),
        ("GAS", None, T("2011-12-12"), T("2016-06-30")),
        ("T", None, None, T("2005-11-17")),
        ("T", "732717", T("2005-11-18"), None)]
    assert len(members_as_of(intervals, AS_OF_2024)) == 503


# Misses of the reconstruction of 2018-02-01 from the 2024 page alone, and why.
MISSED_2018 = {
    "CTL": "renamed LUMN in 2020, removed as LUMN in 2023: no CIK for a former member",
    "KORS": "renamed CPRI (Capri) in 2019, removed as CPRI in 2020: no CIK for a former member",
    "LB": "renamed BBWI in 2021, removed as BBWI on 2024-10-01: no CIK for a former member",
    "LUK": "renamed JEF (Jefferies) in 2018, removed as JEF in 2019: no CIK for a former member",
    "MYL": "became Viatris (VTRS, new CIK) in 2020: the swap is missing from the changes table",
    "PX": "became Linde plc (LIN, new CIK) in 2018: the swap is missing from the changes table",
    "WRK": "became Smurfit WestRock (SW, new CIK) in 2024: the swap is missing from the changes table",
}
# Listed in 2018 under a symbol the company no longer has; found by CIK in the reconstruction.
FOUND_BY_CIK_2018 = {
    "ABC": "COR", "ANTM": "ELV", "BBT": "TFC", "BHGE": "BKR", "BLL": "BALL", "CBG": "CBRE", "CBS": "PARA",
    "COG": "CTRA", "DISCA": "WBD", "DISCK": "WBD", "FB": "META", "FISV": "FI", "HCN": "WELL", "HCP": "DOC",
    "HRS": "LHX", "IR": "TT", "JEC": "J", "PCLN": "BKNG", "PKI": "RVTY", "RE": "EG", "SYMC": "GEN",
    "TMK": "GL", "UTX": "RTX", "WLTW": "WTW",
}


def test_reconstructing_2018_from_the_2024_page_alone(pages, walk_2024):
    listed = pages[2018]["members"]
    rebuilt = members_as_of(walk_2024[0], AS_OF_2018)
    assert (len(listed), len(rebuilt)) == (505, 506)
    by_symbol = listed["ticker"].isin(rebuilt["ticker"])
    by_cik = ~by_symbol & listed["cik"].isin(rebuilt["cik"].dropna())
    assert (by_symbol.sum(), by_cik.sum(), (~by_symbol & ~by_cik).sum()) == (474, 24, 7)
    symbol_of_cik = dict(zip(rebuilt["cik"], rebuilt["ticker"]))
    assert {ticker: symbol_of_cik[cik] for ticker, cik in zip(listed["ticker"][by_cik], listed["cik"][by_cik])} \
        == FOUND_BY_CIK_2018
    assert set(listed["ticker"][~by_symbol & ~by_cik]) == set(MISSED_2018)
    # Reconstructed members the 2018 list lacks: the seven successors of the misses, and two
    # companies renamed after joining later (FLT -> CPAY joined 2018-06-20, CDAY -> DAY 2021-09-20).
    extra = rebuilt[~rebuilt["ticker"].isin(listed["ticker"]) & ~rebuilt["cik"].isin(listed["cik"])]
    assert sorted(extra["ticker"]) == ["BBWI", "CPAY", "CPRI", "DAY", "JEF", "LIN", "LUMN", "SW", "VTRS"]
    # Found by symbol, but under another CIK: five new holding companies, and FOX/FOXA,
    # which were 21st Century Fox's in 2018 and are Fox Corporation's now.
    both = listed.merge(rebuilt, on="ticker", suffixes=("_2018", "_rebuilt")).dropna(subset=["cik_rebuilt"])
    assert sorted(both.loc[both["cik_2018"] != both["cik_rebuilt"], "ticker"]) == [
        "APA", "AVGO", "CI", "DIS", "FOX", "FOXA", "MDT"]


def test_the_2018_list_splits_the_2024_walk_where_they_disagree(pages):
    intervals, anomalies = membership_intervals(pages[2024]["members"], pages[2024]["changes"].changes, AS_OF_2024,
                                                earlier_members=[(AS_OF_2018, pages[2018]["members"])])
    counts = anomalies["kind"].value_counts()
    assert (counts["renamed_unrecorded"], counts["cik_change"], counts["listed_not_member"],
            counts["member_not_listed"]) == (22, 7, 9, 10)
    assert stays(intervals[intervals["ticker"].isin(["FB", "META"])]) == [
        ("FB", "1326801", T("2013-12-23"), T("2018-02-01")),
        ("META", None, T("2018-02-02"), T("2024-10-09")),
        ("META", "1326801", T("2024-10-10"), None)]
    history = symbol_history(intervals)
    # Between the two lists the symbol is unknown: no day of that gap is read as META.
    assert symbol_pieces(history, "1326801", "2012-01-01", "2024-12-31") == [
        ("FB", T("2013-12-23"), T("2018-02-01")), ("META", T("2024-10-10"), T("2024-12-31"))]
    # DISCA and DISCK share one CIK with WBD: which became WBD is unknown, so nothing is split.
    assert sorted(anomalies.loc[anomalies["kind"] == "listed_not_member", "ticker"]) == [
        "CTL", "DISCA", "DISCK", "KORS", "LB", "LUK", "MYL", "PX", "WRK"]


# --- renames: FB -> META -------------------------------------------------------------------

def test_fb_to_meta_with_the_rename_row_from_fja05680(pages, shared_data):
    """The 2024 page has no rename row; fja05680's changes file has it (2022-06-09, META for FB)."""
    fja = pd.read_csv(shared_data / FJA / "sp500_changes_since_2019.csv", keep_default_na=False)
    row = fja[fja["date"] == "2022-06-09"]
    assert row.values.tolist() == [["2022-06-09", "META", "FB"]]
    rename = changes(("2022-06-09", "META", "FB"))
    intervals, _ = membership_intervals(pages[2024]["members"],
                                        pd.concat([pages[2024]["changes"].changes, rename], ignore_index=True),
                                        AS_OF_2024, earlier_members=[(AS_OF_2018, pages[2018]["members"])])
    history = symbol_history(intervals)
    assert rows(history[history["security_id"] == "1326801"], ["ticker", "valid_from", "valid_to"]) == [
        ("FB", T("2013-12-23"), T("2022-06-08")), ("META", T("2022-06-09"), None)]
    assert symbol_pieces(history, "1326801", "2012-01-01", "2024-10-01") == [
        ("FB", T("2013-12-23"), T("2022-06-08")), ("META", T("2022-06-09"), T("2024-10-01"))]
    assert history.loc[history["ticker"] == "META", "security_id"].tolist() == ["1326801"]


def test_fb_to_meta_from_the_tools_own_observations(walk_2024):
    """The tool saw FB until 2022-06-08 and META after; the walk alone had META since before 1997."""
    intervals = walk_2024[0]
    window_start, window_end = T("2022-01-01"), T(AS_OF_2024)
    seen = []
    for stay in intervals.itertuples(index=False):
        first = window_start if pd.isna(stay.first_day) else max(window_start, stay.first_day)
        last = window_end if pd.isna(stay.last_day) else min(window_end, stay.last_day)
        if first <= last and stay.ticker != "META":
            seen.append((stay.ticker, stay.cik, first, last))
    seen += [("FB", "1326801", window_start, T("2022-06-08")), ("META", "1326801", T("2022-06-09"), window_end)]
    reconciled, disagreements = reconcile(intervals, pd.DataFrame(seen, columns=["ticker", "cik", "first_seen",
                                                                                 "last_seen"]))
    assert rows(disagreements, ["kind", "ticker", "first_day", "last_day"]) == [
        ("relabelled", "FB", None, T("2021-12-31")),
        ("observed_only", "FB", T("2022-01-01"), T("2022-06-08")),
        ("walk_only", "META", T("2022-01-01"), T("2022-06-08"))]
    history = symbol_history(reconciled)
    assert rows(history[history["security_id"] == "1326801"], ["ticker", "valid_from", "valid_to"]) == [
        ("FB", None, T("2022-06-08")), ("META", T("2022-06-09"), None)]
    assert len(reconciled) == len(intervals) + 1  # only the META stay became two


# --- real data: agreement with fja05680 ---------------------------------------------------

WINDOW = (T("2019-01-01"), T("2024-10-01"))
NEAR_DAYS = 5


def clipped(intervals: pd.DataFrame) -> pd.DataFrame:
    first = intervals["first_day"].fillna(WINDOW[0]).clip(lower=WINDOW[0])
    last = intervals["last_day"].fillna(WINDOW[1]).clip(upper=WINDOW[1])
    frame = pd.DataFrame({"ticker": intervals["ticker"], "first_day": first, "last_day": last})
    return frame[frame["first_day"] <= frame["last_day"]].reset_index(drop=True)


def compare(ours: pd.DataFrame, theirs: pd.DataFrame) -> dict[str, list[str]]:
    """Tickers per outcome: exact, near (each end within NEAR_DAYS), differ, only_ours, only_theirs."""
    outcome: dict[str, list[str]] = {"exact": [], "near": [], "differ": [], "only_ours": [], "only_theirs": []}
    paired = set()
    for stay in ours.itertuples():
        match = theirs[(theirs["ticker"] == stay.ticker) & (theirs["first_day"] <= stay.last_day)
                       & (theirs["last_day"] >= stay.first_day) & ~theirs.index.isin(paired)]
        if match.empty:
            outcome["only_ours"].append(stay.ticker)
            continue
        other = match.iloc[0]
        paired.add(match.index[0])
        shifts = (abs((stay.first_day - other["first_day"]).days), abs((stay.last_day - other["last_day"]).days))
        kind = "exact" if shifts == (0, 0) else "near" if max(shifts) <= NEAR_DAYS else "differ"
        outcome[kind].append(stay.ticker)
    outcome["only_theirs"] = theirs.loc[~theirs.index.isin(paired), "ticker"].tolist()
    return {kind: sorted(tickers) for kind, tickers in outcome.items()}


def test_intervals_agree_with_fja05680_over_2019_to_2024(shared_data, walk_2024):
    raw = pd.read_csv(shared_data / FJA / "sp500_ticker_start_end.csv", keep_default_na=False)
    # fja05680's end_date is the change date (FB ends 2022-06-09 where META starts): our last day is the day before.
    theirs = pd.DataFrame({"ticker": raw["ticker"], "first_day": pd.to_datetime(raw["start_date"]),
                           "last_day": pd.to_datetime(raw["end_date"].replace("", None)) - pd.Timedelta(days=1)})
    ours, theirs = clipped(walk_2024[0]), clipped(theirs)
    assert (len(ours), len(theirs)) == (605, 632)
    outcome = compare(ours, theirs)
    assert {kind: len(tickers) for kind, tickers in outcome.items()} == {
        "exact": 559, "near": 11, "differ": 33, "only_ours": 2, "only_theirs": 29}
    assert outcome["near"] == ["AMCR", "ARNC", "DXC", "GEV", "GPS", "HWM", "OGN", "SOLV", "VNO", "VNT", "XEC"]
    assert outcome["differ"] == [
        "ALK", "BALL", "BBWI", "BKR", "BLDR", "COR", "CPAY", "CTRA", "DAY", "DOC", "EG", "ELV", "FI", "GEN", "GL",
        "IR", "J", "JBL", "LHX", "LUMN", "META", "PARA", "RTX", "RVTY", "SEDG", "SEE", "SW", "TFC", "TT", "UBER",
        "VTRS", "WBD", "WTW"]
    assert outcome["only_ours"] == ["BMS", "MBC"]
    assert outcome["only_theirs"] == [
        "ABC", "ANTM", "BBT", "BHGE", "BLL", "CBS", "CDAY", "COG", "CTL", "DISCA", "DISCK", "FB", "FISV", "FLT",
        "HCP", "HRS", "JEC", "LB", "MYL", "NLOK", "PEAK", "PKI", "RE", "SYMC", "TMK", "UTX", "VIAC", "WLTW", "WRK"]


# --- real data: former members and the Kaggle bars ----------------------------------------

def test_former_members_2013_to_2018_with_bars_in_kaggle(pages, shared_data):
    intervals, _ = membership_intervals(pages[2018]["members"], pages[2018]["changes"].changes, AS_OF_2018)
    left = intervals[intervals["last_day"].between(T("2013-02-08"), T("2018-02-06"))]
    assert (len(left), left["ticker"].nunique()) == (113, 113)
    bars = pd.read_csv(shared_data / KAGGLE, usecols=["Name"])
    with_bars = sorted(set(left["ticker"]) & set(bars["Name"]))
    # AMD left in 2013 and came back in 2017; AGN, CB and JCI are symbols a successor took over.
    assert with_bars == ["AGN", "AMD", "CB", "JCI"]
    assert stays(left[left["ticker"].isin(with_bars)]) == [
        ("AGN", None, None, T("2015-03-22")),
        ("AMD", None, None, T("2013-09-19")),
        ("CB", None, T("2010-07-14"), T("2016-01-18")),
        ("JCI", None, None, T("2016-09-05"))]
