"""Load speed, memory and start-up cost of CandleThrob, next to the raw database driver.

    /work/venv/bin/python bench/bench_ingest.py [--years 2|10] [--db sqlite|postgresql|both]
                                                [--tickers 503] [--profile auto|always|never]
                                                [--cprofile]

The local Polygon-compatible server runs as its own process with generated
data (``--tickers`` S&P 500 companies + 20 ETFs, ``--years`` years through
2026-06-26) and no rate limit. For each database the CLI is run as a child
process, exactly as cron or Kestra would run it:

    python -m CandleThrob.ingestion.ingest_data --end 2026-06-26 --report r.json --no-progress

once on an empty database (the cold run) and then ``--noop-runs`` more times
(nothing new: the no-op run). Printed per database:

* end-to-end marginal rows/s: rows written / (cold wall - best no-op wall),
  i.e. the cost of the rows without the fixed start-up cost;
* the raw path: the same rows (from the same generator) written into a fresh
  database of the same schema by the driver's fastest bulk path in one
  transaction -- sqlite3 ``executemany`` of ``INSERT ... ON CONFLICT DO
  UPDATE``; psycopg binary ``COPY`` (``write_row`` per row) into a temporary
  staging table, then ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` -- and
  the ratio of the two times (target <= 2);
* the raw fetch: the cold run's own data requests (from the server's request
  log) replayed with 4 threads and ``json.loads``, the floor any client pays
  to this server; and the ratio end-to-end / (raw fetch + raw write);
* the ingest process's peak RSS, both as it reports it (``peak_rss_mb``) and
  as the kernel accounts it for that one child (``wait4``), the children being
  started by a small launcher process (see ``_common.Launcher``) (target
  < 300 MB at 10 years x 523 tickers);
* the best no-op run wall next to a bare ``import CandleThrob.ingestion.ingest_data``
  (best of 3; target: no-op <= 2x import).

When the end-to-end / raw ratio is over 2 (``--profile auto``), an in-process
cold run configured like the CLI's is timed phase by phase (wall clock around
the pipeline's own functions); when the no-op run is over 2x the bare import,
the no-op CLI run is profiled with cProfile. ``--cprofile`` adds the top
functions of a profiled in-process cold run with one fetch worker. Prints
figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import datetime as dt
import functools
import importlib
import inspect
import io
import json
import os
import pstats
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Sequence

# _common first: it puts the repository on sys.path
from _common import (API_KEY, PYTHON, ROOT, ServerProcess, clean_env, machine_line, markdown_table,
                     run_child)
from _raw import postgres_upsert, sqlite_upsert

import pandas as pd
import psutil
from sqlalchemy import create_engine

from CandleThrob.warehouse.schema import BAR_COLUMNS_DB, metadata
from CandleThrob.testing.datagen import generate_market

END = dt.date(2026, 6, 26)
TARGET_RATIO = 2.0
TARGET_RSS_MB = 300.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--years", type=int, default=2, help="history loaded by the cold run (2 or 10)")
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--tickers", type=int, default=503, help="S&P-like tickers (+ 20 ETFs), at most 503")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--market-size", type=int, default=11_000,
                        help="symbols in each grouped answer, the universe's plus generated others (0: none)")
    parser.add_argument("--noop-runs", type=int, default=3, help="no-op runs after the cold one (best is used)")
    parser.add_argument("--import-runs", type=int, default=3, help="bare imports timed (best is used)")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                        help="time the phases of an in-process cold run (and profile a no-op run) when a "
                             "target is missed (auto), always, or never")
    parser.add_argument("--cprofile", action="store_true",
                        help="also list the top functions of a cProfile'd in-process cold run (1 worker)")
    parser.add_argument("--top", type=int, default=20, help="functions listed by each profile")
    return parser.parse_args(argv)


def history_start(years: int) -> dt.date:
    # CandleThrob's own default for two years: end - N years + 1 day
    return (pd.Timestamp(END) - pd.DateOffset(years=years) + pd.Timedelta(days=1)).date()


# ---- CandleThrob as a child process ------------------------------------------------

def ingest_env(server_url: str, database_url: str, start: dt.date) -> dict[str, str]:
    return clean_env(POLYGON_API_KEY=API_KEY, POLYGON_BASE_URL=server_url,
                     SP500_URL=f"{server_url}/wiki/List_of_S%26P_500_companies",
                     DATABASE_URL=database_url, POLYGON_RATE_LIMIT="0", HISTORY_START=start.isoformat(),
                     MIN_SP500_SYMBOLS="1")


def run_cli(env: dict[str, str], workdir: Path, name: str,
            runner: Sequence[str] = ("-m", "CandleThrob.ingestion.ingest_data")) -> tuple[object, dict]:
    report = workdir / f"{name}.json"
    child = run_child([PYTHON, *runner, "--end", END.isoformat(), "--report", str(report), "--no-progress"],
                      env=env, cwd=workdir)
    if child.returncode != 0 or not report.exists():
        raise RuntimeError(f"ingest run {name} exited {child.returncode}:\n{child.stdout}\n{child.stderr[-4000:]}")
    return child, json.loads(report.read_text())


def bare_import_seconds(runs: int, workdir: Path) -> list[float]:
    env = clean_env()
    walls = []
    for _ in range(runs):
        child = run_child([PYTHON, "-c", "import CandleThrob.ingestion.ingest_data"], env=env, cwd=workdir)
        if child.returncode != 0:
            raise RuntimeError(child.stderr)
        walls.append(child.wall_s)
    return walls


# ---- the raw fetch: the cold run's own data requests, replayed ---------------------------

def replay_fetch(server_url: str, requests: list[dict], workers: int) -> tuple[float, int]:
    """GET every request with ``workers`` threads and ``json.loads`` each body: what
    any client must spend to have the bars in Python. (seconds, bars received)."""
    import urllib3
    from concurrent.futures import ThreadPoolExecutor

    pool = urllib3.PoolManager(maxsize=workers, headers={"Authorization": f"Bearer {API_KEY}"})

    def get(entry: dict) -> int:
        url = server_url + entry["path"] + (f"?{entry['query']}" if entry.get("query") else "")
        body = json.loads(pool.request("GET", url).data)
        return len(body.get("results") or [])

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as threads:
        bars = sum(threads.map(get, requests))
    seconds = time.perf_counter() - began
    pool.clear()
    return seconds, bars


def data_requests(log: Path, offset: int) -> list[dict]:
    with log.open(encoding="utf-8") as lines:
        lines.seek(offset)
        entries = [json.loads(line) for line in lines if line.strip()]
    return [e for e in entries if e["path"].startswith("/v2/aggs") and e["status"] == 200]


# ---- the raw driver path -------------------------------------------------------------

def raw_rows(bars: pd.DataFrame, dates_as_objects: bool) -> list[tuple]:
    """The bars as tuples in ticker_data_raw's column order, as a driver takes them."""
    n = len(bars)
    days = bars["trade_date"].to_numpy(dtype="datetime64[D]")
    run_id = str(uuid.uuid4())
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    columns = [bars["ticker"].tolist(),
               days.astype(object).tolist() if dates_as_objects else days.astype(str).tolist(),
               *(bars[c].to_numpy(dtype="float64").tolist() for c in ("open", "high", "low", "close", "volume",
                                                                     "vwap")),
               [None if n != n else int(n) for n in bars["transactions"].tolist()],  # NaN -> NULL
               [run_id] * n, ["range"] * n, [now if dates_as_objects else now.isoformat(sep=" ")] * n]
    return list(zip(*columns))


