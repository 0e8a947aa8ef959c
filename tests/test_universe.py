"""The ticker universe: symbol cleaning, the Wikipedia constituents page, --tickers."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from CandleThrob import __version__
from CandleThrob.config import MIN_SP500_SYMBOLS
from CandleThrob.errors import InvalidTickerError, UniverseError
from CandleThrob.source.http import HttpGuard
from CandleThrob.universe.constituents import (
    fetch_constituents, get_sp500_tickers, parse_constituents_html,
)
from CandleThrob.universe.tickers import ETF_TICKERS, clean_ticker, get_etf_tickers, parse_ticker_list

PAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sp500_wikipedia_html"
PAGE_2018 = PAGES / "List_of_SP500_companies_2018-02_rev821321383.html"
PAGE_2024 = PAGES / "List_of_SP500_companies_2024-10_rev1250356709.html"
needs_pages = pytest.mark.skipif(not PAGES.is_dir(), reason="saved Wikipedia pages not available")


def constituents_page(symbols: list[str]) -> str:
    """A page shaped like today's Wikipedia one: table#constituents after another table."""
    rows = "".join(f"<tr><td>{s}</td><td>Company {s}</td><td>Industrials</td></tr>" for s in symbols)
    return ("<html><body><table><tr><th>Note</th></tr><tr><td>x</td></tr></table>"
            '<table class="wikitable sortable" id="constituents">'
            "<tr><th>Symbol</th><th>Security</th><th>GICS Sector</th></tr>"
            f"{rows}</table></body></html>")


# --- ETFs -------------------------------------------------------------------------

def test_etf_tickers_are_the_twenty_in_order():
    assert ETF_TICKERS == ("SPY", "QQQ", "DIA", "IWM", "VTI", "TLT", "GLD", "XLF", "XLE", "XLK",
                           "XLV", "ARKK", "VXX", "TQQQ", "SQQQ", "SOXL", "XLI", "XLY", "XLP", "SLV")
    assert get_etf_tickers() == list(ETF_TICKERS)


def test_get_etf_tickers_returns_a_copy():
    get_etf_tickers().clear()
    assert len(get_etf_tickers()) == 20


# --- clean_ticker -----------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("MMM", "MMM"),
    ("aapl", "AAPL"),
    ("brk-b", "BRK.B"),
    (" BRK.B ", "BRK.B"),
    ("BRK/B", "BRK.B"),
    ("bf.b", "BF.B"),
    ("BRK\u2013B", "BRK.B"),        # en dash, as pasted from a web page
    ("\u200bGOOGL\u00a0", "GOOGL"),  # zero-width space and no-break space around it
    ("A", "A"),
    ("ABCDE.AB", "ABCDE.AB"),
])
def test_clean_ticker_normalises_to_polygon_form(raw, expected):
    assert clean_ticker(raw) == expected


@pytest.mark.parametrize("raw, reason", [
    (None, "expected a string, got NoneType"),
    (123, "expected a string, got int"),
    ("", "empty"),
    ("   ", "empty"),
    ("NYSE:LMT", "exchange prefixes are not allowed"),
    ("BRK B", "contains whitespace"),
    ("123", "contains digits"),
    ("BRK-1", "contains digits"),
    ("abc$", "unexpected characters '$'"),
    ("ß", "unexpected characters 'ß'"),  # would upper-case to the valid-looking 'SS'
    ("ABCDEF", "too long"),
    ("BRK.BBB", "too long"),
    ("BRK.", "misplaced share-class separator"),
    (".B", "misplaced share-class separator"),
    ("A.B.C", "misplaced share-class separator"),
])
def test_clean_ticker_rejects_what_is_not_a_us_symbol(raw, reason):
    with pytest.raises(InvalidTickerError) as caught:
        clean_ticker(raw)
    message = str(caught.value)
    assert message.startswith(f"{raw!r} is not a valid ticker symbol: {reason}")
    assert "allowed: 1-5 letters, optionally followed by '.' and a 1-2 letter share class" in message
    assert caught.value.value == raw


def test_invalid_ticker_error_is_a_value_error():
    assert issubclass(InvalidTickerError, ValueError)


