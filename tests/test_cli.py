"""The `candlethrob` command: subcommands, help everywhere, ingest unchanged, and bad input answered in
one line with exit 2, never a traceback."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

import CandleThrob
from CandleThrob.cli import build_parser
from CandleThrob.commands import COMMANDS
from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer

from ingest_helpers import API_KEY
from read_helpers import build_warehouse, run_cli, run_process


@pytest.fixture(scope="module")
def warehouse_url(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('wh') / 'candlethrob.db'}"
    build_warehouse(url, end="2024-03-15")
    return url


def test_every_subcommand_has_help_and_the_exit_codes():
    names = [command.NAME for command in COMMANDS]
    assert names == ["ingest", "bars", "export", "status", "report", "members", "macro"]
    code, out, _ = run_cli("--help")
    assert code == 0 and all(f"    {name}" in out for name in names) and "Exit codes: 0 ok; 2 bad usage" in out
    for name in names:
        code, out, _ = run_cli(name, "--help")
        assert code == 0 and out.startswith(f"usage: candlethrob {name}") and "Exit codes" in out, name
    assert "10 stale" in run_cli("status", "--help")[1] and "4 another export" in run_cli("export", "--help")[1]


def test_python_dash_m_candlethrob_is_the_same_command(warehouse_url):
    done = run_process("bars", "SPY", "--start", "2024-03-15", "--database-url", warehouse_url)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.splitlines()[0].startswith("ticker,trade_date,open")
    assert done.stdout.splitlines()[1].startswith("SPY,2024-03-15,")
    assert run_process("--version").stdout == f"CandleThrob {CandleThrob.__version__}\n"


def test_ingest_subcommand_is_the_ingest(tmp_path, capsys):
    """Same plan text as the ingest module, then a real run through the subcommand."""
    from CandleThrob.ingestion import ingest_data

    market = generate_market(2, "2024-01-02", "2024-03-28", seed=3)
    with PolygonServer(market, api_key=API_KEY, today="2024-03-15") as server:
        env = {"POLYGON_API_KEY": API_KEY, "POLYGON_BASE_URL": server.url, "POLYGON_RATE_LIMIT": "0",
               "DATABASE_URL": f"sqlite:///{tmp_path / 'wh.db'}"}
        plan = ["--plan", "--end", "2024-03-15", "--start", "2024-03-01", "--tickers", "MMM,SPY", "--no-progress"]
        assert ingest_data.main(plan, environ=env) == 0
        direct = capsys.readouterr().out
        assert run_cli("ingest", *plan, environ=env)[:2] == (0, direct)
        assert direct.startswith("4 calls: 2 for 22 missing cells (0 grouped, 2 range), 2 corporate actions")
        assert run_cli("ingest", *plan[1:], environ=env)[0] == 0
    stored = CandleThrob.read_bars("MMM,SPY", adjust="none", database_url=env["DATABASE_URL"])
    want = pd.concat([market.bars(t, "2024-03-01", "2024-03-15") for t in ("MMM", "SPY")], ignore_index=True)
    assert stored[["ticker", "trade_date", "close"]].astype({"ticker": object}).equals(
        want[["ticker", "trade_date", "close"]].astype({"ticker": object}))
    assert run_cli("ingest", "--shard", "5/2", environ=env)[0] == 2


BAD_INPUT = [
    (["bars", "A1"], "'A1' is not a valid ticker symbol: contains digits; allowed: 1-5 letters"),
    (["bars", "SPY", "--start", "2024-13-01"], "argument --start: '2024-13-01' is not a date; expected YYYY-MM-DD"),
    (["bars", "SPY", "--start", "2024-03-10", "--end", "2024-03-01"],
     "end 2024-03-01 is before start 2024-03-10; expected an end on or after the start"),
    (["bars", "SPY", "--adjust", "dividends"], "argument --adjust: invalid choice: 'dividends' (choose from"),
    (["bars", "SPY", "--format", "xlsx"], "argument --format: invalid choice: 'xlsx' (choose from"),
    (["bars", "SPY", "--format", "parquet"], "--format parquet is binary; give --output FILE"),
    (["bars", "SPY", "--output", "/proc/no/such.csv"], "--output /proc/no/such.csv cannot be written"),
    (["bars"], "the following arguments are required: tickers"),
    (["bars", "SPY", "--bogus"], "unrecognized arguments: --bogus"),
    (["export", "--format", "csv", "--output", "x"], "argument --format: invalid choice: 'csv' (choose from"),
    (["export"], "the following arguments are required: --output"),
    (["status", "--format", "xml"], "argument --format: invalid choice: 'xml'"),
    (["status", "--max-holes", "-3"], "argument --max-holes: '-3' is not a count; expected a whole number from 0"),
    (["report", "--output", "r.html", "--ticker", "NYSE:LMT"], "exchange prefixes are not allowed"),
    (["members"], "the following arguments are required: --as-of"),
    (["members", "--as-of", "2024-02-30"], "argument --as-of: '2024-02-30' is not a date; expected YYYY-MM-DD"),
]


@pytest.mark.parametrize("argv,message", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(warehouse_url, argv, message):
    code, out, err = run_cli(*argv, "--database-url", warehouse_url)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("candlethrob") and message in err, err


def test_a_warehouse_that_does_not_exist_is_not_created(tmp_path, postgres_server):
    missing = tmp_path / "nope.db"
    code, _, err = run_cli("status", "--database-url", f"sqlite:///{missing}")
    assert code == 2 and f"no warehouse at sqlite:///{missing}: {missing} does not exist" in err
    assert not missing.exists()
    sqlite3.connect(tmp_path / "empty.db").close()
    code, _, err = run_cli("bars", "SPY", "--database-url", f"sqlite:///{tmp_path / 'empty.db'}")
    assert code == 2 and "is not a CandleThrob warehouse (no table ticker_data_raw, adjustment_factors)" in err
    code, _, err = run_cli("export", "--output", str(tmp_path / "out"),
                           "--database-url", postgres_server.url("no_such_database"))
    assert code == 2 and err.startswith("candlethrob export: no warehouse at postgresql") and \
        'database "no_such_database" does not exist' in err and err.count("\n") == 1
    assert run_cli("status", "--database-url", "mysql://u@h/db")[0] == 2


def test_the_configured_database_comes_from_the_environment_or_dot_env(warehouse_url, tmp_path, monkeypatch):
    assert run_cli("status", environ={"DATABASE_URL": warehouse_url})[0] == 0
    (tmp_path / ".env").write_text(f"DATABASE_URL={warehouse_url}\nBATCH_SIZE=abc\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("status")
    assert code == 2 and err == ("candlethrob status: BATCH_SIZE='abc' is not allowed: expected a whole number "
                                 "from 1 to 10000.\n")  # the same configuration, checked the same way


def test_a_process_never_prints_a_traceback(tmp_path):
    done = run_process("bars", "SPY", "--database-url", f"sqlite:///{tmp_path / 'nope.db'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1


def test_the_parser_knows_every_registered_subcommand():
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(commands.choices) == ["bars", "export", "ingest", "macro", "members", "report", "status"]
