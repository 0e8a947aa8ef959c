"""Late revisions: the vendor's values for a session can still change after the evening run.

The local server serves preliminary bars for a session once, then the final ones
(``revise_after_first_answer``). The next nightly run asks that session again (the
settle window, SETTLE_SESSIONS=1 by default), records each revised bar in the audit
with its values before and after, and stores the final bar."""

from __future__ import annotations

import json

import pytest

from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer, preliminary_bars

from ingest_helpers import API_KEY, api_calls, ingest, query

END = "2024-06-14"  # a Friday
EVENING = "2024-06-17"  # stored on its own evening, then revised by the vendor
NEXT = "2024-06-18"
COLUMNS = ("open", "high", "low", "close", "volume")


def _raw(url: str, day: str) -> dict[str, dict]:
    rows = query(url, "SELECT ticker, open_price, high_price, low_price, close_price, volume FROM ticker_data_raw "
                      f"WHERE trade_date = '{day}' ORDER BY ticker")
    return {r[0]: dict(zip(COLUMNS, map(float, r[1:]))) for r in rows}


def _grouped(day: str) -> str:
    return f"/v2/aggs/grouped/locale/us/market/stocks/{day}"


def test_the_next_night_asks_the_evening_session_again_records_and_applies_revisions(database_url):
    market = generate_market(5, "2024-05-01", "2024-06-28", seed=23)  # 5 S&P-like + 20 ETFs
    revised = sorted(market.tickers)[:3]
    final = market.bars(start=EVENING, end=EVENING)
    final = {t: row for t, row in zip(final["ticker"], final[list(COLUMNS)].to_dict("records"))}
    with PolygonServer(market, api_key=API_KEY, today=END) as server:
        assert ingest(database_url, server, END, start="2024-06-03")["exit_code"] == 0

        # The evening run stores the preliminary values of three tickers.
        preliminary = preliminary_bars(market, EVENING, 1.0)
        server.revise_after_first_answer(EVENING, preliminary[preliminary["ticker"].isin(revised)])
        evening = ingest(database_url, server, EVENING)
        assert evening["exit_code"] == 0 and evening["revised_bars"] == 0
        before = _raw(database_url, EVENING)
        for ticker in revised:
            assert before[ticker]["close"] == pytest.approx(final[ticker]["close"] * 1.01, abs=1e-4)

        # The next night: the new session, the evening session again, the ledger since then.
        mark = len(server.requests)
        nightly = ingest(database_url, server, NEXT)
        calls = api_calls(server, mark)
    paths = sorted(c["path"] for c in calls)
    assert paths == sorted([_grouped(EVENING), _grouped(NEXT), "/stocks/v1/dividends", "/stocks/v1/splits"])
    assert nightly["api_calls"] == nightly["planned_calls"] == len(calls) == 4  # the nightly count, settle included
    assert nightly["exit_code"] == 0 and nightly["settled_sessions"] == [EVENING]
    assert nightly["revised_bars"] == 3

    # The audit holds each revised bar, before and after, and how many per ticker.
    audit = {t: json.loads(f) for t, f in query(database_url, "SELECT ticker, flags FROM ingestion_audit "
                                                             f"WHERE run_id = '{nightly['run_id']}'")}
    assert sorted(t for t, flags in audit.items() if "revised" in flags) == revised
    for ticker in revised:
        (item,) = audit[ticker]["revised"]
        assert audit[ticker]["revised_count"] == 1
        assert item["ticker"] == ticker and item["date"] == EVENING
        for column in COLUMNS:
            assert item["before"][column] == pytest.approx(before[ticker][column], rel=1e-12)
            assert item["after"][column] == pytest.approx(final[ticker][column], rel=1e-12)

    # Applied: every stored bar of that session is the vendor's final one.
    after = _raw(database_url, EVENING)
    assert sorted(after) == sorted(final)
    for ticker, values in after.items():
        assert values == pytest.approx(final[ticker], rel=1e-12), ticker
    # The settled session is not asked a third time.
    assert query(database_url, "SELECT state_value FROM ingestion_state WHERE state_key = 'young_sessions'") \
        == [(NEXT,)]
