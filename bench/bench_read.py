"""Time and memory of the read side on a 10-year, 523-ticker warehouse (SQLite), next to plain baselines.

    python bench/bench_read.py [--years 10] [--tickers 503] [--workdir DIR] [--reuse]

The warehouse is built without HTTP: generated bars (``generate_market``,
every NYSE session of ``--years`` years through 2026-06-26, ``--tickers``
S&P-like companies plus the 20 ETFs) go straight through the ingest's bulk
writer, with coverage for all of it, four splits and quarterly dividends for
100 tickers (in the ledger, with the factor spans the ingest computes), one
run row per night for the last year, and a few vendor holes and rejected bars.
``--reuse`` keeps a warehouse already built in ``--workdir``.

Each command then runs as its own child process, as cron would run it, with
its wall time and peak RSS from ``wait4`` (``_common.run_child``):

* ``export`` cold (every year written), next to the baseline: one child that
  reads ``SELECT * FROM ticker_data_raw`` into pyarrow and writes one Parquet
  file (no adjustment, no partitions, no manifest);
* ``export`` again with nothing changed, and after one new session (its year
  rewritten);
* ``status``, and ``report --ticker AAPL``, next to ``status`` as its baseline
  (the same health queries, without the coverage grid and the charts).

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

# _common first: it puts the repository on sys.path
from _common import PYTHON, clean_env, machine_line, markdown_table, run_child

import pandas as pd
from sqlalchemy import insert

from CandleThrob.actions import factors as factor_math
from CandleThrob.clock import Clock
from CandleThrob.config import AdvancedBatchConfig
from CandleThrob.planning.coverage import merge_intervals
from CandleThrob.planning.trading_calendar import TradingCalendar
from CandleThrob.testing.datagen import Dividend, generate_market
from CandleThrob.universe.tickers import ETF_TICKERS
from CandleThrob.warehouse.engine import create_db_engine
from CandleThrob.warehouse.ledger import LedgerStore
from CandleThrob.warehouse.schema import cell_gaps, ingestion_runs, rejected_bars
from CandleThrob.warehouse.storage import Warehouse

END = dt.date(2026, 6, 26)
SPLITS = (("AAPL", "2020-08-31", 1, 4), ("AMZN", "2022-06-06", 1, 20), ("GOOGL", "2022-07-18", 1, 20),
          ("NVDA", "2024-06-10", 1, 10))
DIVIDEND_PAYERS = 100
STAMP = dt.datetime(2026, 6, 27, 1, 0)  # when the generated bars were "ingested" (naive UTC)
# The floor for an export in Python: every raw bar through the driver into Arrow columns, one file.
BASELINE_EXPORT = """
import sqlite3, sys, pyarrow as pa, pyarrow.parquet as pq
cursor = sqlite3.connect(sys.argv[1]).execute("SELECT * FROM ticker_data_raw")
names = [d[0] for d in cursor.description]
columns = zip(*cursor.fetchall())
pq.write_table(pa.table({name: pa.array(values) for name, values in zip(names, columns)}), sys.argv[2],
               compression="zstd")
"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--tickers", type=int, default=503, help="S&P-like companies (the 20 ETFs come on top)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workdir", type=Path, help="where the warehouse and outputs go (default: a temp dir)")
    parser.add_argument("--reuse", action="store_true", help="keep a warehouse already built in --workdir")
    return parser.parse_args(argv)


def build(path: Path, years: int, tickers: int, seed: int) -> int:
    start = (pd.Timestamp(END) - pd.DateOffset(years=years) + pd.Timedelta(days=1)).date()
    market = generate_market(tickers, start, END, seed=seed)
    for ticker, day, split_from, split_to in SPLITS:
        if ticker in market.tickers:
            market.add_split(ticker, day, split_from, split_to)
    bars = market.bars().assign(source="range")
    warehouse = Warehouse(create_db_engine(AdvancedBatchConfig.from_env({}, database_url=f"sqlite:///{path}")),
                          Clock.fixed(STAMP.replace(tzinfo=dt.timezone.utc)))
    warehouse.create_schema()
    calendar = TradingCalendar(end=END + dt.timedelta(days=400))
    sessions = calendar.sessions_in_range(start, END)
    with warehouse.transaction() as conn:
        warehouse.write_bars(conn, bars, "bench-load", STAMP)
        warehouse.add_coverage(conn, {t: [(start, END)] for t in market.tickers}, "bench-load",
                               lambda intervals: merge_intervals(intervals, sessions))
    members = pd.DataFrame({"ticker": market.tickers, "name": market.tickers, "sector": "",
                            "kind": ["etf" if t in ETF_TICKERS else "sp500" for t in market.tickers]})
    warehouse.sync_universe(members, END, kinds=("sp500", "etf"))
    _ledger(warehouse, market, sessions)
    _audit(warehouse, market, sessions)
    warehouse.dispose()
    return len(bars)


