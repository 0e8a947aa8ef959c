"""bars_from_polygon's two paths (well-formed answers in bulk, anything else per column) agree."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from CandleThrob.bars import BAR_COLUMNS, bars_from_polygon
from CandleThrob.testing.datagen import MarketPopulation, generate_market
from CandleThrob.testing.polygon_server import GroupedAnswers

DAY = "2024-03-11"


@pytest.fixture(scope="module")
def grouped_results():
    market = generate_market(4, "2024-01-02", "2024-03-28", seed=7)
    answers = GroupedAnswers(MarketPopulation.around(market, 300, seed=2))
    return json.loads(b"[" + answers.results(market, pd.Timestamp(DAY).date(), True, None)[1] + b"]")


def general(results, **kwargs):
    """The general path's frame of ``results``: one more result lacking a required key
    sends the whole answer down it, and its own row is dropped again."""
    frame = bars_from_polygon(results + [{"T": "ZZZZ", "t": results[0]["t"]}], **kwargs)
    return frame.iloc[:-1]


@pytest.mark.parametrize("change", [
    None,
    lambda r: r[3].pop("vw"),
    lambda r: r[3].pop("n"),
    lambda r: [bar.pop("vw") for bar in r],
    lambda r: r[3].update(o=None),
    lambda r: r[3].update(t=None),
    lambda r: r[3].update(o="12.5"),
    lambda r: r[3].update(c=True),
    lambda r: r[3].update(T=None),
    lambda r: r[3].update(otc=True),
])
def test_well_formed_answers_take_the_bulk_path_to_the_same_frame(grouped_results, change):
    results = copy.deepcopy(grouped_results)
    if change is not None:
        change(results)
    frame = bars_from_polygon(results)
    assert list(frame.columns) == list(BAR_COLUMNS) and len(frame) == 300
    pd.testing.assert_frame_equal(frame, general(results), check_exact=True)


def test_junk_goes_the_general_way(grouped_results):
    results = copy.deepcopy(grouped_results)
    results[3].update(o="abc", h=[1])
    frame = bars_from_polygon(results)
    assert np.isnan(frame.loc[3, "open"]) and np.isnan(frame.loc[3, "high"])
    pd.testing.assert_frame_equal(frame.drop(index=3), bars_from_polygon(grouped_results).drop(index=3),
                                  check_exact=True)


def test_range_answers_take_the_bulk_path_too(grouped_results):
    series = [{k: v for k, v in bar.items() if k != "T"} for bar in grouped_results[:40]]
    frame = bars_from_polygon(series, ticker="MMM")
    assert (frame["ticker"] == "MMM").all()
    expected = bars_from_polygon(series + [{"t": series[0]["t"]}], ticker="MMM").iloc[:-1]
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)


def test_tickers_keeps_only_those_bars(grouped_results):
    wanted = {"MMM", "SPY", grouped_results[-1]["T"], "NOT-LISTED"}
    frame = bars_from_polygon(grouped_results, tickers=wanted)
    every = bars_from_polygon(grouped_results)
    pd.testing.assert_frame_equal(frame, every[every["ticker"].isin(wanted)].reset_index(drop=True),
                                  check_exact=True)
    assert bars_from_polygon(grouped_results, tickers=set()).empty
    series = [{k: v for k, v in bar.items() if k != "T"} for bar in grouped_results[:5]]
    assert bars_from_polygon(series, ticker="MMM", tickers=wanted).equals(bars_from_polygon(series, ticker="MMM"))
    assert bars_from_polygon(series, ticker="AOS", tickers=wanted).empty
