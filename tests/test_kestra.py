"""What Kestra shows for a run: the outputs and metrics the CLI publishes through Kestra's
stdout protocol (``::{"outputs": {...}}::``, ``::{"metrics": [...]}::``, written by the
``kestra`` package) when the flow sets ``CANDLETHROB_KESTRA=true``.

The real CLI runs against the local server; the protocol lines are read back from its
stdout the way Kestra's script runner reads them: a whole line between ``::`` marks."""

from __future__ import annotations

import json
import re

import pytest

from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer

from ingest_helpers import API_KEY, cli

END = "2024-03-15"
PROTOCOL = re.compile(r"^::(\{.*\})::$")


@pytest.fixture(scope="module")
def market():
    return generate_market(3, "2024-01-02", "2024-03-28", seed=6)  # 3 S&P-like + 20 ETFs


def _env(server, url: str, **extra: str) -> dict:
    return {"POLYGON_API_KEY": API_KEY, "POLYGON_BASE_URL": server.url, "DATABASE_URL": url,
            "SP500_URL": f"{server.url}/wiki/List_of_S%26P_500_companies", "POLYGON_RATE_LIMIT": "0",
            "MIN_SP500_SYMBOLS": "1", "HISTORY_START": "2024-03-01", "CANDLETHROB_KESTRA": "true", **extra}


def protocol(stdout: str) -> tuple[dict, dict[str, dict]]:
    """(outputs, metrics by name) from the protocol lines; every other stdout line is the summary."""
    outputs: dict = {}
    metrics: dict[str, dict] = {}
    for line in stdout.splitlines():
        match = PROTOCOL.match(line)
        if not match:
            assert not line.startswith("::"), f"a malformed protocol line: {line!r}"
            continue
        message = json.loads(match[1])
        assert set(message) <= {"outputs", "metrics"}
        outputs.update(message.get("outputs", {}))
        for metric in message.get("metrics", []):
            assert metric["name"] not in metrics, f"{metric['name']} published twice"
            metrics[metric["name"]] = metric
    return outputs, metrics


def test_a_run_publishes_its_outputs_and_metrics(tmp_path, market):
    report = tmp_path / "report.json"
    with PolygonServer(market, api_key=API_KEY, today=END) as server:
        done = cli("--end", END, "--log-format", "json", "--report", str(report),
                   env=_env(server, f"sqlite:///{tmp_path / 'wh.db'}"))
        calls = [r for r in server.requests if not r["path"].startswith("/wiki/")]
    assert done.returncode == 0, done.stderr
    data = json.loads(report.read_text())
    outputs, metrics = protocol(done.stdout)
    # 23 tickers x 11 sessions (03-01..03-15): 11 grouped calls, and the ledger's two.
    assert outputs == {
        "run_id": data["run_id"], "status": "success", "exit_code": 0, "end": END,
        "tickers": 23, "tickers_ok": 23, "tickers_failed": 0, "rows_written": 253, "rows_rejected": 0,
        "api_calls": 13, "planned_calls": 13, "remaining_calls": 0, "stopped": None,
        "pending_cells": 0, "vendor_holes": 0, "unreachable_cells": 0, "history_floor": None,
        "revised_bars": 0, "failed_stage": None, "error": None,
    }
    assert len(calls) == 13
    assert {name: (m["type"], m["value"]) for name, m in metrics.items()} == {
        "rows_written": ("counter", 253), "rows_rejected": ("counter", 0), "api_calls": ("counter", 13),
        "tickers_failed": ("counter", 0), "pending_cells": ("counter", 0), "vendor_holes": ("counter", 0),
        "unreachable_cells": ("counter", 0), "revised_bars": ("counter", 0),
        "duration": ("timer", data["seconds"]),
    }
    assert metrics["duration"]["value"] > 0 and all(m["tags"] == {} for m in metrics.values())
    # The summary is still there for a person reading the task's log; the logs stay on stderr.
    assert done.stdout.startswith(f"CandleThrob run {data['run_id']}: success (exit 0)")
    assert all(json.loads(line)["run_id"] == data["run_id"] for line in done.stderr.splitlines())


def test_a_partial_run_says_so_in_its_outputs(tmp_path, market):
    good = market.bars("SPY")
    bad = good.assign(high=good["low"] / 2)  # high below low on every day: SPY is quarantined
    with PolygonServer(market, api_key=API_KEY, today=END) as server:
        market.add_bars(bad)
        try:
            done = cli("--end", END, "--tickers", "SPY,QQQ", "--log-format", "json",
                       env=_env(server, f"sqlite:///{tmp_path / 'wh.db'}"))
        finally:
            market.add_bars(good)
    assert done.returncode == 1, done.stderr
    outputs, metrics = protocol(done.stdout)
    assert (outputs["status"], outputs["exit_code"], outputs["tickers_failed"]) == ("partial", 1, 1)
    assert outputs["rows_written"] == 11 and metrics["rows_rejected"]["value"] == 11
    assert outputs["error"].startswith("1 tickers failed or quarantined, e.g. SPY: quality score 0.0000")


def test_a_usage_error_is_published_too_and_nothing_outside_kestra(tmp_path, market):
    with PolygonServer(market, api_key=API_KEY, today=END) as server:
        env = _env(server, f"sqlite:///{tmp_path / 'wh.db'}", BATCH_SIZE="abc")
        done = cli("--end", END, "--log-format", "json", env=env)
        plain = cli("--end", END, "--tickers", "SPY", env={**env, "BATCH_SIZE": "25", "CANDLETHROB_KESTRA": ""})
    assert done.returncode == 2
    outputs, metrics = protocol(done.stdout)
    (log_line,) = [json.loads(line) for line in done.stderr.splitlines()]
    assert outputs == {"run_id": log_line["run_id"], "status": "usage_error", "exit_code": 2,
                       "error": "BATCH_SIZE='abc' is not allowed: expected a whole number from 1 to 10000."}
    assert metrics == {}
    assert plain.returncode == 0, plain.stderr
    assert "::" not in plain.stdout


def test_the_readme_names_every_output_and_metric():
    from CandleThrob.reporting.report import KESTRA_COUNTERS, KESTRA_OUTPUTS

    from ingest_helpers import ROOT
    section = (ROOT / "README.md").read_text().split("### Kestra", 1)[1].split("\n### ", 1)[0]
    for name in (*KESTRA_OUTPUTS, *KESTRA_COUNTERS, "duration", "CANDLETHROB_KESTRA"):
        assert name in section, name