# --- parse_ticker_list (--tickers) ------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("AAPL", ["AAPL"]),
    ("AAPL,MSFT", ["AAPL", "MSFT"]),
    ("msft, brk-b  SPY,", ["MSFT", "BRK.B", "SPY"]),
    ("BRK.B,brk/b,AAPL,BRK-B", ["BRK.B", "AAPL"]),
])
def test_parse_ticker_list(text, expected):
    assert parse_ticker_list(text) == expected


def test_parse_ticker_list_names_the_bad_entry():
    with pytest.raises(InvalidTickerError, match=r"^'NYSE:LMT' is not a valid ticker symbol: exchange"):
        parse_ticker_list("AAPL,NYSE:LMT,MSFT")


@pytest.mark.parametrize("text", ["", " , ,"])
def test_parse_ticker_list_refuses_an_empty_list(text):
    with pytest.raises(InvalidTickerError, match="no tickers given"):
        parse_ticker_list(text)


# --- parse_constituents_html ------------------------------------------------------

@needs_pages
def test_parse_2018_page_layout():
    frame = parse_constituents_html(PAGE_2018.read_text(encoding="utf-8"))
    assert list(frame.columns) == ["ticker", "name", "sector"]
    assert len(frame) == 505
    assert frame["ticker"].is_unique
    assert frame["ticker"].tolist()[:3] == ["MMM", "ABT", "ABBV"]
    assert {"BRK.B", "BF.B", "MMM", "GOOGL"} <= set(frame["ticker"])
    rows = frame.set_index("ticker")
    assert rows.loc["GOOGL"].tolist() == ["Alphabet Inc Class A", "Information Technology"]
    assert rows.loc["BRK.B"].tolist() == ["Berkshire Hathaway", "Financials"]


@needs_pages
def test_parse_2024_page_layout():
    frame = parse_constituents_html(PAGE_2024.read_text(encoding="utf-8"))
    assert list(frame.columns) == ["ticker", "name", "sector"]
    assert len(frame) == 503
    assert frame["ticker"].is_unique
    assert frame["ticker"].tolist()[:3] == ["MMM", "AOS", "ABT"]
    assert {"BRK.B", "BF.B", "MMM", "GOOGL"} <= set(frame["ticker"])
    rows = frame.set_index("ticker")
    assert rows.loc["GOOGL"].tolist() == ["Alphabet Inc. (Class A)", "Communication Services"]
    assert rows.loc["BF.B"].tolist() == ["Brown\u2013Forman", "Consumer Staples"]


def test_parse_cleans_dedupes_and_keeps_page_order():
    frame = parse_constituents_html(constituents_page(["MSFT", "brk-b", "NA", "BRK.B", "AAPL"]))
    # "NA" must stay a ticker, not become a missing value.
    assert frame["ticker"].tolist() == ["MSFT", "BRK.B", "NA", "AAPL"]
    assert frame.loc[1].tolist() == ["BRK.B", "Company brk-b", "Industrials"]


def test_parse_falls_back_to_a_table_with_a_symbol_column():
    page = ("<table><tr><th>Other</th></tr><tr><td>x</td></tr></table>"
            "<table><tr><th>Ticker symbol</th><th>Security</th><th>GICS Sector</th></tr>"
            "<tr><td>MMM</td><td>3M Company</td><td>Industrials</td></tr></table>")
    assert parse_constituents_html(page).values.tolist() == [["MMM", "3M Company", "Industrials"]]


@pytest.mark.parametrize("page, message", [
    ("", "no tables in the constituents page"),
    ("<p>maintenance</p>", "no tables in the constituents page"),
    ("<table><tr><th>Name</th></tr><tr><td>x</td></tr></table>",
     "no table with a Symbol or Ticker symbol column"),
])
def test_parse_refuses_a_page_without_the_table(page, message):
    with pytest.raises(UniverseError, match=message):
        parse_constituents_html(page)


def test_parse_refuses_a_table_with_a_junk_symbol():
    with pytest.raises(UniverseError, match="invalid symbol: 'NYSE:LMT' is not a valid ticker"):
        parse_constituents_html(constituents_page(["AAPL", "NYSE:LMT"]))


