"""A constituents page that parses but cannot be believed never changes the universe.

Each variant is served by a hostile proxy in front of the real server, after a first run has
stored the 503 members of the real page: the run keeps the stored members, says why, and ends
partial (exit 1) so cron and Kestra notice. A footnote marker is page furniture, not a refusal.
"""

from __future__ import annotations

import itertools
import re
import string
from dataclasses import replace

import pytest

from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer, constituents_html

from hostile import HostileServer, raw_answer
from ingest_helpers import API_KEY, ingest, query

FIRST, SECOND = "2024-03-14", "2024-03-15"


@pytest.fixture(scope="module")
def market():
    return generate_market(503, "2024-03-01", "2024-03-20", seed=11)


def _page(rows) -> bytes:
    return constituents_html(rows).encode()


def _flooded(market) -> bytes:
    real = {c.symbol for c in market.constituents}
    fake = (symbol for symbol in ("".join(letters) for letters in itertools.product(string.ascii_uppercase, repeat=4))
            if symbol not in real)
    extra = [replace(c, symbol=symbol) for c, symbol in
             zip(itertools.cycle(market.constituents), itertools.islice(fake, 10_000 - 503))]
    return _page(list(market.constituents) + extra)


def _blank_symbols(market) -> bytes:
    rows = [replace(c, symbol="") if i % 12 == 0 and i < 480 else c
            for i, c in enumerate(market.constituents)]
    return _page(rows)


def _padded(market) -> bytes:
    unique = list(market.constituents[:450])
    return _page(unique + unique[:53])


def _truncated(market):
    body = _page(market.constituents)
    cut = body[: int(len(body) * 0.93)]

    def act(handler):  # HTTP/1.0 with no Content-Length: the client cannot tell the body is short
        handler.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + cut)
        handler.close_connection = True
    return act


VARIANTS = {
    "flood": (lambda m: raw_answer(_flooded(m), content_type="text/html"),
              "lists 10000 symbols, more than MAX_SP500_SYMBOLS=600"),
    "blank": (lambda m: raw_answer(_blank_symbols(m), content_type="text/html"),
              "constituents table has 40 company rows without a symbol"),
    "padded": (lambda m: raw_answer(_padded(m), content_type="text/html"),
               "adds 0 and removes 53 members at once"),
    "truncated": (_truncated, "more than MAX_UNIVERSE_CHANGES=10"),
}


def _members(url: str) -> list[str]:
    return [t for (t,) in query(url, "SELECT ticker FROM ticker_universe WHERE active AND kind = 'sp500' "
                                     "ORDER BY ticker")]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_page_that_cannot_be_believed_keeps_the_stored_universe_and_exits_1(database_url, market, variant):
    answer, words = VARIANTS[variant]
    with PolygonServer(market, api_key=API_KEY, today=SECOND) as server:
        first = ingest(database_url, server, FIRST, start=FIRST, min_sp500_symbols=450)
        assert first["exit_code"] == 0 and first["tickers"] == 523
        before = _members(database_url)
        assert len(before) == 503
        with HostileServer(server.url, lambda path, up: answer(market) if path.startswith("/wiki/") else None) \
                as hostile:
            result = ingest(database_url, server, SECOND, min_sp500_symbols=450,
                            sp500_url=f"{hostile.url}/wiki/List_of_S%26P_500_companies")
    assert result["exit_code"] == 1 and result["status"] == "partial"
    assert words in result["universe_refused"]
    assert _members(database_url) == before
    # the stored members were kept current all the same: the new session for all 523
    assert result["tickers"] == 523
    assert query(database_url, f"SELECT COUNT(*) FROM ticker_data WHERE trade_date = '{SECOND}'") == [(523,)]


def test_the_truncated_page_really_is_short(market):
    # The guard, not the parser, must be what refuses it: lxml reads the rows that arrived.
    body = _page(market.constituents)
    rows = len(re.findall(rb"<tr>", body[: int(len(body) * 0.93)]))
    assert 440 < rows < 503


def test_footnote_markers_are_stripped_not_refused(database_url, market):
    with PolygonServer(market, api_key=API_KEY, today=SECOND) as server:
        ingest(database_url, server, FIRST, start=FIRST, min_sp500_symbols=450)
        before = _members(database_url)
        marked = _page([c.__class__(**{**c.__dict__, "symbol": f"{c.symbol}[{i % 3 + 1}]"}) if i % 50 == 0 else c
                        for i, c in enumerate(market.constituents)])
        with HostileServer(server.url, lambda path, up: raw_answer(marked, content_type="text/html")
                           if path.startswith("/wiki/") else None) as hostile:
            result = ingest(database_url, server, SECOND, min_sp500_symbols=450,
                            sp500_url=f"{hostile.url}/wiki/List_of_S%26P_500_companies")
    assert "[1]" in marked.decode() and result["exit_code"] == 0 and result["universe_refused"] is None
    assert _members(database_url) == before
