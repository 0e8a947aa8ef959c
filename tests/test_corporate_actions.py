"""Raw bars plus a corporate-actions ledger: split-adjusted and total-return history that no refetch can break."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from CandleThrob.testing.datagen import Dividend, generate_market, market_data_from_files
from CandleThrob.testing.polygon_server import PolygonServer

from ingest_helpers import API_KEY, api_calls, data_calls, ingest, query, stored


def _read(url: str, adjust: str, tickers=None) -> pd.DataFrame:
    from sqlalchemy import create_engine

    from CandleThrob.warehouse.storage import Warehouse
    warehouse = Warehouse(create_engine(url))
    try:
        return warehouse.bars(tickers, adjust=adjust).drop(columns=["run_id", "source"]).reset_index(drop=True)
    finally:
        warehouse.dispose()


def _split_adjusted_closes(market, tickers, start, end) -> pd.DataFrame:
    """Raw closes divided by the split ratios executed after each date, through ``end``."""
    raw = market.bars(start=start, end=end)
    raw = raw[raw["ticker"].isin(tickers)].sort_values(["ticker", "trade_date"]).reset_index(drop=True)
    factors = np.ones(len(raw))
    for split in market.splits:
        later = (raw["ticker"] == split.ticker) & (raw["trade_date"] < pd.Timestamp(split.execution_date)) \
            & (pd.Timestamp(split.execution_date) <= pd.Timestamp(end))
        factors[later.to_numpy()] *= split.split_to / split.split_from
    return raw.assign(close=raw["close"] / factors, volume=raw["volume"] * factors)


def _total_return_agreement(url: str, adjusted_close: pd.Series, ticker: str) -> float:
    """Our total-return closes against the data set's own adjusted closes, both renormalised to the
    last loaded session: the largest relative difference."""
    ours = _read(url, "total", [ticker]).set_index("trade_date")["close"]
    theirs = adjusted_close.reindex(ours.index)
    assert theirs.notna().all()
    return float(((ours / ours.iloc[-1]) / (theirs / theirs.iloc[-1]) - 1).abs().max())


# ---- real data no one here wrote -----------------------------------------------------------------

# The largest relative difference measured, per ticker, rounded up: each source's own dividend
# factors differ from the CRSP convention (1 - cash / previous close) by up to about 1.5e-4 per
# ex-date, in both directions (their implied factors, from adjusted / raw close, say so), and the
# differences compound. TSLA paid no dividend: only the split, which agrees to the last bit.
QUANDL_LIMITS = {"AAPL": 1.1e-4, "MSFT": 2.5e-4, "GE": 1.6e-4}
AV_LIMITS = {"AAPL": 4.5e-5, "MSFT": 1.2e-4, "TSLA": 1e-12, "IBM": 5.5e-4}


@pytest.mark.parametrize("folder,tickers,start,ends,limits", [
    ("quandl_wiki_raw", ["AAPL", "MSFT", "GE"], "2013-01-02", ["2014-06-06", "2014-06-10", "2014-08-08"],
     QUANDL_LIMITS),
    ("alphavantage_daily_adjusted_huynhchau5399", ["AAPL", "MSFT", "TSLA", "IBM"], "2019-06-03",
     ["2020-08-28", "2020-09-02", "2020-11-10", "2020-11-19"], AV_LIMITS),
], ids=["quandl", "alphavantage"])
def test_real_as_traded_data_agrees_with_the_sources_adjusted_closes(shared_data, tmp_path, folder, tickers,
                                                                     start, ends, limits):
    """A backfill through splits and dividends, then nightly runs across a split and dividends."""
    files = [shared_data / folder / (f"WIKI-{t}.csv" if folder.startswith("quandl") else f"daily_adjusted_{t}.csv")
             for t in tickers]
    market = market_data_from_files(files)
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    with PolygonServer(market, api_key=API_KEY, today=ends[0]) as server:
        for index, end in enumerate(ends):
            mark = len(server.requests)
            result = ingest(url, server, end, tickers=tickers, start=start if index == 0 else None)
            assert result["exit_code"] == 0, result
            if index:  # history is never fetched again because of a corporate action
                assert all("/grouped/" in c["path"] or c["path"].endswith(f"/{end}")
                           for c in data_calls(server, mark)), data_calls(server, mark)
    # Split-adjusted: raw divided by the later split ratios, to the last bit that floats allow.
    want = _split_adjusted_closes(market, tickers, start, ends[-1])
    got = _read(url, "split")
    assert (got["trade_date"].to_numpy() == want["trade_date"].to_numpy()).all()
    np.testing.assert_allclose(got["close"].to_numpy(), want["close"].to_numpy(), rtol=1e-9, atol=0)
    np.testing.assert_allclose(got["volume"].to_numpy(), want["volume"].to_numpy(), rtol=1e-9, atol=0)
    # Raw is exactly what traded.
    raw = _read(url, "none")
    served = market.bars(start=start, end=ends[-1])
    served = served[served["ticker"].isin(tickers)].sort_values(["ticker", "trade_date"]).reset_index(drop=True)
    assert raw["close"].tolist() == served["close"].tolist()
    # Total return: the source's own split- and dividend-adjusted close, renormalised.
    adjusted = pd.concat(pd.read_csv(f).assign(ticker=t) for f, t in zip(files, tickers))
    adjusted.columns = [c.lower() for c in adjusted.columns]
    date_column = "date" if "date" in adjusted else "timestamp"
    adjusted["trade_date"] = pd.to_datetime(adjusted[date_column])
    close_column = "adj. close" if "adj. close" in adjusted else "adjusted_close"
    for ticker in tickers:
        series = adjusted[adjusted["ticker"] == ticker].set_index("trade_date")[close_column]
        assert _total_return_agreement(url, series, ticker) <= limits[ticker], ticker


def test_ledger_and_factors_for_a_split_and_a_dividend(database_url):
    market = generate_market(4, "2023-01-03", "2024-03-28", seed=13)
    ticker = market.constituents[1].symbol
    market.add_split(ticker, "2024-03-18", 1, 4)
    market.add_dividend(Dividend(ticker, pd.Timestamp("2024-03-11").date(), 0.5))
    with PolygonServer(market, api_key=API_KEY, today="2024-03-15") as server:
        ingest(database_url, server, "2024-03-15", start="2024-01-02")
        mark = len(server.requests)
        result = ingest(database_url, server, "2024-03-20")
        calls = [c["path"] for c in api_calls(server, mark)]
    # one grouped call per new session, 03-15 once more (settle), and the ledger's two calls
    assert sorted(calls) == sorted(["/stocks/v1/splits", "/stocks/v1/dividends"]
                                   + [f"/v2/aggs/grouped/locale/us/market/stocks/{d}"
                                      for d in ("2024-03-15", "2024-03-18", "2024-03-19", "2024-03-20")])
    assert result["exit_code"] == 0 and result["corporate_actions"] == {"splits": 1, "dividends": 0, "rejected": 0}
    raw = market.bars(ticker, "2024-01-02", "2024-03-20")
    prev_close = raw.set_index("trade_date").loc[pd.Timestamp("2024-03-08"), "close"]
    factors = query(database_url, f"SELECT valid_from, valid_to, split_factor, total_factor FROM adjustment_factors "
                                  f"WHERE ticker = '{ticker}' ORDER BY valid_from")
    dividend = 1 - 0.5 / prev_close
    assert [(str(a), str(b)) for a, b, _, _ in factors] == [("1900-01-01", "2024-03-10"),
                                                            ("2024-03-11", "2024-03-17")]
    assert [s for _, _, s, _ in factors] == [0.25, 0.25]
    assert factors[0][3] == pytest.approx(0.25 * dividend, rel=1e-12)
    assert factors[1][3] == 0.25
    split = _read(database_url, "split", [ticker]).set_index("trade_date")
    total = _read(database_url, "total", [ticker]).set_index("trade_date")
    raw = raw.set_index("trade_date")
    assert split.loc["2024-03-08", "close"] == pytest.approx(raw.loc["2024-03-08", "close"] / 4, rel=1e-12)
    assert split.loc["2024-03-08", "volume"] == pytest.approx(raw.loc["2024-03-08", "volume"] * 4, rel=1e-12)
    assert total.loc["2024-03-08", "close"] == pytest.approx(raw.loc["2024-03-08", "close"] / 4 * dividend, rel=1e-12)
    assert total.loc["2024-03-18", "close"] == raw.loc["2024-03-18", "close"]  # after the last event: as traded
    # The vendor's cumulative factor agrees with ours: nothing flagged.
    flags = json.loads(query(database_url, f"SELECT flags FROM ingestion_audit WHERE run_id = '{result['run_id']}' "
                                           f"AND ticker = '{ticker}'")[0][0])
    assert "vendor_factor_differs" not in flags
    assert stored(database_url)["ticker"].nunique() == 24


def test_free_tier_three_year_warehouse_takes_a_split_with_no_range_call_and_no_403(database_url):
    """The free tier answers 403 for bars older than two years; a warehouse older than that
    still gets a split right at once, because nothing is refetched."""
    market = generate_market(3, "2021-01-04", "2024-06-28", seed=31)
    ticker = market.constituents[0].symbol
    with PolygonServer(market, api_key=API_KEY, today="2023-01-06", history_limit_years=2) as server:
        ingest(database_url, server, "2023-01-06", start="2021-01-11")
        for end in ("2023-07-07", "2024-01-05", "2024-03-15"):  # three years of history by now
            assert ingest(database_url, server, end)["exit_code"] == 0
        market.add_split(ticker, "2024-03-18", 1, 2)
        mark = len(server.requests)
        result = ingest(database_url, server, "2024-03-19")
        calls = api_calls(server, mark)
    assert result["exit_code"] == 0
    assert not [c for c in calls if "/range/" in c["path"]] and not [c for c in calls if c["status"] == 403]
    want = market.bars(ticker, "2021-01-11", "2024-03-19", adjusted=True, today="2024-03-19")
    got = _read(database_url, "split", [ticker])
    np.testing.assert_allclose(got["close"].to_numpy(), want["close"].to_numpy(), rtol=1e-9)
    assert got["trade_date"].iloc[0] == pd.Timestamp("2021-01-11")


def test_malformed_ledger_records_are_rejected_with_reasons_and_the_next_run_is_unaffected(database_url):
    market = generate_market(3, "2024-01-02", "2024-03-28", seed=5)
    ticker = market.constituents[0].symbol
    good = {"id": "S-good", "ticker": ticker.lower(), "execution_date": "2024-03-12", "split_from": 1,
            "split_to": 2, "historical_adjustment_factor": 0.5}
    market.raw_split_records += [
        {"id": "S-zero", "ticker": ticker, "execution_date": "2024-03-12", "split_from": 0, "split_to": 2},
        {"id": "S-negative", "ticker": ticker, "execution_date": "2024-03-12", "split_from": 1, "split_to": -3},
        {"id": "S-nodate", "ticker": ticker, "split_from": 1, "split_to": 2},
        good, dict(good),  # the same event twice
    ]
    market.raw_dividend_records += [
        {"id": "D-eur", "ticker": ticker, "ex_dividend_date": "2024-03-13", "cash_amount": 0.4, "currency": "EUR"},
        {"id": "D-nodate", "ticker": ticker, "cash_amount": 0.4, "currency": "USD"},
    ]
    with PolygonServer(market, api_key=API_KEY, today="2024-03-11") as server:
        ingest(database_url, server, "2024-03-11", start="2024-02-01")
        result = ingest(database_url, server, "2024-03-14")
        assert result["exit_code"] == 0
        assert result["corporate_actions"] == {"splits": 1, "dividends": 0, "rejected": 5}
        again = ingest(database_url, server, "2024-03-15")
    # The records without a date slip through every date filter, so they come back, and are refused again.
    assert again["exit_code"] == 0 and again["corporate_actions"] == {"splits": 0, "dividends": 0, "rejected": 2}
    rejected = query(database_url, "SELECT kind, event_id, reasons FROM rejected_actions "
                                   f"WHERE run_id = '{result['run_id']}' ORDER BY event_id")
    assert rejected == [("dividend", "D-eur", "currency_EUR_without_exchange_rate"),
                        ("dividend", "D-nodate", "missing_ex_dividend_date"),
                        ("split", "S-negative", "non_positive_split_to"),
                        ("split", "S-nodate", "missing_execution_date"),
                        ("split", "S-zero", "non_positive_split_from")]
    assert query(database_url, "SELECT event_id, ticker FROM split_events") == [("S-good", ticker)]


def test_verify_adjustments_reports_differences_without_overwriting(database_url):
    from sqlalchemy import create_engine, text
    market = generate_market(3, "2024-01-02", "2024-03-28", seed=13)
    stale = market.constituents[1].symbol
    with PolygonServer(market, api_key=API_KEY, today="2024-03-15") as server:
        ingest(database_url, server, "2024-03-15", start="2024-02-01")
        engine = create_engine(database_url)
        with engine.begin() as conn:  # our history drifts from the vendor's: someone edited it
            conn.execute(text("UPDATE ticker_data_raw SET close_price = close_price * 2 WHERE ticker = :t "
                              "AND trade_date >= '2024-03-01'"), {"t": stale})
        engine.dispose()
        before = _read(database_url, "none")
        mark = len(server.requests)
        from CandleThrob.ingestion.pipeline import CompleteDataIngestion, RunOptions
        from ingest_helpers import make_config
        import datetime as dt
        ingestion = CompleteDataIngestion(make_config(database_url, server),
                                          clock=lambda: dt.datetime(2024, 3, 16, tzinfo=dt.timezone.utc))
        result = ingestion.run(RunOptions(verify_adjustments=True, tickers=[stale, "SPY"]))
        ingestion.warehouse.dispose()
        calls = data_calls(server, mark)
    assert len(calls) == 2 and all("adjusted=true" in c["query"] for c in calls)
    assert result["verified"] == {stale: 11, "SPY": 0}  # the 11 sessions from 03-01 to 03-15
    assert result["planned_calls"] == 2 == result["api_calls"]
    pd.testing.assert_frame_equal(_read(database_url, "none"), before)