def _ledger(warehouse: Warehouse, market, sessions: pd.DatetimeIndex) -> None:
    """Four splits and quarterly dividends of 100 tickers, with the factor spans the ingest would compute."""
    ledger = LedgerStore(warehouse)
    splits = [{"event_id": f"S-{s.ticker}-{s.execution_date}", "ticker": s.ticker, "execution_date": s.execution_date,
               "split_from": s.split_from, "split_to": s.split_to, "adjustment_type": "forward_split",
               "vendor_factor": None} for s in market.splits]
    payers = [t for t in market.tickers if t not in ETF_TICKERS][:DIVIDEND_PAYERS]
    quarters = sessions[::63][1:]
    dividends = [Dividend(t, day.date(), 0.25) for t in payers for day in quarters]
    rows = [{"event_id": f"D-{d.ticker}-{d.ex_dividend_date}", "ticker": d.ticker,
             "ex_dividend_date": d.ex_dividend_date, "cash_amount": d.cash_amount, "currency": "USD",
             "declaration_date": None, "record_date": None, "pay_date": None, "frequency": 4,
             "distribution_type": "recurring", "split_adjusted_cash": d.cash_amount, "vendor_factor": None}
            for d in dividends]
    with warehouse.transaction() as conn:
        ledger.record(conn, splits, rows, "bench-load")
    touched = sorted({s["ticker"] for s in splits} | set(payers))
    first_bar = {t: sessions[0].date() for t in touched}
    result = factor_math.compute(ledger.splits(touched), ledger.dividends(touched), ledger.previous_closes(touched),
                                 first_bar)
    with warehouse.transaction() as conn:
        ledger.replace_factors(conn, touched, result.spans, "bench-load")


def _audit(warehouse: Warehouse, market, sessions: pd.DatetimeIndex) -> None:
    """A run per night for the last year (every 20th ended exit 1), three vendor holes, a few rejected bars."""
    nights = sessions[-252:]
    runs = [{"run_id": f"bench-{i:04d}", "status": "success" if i % 20 else "partial",
             "started_at": (day + pd.Timedelta(hours=25, minutes=15)).to_pydatetime(),
             "finished_at": (day + pd.Timedelta(hours=25, minutes=15, seconds=40 + i % 7)).to_pydatetime(),
             "end_date": day.date(), "tickers_total": len(market.tickers), "tickers_ok": len(market.tickers),
             "tickers_failed": 0 if i % 20 else 1, "rows_written": len(market.tickers),
             "rows_rejected": int(i % 20 == 0), "api_calls": 2, "exit_code": 0 if i % 20 else 1,
             "version": "bench"} for i, day in enumerate(nights)]
    gaps = [{"ticker": t, "trade_date": sessions[-k * 300].date(), "kind": "absent", "reason": "bench",
             "tries": 4, "next_try": END, "status": "hole", "first_run_id": "bench-0000", "last_run_id": "bench-0001",
             "updated_at": STAMP} for k, t in enumerate(("MMM", "AOS", "ABT"), start=1)]
    rejected = [{"run_id": "bench-0020", "ticker": t, "trade_date": sessions[-300].date(), "open_price": 1.0,
                 "high_price": 0.5, "low_price": 1.0, "close_price": 1.0, "volume": 100.0,
                 "reasons": "high_below_low;open_outside_range", "rejected_at": STAMP} for t in ("MMM", "AOS", "ABT")]
    with warehouse.transaction() as conn:
        conn.execute(insert(ingestion_runs), runs)
        conn.execute(insert(cell_gaps), gaps)
        conn.execute(insert(rejected_bars), rejected)


