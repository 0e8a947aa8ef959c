"""API calls per run: CandleThrob's planner next to the seed's one range call per ticker.

    /work/venv/bin/python bench/bench_calls.py [--tickers 503] [--years 2]

Runs CandleThrob in-process against the local Polygon-compatible server
(generated data: ``--tickers`` S&P 500 companies + 20 ETFs) into a temporary
SQLite file, with no rate limit, through five cases in order:

  (a) cold backfill of ``--years`` years
  (b) one new session
  (c) a new index member (with full history) plus three new sessions
  (d) nothing new (the same end again)
  (e) ``--end`` on a holiday (2026-07-03, Independence Day observed; the
      session before it is already stored)

Calls are counted in the server's own request log: paths under ``/v2/aggs``
are data calls (a grouped call for a session stored on its own evening is the
settle window asking it again), ``/stocks/v1/splits`` and ``/stocks/v1/dividends``
the corporate-actions ledger's calls; the constituents page is not an API call
and is not counted. Each count is priced at the free
tier's 12 s per call. The seed made one range call per ticker per run, so its
count is the universe size in every case. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

# _common first: it puts the repository on sys.path
from _common import API_KEY, FREE_TIER_SECONDS_PER_CALL, duration, machine_line, markdown_table

import pandas as pd

from CandleThrob.config import AdvancedBatchConfig
from CandleThrob.ingestion.pipeline import CompleteDataIngestion, RunOptions
from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer

# Session dates of the scenario (NYSE): Fri 26 Jun 2026 is the cold run's end;
# Fri 3 Jul 2026 is the observed Independence Day holiday.
COLD_END = dt.date(2026, 6, 26)
ONE_NEW = dt.date(2026, 6, 29)           # Mon: one session after COLD_END
THREE_NEW = dt.date(2026, 7, 2)          # Tue 30 Jun, Wed 1 Jul, Thu 2 Jul
HOLIDAY = dt.date(2026, 7, 3)            # no session; the one before is THREE_NEW
DATA_UNTIL = dt.date(2026, 7, 10)        # the server holds bars past every case (hidden by its "today")
NEW_MEMBER = "NWMB"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickers", type=int, default=503, help="S&P-like tickers (+ 20 ETFs), at most 503")
    parser.add_argument("--years", type=int, default=2, help="history of the cold backfill")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def history_start(years: int) -> dt.date:
    # The same default CandleThrob uses for two years (end - N years + 1 day).
    return (pd.Timestamp(COLD_END) - pd.DateOffset(years=years) + pd.Timedelta(days=1)).date()


def make_ingestion(server: PolygonServer, database_url: str, start: dt.date, now: dt.datetime,
                   rate_limit_seconds: float = 0.0) -> CompleteDataIngestion:
    settings = dict(database_url=database_url, polygon_api_key=API_KEY, polygon_base_url=server.url,
                    sp500_url=f"{server.url}/wiki/List_of_S%26P_500_companies",
                    rate_limit_seconds=rate_limit_seconds, history_start=start, retry_delay=0.01,
                    request_timeout=30)
    # The constituents page lists --tickers symbols; accept a short one (the
    # minimum is a config field now, a constructor argument before).
    extra = {}
    if "min_sp500_symbols" in {f.name for f in dataclasses.fields(AdvancedBatchConfig)}:
        settings["min_sp500_symbols"] = 1
    else:
        extra["min_sp500_symbols"] = 1
    config = AdvancedBatchConfig.from_env({}, **settings)
    return CompleteDataIngestion(config, clock=lambda: now, **extra)


def clock_after(day: dt.date) -> dt.datetime:
    # Noon UTC the next calendar day: the session of ``day`` is final by then.
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(12), dt.timezone.utc)


def count_calls(requests: list[dict]) -> tuple[int, int, int, int]:
    """(data calls, of which grouped, of which range, corporate-actions calls: splits and dividends)."""
    data = [r for r in requests if r["path"].startswith("/v2/aggs")]
    grouped = sum(r["path"].startswith("/v2/aggs/grouped/") for r in data)
    ledger = sum(r["path"] in ("/stocks/v1/splits", "/stocks/v1/dividends") for r in requests)
    return len(data), grouped, len(data) - grouped, ledger


def main(argv=None) -> int:
    args = parse_args(argv)
    start = history_start(args.years)
    print(machine_line())
    began = time.perf_counter()
    market = generate_market(args.tickers, start, DATA_UNTIL, seed=args.seed)
    print(f"generated {args.tickers} S&P-like tickers + 20 ETFs, {start}..{DATA_UNTIL} "
          f"({len(market.bars())} bars) in {time.perf_counter() - began:.1f} s")
    rows, details = [], []
    with tempfile.TemporaryDirectory(prefix="candlethrob-bench-calls-") as tmp, \
            PolygonServer(market, api_key=API_KEY, today=COLD_END) as server:
        database_url = f"sqlite:///{Path(tmp) / 'warehouse.db'}"

        # The planner's optimum for the cold case, priced at the free tier (writes nothing).
        planner = make_ingestion(server, database_url, start, clock_after(COLD_END),
                                 rate_limit_seconds=FREE_TIER_SECONDS_PER_CALL)
        plan = planner.run(RunOptions(end=COLD_END, plan_only=True))
        planner.warehouse.dispose()
        print(f"\nplanner, cold case ({plan['tickers']} tickers through {plan['end']}, --plan):")
        lines = plan["plan_text"].splitlines()
        if len(lines) > 14:  # one line per range call: keep the head and the total
            lines = lines[:10] + [f"  ... {len(lines) - 11} more lines"] + lines[-1:]
        print("\n".join("  " + line for line in lines))

        def case(label: str, end: dt.date, session: dt.date) -> None:
            server.today = session
            mark = len(server.requests)
            ingestion = make_ingestion(server, database_url, start, clock_after(end))
            t0 = time.perf_counter()
            try:
                result = ingestion.run(RunOptions(end=end))
            finally:
                ingestion.warehouse.dispose()
            wall = time.perf_counter() - t0
            data, grouped, ranged, splits = count_calls(server.requests[mark:])
            universe = result["tickers"]
            ours = data + splits
            rows.append([label, f"{ours} ({data} + {splits})", duration(ours * FREE_TIER_SECONDS_PER_CALL),
                         universe, duration(universe * FREE_TIER_SECONDS_PER_CALL)])
            details.append(f"  {label}: --end {end} -> session {result['end']}; status {result['status']}; "
                           f"{grouped} grouped (settle window: {', '.join(result['settled_sessions']) or 'none'}) "
                           f"+ {ranged} range + {splits} corporate-actions calls "
                           f"(planned {result['planned_calls']}); {result['rows_written']} bars written; "
                           f"{wall:.1f} s at no rate limit")
            if label.startswith("(a)"):
                details.append(f"      cold run result: planned_calls {result['planned_calls']} "
                               f"({result['grouped_calls']} grouped, {result['range_calls']} range) "
                               f"for {result['missing_cells']} missing cells")

        case(f"(a) cold backfill, {args.years} years", COLD_END, COLD_END)
        case("(b) one new session", ONE_NEW, ONE_NEW)
        member = generate_market(1, start, DATA_UNTIL, seed=args.seed + 1)
        first = member.tickers[0]
        market.add_bars(member.bars(first).assign(ticker=NEW_MEMBER))
        market.add_constituent(NEW_MEMBER, "New Member Inc.", "Industrials")
        case(f"(c) new member {NEW_MEMBER} + 3 new sessions", THREE_NEW, THREE_NEW)
        case("(d) nothing new", THREE_NEW, THREE_NEW)
        case(f"(e) --end {HOLIDAY} (holiday)", HOLIDAY, THREE_NEW)

    print(f"\ncalls per run ({FREE_TIER_SECONDS_PER_CALL:g} s per call at the free tier; "
          "CandleThrob's count is data + corporate-actions calls from the server's request log):\n")
    print(markdown_table(["case", "CandleThrob calls (data + splits/dividends)", "time at 12 s/call",
                          "seed calls", "seed time"], rows))
    print("\ndetails:")
    print("\n".join(details))
    print(f"\ntotal bench time {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
