"""A small warehouse with a split and dividends, loaded through the real ingest from the local
server, and the read side's command line run in-process or as a process."""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import pandas as pd

from CandleThrob.clock import Clock
from CandleThrob.testing.datagen import Dividend, generate_market
from CandleThrob.testing.polygon_server import PolygonServer

from ingest_helpers import API_KEY, ROOT, ingest

# AOS (the second generated company) splits 4-for-1 on 2024-03-18 and pays 0.5 on 2024-03-11;
# ABT paid 0.3 in 2023, so the total-return series differs from the split-adjusted one in two years.
SPLIT_TICKER, SPLIT_DAY, DIVIDEND_DAY, DIVIDEND = "AOS", "2024-03-18", "2024-03-11", 0.5
OLD_DIVIDEND_TICKER, OLD_DIVIDEND_DAY, OLD_DIVIDEND = "ABT", "2023-12-12", 0.3
HISTORY_START, FIRST_END, LAST_END = "2023-11-01", "2024-03-15", "2024-03-20"
# 08:00 in New York the next morning: the last final session is LAST_END.
MORNING_AFTER = dt.datetime(2024, 3, 21, 12, 0, tzinfo=dt.timezone.utc)


def market():
    data = generate_market(3, "2023-01-03", "2024-06-28", seed=13)
    assert data.constituents[1].symbol == SPLIT_TICKER and data.constituents[0].symbol == "MMM"
    data.add_split(SPLIT_TICKER, SPLIT_DAY, 1, 4)
    data.add_dividend(Dividend(SPLIT_TICKER, pd.Timestamp(DIVIDEND_DAY).date(), DIVIDEND))
    data.add_dividend(Dividend(OLD_DIVIDEND_TICKER, pd.Timestamp(OLD_DIVIDEND_DAY).date(), OLD_DIVIDEND))
    return data


def build_warehouse(database_url: str, data=None, end: str = LAST_END, **overrides) -> PolygonServer:
    """Load HISTORY_START..FIRST_END, then the nights up to ``end``; returns the (stopped) server,
    whose market a test may change and serve again."""
    data = data or market()
    with PolygonServer(data, api_key=API_KEY, today=FIRST_END) as server:
        assert ingest(database_url, server, FIRST_END, start=HISTORY_START, **overrides)["exit_code"] == 0
        if end != FIRST_END:
            assert ingest(database_url, server, end, **overrides)["exit_code"] == 0
    return server


def run_cli(*argv: str, now: dt.datetime = MORNING_AFTER, environ=None) -> tuple[int, str, str]:
    """``candlethrob ARGV`` in this process with the clock standing at ``now``: (exit code, stdout, stderr)."""
    from CandleThrob.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(out):  # argparse prints help to sys.stdout itself
            code = main(list(argv), environ={} if environ is None else environ, clock=Clock.fixed(now))
    except SystemExit as exc:  # argparse's own exits (--help, usage errors)
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def run_process(*argv: str, module: str = "CandleThrob", cwd=None) -> subprocess.CompletedProcess:
    """``python -m CandleThrob ARGV`` as its own process, without the caller's CandleThrob settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYGON_", "MASSIVE_", "DATABASE_URL",
                                                                       "ORACLE_"))}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", module, *argv], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def fresh_database(request, tmp_path_factory) -> str:
    """An empty database of the kind ``request.param`` names ("sqlite" or "postgresql"), for module-scoped
    fixtures (conftest's ``database_url`` is per test)."""
    import uuid

    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('wh') / 'candlethrob.db'}"
    return request.getfixturevalue("postgres_server").create_database(f"ct_{uuid.uuid4().hex[:12]}")
