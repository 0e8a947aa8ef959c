"""The FRED client and the guarded source that carries it, against the local FRED server on loopback."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import pytest
from macro_helpers import CPI_VINTAGES, KEY, TODAY, revised_data

from CandleThrob.errors import AuthenticationError, RateLimitedError, RetriableError, SkippableError
from CandleThrob.macro.fred import (
    EARLIEST_REALTIME,
    MISSING_VALUE,
    OPEN_END,
    FredClient,
    RejectedRow,
    SeriesInfo,
    Vintage,
    parse_row,
)
from CandleThrob.source.fred import FRED_BURST, FRED_CALLS_PER_MINUTE, FRED_SPACING, FredSource
from CandleThrob.source.retry import RetryPolicy
from CandleThrob.testing.fred_server import FredServer, SeriesMeta

UTC_MINUS_5 = dt.timezone(dt.timedelta(hours=-5))


@pytest.fixture(scope="module")
def server():
    with FredServer(revised_data(), api_key=KEY, today=TODAY) as running:
        yield running


def source(url, key=KEY, retries=0, timeout=5.0, **options):
    """Retries off unless asked: each test sees the error of one attempt."""
    return FredSource(key, url, retry_policy=RetryPolicy(max_retries=retries, base_delay=0.0), timeout=timeout,
                      **options)


def client(server, key=KEY, **options):
    return FredClient(key, server.url, source(server.url, key).get_json, **options)


def test_series_info(server):
    assert client(server).series_info("CPITEST") == SeriesInfo(
        series_id="CPITEST", title="Test Consumer Prices", units="Index 1982-1984=100", frequency="Monthly",
        frequency_short="M", seasonal_adjustment="Seasonally Adjusted",
        last_updated=dt.datetime(2024, 5, 15, 7, 51, 4, tzinfo=UTC_MINUS_5),
        observation_start=dt.date(2024, 1, 1), observation_end=dt.date(2024, 4, 1), realtime_start=TODAY)


def test_observations_bring_every_vintage_with_its_real_time_period(server):
    batch = client(server).observations("CPITEST", EARLIEST_REALTIME)
    assert [(v.observation_date, v.realtime_start, v.realtime_end, v.value) for v in batch.vintages] == CPI_VINTAGES
    assert {v.series_id for v in batch.vintages} == {"CPITEST"} and {v.note for v in batch.vintages} == {None}
    assert (batch.series_id, batch.realtime_start, batch.realtime_end, batch.rejected, batch.pages) == \
        ("CPITEST", EARLIEST_REALTIME, OPEN_END, (), 1)


def test_pages_follow_offsets_to_the_end(server):
    whole = client(server).observations("CPITEST", EARLIEST_REALTIME)
    first = len(server.requests)
    paged = client(server, page_limit=4).observations("CPITEST", EARLIEST_REALTIME)
    assert paged.vintages == whole.vintages and paged.pages == 3
    queries = [r["query"] for r in server.requests[first:]]
    assert [dict(parse_qsl(q))["offset"] for q in queries] == ["0", "4", "8"]
    assert all("limit=4" in q and "realtime_end=9999-12-31" in q and "sort_order=asc" in q for q in queries)


def test_a_window_and_observation_start_are_passed_and_rows_come_clipped(server):
    batch = client(server).observations("CPITEST", dt.date(2024, 5, 1), dt.date(2024, 5, 16),
                                        observation_start=dt.date(2024, 3, 1))
    assert [(v.observation_date, v.realtime_start, v.realtime_end, v.value) for v in batch.vintages] == [
        (dt.date(2024, 3, 1), dt.date(2024, 5, 1), dt.date(2024, 5, 14), 312.332),
        (dt.date(2024, 3, 1), dt.date(2024, 5, 15), dt.date(2024, 5, 16), 312.45),
        (dt.date(2024, 4, 1), dt.date(2024, 5, 15), dt.date(2024, 5, 16), 313.548)]
    assert batch.realtime_end == dt.date(2024, 5, 16)


def test_a_dot_is_a_missing_value_with_its_reason(server):
    batch = client(server).observations("DAILYTEST", EARLIEST_REALTIME)
    assert [(v.observation_date, v.value, v.note) for v in batch.vintages] == [
        (dt.date(2024, 5, 13), 4.5, None), (dt.date(2024, 5, 14), None, MISSING_VALUE),
        (dt.date(2024, 5, 15), 4.52, None)]


def test_malformed_values_from_the_server_are_rejected_rows():
    data = revised_data()
    data.add_series("ODDTEST", SeriesMeta("Odd", "Units", "Units", "Daily", "D"))
    for day, value in enumerate(("n/a", "1_000", "nan", "1e999", "", "-12.5", "+.5", "3e2"), start=1):
        data.publish("ODDTEST", dt.date(2024, 1, day), value, dt.date(2024, 2, 1))
    with FredServer(data, today="2024-02-01") as running:
        batch = client(running).observations("ODDTEST", EARLIEST_REALTIME)
    assert [r.reason for r in batch.rejected] == [f"non-numeric value {text!r}"
                                                  for text in ("n/a", "1_000", "nan", "1e999", "")]
    assert [r.row["date"] for r in batch.rejected] == [f"2024-01-0{day}" for day in range(1, 6)]
    assert [v.value for v in batch.vintages] == [-12.5, 0.5, 300.0]


ROW = {"realtime_start": "2024-02-13", "realtime_end": "9999-12-31", "date": "2024-01-01", "value": "1.5"}


@pytest.mark.parametrize("row, reason", [
    ({**ROW, "date": "2024-13-01"}, "bad date '2024-13-01'"),
    ({**ROW, "date": "20240101"}, "bad date '20240101'"),
    ({**ROW, "realtime_start": None}, "bad realtime_start None"),
    ({k: v for k, v in ROW.items() if k != "realtime_end"}, "bad realtime_end None"),
    ({**ROW, "realtime_end": "2024-02-12"}, "realtime_start after realtime_end"),
    ({**ROW, "value": 1.5}, "non-numeric value 1.5"),
    (["2024-01-01", "1.5"], "not an object"),
])
def test_malformed_rows_are_rejected_with_a_reason_never_raised(row, reason):
    assert parse_row("X", row) == RejectedRow("X", row, reason)


def test_rejected_rows_do_not_stop_a_batch():
    pages = {"0": {"count": 3, "offset": 0, "observations": [ROW, {**ROW, "date": "2024-02-30"},
                                                               {**ROW, "date": "2024-02-01", "value": "."}]}}
    batch = FredClient(KEY, "http://fred.invalid", lambda url, params: pages[params["offset"]]).observations(
        "X", EARLIEST_REALTIME)
    assert batch.vintages == (Vintage("X", dt.date(2024, 1, 1), dt.date(2024, 2, 13), OPEN_END, 1.5),
                              Vintage("X", dt.date(2024, 2, 1), dt.date(2024, 2, 13), OPEN_END, None, MISSING_VALUE))
    assert [r.reason for r in batch.rejected] == ["bad date '2024-02-30'"]


def test_the_transport_gets_the_url_and_every_parameter():
    calls = []

    def get_json(url, params):
        calls.append((url, dict(params)))
        return {"count": 0, "offset": 0, "observations": []}

    FredClient(KEY, "https://fred.example/", get_json, page_limit=500).observations(
        "GDP", dt.date(2024, 1, 2), observation_start=dt.date(2020, 1, 1))
    assert calls == [("https://fred.example/fred/series/observations", {
        "series_id": "GDP", "realtime_start": "2024-01-02", "realtime_end": "9999-12-31", "sort_order": "asc",
        "limit": "500", "observation_start": "2020-01-01", "offset": "0", "api_key": KEY, "file_type": "json"})]


# -- paging that goes wrong --------------------------------------------------------------

def paged(pages, **options):
    """A client over canned pages, keyed by offset."""
    return FredClient(KEY, "http://fred.invalid", lambda url, params: pages[int(params["offset"])], **options)


def page(offset, count, dates):
    return {"count": count, "offset": offset, "observations": [{**ROW, "date": d} for d in dates]}


@pytest.mark.parametrize("pages, message", [
    ({0: page(0, 4, ["2024-01-01", "2024-02-01"]), 2: page(0, 4, ["2024-01-01", "2024-02-01"])},
     "the page at offset 2 does not advance"),  # offset ignored, echoed wrong
    ({0: page(0, 4, ["2024-01-01", "2024-02-01"]), 2: page(2, 4, ["2024-01-01", "2024-02-01"])},
     "the page at offset 2 does not advance"),  # offset echoed, same rows again
    ({0: page(0, 4, ["2024-01-01", "2024-02-01"]), 2: page(2, 4, [])}, "the page at offset 2 does not advance"),
    ({0: page(0, 4, ["2024-01-01", "2024-02-01"]), 2: page(2, 5, ["2024-03-01", "2024-04-01"])},
     "the series changed while paging (4 rows, then 5)"),
    ({0: {"count": 1, "offset": 0}}, "unexpected answer (no observations or count)"),
])
def test_a_page_that_does_not_advance_is_retriable(pages, message):
    with pytest.raises(RetriableError) as caught:
        paged(pages, page_limit=2).observations("X", EARLIEST_REALTIME)
    assert str(caught.value).endswith(message)


def test_more_pages_than_the_cap_skip_the_series(server):
    first = len(server.requests)
    with pytest.raises(SkippableError, match="CPITEST: more than 3 pages of 2 rows"):
        client(server, page_limit=2, max_pages=3).observations("CPITEST", EARLIEST_REALTIME)
    assert len(server.requests) - first == 3


# -- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["f" * 32, "wrong", ""])
def test_a_refused_key_is_an_authentication_error(server, key):
    for call in (lambda c: c.series_info("CPITEST"), lambda c: c.observations("CPITEST", TODAY)):
        with pytest.raises(AuthenticationError) as caught:
            call(client(server, key=key))
        assert str(caught.value).startswith("FRED refused the key (HTTP 400: Bad Request.  ")
        assert str(caught.value).endswith("); check FRED_API_KEY")
        assert "api_key" in str(caught.value) and caught.value.exit_code == 3


def test_an_unknown_series_is_skipped(server):
    with pytest.raises(SkippableError) as caught:
        client(server).series_info("NOSUCH")
    assert caught.value.status == 400
    assert str(caught.value) == "/fred/series: HTTP 400: Bad Request.  The series does not exist."


def test_server_faults_are_retriable_and_never_show_the_key():
    for kind in ("5xx", "reset", "truncated"):
        with FredServer(revised_data(), today=TODAY, fault_rate=1.0, fault_kinds=[kind], seed=1) as running:
            for call in (lambda c: c.series_info("CPITEST"), lambda c: c.observations("CPITEST", TODAY)):
                with pytest.raises(RetriableError) as caught:
                    call(client(running))
                assert KEY not in str(caught.value)
                if kind == "5xx":
                    assert caught.value.status in (500, 502, 503)
                    assert str(caught.value).startswith("/fred/series")
                    assert f": HTTP {caught.value.status}: " in str(caught.value)
                else:
                    assert caught.value.status in (None, 200)


def test_faults_are_retried_by_the_policy_until_an_answer_comes():
    with FredServer(revised_data(), api_key=KEY, today=TODAY, fault_rate=0.5, fault_kinds=["5xx", "reset",
                                                                                           "truncated"],
                    seed=3) as running:
        fred = source(running.url, retries=10)
        batch = FredClient(KEY, running.url, fred.get_json).observations("CPITEST", EARLIEST_REALTIME)
        faults = [r["fault"] for r in running.requests]
    assert [(v.observation_date, v.realtime_start, v.realtime_end, v.value) for v in batch.vintages] == CPI_VINTAGES
    assert faults[-1] is None and all(faults[:-1]) and len(faults) > 1  # failed attempts, then the answer
    stats = fred.stats()
    assert stats.calls == {"/fred/series/observations": len(faults)}
    assert stats.failed_calls == {"/fred/series/observations": len(faults) - 1}
    assert sum(stats.retries_by_category.values()) == len(faults) - 1


def test_a_stalled_answer_times_out_as_retriable():
    with FredServer(revised_data(), fault_rate=1.0, fault_kinds=["slow"], stall_seconds=5) as running, \
            pytest.raises(RetriableError, match=r"/fred/series within 0.3 s \(REQUEST_TIMEOUT\)$"):
        FredClient(KEY, running.url, source(running.url, timeout=0.3).get_json).series_info("CPITEST")


def test_nothing_listening_is_retriable():
    with FredServer(revised_data()) as running:
        url = running.url
    with pytest.raises(RetriableError, match="^network error .* from http://127.0.0.1:[0-9]+/fred/series$"):
        FredClient(KEY, url, source(url, timeout=2.0).get_json).series_info("CPITEST")


def test_the_rate_limit_is_retriable_with_retry_after():
    with FredServer(revised_data(), calls_per_minute=1, send_retry_after=True) as running:
        fred = client(running)
        fred.series_info("CPITEST")
        with pytest.raises(RateLimitedError) as caught:
            fred.series_info("CPITEST")
    assert caught.value.status == 429 and 1 <= caught.value.retry_after <= 60


def test_the_limiter_keeps_within_freds_published_limit():
    limiter = FredSource.from_config(_config(), sleep=lambda seconds: None).rate_limiter
    # GCRA: at most burst + 60 s / spacing calls in any minute
    assert FRED_BURST + 60 / FRED_SPACING == FRED_CALLS_PER_MINUTE == 120
    assert (limiter.burst, limiter.base_interval) == (FRED_BURST, FRED_SPACING)


def _config(**overrides):
    from CandleThrob.config import AdvancedBatchConfig

    return AdvancedBatchConfig.from_env({"FRED_API_KEY": KEY}, **overrides)


@contextlib.contextmanager
def answering(status, body, content_type="application/json", headers=None):
    """A loopback server that answers every GET with ``body``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.mark.parametrize("status, body, content_type", [
    (200, b"\xff\xfe{}", "application/json"),
    (200, b"<html>maintenance</html>", "text/html"),
    (200, b"[1, 2]", "application/json"),
    (503, b"\xff not json", "text/plain"),
])
def test_bodies_that_are_not_a_json_object_are_retriable(status, body, content_type):
    with answering(status, body, content_type) as url, pytest.raises(RetriableError) as caught:
        source(url).get_json(url + "/fred/series", {"api_key": KEY})
    assert caught.value.status == status


