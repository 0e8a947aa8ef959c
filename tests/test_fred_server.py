"""The local FRED server: FRED's shapes, real-time clipping, paging, keys, faults, files, command line."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import urllib3
from macro_helpers import KEY, TODAY, revised_data

from CandleThrob.testing.fred_server import (
    KEY_MALFORMED,
    KEY_NOT_REGISTERED,
    KEY_NOT_SET,
    RATE_LIMITED,
    SERIES_MISSING,
    FredServer,
    generate_demo,
    load_vintages_csv,
)

HTTP = urllib3.PoolManager(retries=False, timeout=5)
ROOT = Path(__file__).resolve().parents[1]
OBSERVATIONS, SERIES = "/fred/series/observations", "/fred/series"


@pytest.fixture(scope="module")
def server():
    with FredServer(revised_data(), today=TODAY) as running:
        yield running


def fetch(server, path, key=KEY, timeout=5.0, **params):
    fields = {"file_type": "json", **params}
    if key is not None:
        fields["api_key"] = key
    return HTTP.request("GET", server.url + path, fields=fields, timeout=timeout)


def get(server, path, key=KEY, **params):
    response = fetch(server, path, key, **params)
    return response.status, json.loads(response.data)


def rows(body):
    return [(o["date"], o["realtime_start"], o["realtime_end"], o["value"]) for o in body["observations"]]


# -- generated data -------------------------------------------------------------------------

def test_demo_is_deterministic_by_seed_and_a_later_end_only_adds():
    first = generate_demo("2023-01-01", "2024-06-30", seed=1)
    again = generate_demo("2023-01-01", "2024-06-30", seed=1)
    longer = generate_demo("2023-01-01", "2024-09-30", seed=1)
    other = generate_demo("2023-01-01", "2024-06-30", seed=2)
    day = dt.date(2024, 6, 30)
    assert first.series_ids == ["CPIAUCSL", "DGS10", "UNRATE"]
    for series_id in first.series_ids:
        assert first.view(series_id, day) == again.view(series_id, day) == longer.view(series_id, day)
        assert first.view(series_id, day) != other.view(series_id, day)
    assert first.last_release() == dt.date(2024, 6, 28)  # a Friday: DGS10 of Thursday the 27th


def test_demo_cpi_is_released_weeks_after_its_month_and_revised_twice():
    view = generate_demo("2023-01-01", "2024-06-30", seed=1).view("CPIAUCSL", dt.date(2024, 6, 30))
    by_month: dict[dt.date, list] = {}
    for vintage in view.vintages:
        by_month.setdefault(vintage.date, []).append(vintage)
    assert (min(by_month), max(by_month)) == (dt.date(2023, 1, 1), dt.date(2024, 5, 1))
    first_releases = {month: vintages[0].realtime_start for month, vintages in by_month.items()}
    for month, vintages in by_month.items():
        released = first_releases[month]
        next_month = (month + dt.timedelta(days=32)).replace(day=1)
        assert released.weekday() < 5 and next_month + dt.timedelta(days=9) <= released
        assert released <= next_month + dt.timedelta(days=16)  # the 15th, or the Monday after
        # revised at the next two monthly releases: each vintage ends the day before the next one
        later = sorted(d for m, d in first_releases.items() if m > month)[:2]
        assert [v.realtime_start for v in vintages] == [released] + later
        assert [v.realtime_end for v in vintages[:-1]] == [d - dt.timedelta(days=1) for d in later]
        assert vintages[-1].realtime_end == dt.date(9999, 12, 31)
        values = [v.value for v in vintages]
        assert all(a != b for a, b in itertools.pairwise(values)) and all(len(v.split(".")[1]) == 3 for v in values)
    assert [len(by_month[m]) for m in sorted(by_month)][-3:] == [3, 2, 1]


def test_demo_daily_series_has_dots_on_holidays_released_the_next_weekday():
    data = generate_demo("2024-01-01", "2024-02-29", seed=1)
    view = {v.date: v for v in data.view("DGS10", dt.date(2024, 2, 29)).vintages}
    assert view[dt.date(2024, 1, 15)].value == "."  # Martin Luther King Jr. Day
    assert view[dt.date(2024, 1, 15)].realtime_start == dt.date(2024, 1, 16)
    assert view[dt.date(2024, 1, 12)].realtime_start == dt.date(2024, 1, 15)  # Friday -> Monday
    assert view[dt.date(2024, 1, 12)].value != "." and dt.date(2024, 1, 13) not in view
    assert [d for d, v in view.items() if v.value == "."] == [dt.date(2024, 1, 1), dt.date(2024, 1, 15),
                                                               dt.date(2024, 2, 19)]
    unrate = data.view("UNRATE", dt.date(2024, 2, 29)).vintages
    assert [(v.date, v.realtime_start) for v in unrate] == [(dt.date(2024, 1, 1), dt.date(2024, 2, 9))]


# -- observations ------------------------------------------------------------------------------

def test_observations_default_to_today_in_freds_shape(server):
    status, body = get(server, OBSERVATIONS, series_id="CPITEST", observation_end="2024-02-01")
    assert status == 200
    assert body == {
        "realtime_start": "2024-05-20", "realtime_end": "2024-05-20", "observation_start": "1776-07-04",
        "observation_end": "2024-02-01", "units": "lin", "output_type": 1, "file_type": "json",
        "order_by": "observation_date", "sort_order": "asc", "count": 2, "offset": 0, "limit": 100000,
        "observations": [
            {"realtime_start": "2024-05-20", "realtime_end": "2024-05-20", "date": "2024-01-01", "value": "308.611"},
            {"realtime_start": "2024-05-20", "realtime_end": "2024-05-20", "date": "2024-02-01", "value": "310.222"}]}


def test_every_vintage_meeting_the_window_is_served_clipped_to_it(server):
    _, body = get(server, OBSERVATIONS, series_id="CPITEST", realtime_start="2024-03-01",
                  realtime_end="2024-04-30", observation_end="2024-01-01")
    assert rows(body) == [("2024-01-01", "2024-03-01", "2024-03-11", "308.417"),
                          ("2024-01-01", "2024-03-12", "2024-04-09", "308.500"),
                          ("2024-01-01", "2024-04-10", "2024-04-30", "308.611")]
    _, body = get(server, OBSERVATIONS, series_id="CPITEST", realtime_start="2024-03-12", realtime_end="2024-03-12")
    assert rows(body) == [("2024-01-01", "2024-03-12", "2024-03-12", "308.500"),
                          ("2024-02-01", "2024-03-12", "2024-03-12", "310.326")]
    _, body = get(server, OBSERVATIONS, series_id="CPITEST", realtime_start="2024-01-01", realtime_end="2024-02-12")
    assert body["count"] == 0 and body["observations"] == []


def test_one_sided_windows_are_open_at_the_other_end(server):
    _, body = get(server, OBSERVATIONS, series_id="CPITEST", realtime_start="2024-05-01",
                  observation_start="2024-03-01")
    assert (body["realtime_start"], body["realtime_end"]) == ("2024-05-01", "9999-12-31")
    assert rows(body) == [("2024-03-01", "2024-05-01", "2024-05-14", "312.332"),
                          ("2024-03-01", "2024-05-15", "9999-12-31", "312.450"),
                          ("2024-04-01", "2024-05-15", "9999-12-31", "313.548")]
    _, body = get(server, OBSERVATIONS, series_id="CPITEST", realtime_end="2024-03-12", observation_end="2024-01-01")
    assert (body["realtime_start"], body["realtime_end"]) == ("1776-07-04", "2024-03-12")
    assert rows(body) == [("2024-01-01", "2024-02-13", "2024-03-11", "308.417"),
                          ("2024-01-01", "2024-03-12", "2024-03-12", "308.500")]


def test_today_hides_later_releases_and_can_move():
    with FredServer(revised_data(), api_key=KEY, today="2024-03-20") as server:
        _, body = get(server, OBSERVATIONS, series_id="CPITEST", realtime_start="1776-07-04",
                      realtime_end="9999-12-31")
        assert rows(body) == [("2024-01-01", "2024-02-13", "2024-03-11", "308.417"),
                              ("2024-01-01", "2024-03-12", "9999-12-31", "308.500"),
                              ("2024-02-01", "2024-03-12", "9999-12-31", "310.326")]
        assert get(server, SERIES, series_id="CPITEST")[1]["seriess"][0]["last_updated"] == "2024-03-12 07:51:03-05"
        server.today = "2024-02-20"  # St. Louis is on standard time then
        assert get(server, SERIES, series_id="CPITEST")[1]["seriess"][0]["last_updated"] == "2024-02-13 07:51:02-06"
        server.today = "2024-02-12"  # nothing released yet: FRED does not know the series
        assert get(server, OBSERVATIONS, series_id="CPITEST") == (400, {"error_code": 400,
                                                                        "error_message": SERIES_MISSING})
        server.today = None
        assert server.today == dt.date(2024, 5, 16)  # the last release in the data


def test_a_revision_published_while_running_is_served_and_moves_last_updated():
    data = revised_data()
    with FredServer(data, today="2024-05-21") as server:
        before = get(server, SERIES, series_id="CPITEST")[1]["seriess"][0]["last_updated"]
        data.publish("CPITEST", "2024-04-01", "313.600", "2024-05-21")
        _, body = get(server, OBSERVATIONS, series_id="CPITEST", realtime_start="2024-05-20",
                      realtime_end="9999-12-31", observation_start="2024-04-01")
        assert rows(body) == [("2024-04-01", "2024-05-20", "2024-05-20", "313.548"),
                              ("2024-04-01", "2024-05-21", "9999-12-31", "313.600")]
        after = get(server, SERIES, series_id="CPITEST")[1]["seriess"][0]["last_updated"]
        assert (before, after) == ("2024-05-15 07:51:04-05", "2024-05-21 07:51:02-05")
    with pytest.raises(ValueError, match="2024-05-21 or later exists"):
        data.publish("CPITEST", "2024-04-01", "1.0", "2024-05-21")


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_offset_pages_cover_every_row_once(server, order):
    everything = {"series_id": "CPITEST", "realtime_start": "1776-07-04", "realtime_end": "9999-12-31",
                  "sort_order": order}
    _, whole = get(server, OBSERVATIONS, **everything)
    assert whole["count"] == 9 and whole["sort_order"] == order
    dates = [o["date"] for o in whole["observations"]]
    assert dates == sorted(dates, reverse=order == "desc")
    assert [o["realtime_start"] for o in whole["observations"] if o["date"] == "2024-01-01"] == \
        ["2024-02-13", "2024-03-12", "2024-04-10"]
    pages = [get(server, OBSERVATIONS, limit="4", offset=str(offset), **everything)[1] for offset in (0, 4, 8, 12)]
    assert [(p["offset"], p["limit"], p["count"], len(p["observations"])) for p in pages] == \
        [(0, 4, 9, 4), (4, 4, 9, 4), (8, 4, 9, 1), (12, 4, 9, 0)]
    assert [o for p in pages for o in p["observations"]] == whole["observations"]


@pytest.mark.parametrize("params, message", [
    ({"limit": "0"}, "Bad Request.  Variable limit is not between 1 and 100000."),
    ({"limit": "100001"}, "Bad Request.  Variable limit is not between 1 and 100000."),
    ({"offset": "-1"}, "Bad Request.  Variable offset is not between 0 and "),
    ({"sort_order": "up"}, "Bad Request.  Variable sort_order is not one of the values: 'asc', 'desc'."),
    ({"realtime_start": "2024-13-01"}, "Bad Request.  Variable realtime_start is not a valid YYYY-MM-DD"),
    ({"realtime_start": "2024-05-02", "realtime_end": "2024-05-01"},
     "Bad Request.  The value for variable realtime_start is after the value for variable realtime_end."),
    ({"observation_start": "2024-05-02", "observation_end": "2024-05-01"},
     "Bad Request.  The value for variable observation_start is after"),
    ({"file_type": "xml"}, "Bad Request.  This server answers file_type=json only."),
    ({"series_id": ""}, "Bad Request.  Variable series_id is not set."),
])
def test_bad_parameters_are_freds_400(server, params, message):
    status, body = get(server, OBSERVATIONS, **{"series_id": "CPITEST", **params})
    assert status == 400 and set(body) == {"error_code", "error_message"}
    assert body["error_code"] == 400 and body["error_message"].startswith(message)


def test_keys_are_refused_with_freds_answers():
    with FredServer(revised_data()) as anykey:
        for key, message in ((None, KEY_NOT_SET), ("", KEY_NOT_SET), ("abc", KEY_MALFORMED),
                             (KEY.upper(), KEY_MALFORMED)):
            for path in (OBSERVATIONS, SERIES):
                assert get(anykey, path, key=key, series_id="CPITEST") == \
                    (400, {"error_code": 400, "error_message": message})
        assert get(anykey, SERIES, key="f" * 32, series_id="CPITEST")[0] == 200
    assert KEY_NOT_REGISTERED == ("Bad Request.  The value for variable api_key is not registered.  "
                                  "Read https://fred.stlouisfed.org/docs/api/api_key.html for more information.")
    with FredServer(revised_data(), api_key=KEY) as keyed:
        assert get(keyed, SERIES, key="f" * 32, series_id="CPITEST") == \
            (400, {"error_code": 400, "error_message": KEY_NOT_REGISTERED})
        assert get(keyed, SERIES, key=KEY, series_id="CPITEST")[0] == 200
    with pytest.raises(ValueError, match="32 lower-case"):
        FredServer(revised_data(), api_key="secret")


@pytest.mark.parametrize("path", [OBSERVATIONS, SERIES])
def test_unknown_series_is_freds_400(server, path):
    assert get(server, path, series_id="NOSUCH") == (400, {"error_code": 400,
                                                           "error_message": "Bad Request.  The series does not exist."})


def test_series_in_freds_shape(server):
    status, body = get(server, SERIES, series_id="CPITEST")
    assert status == 200
    assert body == {"realtime_start": "2024-05-20", "realtime_end": "2024-05-20", "seriess": [{
        "id": "CPITEST", "realtime_start": "2024-05-20", "realtime_end": "2024-05-20",
        "title": "Test Consumer Prices", "observation_start": "2024-01-01", "observation_end": "2024-04-01",
        "frequency": "Monthly", "frequency_short": "M", "units": "Index 1982-1984=100", "units_short": "Index",
        "seasonal_adjustment": "Seasonally Adjusted", "seasonal_adjustment_short": "SA",
        "last_updated": "2024-05-15 07:51:04-05", "popularity": 50, "notes": "Test data."}]}
    assert "notes" not in get(server, SERIES, series_id="DAILYTEST")[1]["seriess"][0]


def test_other_paths_and_methods(server):
    assert get(server, "/fred/series/search", search_text="cpi") == (404, {"error_code": 404,
                                                                           "error_message": "Not Found"})
    response = HTTP.request("POST", server.url + SERIES, body=b"{}")
    assert response.status == 405 and response.headers["Allow"] == "GET"
    assert json.loads(response.data)["error_code"] == 405


# -- faults, rate limit, log ----------------------------------------------------------------

def faulty(kind, **options):
    return FredServer(revised_data(), today=TODAY, fault_rate=1.0, fault_kinds=[kind], **options)


def test_fault_5xx_answers_in_freds_shape():
    with faulty("5xx", seed=1) as server:
        responses = [fetch(server, SERIES, series_id="CPITEST") for _ in range(12)]
        assert {r.status for r in responses} == {500, 502, 503}
        assert all(json.loads(r.data)["error_code"] == r.status for r in responses)
        assert {r["fault"] for r in server.requests} == {"5xx"}


def test_fault_reset_and_truncated():
    with faulty("reset") as server:
        with pytest.raises(urllib3.exceptions.ProtocolError):
            fetch(server, SERIES, series_id="CPITEST")
        assert (server.requests[-1]["status"], server.requests[-1]["fault"]) == (None, "reset")
    with faulty("truncated") as server:
        response = fetch(server, OBSERVATIONS, series_id="CPITEST")
        assert response.status == 200 and int(response.headers["Content-Length"]) == len(response.data) > 0
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.data)


def test_fault_slow_outlasts_the_client_timeout():
    with faulty("slow", stall_seconds=5) as server, pytest.raises(urllib3.exceptions.ReadTimeoutError):
        fetch(server, SERIES, timeout=0.3, series_id="CPITEST")


def test_faults_are_drawn_from_the_seed_and_key_errors_are_not_faulted():
    def draws(seed):
        with FredServer(revised_data(), fault_rate=0.5, fault_kinds=["5xx", "truncated"], seed=seed) as server:
            for _ in range(16):
                fetch(server, SERIES, series_id="CPITEST")
            fetch(server, SERIES, key="bad", series_id="CPITEST")
            return [(r["status"], r["fault"]) for r in server.requests]

    first = draws(11)
    assert first == draws(11) != draws(12)
    assert {fault for _, fault in first} == {None, "5xx", "truncated"} and first[-1] == (400, None)
    with pytest.raises(ValueError, match="null_results"):
        FredServer(revised_data(), fault_kinds=["null_results"])


def test_rate_limit_answers_429():
    with FredServer(revised_data(), calls_per_minute=2, send_retry_after=True) as server:
        assert [fetch(server, SERIES, series_id="CPITEST").status for _ in range(2)] == [200, 200]
        limited = fetch(server, SERIES, series_id="CPITEST")
        assert limited.status == 429 and json.loads(limited.data) == {"error_code": 429,
                                                                      "error_message": RATE_LIMITED}
        assert 1 <= int(limited.headers["Retry-After"]) <= 60


def test_request_log_never_holds_the_key(tmp_path):
    log = tmp_path / "requests.jsonl"
    with FredServer(revised_data(), request_log=log) as server:
        fetch(server, SERIES, series_id="CPITEST")
        fetch(server, OBSERVATIONS, key="topsecret", series_id="CPITEST")
    text = log.read_text()
    assert KEY not in text and "topsecret" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines == server.requests
    assert [(line["path"], line["query"], line["status"]) for line in lines] == [
        (SERIES, "file_type=json&series_id=CPITEST", 200), (OBSERVATIONS, "file_type=json&series_id=CPITEST", 400)]
    assert set(lines[0]) == {"time", "path", "query", "status", "fault"}


# -- files and the command line ----------------------------------------------------------------

CSV_TEXT = """series_id,date,value,realtime_start,realtime_end
GDPTEST,2024-01-01,100.5,2024-04-25,2024-05-29
GDPTEST,2024-01-01,100.7,2024-05-30,9999-12-31
GDPTEST,2024-04-01,.,2024-07-25,9999-12-31
DTEST,2024-07-01,1.25,2024-07-02,
DTEST,2024-07-02,1.5,2024-07-03,9999-12-31
"""


def test_vintages_from_csv(tmp_path):
    path = tmp_path / "vintages.csv"
    path.write_text(CSV_TEXT)
    data = load_vintages_csv([path])
    assert data.series_ids == ["DTEST", "GDPTEST"]
    with FredServer(data) as server:
        assert server.today == dt.date(2024, 7, 25)
        _, body = get(server, OBSERVATIONS, series_id="GDPTEST", realtime_start="2024-05-01")
        assert rows(body) == [("2024-01-01", "2024-05-01", "2024-05-29", "100.5"),
                              ("2024-01-01", "2024-05-30", "9999-12-31", "100.7"),
                              ("2024-04-01", "2024-07-25", "9999-12-31", ".")]
        assert [get(server, SERIES, series_id=s)[1]["seriess"][0]["frequency"] for s in ("GDPTEST", "DTEST")] == \
            ["Quarterly", "Daily"]
    path.write_text(CSV_TEXT + "GDPTEST,2024-01-01,1,2024-05-01,2024-05-02\n")
    with pytest.raises(ValueError, match="GDPTEST 2024-01-01: the vintage from 2024-05-01 overlaps another"):
        load_vintages_csv([path])
    path.write_text("series_id,date,value\nX,2024-01-01,1\n")
    with pytest.raises(ValueError, match=r"missing columns \['realtime_end', 'realtime_start'\]"):
        load_vintages_csv([path])


def serve(*args):
    return subprocess.Popen([sys.executable, "-m", "CandleThrob.testing.fred_server", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)


@pytest.mark.parametrize("source", ["demo", "vintages"])
def test_command_line_serves_until_terminated(tmp_path, source):
    path = tmp_path / "vintages.csv"
    path.write_text(CSV_TEXT)
    args = (["--demo", "--start", "2024-01-01", "--end", "2024-03-31", "--seed", "3"] if source == "demo"
            else ["--vintages", str(path), "--today", "2024-06-01"])
    process = serve(*args, "--api-key", KEY)
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        running = types.SimpleNamespace(url=line.removeprefix("listening on "))
        status, body = get(running, OBSERVATIONS, series_id="CPIAUCSL" if source == "demo" else "GDPTEST")
        assert status == 200
        if source == "demo":
            assert body["realtime_start"] == "2024-03-29" and len(body["observations"]) == 2  # Jan, Feb CPI
        else:
            assert rows(body) == [("2024-01-01", "2024-06-01", "2024-06-01", "100.7")]
        assert get(running, SERIES, key="f" * 32, series_id="GDPTEST")[1]["error_message"] == KEY_NOT_REGISTERED
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
    assert process.stderr.read() == ""