def raw_sqlite(path: Path, rows: list[tuple]) -> float:
    engine = create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    engine.dispose()
    seconds = sqlite_upsert(str(path), BAR_COLUMNS_DB, rows)
    conn = sqlite3.connect(path)
    count = conn.execute("SELECT count(*) FROM ticker_data_raw").fetchone()[0]
    conn.close()
    if count != len(rows):
        raise RuntimeError(f"raw SQLite stored {count} rows, not {len(rows)}")
    return seconds


def raw_postgres(pg, database: str, rows: list[tuple]) -> float:
    import psycopg
    url = pg.create_database(database)
    engine = create_engine(url)
    metadata.create_all(engine)
    engine.dispose()
    conninfo = {"host": pg.dir, "user": pg.user, "dbname": database}
    seconds = postgres_upsert(conninfo, BAR_COLUMNS_DB, rows)
    with psycopg.connect(**conninfo) as conn:
        count = conn.execute("SELECT count(*) FROM ticker_data_raw").fetchone()[0]
    if count != len(rows):
        raise RuntimeError(f"raw PostgreSQL stored {count} rows, not {len(rows)}")
    return seconds


# ---- where an in-process run spends its time ----------------------------------------

# (label, module, owner (class name or None for a module function), attribute).
# Main-thread phases are wall time; "(sum over workers)" ones run in the fetch
# threads and add up across them. Names missing from the code are skipped.
PHASES = [
    ("universe (constituents page, sync)", "universe.stage", "UniverseStage", "resolve"),
    ("coverage + plan", "planning.stage", "CallPlanner", "plan"),
    ("splits check", "ingestion.splits", "SplitPolicy", "apply_new"),
    ("execute (fetch + store batches)", "ingestion.executor", "BatchExecutor", "run"),
    ("  fetch (wall, workers in parallel)", "ingestion.executor", "BatchExecutor", "fetch"),
    ("    HTTP request (sum over workers)", "source.polygon", "PolygonSource", "_send"),
    ("    JSON decode (sum over workers)", "source.polygon", "PolygonSource", "_decode"),
    ("    bars_from_polygon (sum over workers)", "source.polygon", None, "bars_from_polygon"),
    ("  store", "ingestion.executor", "BatchExecutor", "store"),
    ("    concat_bars", "ingestion.executor", None, "concat_bars"),
    ("    quality check", "quality.validator", "DataQualityValidator", "check"),
    ("    write_bars (upsert)", "warehouse.storage", "Warehouse", "write_bars"),
    ("      bar_rows (tuples for the driver)", "warehouse.bulk", None, "bar_rows"),
    ("    write_rejected", "warehouse.storage", "Warehouse", "write_rejected"),
    ("    add_coverage", "warehouse.storage", "Warehouse", "add_coverage"),
    ("      merge (per ticker: calendar slice + merge_intervals)", "ingestion.writer", "BatchWriter", "merge"),
    ("        merge_intervals", "ingestion.writer", None, "merge_intervals"),
    ("    record_check (audit bookkeeping)", "ingestion.state", "RunState", "record_check"),
    ("    write_audit", "warehouse.storage", "Warehouse", "write_audit"),
    ("    update_run", "warehouse.storage", "Warehouse", "update_run"),
    ("finish (report)", "ingestion.pipeline", "CompleteDataIngestion", "_finish"),
]


