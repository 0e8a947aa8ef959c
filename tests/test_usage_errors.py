"""Usage errors end with exit 2 and a message naming what is wrong and what is allowed.

Nothing is created or written, and there is never a traceback. Each case used to crash with
exit 1 or, worse, to do nothing (or the wrong thing) with exit 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer

from ingest_helpers import API_KEY, ROOT, cli, query

END = "2024-03-15"


def _refused(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    for word in words:
        assert word in done.stderr, done.stderr


def _env(tmp_path, **extra) -> dict:
    return {"POLYGON_API_KEY": API_KEY, "DATABASE_URL": f"sqlite:///{tmp_path / 'wh.db'}",
            "POLYGON_BASE_URL": "http://127.0.0.1:9", **extra}


@pytest.mark.parametrize("args,words", [
    (["--tickers", ""], ["--tickers: '' is not a valid ticker symbol: no tickers given; allowed: 1-5 letters"]),
    (["--tickers", " , "], ["--tickers: ' , ' is not a valid ticker symbol: no tickers given"]),
    (["--start", "2999-01-04"], ["--start 2999-01-04 is after ", "the run's last session (--end, or the last "
                                 "completed NYSE session); expected a date on or before it"]),
    (["--end", "2024-03-15", "--start", "2024-03-20"], ["--start 2024-03-20 is after --end 2024-03-15"]),
], ids=["empty-tickers", "blank-tickers", "future-start", "start-after-end"])
def test_options_that_would_plan_nothing_or_everything_are_refused(tmp_path, args, words):
    _refused(cli(*args, "--no-progress", env=_env(tmp_path)), *words)
    assert not (tmp_path / "wh.db").exists()


@pytest.mark.parametrize("variable,value,words", [
    ("HISTORY_START", "2100-01-01", ["HISTORY_START='2100-01-01' is not allowed: expected a date on or before ",
                                             "the run's last session"]),
    ("DATABASE_URL", "sqlite://", ["DATABASE_URL='sqlite://' is not allowed: an in-memory SQLite database vanishes "
                                    "when the run ends; expected a file, e.g. sqlite:///data/candlethrob.db"]),
    ("DATABASE_URL", "sqlite:///:memory:", ["in-memory SQLite"]),
    ("POLYGON_API_KEY", "clé-secrète", ["POLYGON_API_KEY", "printable ASCII"]),
    ("POLYGON_API_KEY", "abc def", ["POLYGON_API_KEY", "printable ASCII"]),
], ids=["future-history-start", "sqlite-memory", "sqlite-memory-named", "non-ascii-key", "key-with-space"])
def test_configuration_that_cannot_work_is_refused(tmp_path, variable, value, words):
    done = cli("--no-progress", env={**_env(tmp_path), variable: value}, cwd=tmp_path)
    _refused(done, *words)
    assert value not in done.stderr or variable != "POLYGON_API_KEY"  # a key is never echoed
    assert sorted(os.listdir(tmp_path)) == []


def test_a_dotenv_that_is_not_utf8_is_named(tmp_path):
    (tmp_path / ".env").write_bytes(b"POLYGON_API_KEY=abc\nHISTORY_START=2024-01-02 # d\xe9but\n")
    done = cli("--no-progress", env={"DATABASE_URL": f"sqlite:///{tmp_path / 'wh.db'}"}, cwd=tmp_path)
    _refused(done, ".env", "line 2", "UTF-8")
    assert sorted(os.listdir(tmp_path)) == [".env"]


@pytest.mark.parametrize("where", ["directory", "under-a-file"])
def test_an_unusable_report_path_is_refused_before_the_run(tmp_path, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    path = tmp_path if where == "directory" else blocker / "report.json"
    words = ["is a directory", "report.json"] if where == "directory" else ["cannot be written", "writable folder"]
    done = cli("--report", str(path), "--no-progress", env=_env(tmp_path))
    _refused(done, "--report", *words)
    assert not (tmp_path / "wh.db").exists()
    assert not (tmp_path.parent / f"{tmp_path.name}.tmp").exists()  # once wrote <dir>.tmp


def test_a_psycopg2_url_is_served_by_psycopg_3(tmp_path, postgres_server):
    url = postgres_server.create_database("psycopg2_url").replace("postgresql+psycopg://", "postgresql+psycopg2://")
    market = generate_market(2, "2024-03-01", "2024-03-20", seed=2)
    with PolygonServer(market, api_key=API_KEY, today=END) as server:
        done = cli("--end", END, "--tickers", "SPY", "--no-progress",
                   env={**_env(tmp_path), "DATABASE_URL": url, "POLYGON_BASE_URL": server.url,
                        "POLYGON_RATE_LIMIT": "0", "HISTORY_START": "2024-03-11"})
    assert done.returncode == 0, done.stderr
    assert query(url.replace("+psycopg2", "+psycopg"), "SELECT COUNT(*) FROM ticker_data_raw") == [(5,)]


def test_sigint_during_start_up_exits_130_without_a_traceback(tmp_path):
    # .env is a FIFO: the run blocks reading it, at a known point before anything else happens.
    fifo = tmp_path / ".env"
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYGON_", "DATABASE_URL"))}
    env.update(PYTHONPATH=str(ROOT), DATABASE_URL=f"sqlite:///{tmp_path / 'wh.db'}")
    proc = subprocess.Popen([sys.executable, "-m", "CandleThrob.ingestion.ingest_data", "--no-progress"], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with open(fifo, "w"):  # returns once the run has opened the FIFO to read it
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert not (tmp_path / "wh.db").exists()
