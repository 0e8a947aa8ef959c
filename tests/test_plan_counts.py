"""``--plan`` counts every call the run then makes, in every mode.

Each step plans, then runs on the same warehouse, and compares the plan's
count with the calls in the local server's request log (bars, splits,
dividends; not the constituents page): a cold backfill, a nightly run with its
settle window, a new member, ``--full-refresh``, ``--verify-adjustments`` and
a run whose ledger has work (a new split)."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from CandleThrob.ingestion.pipeline import CompleteDataIngestion, RunOptions
from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer

from ingest_helpers import API_KEY, api_calls, cli, make_config

COLD = "2024-05-31"  # a Friday


def _ingestion(url: str, server, end: str) -> CompleteDataIngestion:
    day = pd.Timestamp(end).date()
    if server.today is None or server.today < day:
        server.today = day
    now = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(12), dt.timezone.utc)
    return CompleteDataIngestion(make_config(url, server), clock=lambda: now)


def plan_then_run(url: str, server, end: str, **options) -> tuple[dict, dict, list[dict]]:
    """(plan, run result, the calls the run made)."""
    ingestion = _ingestion(url, server, end)
    try:
        mark = len(server.requests)
        plan = ingestion.run(RunOptions(end=pd.Timestamp(end).date(), plan_only=True, **options))
        assert api_calls(server, mark) == [], "--plan made a call"
        result = ingestion.run(RunOptions(end=pd.Timestamp(end).date(), **options))
    finally:
        ingestion.warehouse.dispose()
    return plan, result, api_calls(server, mark)


def _kinds(calls: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for call in calls:
        path = call["path"]
        kind = ("grouped" if "/grouped/" in path else "range" if "/range/" in path
                else path.rsplit("/", 1)[-1])
        out[kind] = out.get(kind, 0) + 1
    return out


def test_plan_counts_every_call_of_each_mode(database_url):
    market = generate_market(20, "2022-01-03", "2024-06-28", seed=21)  # 20 S&P-like + 20 ETFs
    measured = {}
    with PolygonServer(market, api_key=API_KEY) as server:
        # Cold backfill: two years for 40 tickers, one range call each, and the ledger's two.
        plan, run, calls = plan_then_run(database_url, server, COLD)
        measured["cold"] = (plan["calls"], len(calls))
        assert run["exit_code"] == 0
        assert _kinds(calls) == {"range": 40, "splits": 1, "dividends": 1}
        assert plan["calls"] == run["planned_calls"] == run["api_calls"] == len(calls) == 42

        # Nightly: the new session, the last one again (settle window), the ledger since then.
        plan, run, calls = plan_then_run(database_url, server, "2024-06-03")
        measured["nightly"] = (plan["calls"], len(calls))
        assert _kinds(calls) == {"grouped": 2, "splits": 1, "dividends": 1}
        assert plan["calls"] == run["api_calls"] == len(calls) == 4

        # A new member joins and two sessions pass: its history by range, the ledger for it too.
        market.add_bars(generate_market(1, "2022-01-03", "2024-06-28", seed=9).bars("MMM").assign(ticker="NEWC"))
        market.add_constituent("NEWC", "Newcomer Inc.", "Industrials")
        plan, run, calls = plan_then_run(database_url, server, "2024-06-05")
        measured["new member"] = (plan["calls"], len(calls))
        assert _kinds(calls) == {"grouped": 3, "range": 1, "splits": 2, "dividends": 2}
        assert plan["calls"] == run["api_calls"] == len(calls) == 8

        # A split in the ledger: the ledger's calls bring it, nothing is refetched.
        ticker = market.constituents[0].symbol
        market.add_split(ticker, "2024-06-06", 1, 2)
        plan, run, calls = plan_then_run(database_url, server, "2024-06-06")
        measured["ledger with a split"] = (plan["calls"], len(calls))
        assert run["corporate_actions"]["splits"] == 1
        assert plan["calls"] == run["api_calls"] == len(calls) == 4

        # --full-refresh of two tickers: their whole history again, by range.
        plan, run, calls = plan_then_run(database_url, server, "2024-06-06", tickers=[ticker, "SPY"],
                                         full_refresh=True)
        measured["full refresh"] = (plan["calls"], len(calls))
        assert _kinds(calls).get("range") == 2
        assert plan["calls"] == run["api_calls"] == len(calls)

        # --verify-adjustments: one range call per stored ticker and nothing else, even with a
        # new session waiting and a member that has nothing stored yet.
        market.add_bars(generate_market(1, "2022-01-03", "2024-06-28", seed=10).bars("MMM").assign(ticker="LATE"))
        market.add_constituent("LATE", "Latecomer Inc.", "Industrials")
        plan, run, calls = plan_then_run(database_url, server, "2024-06-07", verify_adjustments=True)
        measured["verify adjustments"] = (plan["calls"], len(calls))
        assert _kinds(calls) == {"range": 41}
        assert plan["calls"] == run["api_calls"] == len(calls) == 41

        # And the next nightly run fetches what verification left.
        plan, run, calls = plan_then_run(database_url, server, "2024-06-07")
        measured["after verify"] = (plan["calls"], len(calls))
        assert plan["calls"] == run["api_calls"] == len(calls)
    print("plan vs run:", measured)


def test_cli_plan_line_states_the_count_the_run_makes(tmp_path):
    market = generate_market(5, "2024-01-02", "2024-03-28", seed=4)
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    with PolygonServer(market, api_key=API_KEY, today="2024-03-28") as server:
        env = {"POLYGON_API_KEY": API_KEY, "POLYGON_BASE_URL": server.url, "DATABASE_URL": url,
               "SP500_URL": f"{server.url}/wiki/List_of_S%26P_500_companies", "POLYGON_RATE_LIMIT": "12",
               "MIN_SP500_SYMBOLS": "1"}
        done = cli("--plan", "--verify-adjustments", "--end", "2024-03-28", env=env)
        assert done.returncode == 0, done.stderr
        # Nothing is stored yet: there is nothing to verify, so nothing to call.
        assert done.stdout.splitlines()[-1] == "0 calls, 0 s at 12 s per call"
        first = cli("--end", "2024-03-28", "--start", "2024-03-01", env={**env, "POLYGON_RATE_LIMIT": "0"})
        assert first.returncode == 0, first.stderr
        done = cli("--plan", "--verify-adjustments", "--end", "2024-03-28", env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == "25 calls, 5 min at 12 s per call"
        mark = len(server.requests)
        run = cli("--verify-adjustments", "--end", "2024-03-28", env={**env, "POLYGON_RATE_LIMIT": "0"})
        assert run.returncode == 0, run.stderr
        assert len(api_calls(server, mark)) == 25