def add_session(path: Path) -> None:
    """One more session for every ticker after the last stored one, as a nightly run would write it."""
    warehouse = Warehouse(create_db_engine(AdvancedBatchConfig.from_env({}, database_url=f"sqlite:///{path}")))
    last = warehouse.bars(adjust="none").groupby("ticker").tail(1)
    day = TradingCalendar().sessions_in_range(last["trade_date"].max() + pd.Timedelta(days=1),
                                              last["trade_date"].max() + pd.Timedelta(days=10))[0]
    stamp = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0) - dt.timedelta(minutes=1)
    with warehouse.transaction() as conn:
        warehouse.write_bars(conn, last.drop(columns=["run_id"]).assign(trade_date=day), "bench-next", stamp)
    warehouse.dispose()


def measure(label: str, args: list, env: dict) -> dict:
    done = run_child(args, env)
    if done.returncode != 0:
        raise RuntimeError(f"{label} failed ({done.returncode}): {done.stderr[-2000:]}")
    return {"label": label, "wall": done.wall_s, "cpu": done.user_s + done.sys_s, "rss": done.max_rss_mb,
            "stdout": done.stdout.strip()}


def main(argv=None) -> int:
    args = parse_args(argv)
    print(machine_line())
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="candlethrob-bench-read-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        database = workdir / "warehouse.db"
        began = time.perf_counter()
        if not (args.reuse and database.is_file()):
            database.unlink(missing_ok=True)
            rows = build(database, args.years, args.tickers, args.seed)
            print(f"built {database}: {rows:,} bars in {time.perf_counter() - began:.0f} s")
        url = f"sqlite:///{database}"
        env = clean_env()
        cli = [PYTHON, "-m", "CandleThrob"]
        dataset, page = workdir / "dataset", workdir / "report.html"
        for old in dataset.rglob("*"):
            if old.is_file():
                old.unlink()
        results = [
            measure("baseline: SELECT * into pyarrow, one Parquet file",
                    [PYTHON, "-c", BASELINE_EXPORT, database, workdir / "baseline.parquet"], env),
            measure("export, cold", [*cli, "export", "--output", dataset, "--database-url", url], env),
            measure("export, nothing changed", [*cli, "export", "--output", dataset, "--database-url", url], env),
        ]
        add_session(database)
        results.append(measure("export after one new session", [*cli, "export", "--output", dataset,
                                                                 "--database-url", url], env))
        results.append(measure("status (baseline for report)", [*cli, "status", "--database-url", url], env))
        results.append(measure("report --ticker AAPL", [*cli, "report", "--output", page, "--ticker", "AAPL",
                                                        "--database-url", url], env))
        print_results(results, page, dataset)
    return 0


def print_results(results: list[dict], page: Path, dataset: Path) -> None:
    by = {r["label"]: r for r in results}
    baseline = by["baseline: SELECT * into pyarrow, one Parquet file"]
    status = by["status (baseline for report)"]
    ratio = {"export, cold": baseline, "report --ticker AAPL": status}
    rows = [(r["label"], f"{r['wall']:.1f} s", f"{r['cpu']:.1f} s", f"{r['rss']:.0f} MB",
             f"{r['wall'] / ratio[r['label']]['wall']:.2f}" if r["label"] in ratio else "") for r in results]
    print(markdown_table(("run", "wall", "CPU (user + sys)", "peak RSS", "wall / baseline"), rows))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other work on the machine "
          "inflates wall times; CPU time is this process's own)")
    size = sum(p.stat().st_size for p in dataset.rglob("*.parquet"))
    print(f"\nreport page: {page.stat().st_size / 1024:,.0f} KB; dataset: {size / 2**20:,.1f} MB in "
          f"{len(list(dataset.rglob('*.parquet')))} files")
    for r in results:
        if r["stdout"] and r["label"].startswith("export"):
            print(f"{r['label']}: {r['stdout']}")


if __name__ == "__main__":
    sys.exit(main())