@pytest.mark.parametrize("status, message, expected", [
    (400, "Bad Request.  Variable api_key has not been set.", AuthenticationError),
    (400, "Bad Request.  Variable limit is not between 1 and 100000.", SkippableError),
    (401, None, AuthenticationError),
    (404, None, SkippableError),
    (423, None, SkippableError),
    (408, None, RetriableError),
    (500, "Internal Server Error", RetriableError),
    (429, None, RateLimitedError),
])
def test_freds_answers_map_to_the_projects_errors(status, message, expected):
    body = b"" if message is None else json.dumps({"error_code": status, "error_message": message}).encode()
    with answering(status, body, headers={"Retry-After": "7"}) as url, pytest.raises(expected) as caught:
        source(url).get_json(url + "/fred/series", {"api_key": KEY})
    assert type(caught.value) is expected
    if expected is not AuthenticationError:
        assert caught.value.status == status
    if expected is RateLimitedError:
        assert caught.value.retry_after == 7.0


def test_a_retry_after_beyond_the_cap_leaves_the_series_for_the_next_run():
    with answering(429, b"{}", headers={"Retry-After": "3600"}) as url, pytest.raises(SkippableError) as caught:
        source(url, max_retry_after=300).get_json(url + "/fred/series", {"api_key": KEY})
    assert "3600 s (Retry-After), more than MAX_RETRY_AFTER=300 s" in str(caught.value)


def test_a_server_echoing_the_key_never_gets_it_into_a_message():
    body = json.dumps({"error_code": 400, "error_message": f"Bad Request.  api_key {KEY} is not registered."})
    with answering(400, body.encode()) as url, pytest.raises(AuthenticationError) as caught:
        source(url).get_json(url + "/fred/series", {"api_key": KEY})
    assert KEY not in str(caught.value) and "api_key *** is not registered" in str(caught.value)
