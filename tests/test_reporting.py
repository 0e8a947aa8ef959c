"""What a run tells its operator: report, logs, summary, progress; never a secret."""

from __future__ import annotations

import json

import pytest

from CandleThrob.ingestion.ingest_data import AdvancedCompleteDataIngestion, BatchConfig
from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer

from ingest_helpers import cli, query

END = "2024-03-15"
SECRET_KEY = "sk-live-7Hq2ZpX9"
DB_PASSWORD = "pw-Vt5rK8mN"


@pytest.fixture(scope="module")
def market():
    return generate_market(4, "2024-01-02", "2024-03-28", seed=6)


def _env(server, url):
    return {"POLYGON_API_KEY": SECRET_KEY, "POLYGON_BASE_URL": server.url, "DATABASE_URL": url,
            "SP500_URL": f"{server.url}/wiki/List_of_S%26P_500_companies", "POLYGON_RATE_LIMIT": "0",
            "MIN_SP500_SYMBOLS": "1", "HISTORY_START": "2024-02-01"}


def test_report_json_logs_and_no_secret_anywhere(tmp_path, market, postgres_server):
    # PostgreSQL here trusts local users, so a password in the URL is accepted and ignored:
    # enough to prove it is scrubbed from everything the run writes.
    url = postgres_server.create_database("ct_secrets").replace("postgres@", f"postgres:{DB_PASSWORD}@")
    sqlite_file = tmp_path / "wh.db"
    report = tmp_path / "report.json"
    with PolygonServer(market, api_key=SECRET_KEY, today=END) as server:
        done = cli("--end", END, "--report", str(report), "--log-format", "json", env=_env(server, url))
        lite = cli("--end", END, "--log-format", "json", env=_env(server, f"sqlite:///{sqlite_file}"))
    assert done.returncode == 0, done.stderr
    assert lite.returncode == 0, lite.stderr
    data = json.loads(report.read_text())
    run_id = data["run_id"]
    assert data["status"] == "success" and data["exit_code"] == 0
    assert data["rows_written"] == 24 * 31  # 24 tickers x 31 sessions from 2024-02-01 to 03-15
    assert data["api_calls_by_endpoint"] == {"range": 24, "splits": 1, "dividends": 1}
    assert set(data["outcomes"]) == set(market.tickers)
    assert data["outcomes"]["SPY"]["bars_written"] == 31 and data["outcomes"]["SPY"]["quality_score"] == 1.0
    assert data["metrics"]["complete_ingestion"]["success"] is True
    assert "***" in data["database"] and DB_PASSWORD not in data["database"]
    log_lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert log_lines and all(entry["run_id"] in (None, run_id) for entry in log_lines)
    assert any(entry["run_id"] == run_id for entry in log_lines)
    # The summary goes to stdout, the logs to stderr.
    assert done.stdout.startswith(f"CandleThrob run {run_id}: success (exit 0)")
    everything = done.stdout + done.stderr + lite.stdout + lite.stderr + report.read_text()
    everything += json.dumps(query(url, "SELECT * FROM ingestion_runs"), default=str)
    everything += sqlite_file.read_bytes().decode("latin-1")
    for secret in (SECRET_KEY, DB_PASSWORD):
        assert secret not in everything


def test_no_progress_bar_when_output_is_not_a_terminal(tmp_path, market):
    with PolygonServer(market, api_key=SECRET_KEY, today=END) as server:
        done = cli("--end", END, env=_env(server, f"sqlite:///{tmp_path / 'wh.db'}"))
    assert done.returncode == 0
    assert "ingest:" not in done.stderr and "call/s" not in done.stderr and "\r" not in done.stderr


def test_seed_usage_example_works_verbatim(tmp_path, market):
    with PolygonServer(market, api_key=SECRET_KEY, today=END) as server:
        config = BatchConfig.from_env({**_env(server, f"sqlite:///{tmp_path / 'wh.db'}")})
        ingestion = AdvancedCompleteDataIngestion(config)
        with ingestion.performance_monitor.monitor_operation("complete_ingestion"):
            results = ingestion.process_batch(["SPY", "QQQ"])
        metrics = ingestion.performance_monitor.metrics
    assert results["exit_code"] == 0 and results["rows_written"] == 2 * 31
    assert metrics["complete_ingestion"]["duration"] > 0
    assert isinstance(metrics["complete_ingestion"]["memory_usage_mb"], float)
    assert metrics["complete_ingestion"]["count"] == 2  # the run's own measurement and ours


def test_progress_bar_on_a_terminal(tmp_path, market):
    """Under a pseudo-terminal the bar shows calls done, bars and API calls; --no-progress hides it."""
    import fcntl
    import os
    import pty
    import struct
    import termios
    import subprocess
    import sys

    from ingest_helpers import ROOT

    def run(*extra: str) -> str:
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
        env = {**os.environ, **_env(server, f"sqlite:///{tmp_path / ('wh%d.db' % len(extra))}"),
               "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
        proc = subprocess.Popen([sys.executable, "-m", "CandleThrob.ingestion.ingest_data", "--end", END, *extra],
                                env=env, stdout=subprocess.DEVNULL, stderr=follower)
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=60)
        os.close(leader)
        return b"".join(chunks).decode("utf-8", "replace")

    with PolygonServer(market, api_key=SECRET_KEY, today=END) as server:
        shown = run()
        hidden = run("--no-progress")
    # the ledger's two calls count among the HTTP calls made, not among the 24 planned bar calls
    assert "ingest: 100%" in shown and "24/24" in shown and "bars=744" in shown and "api_calls=26" in shown
    assert "ingest:" not in hidden


def test_the_bar_moves_with_every_call_and_its_eta_knows_the_rate_limit():
    import io

    from CandleThrob.reporting.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    bar = Progress(total=25, enabled=True, seconds_per_call=12.0, stream=terminal)
    for made in range(1, 4):  # three calls of a batch of 25: the bar moved three times, not zero
        bar.called(api_calls=made)
    assert bar._bar.n == 3
    # 22 calls left: at least 12 s each whatever the pace so far, so 4 min 24 s
    assert bar.eta_seconds() >= 22 * 12.0
    bar.stored(bars_written=1500)
    bar.close()
    assert "3/25" in terminal.getvalue() and "bars=1500" in terminal.getvalue() and "eta=4m" in terminal.getvalue()


def test_a_report_sent_to_a_pipe_is_streamed_not_renamed_over_it(tmp_path):
    # Regression: `--report /dev/null` renamed a temporary file over the device, turning /dev/null into a
    # regular file for every later process on the machine. A FIFO shows the same thing without root.
    import os
    import threading

    from CandleThrob.reporting.report import check_report_path, write_report

    fifo = tmp_path / "report.pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text(encoding="utf-8")))
    reader.start()
    check_report_path(fifo)
    write_report(fifo, {"run_id": "r1", "status": "success"})
    reader.join()
    assert json.loads(received[0]) == {"run_id": "r1", "status": "success"}
    assert not fifo.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["report.pipe"]
