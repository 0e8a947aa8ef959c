"""The whole market (UNIVERSE=all) and the nightly run at the free tier's rate.

    python bench/bench_market.py [--years 2] [--db sqlite|postgresql] [--market-size 11000] [--universe all|sp500]

The local server runs as its own process with generated data (503 S&P-like
tickers + 20 ETFs through 2026-06-26) and grouped days listing ``--market-size``
symbols, as a real answer lists the whole market. The CLI runs as cron would run it:

1. **cold, UNIVERSE=all**: ``--years`` of history through 2026-06-25 on an empty
   database, no rate limit: calls, rows, wall time, the child's peak RSS (wait4);
2. **nightly at the free tier's rate**: the warehouse is copied, then the next
   session (2026-06-26) is loaded with the real limiter (``POLYGON_RATE_LIMIT=12``,
   no fake clock): the new session, the previous one again (settle window), splits
   and dividends. Once with the default bucket (the vendor's five calls a minute at
   once), once on the copy with ``POLYGON_RATE_BURST=1`` (one call every 12 s, the
   first release's limiter): the baseline of the same command;
3. a **no-op run** (nothing new, no call): what start-up alone costs, so the
   nightly's own part is nightly - no-op.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# _common first: it puts the repository on sys.path
from _common import API_KEY, PYTHON, ROOT, ServerProcess, clean_env, machine_line, markdown_table, run_child
from bench_ingest import END, history_start

EVE = dt.date(2026, 6, 25)  # the session before END: the cold run's last
TARGET_RSS_MB = 500.0
TARGET_NIGHTLY_S = 2.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--years", type=int, default=2)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--market-size", type=int, default=11_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--universe", choices=("all", "sp500"), default="all",
                        help="UNIVERSE of the runs (sp500: the nightly figure of the default universe)")
    return parser.parse_args(argv)


def env_for(server: ServerProcess, database_url: str, start: dt.date, **extra: str) -> dict[str, str]:
    return clean_env(POLYGON_API_KEY=API_KEY, POLYGON_BASE_URL=server.url,
                     SP500_URL=f"{server.url}/wiki/List_of_S%26P_500_companies", DATABASE_URL=database_url,
                     HISTORY_START=start.isoformat(), MIN_SP500_SYMBOLS="1", **extra)


def run(env: dict[str, str], workdir: Path, name: str, end: dt.date):
    report = workdir / f"{name}.json"
    child = run_child([PYTHON, "-m", "CandleThrob.ingestion.ingest_data", "--end", end.isoformat(),
                       "--report", str(report), "--no-progress"], env=env, cwd=workdir)
    if child.returncode != 0 or not report.exists():
        raise RuntimeError(f"{name} exited {child.returncode}:\n{child.stdout}\n{child.stderr[-4000:]}")
    return child, json.loads(report.read_text())


def main(argv=None) -> int:
    args = parse_args(argv)
    start = history_start(args.years)
    print(machine_line())
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    pg = None
    began = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="candlethrob-bench-market-") as tmp, \
                ServerProcess(503, start.isoformat(), END.isoformat(), args.seed, request_log=Path(tmp) / "log.jsonl",
                              market_size=args.market_size) as server:
            workdir = Path(tmp)
            os.chmod(workdir, 0o755)

            def env(url: str, **extra: str) -> dict[str, str]:
                return env_for(server, url, start, UNIVERSE=args.universe, **extra)

            if args.db == "postgresql":
                sys.path.insert(0, str(ROOT / "tests"))
                from pg_server import TempPostgres
                pg = TempPostgres().start()
                urls = [pg.create_database("burst"), pg.create_database("spaced")]
            else:
                urls = [f"sqlite:///{workdir / 'burst.db'}", f"sqlite:///{workdir / 'spaced.db'}"]
            print(f"cold run, UNIVERSE={args.universe}, {start}..{EVE}, grouped answers of "
                  f"{args.market_size:,} symbols ...", flush=True)
            cold, cold_report = run(env(urls[0], POLYGON_RATE_LIMIT="0"), workdir, "cold", EVE)
            if args.db == "sqlite":
                shutil.copyfile(workdir / "burst.db", workdir / "spaced.db")
            else:  # the same state: the cold run once more into the second database
                run(env(urls[1], POLYGON_RATE_LIMIT="0"), workdir, "cold-2", EVE)
            print("nightly runs at 12 s a call ...", flush=True)
            nightly, nightly_report = run(env(urls[0], POLYGON_RATE_LIMIT="12"), workdir,
                                          "nightly", END)
            spaced, spaced_report = run(env(urls[1], POLYGON_RATE_LIMIT="12", POLYGON_RATE_BURST="1"), workdir,
                                        "nightly-spaced", END)
            noop, noop_report = run(env(urls[0], POLYGON_RATE_LIMIT="12"), workdir, "noop", END)
    finally:
        if pg is not None:
            pg.stop()

    def calls(report: dict) -> str:
        endpoints = ", ".join(f"{k} {v}" for k, v in sorted(report["api_calls_by_endpoint"].items()))
        return f"{report['api_calls']} ({endpoints})"

    own = nightly.wall_s - noop.wall_s
    rows = [
        ["cold run calls", calls(cold_report)],
        ["grouped answers x symbols in each", f"{cold_report['grouped_calls']} x {args.market_size:,}"],
        ["rows written", f"{cold_report['rows_written']:,}"],
        ["symbols kept besides the 523 (market_symbols)", f"{cold_report['market_symbols']:,}"],
        ["cold run wall", f"{cold.wall_s:.1f} s"],
        ["cold run CPU (user + sys)", f"{cold.user_s + cold.sys_s:.1f} s"],
        [f"cold run peak RSS, wait4 (target < {TARGET_RSS_MB:.0f} MB)",
         f"{cold.max_rss_mb:.0f} MB {'ok' if cold.max_rss_mb < TARGET_RSS_MB else 'OVER'}"],
        ["nightly calls", calls(nightly_report)],
        ["nightly rows written", f"{nightly_report['rows_written']:,}"],
        ["nightly wall, bucket of 5 (default)", f"{nightly.wall_s:.2f} s"],
        ["nightly wall, one call every 12 s (POLYGON_RATE_BURST=1)", f"{spaced.wall_s:.2f} s"],
        ["ratio spaced / bucket", f"{spaced.wall_s / nightly.wall_s:.1f}"],
        ["no-op run wall (start-up, no call)", f"{noop.wall_s:.2f} s ({noop_report['api_calls']} calls)"],
        [f"nightly - no-op: the calls and their rows (target <= {TARGET_NIGHTLY_S:g} s + latency)",
         f"{own:.2f} s {'ok' if own <= TARGET_NIGHTLY_S else 'OVER'}"],
    ]
    print(f"\n{args.db}, UNIVERSE={args.universe}, {args.years} years, 503 + 20 planned tickers:\n")
    print(markdown_table(["figure", args.db], rows))
    print(f"\ntotal bench time {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
