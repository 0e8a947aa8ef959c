"""``--log-format json``: every line on stderr is one JSON object carrying the run id, from
the first line to the last, usage errors, fatal errors and an unforeseen crash included."""

from __future__ import annotations

import json
import uuid

import pytest

from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer

from ingest_helpers import API_KEY, ROOT, cli

END = "2024-03-15"


@pytest.fixture(scope="module")
def market():
    return generate_market(2, "2024-01-02", "2024-03-28", seed=3)


def _env(server, url: str) -> dict:
    return {"POLYGON_API_KEY": API_KEY, "POLYGON_BASE_URL": server.url, "DATABASE_URL": url,
            "SP500_URL": f"{server.url}/wiki/List_of_S%26P_500_companies", "POLYGON_RATE_LIMIT": "0",
            "MIN_SP500_SYMBOLS": "1", "HISTORY_START": "2024-03-01"}


def json_lines(stderr: str) -> list[dict]:
    """Every stderr line as JSON (fails on the first line that is not), all of one run."""
    lines = stderr.splitlines()
    assert lines, "nothing on stderr"
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line on stderr: {line!r}")
        assert isinstance(record, dict) and {"time", "level", "logger", "run_id", "message"} <= set(record)
        records.append(record)
    run_ids = {r["run_id"] for r in records}
    assert len(run_ids) == 1 and None not in run_ids, run_ids
    uuid.UUID(records[0]["run_id"])
    return records


def test_a_run_writes_only_json_lines_with_its_run_id_from_the_first(tmp_path, market):
    report = tmp_path / "report.json"
    with PolygonServer(market, api_key=API_KEY, today=END) as server:
        done = cli("--end", END, "--log-format", "json", "--report", str(report),
                   env=_env(server, f"sqlite:///{tmp_path / 'wh.db'}"))
    assert done.returncode == 0, done.stderr
    records = json_lines(done.stderr)
    assert records[0]["run_id"] == json.loads(report.read_text())["run_id"]
    assert any(r["message"].startswith("run finished: success") for r in records)


@pytest.mark.parametrize("args, env, code, says", [
    ([], {"POLYGON_API_KEY": ""}, 2, "POLYGON_API_KEY is not set"),
    (["--bogus"], {}, 2, "usage: unrecognized arguments: --bogus"),
    (["--end", "2024-13-01"], {}, 2, "usage: argument --end: '2024-13-01' is not a date"),
    (["--shard", "5/4"], {}, 2, "--shard '5/4' is not allowed"),
    ([], {"BATCH_SIZE": "abc"}, 2, "BATCH_SIZE='abc' is not allowed"),
    ([], {"DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"}, 3, "cannot use the database"),
], ids=["no-key", "unknown-option", "bad-date", "bad-shard", "bad-setting", "no-database"])
def test_usage_and_fatal_errors_are_one_json_line(tmp_path, args, env, code, says):
    _one_error_line(tmp_path, ["--log-format", "json"], args, env, code, says)


@pytest.mark.parametrize("form", [["--log-format=json"], ["--log", "json"], ["--log-format", "text", "--log-f=json"]],
                         ids=["equals", "abbreviated", "last-wins"])
def test_json_is_recognised_in_every_form_argparse_accepts(tmp_path, form):
    _one_error_line(tmp_path, form, ["--bogus"], {}, 2, "usage: unrecognized arguments: --bogus")


def _one_error_line(tmp_path, form, args, env, code, says):
    base = {"POLYGON_API_KEY": API_KEY, "DATABASE_URL": f"sqlite:///{tmp_path / 'wh.db'}",
            "POLYGON_BASE_URL": "http://127.0.0.1:9", "POLYGON_RATE_LIMIT": "0"}
    done = cli(*form, "--tickers", "SPY", *args, env={**base, **env}, cwd=tmp_path)
    assert done.returncode == code
    (record,) = json_lines(done.stderr)
    assert record["level"] == "error" and says in record["message"], record
    assert done.stdout == ""


def test_text_usage_errors_stay_argparse_text(tmp_path):
    done = cli("--bogus", env={"POLYGON_API_KEY": API_KEY}, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == "candlethrob-ingest: error: unrecognized arguments: --bogus"


def test_an_unforeseen_crash_is_a_json_line_with_its_traceback(tmp_path, market):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    # An injected bug: the summary cannot be built, after the run has been stored.
    (hooks / "sitecustomize.py").write_text(
        "import CandleThrob.reporting.report as report\n"
        "def summary(result):\n"
        "    raise RuntimeError('injected bug in the summary')\n"
        "report.summary = summary\n")
    with PolygonServer(market, api_key=API_KEY, today=END) as server:
        done = cli("--end", END, "--log-format", "json",
                   env={**_env(server, f"sqlite:///{tmp_path / 'wh.db'}"), "PYTHONPATH": f"{ROOT}:{hooks}"})
    assert done.returncode == 1
    records = json_lines(done.stderr)
    last = records[-1]
    assert last["level"] == "critical"
    assert last["message"] == "unexpected error: RuntimeError: injected bug in the summary"
    assert "Traceback" in last["exception"] and "raise RuntimeError" in last["exception"]