# --- fetching over HTTP (a real server on loopback) -------------------------------

class _Handler(BaseHTTPRequestHandler):
    routes: dict = {}          # path -> (status, body bytes)
    user_agents: list = []

    def do_GET(self):
        self.user_agents.append(self.headers.get("User-Agent"))
        if self.path == "/slow":
            time.sleep(1)
        status, body = self.routes.get(self.path, (404, b"not found"))
        self.send_response(status)
        # No charset, as http.server and many static hosts send it.
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the /slow client gave up: expected
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """Base URL of a local server; register pages in ``_Handler.routes``."""
    _Handler.routes, _Handler.user_agents = {}, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True  # the /slow handler must not hold up shutdown
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


WIKI_PATH = "/wiki/List_of_S%26P_500_companies"


@needs_pages
def test_get_sp500_tickers_from_the_saved_page(server):
    _Handler.routes[WIKI_PATH] = (200, PAGE_2024.read_bytes())
    tickers = get_sp500_tickers(server + WIKI_PATH)
    assert len(tickers) == 503
    assert tickers[:3] == ["MMM", "AOS", "ABT"]
    assert {"BRK.B", "BF.B", "GOOGL"} <= set(tickers)
    assert _Handler.user_agents == [
        f"CandleThrob/{__version__} (+https://github.com/candlethrob; market-data ingestion)"]


@needs_pages
def test_fetch_constituents_decodes_utf8_without_a_charset_header(server):
    _Handler.routes[WIKI_PATH] = (200, PAGE_2024.read_bytes())
    frame = fetch_constituents(server + WIKI_PATH)
    assert frame.set_index("ticker").loc["BF.B", "name"] == "Brown\u2013Forman"


def test_url_defaults_to_sp500_url_from_the_environment(server, monkeypatch):
    symbols = [f"T{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(MIN_SP500_SYMBOLS)]
    _Handler.routes["/list"] = (200, constituents_page(symbols).encode())
    monkeypatch.setenv("SP500_URL", server + "/list")
    assert get_sp500_tickers() == symbols


def test_an_injected_http_client_is_used(server):
    _Handler.routes["/list"] = (200, constituents_page(["AAPL", "MSFT"]).encode())
    guard = HttpGuard(timeout=5, max_bytes=2**20, headers={"User-Agent": "something-else"})
    assert get_sp500_tickers(server + "/list", http=guard, min_symbols=2) == ["AAPL", "MSFT"]
    assert _Handler.user_agents == ["something-else"]


def test_too_few_symbols_is_refused(server):
    _Handler.routes["/ten"] = (200, constituents_page([f"A{chr(65 + i)}" for i in range(10)]).encode())
    with pytest.raises(UniverseError) as caught:
        get_sp500_tickers(server + "/ten")
    assert str(caught.value) == (f"only 10 S&P 500 symbols found at {server}/ten, at least 450 "
                                 "required; refusing to shrink the universe")


def test_http_error_is_a_universe_error(server):
    _Handler.routes["/broken"] = (500, b"oops")
    with pytest.raises(UniverseError, match=r"cannot fetch .* from http://127\.0\.0\.1:\d+/broken: 500"):
        get_sp500_tickers(server + "/broken")


def test_unparseable_page_is_a_universe_error(server):
    _Handler.routes["/maintenance"] = (200, b"<p>Wikipedia is down for maintenance</p>")
    with pytest.raises(UniverseError, match=r"no tables in the constituents page.*\(from http://"):
        get_sp500_tickers(server + "/maintenance")


def test_timeout_is_a_universe_error(server):
    _Handler.routes["/slow"] = (200, constituents_page(["AAPL"]).encode())
    with pytest.raises(UniverseError, match="cannot fetch"):
        get_sp500_tickers(server + "/slow", timeout=0.3)


def test_connection_refused_is_a_universe_error():
    # Bind then close to get a loopback port that nothing listens on.
    probe = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port = probe.server_address[1]
    probe.server_close()
    with pytest.raises(UniverseError, match=f"cannot fetch .* from http://127.0.0.1:{port}/"):
        get_sp500_tickers(f"http://127.0.0.1:{port}/", timeout=1)
