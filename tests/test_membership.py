"""Point-in-time S&P 500 membership: the pages' tables, the walk, renames, securities, and real-data agreement.

The real-data tests read ../shared/data and skip when it is absent. Their figures are
explained in docs/membership-agreement.md.
"""

from __future__ import annotations

import pandas as pd
import pytest

from CandleThrob.ingestion.universe import UniverseError
from CandleThrob.universe.pages import (
    CHANGE_COLUMNS,
    MEMBER_COLUMNS,
    REJECTED_COLUMNS,
    clean_cik,
    parse_changes_table,
    parse_members,
)

PAGE_2018 = "sp500_wikipedia_html/List_of_SP500_companies_2018-02_rev821321383.html"
PAGE_2024 = "sp500_wikipedia_html/List_of_SP500_companies_2024-10_rev1250356709.html"
# The 2018 page's own list is contemporaneous with its last change (2018-01-03) and the
# next one (2018-03-07); the 2024 page was cached on 2024-10-10 (see its SOURCE.md).
T = pd.Timestamp
def rows(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    """Rows as tuples, missing values as None, for exact comparisons."""
    return [tuple(None if pd.isna(value) else value for value in row)
            for row in frame[columns].itertuples(index=False)]


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