class PhaseTimer:
    """Wraps the functions named in ``phases`` with accumulators of ``clock`` (wall by default;
    ``time.thread_time`` for each thread's CPU), for one run."""

    def __init__(self, phases: list = PHASES, clock=time.perf_counter):
        self.phases, self.clock = phases, clock
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._patched: list = []

    def __enter__(self) -> "PhaseTimer":
        for label, module_name, owner_name, attribute in self.phases:
            module = importlib.import_module(f"CandleThrob.{module_name}")
            owner = getattr(module, owner_name) if owner_name else module
            raw = inspect.getattr_static(owner, attribute, None)
            if raw is None:
                continue
            function = raw.__func__ if isinstance(raw, staticmethod) else raw
            timed = self._timed(label, function)
            setattr(owner, attribute, staticmethod(timed) if isinstance(raw, staticmethod) else timed)
            self._patched.append((owner, attribute, raw))
        return self

    def __exit__(self, *exc) -> None:
        for owner, attribute, raw in reversed(self._patched):
            setattr(owner, attribute, raw)

    def _timed(self, label: str, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            began = self.clock()
            try:
                return function(*args, **kwargs)
            finally:
                spent = self.clock() - began
                with self._lock:
                    self.seconds[label] = self.seconds.get(label, 0.0) + spent
                    self.calls[label] = self.calls.get(label, 0) + 1
        return timed


def in_process_config(server_url: str, database_url: str, start: dt.date, **overrides):
    from CandleThrob.config import AdvancedBatchConfig
    settings = dict(database_url=database_url, polygon_api_key=API_KEY, polygon_base_url=server_url,
                    sp500_url=f"{server_url}/wiki/List_of_S%26P_500_companies", rate_limit_seconds=0,
                    history_start=start, **overrides)
    extra = {}
    if "min_sp500_symbols" in {f.name for f in dataclasses.fields(AdvancedBatchConfig)}:
        settings["min_sp500_symbols"] = 1
    else:  # an older CompleteDataIngestion took it as an argument
        extra["min_sp500_symbols"] = 1
    return AdvancedBatchConfig.from_env({}, **settings), extra


def phases_of_cold_run(server_url: str, database_url: str, start: dt.date) -> str:
    """An in-process cold run configured like the CLI's (same workers, batch size), timed by phase."""
    from CandleThrob.ingestion.pipeline import CompleteDataIngestion, RunOptions

    config, extra = in_process_config(server_url, database_url, start)
    with PhaseTimer() as timer:
        ingestion = CompleteDataIngestion(config, **extra)
        began = time.perf_counter()
        try:
            result = ingestion.run(RunOptions(end=END))
        finally:
            ingestion.warehouse.dispose()
        wall = time.perf_counter() - began
    rows = []
    for label, *_ in PHASES:
        if label in timer.seconds:
            rows.append([label, f"{timer.seconds[label]:.2f}", f"{timer.seconds[label] / wall:.0%}",
                         timer.calls[label]])
    store = timer.seconds.get("  store", 0.0)
    inner = sum(v for k, v in timer.seconds.items() if k.startswith("    ") and not k.startswith("     ")
                and "sum over workers" not in k)
    rows.append(["  store: the rest (filtering, coverage dict, commit)", f"{store - inner:.2f}",
                 f"{(store - inner) / wall:.0%}", ""])
    execute = timer.seconds.get("execute (fetch + store batches)", 0.0)
    rest = execute - timer.seconds.get("  fetch (wall, workers in parallel)", 0.0) - store
    rows.append(["  execute: the rest (wanted_on index, latest closes, split dates, progress)", f"{rest:.2f}",
                 f"{rest / wall:.0%}", ""])
    top = sum(timer.seconds.get(label, 0.0) for label, *_ in PHASES if not label.startswith(" "))
    rows.append(["the rest (start-up, engine, schema, lock, run row)", f"{wall - top:.2f}",
                 f"{(wall - top) / wall:.0%}", ""])
    return (f"in-process cold run, {config.workers} fetch workers, batch {config.batch_size}: {wall:.1f} s wall, "
            f"{result['rows_written']:,} rows, {result['api_calls']} calls\n\n"
            + markdown_table(["phase", "s", "share of run", "calls"], rows))


def cprofile_cold_run(server_url: str, database_url: str, start: dt.date, top: int) -> str:
    """Top functions of an in-process cold run with one fetch worker, so that all
    of the work happens in the profiled thread."""
    from CandleThrob.ingestion.pipeline import CompleteDataIngestion, RunOptions

    config, extra = in_process_config(server_url, database_url, start, parallel_processing=False)
    ingestion = CompleteDataIngestion(config, **extra)
    profiler = cProfile.Profile()
    began = time.perf_counter()
    profiler.enable()
    try:
        result = ingestion.run(RunOptions(end=END))
    finally:
        profiler.disable()
        ingestion.warehouse.dispose()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime").print_stats(top)
    body = text.getvalue()
    body = body[body.find("   ncalls"):] if "   ncalls" in body else body
    return (f"cProfile, in-process cold run, 1 fetch worker: {time.perf_counter() - began:.1f} s wall "
            f"(inflated by the profiler), {result['rows_written']:,} rows; top {top} functions by own time:\n"
            + body.rstrip())


def profile_noop(env: dict[str, str], workdir: Path, top: int) -> str:
    """The no-op CLI run under ``python -m cProfile``: CandleThrob's functions and
    the imports, by cumulative time."""
    path = workdir / "noop.prof"
    child = run_child([PYTHON, "-m", "cProfile", "-o", str(path), "-m", "CandleThrob.ingestion.ingest_data",
                       "--end", END.isoformat(), "--no-progress"], env=env, cwd=workdir)
    if child.returncode != 0:
        return f"profiled no-op run failed: {child.stderr[-2000:]}"
    text = io.StringIO()
    pstats.Stats(str(path), stream=text).sort_stats("cumulative").print_stats(
        r"CandleThrob/ingestion/|exchange_calendar\.py.*__init__", top)
    body = text.getvalue()
    body = body[body.find("   ncalls"):] if "   ncalls" in body else body
    return (f"cProfile of a no-op CLI run ({child.wall_s:.2f} s wall with the profiler); CandleThrob "
            f"functions by cumulative time (module lines = import time):\n" + body.rstrip())


# ---- one database ---------------------------------------------------------------------

@dataclasses.dataclass
class Figures:
    name: str
    rows: int = 0
    calls: int = 0
    cold_wall: float = 0.0
    cold_cpu: float = 0.0
    server_cpu: float = 0.0
    noop_walls: list = dataclasses.field(default_factory=list)
    rss_report: float = 0.0
    rss_wait4: float = 0.0
    raw_seconds: float = 0.0
    raw_prepare: float = 0.0
    fetch_seconds: float = 0.0
    profile: list = dataclasses.field(default_factory=list)

    @property
    def noop_wall(self) -> float:
        return min(self.noop_walls)

    @property
    def marginal(self) -> float:
        return self.cold_wall - self.noop_wall

    @property
    def e2e_rps(self) -> float:
        return self.rows / self.marginal

    @property
    def raw_rps(self) -> float:
        return self.rows / self.raw_seconds

    @property
    def ratio(self) -> float:
        return self.marginal / self.raw_seconds


def bench_database(name: str, database_url: str, server: ServerProcess, workdir: Path, start: dt.date,
                   bars: pd.DataFrame, args, raw_writer, bare_import: float) -> Figures:
    figures = Figures(name)
    env = ingest_env(server.url, database_url, start)
    server_proc = psutil.Process(server.proc.pid)
    server_cpu = sum(server_proc.cpu_times()[:2])
    log_offset = server.request_log.stat().st_size
    cold, report = run_cli(env, workdir, f"{name}-cold")
    figures.server_cpu = sum(server_proc.cpu_times()[:2]) - server_cpu
    requests = data_requests(server.request_log, log_offset)
    figures.rows, figures.calls = report["rows_written"], report["api_calls"]
    figures.cold_wall, figures.cold_cpu = cold.wall_s, cold.user_s + cold.sys_s
    figures.rss_report, figures.rss_wait4 = report["peak_rss_mb"], cold.max_rss_mb
    print(f"  {name}: cold run {cold.wall_s:.2f} s wall ({figures.cold_cpu:.1f} s CPU in the ingest, "
          f"{figures.server_cpu:.1f} s in the server), {figures.rows} rows, {figures.calls} API calls "
          f"(planned {report['planned_calls']}: {report['grouped_calls']} grouped, {report['range_calls']} range), "
          f"status {report['status']}", flush=True)
    for i in range(args.noop_runs):
        noop, again = run_cli(env, workdir, f"{name}-noop{i}")
        if again["planned_calls"] or again["rows_written"]:
            print(f"  warning: the no-op run {i} planned {again['planned_calls']} calls and wrote "
                  f"{again['rows_written']} rows")
        figures.noop_walls.append(noop.wall_s)
    print(f"  {name}: no-op runs {', '.join(f'{w:.2f}' for w in figures.noop_walls)} s", flush=True)

    figures.fetch_seconds, fetched = replay_fetch(server.url, requests, workers=4)
    print(f"  {name}: raw fetch, the cold run's {len(requests)} data requests replayed (4 threads, json.loads): "
          f"{figures.fetch_seconds:.2f} s, {fetched:,} bars", flush=True)
    began = time.perf_counter()
    rows = raw_rows(bars, dates_as_objects=name == "postgresql")
    figures.raw_prepare = time.perf_counter() - began
    if len(rows) != figures.rows:
        print(f"  warning: the raw path has {len(rows)} rows, the ingest wrote {figures.rows}")
    figures.raw_seconds = raw_writer(rows)
    del rows
    print(f"  {name}: raw path {figures.raw_seconds:.2f} s (+ {figures.raw_prepare:.2f} s building the tuples)",
          flush=True)
    if args.profile == "always" or (args.profile == "auto" and figures.ratio > TARGET_RATIO):
        print(f"  {name}: ratio {figures.ratio:.2f}: timing the phases of an in-process cold run ...", flush=True)
        figures.profile.append(phases_of_cold_run(server.url, raw_writer.fresh_url("phases"), start))
    if args.cprofile:
        print(f"  {name}: cProfile of an in-process cold run ...", flush=True)
        figures.profile.append(cprofile_cold_run(server.url, raw_writer.fresh_url("cprofile"), start, args.top))
    if args.profile == "always" or (args.profile == "auto" and figures.noop_wall / bare_import > TARGET_RATIO):
        print(f"  {name}: profiling a no-op run ...", flush=True)
        figures.profile.append(profile_noop(env, workdir, args.top))
    print(f"  load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    return figures


class SqliteWriter:
    def __init__(self, workdir: Path):
        self.workdir = workdir

    def __call__(self, rows) -> float:
        return raw_sqlite(self.workdir / "raw.db", rows)

    def fresh_url(self, name: str) -> str:
        return f"sqlite:///{self.workdir / f'{name}.db'}"


class PostgresWriter:
    def __init__(self, pg):
        self.pg = pg

    def __call__(self, rows) -> float:
        return raw_postgres(self.pg, "raw", rows)

    def fresh_url(self, name: str) -> str:
        return self.pg.create_database(name)


def report(all_figures: list[Figures], import_walls: list[float], args, start: dt.date) -> None:
    bare = min(import_walls)
    header = ["figure"] + [f.name for f in all_figures]

    def row(label, fn):
        return [label] + [fn(f) for f in all_figures]

    rows = [
        row("rows written (cold run)", lambda f: f"{f.rows:,}"),
        row("API calls (cold run)", lambda f: f"{f.calls}"),
        row("cold run wall", lambda f: f"{f.cold_wall:.2f} s"),
        row(f"no-op run wall (best of {args.noop_runs})", lambda f: f"{f.noop_wall:.2f} s"),
        row("marginal = cold - no-op", lambda f: f"{f.marginal:.2f} s"),
        row("end-to-end marginal rows/s", lambda f: f"{f.e2e_rps:,.0f}"),
        row("raw driver path (one transaction)", lambda f: f"{f.raw_seconds:.2f} s"),
        row("raw rows/s", lambda f: f"{f.raw_rps:,.0f}"),
        row(f"ratio end-to-end / raw (target <= {TARGET_RATIO:g})",
            lambda f: f"{f.ratio:.2f} {'ok' if f.ratio <= TARGET_RATIO else 'OVER'}"),
        row("raw fetch: the cold run's data requests replayed", lambda f: f"{f.fetch_seconds:.2f} s"),
        row("ratio end-to-end / (raw fetch + raw write)",
            lambda f: f"{f.marginal / (f.fetch_seconds + f.raw_seconds):.2f}"),
        row("ingest CPU / server CPU during the cold run", lambda f: f"{f.cold_cpu:.1f} s / {f.server_cpu:.1f} s"),
        row("peak RSS of the ingest: report / wait4", lambda f: f"{f.rss_report:.0f} / {f.rss_wait4:.0f} MB"),
        row(f"bare import (best of {args.import_runs})", lambda f: f"{bare:.2f} s"),
        row(f"no-op / bare import (target <= {TARGET_RATIO:g})",
            lambda f: f"{f.noop_wall / bare:.2f} {'ok' if f.noop_wall / bare <= TARGET_RATIO else 'OVER'}"),
    ]
    print(f"\n{args.tickers} tickers + 20 ETFs x {args.years} years ({start}..{END}), no rate limit:\n")
    print(markdown_table(header, rows))
    rss = max(f.rss_wait4 for f in all_figures)
    verdict = "under" if rss < TARGET_RSS_MB else "OVER"
    print(f"\npeak RSS {rss:.0f} MB: {verdict} the {TARGET_RSS_MB:.0f} MB target"
          + ("" if args.years >= 10 and args.tickers >= 503 else " (the target is for 10 years x 523 tickers)"))
    print(f"bare import walls: {', '.join(f'{w:.2f}' for w in import_walls)} s")
    for f in all_figures:
        for section in f.profile:
            print(f"\n## where the time goes: {f.name}\n\n{section}")


def main(argv=None) -> int:
    args = parse_args(argv)
    start = history_start(args.years)
    print(machine_line())
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          "(other work on the machine inflates every wall time below)")
    databases = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    pg = None
    if "postgresql" in databases:
        sys.path.insert(0, str(ROOT / "tests"))
        from pg_server import TempPostgres, server_binaries
        if server_binaries() is None:
            print("PostgreSQL: no /usr/lib/postgresql/*/bin/initdb here; skipping PostgreSQL "
                  "(apt-get install postgresql)")
            databases.remove("postgresql")
        else:
            pg = TempPostgres().start()
    began = time.perf_counter()
    bars = generate_market(args.tickers, start, END, seed=args.seed).bars(adjusted=True) \
        .sort_values(["ticker", "trade_date"], ignore_index=True)
    print(f"raw-path rows generated in the bench process: {len(bars):,} ({time.perf_counter() - began:.1f} s)")
    all_figures = []
    try:
        with tempfile.TemporaryDirectory(prefix="candlethrob-bench-ingest-") as tmp, \
                ServerProcess(args.tickers, start.isoformat(), END.isoformat(), args.seed,
                              request_log=Path(tmp) / "requests.jsonl", market_size=args.market_size) as server:
            workdir = Path(tmp)
            os.chmod(workdir, 0o755)
            print(f"server process {server.proc.pid} at {server.url}", flush=True)
            import_walls = bare_import_seconds(args.import_runs, workdir)
            for name in databases:
                if name == "sqlite":
                    url = f"sqlite:///{workdir / 'warehouse.db'}"
                    writer = SqliteWriter(workdir)
                else:
                    url = pg.create_database("warehouse")
                    writer = PostgresWriter(pg)
                all_figures.append(bench_database(name, url, server, workdir, start, bars, args, writer,
                                                  min(import_walls)))
    finally:
        if pg is not None:
            pg.stop()
    report(all_figures, import_walls, args, start)
    print(f"\ntotal bench time {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
