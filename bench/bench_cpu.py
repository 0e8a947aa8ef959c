"""CPU of CandleThrob's ingest on full-market grouped answers, next to the raw path on the same answers.

    python bench/bench_cpu.py [--years 2] [--db sqlite|postgresql|both] [--market-size 11000]
                              [--repeat 1] [--stages] [--phases] [--cprofile] [--top 25]

The local server runs as its own process with generated data (``--tickers``
S&P 500 companies + 20 ETFs, ``--years`` years through 2026-06-26) and grouped
days that list ``--market-size`` symbols, as Polygon's list the whole market. Per
database, in one run of this script:

* **ingest**: the CLI as a child process on an empty database, no rate limit
  (``python -m CandleThrob.ingestion.ingest_data --end ... --no-progress --report r.json``);
  its user + sys CPU and peak RSS come from ``wait4`` of exactly that child;
* **raw**: the cold run's own data answers, fetched once more and saved to
  files, then one child process (``bench/_raw.py``, standard library and the
  driver only) that reads each body, ``json.loads`` it, keeps the universe's
  tickers, builds the driver's tuples and upserts them in one transaction by
  the raw path of ``bench_ingest.py`` (SQLite ``executemany``; psycopg binary
  ``COPY`` then ``INSERT ... SELECT ... ON CONFLICT``); CPU measured the same way;
* **ratio** ingest CPU / raw CPU (goal <= 2), and the CPU of a no-op ingest run
  (start-up, universe, coverage: the fixed part of the ingest's CPU).

With ``--repeat N`` both run N times (fresh databases) and the least CPU of
each is used: other work on a shared machine only ever adds CPU time.
``--stages`` adds the CPU of each step of the per-answer path (parse -> bars
frame -> filter -> validate -> bulk write) run in this process over the saved
answers; ``--cprofile`` the top functions, by own and by cumulative time, of an
in-process cold run (one fetch worker; the fetch thread profiled too, each
thread's CPU by ``time.thread_time``). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import os
import pstats
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

# _common first: it puts the repository on sys.path
from _common import API_KEY, PYTHON, ROOT, ServerProcess, clean_env, machine_line, markdown_table, run_child
from bench_ingest import END, data_requests, history_start, in_process_config, ingest_env, run_cli

import psutil
import urllib3
from sqlalchemy import create_engine

from CandleThrob.testing.datagen import ETF_TICKERS, sp500_companies
from CandleThrob.warehouse.schema import BAR_COLUMNS_DB, metadata

TARGET_RATIO = 2.0
BATCH = 25  # answers per batch, as the CLI's default BATCH_SIZE
_GROUPED = re.compile(r"/v2/aggs/grouped/locale/us/market/stocks/(\d{4}-\d{2}-\d{2})")
_RANGE = re.compile(r"/v2/aggs/ticker/([^/]+)/range/.*")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--years", type=int, default=2, help="history loaded by the cold run")
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--tickers", type=int, default=503, help="S&P-like tickers (+ 20 ETFs), at most 503")
    parser.add_argument("--market-size", type=int, default=11_000,
                        help="symbols in each grouped answer, the universe's plus generated others")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1,
                        help="cold ingest and raw runs per database (fresh databases; the least CPU of each is "
                             "used: other work on the machine only ever adds CPU)")
    parser.add_argument("--stages", action="store_true", help="CPU of each step of the per-answer path")
    parser.add_argument("--phases", action="store_true",
                        help="CPU of each pipeline phase in a CLI-like in-process run")
    parser.add_argument("--cprofile", action="store_true", help="top functions of a profiled in-process cold run")
    parser.add_argument("--top", type=int, default=25, help="functions listed by each profile order")
    return parser.parse_args(argv)


def cpu(child) -> float:
    return child.user_s + child.sys_s


# ---- the answers, saved once ------------------------------------------------------------

def save_bodies(server_url: str, requests: list[dict], folder: Path) -> list[list]:
    """Each data request's body in a file; [file, session date (grouped) or None, ticker (range)
    or None] per request."""
    folder.mkdir()
    pool = urllib3.PoolManager(headers={"Authorization": f"Bearer {API_KEY}"})
    bodies = []
    for i, entry in enumerate(requests):
        url = server_url + entry["path"] + (f"?{entry['query']}" if entry.get("query") else "")
        path = folder / f"{i:05d}.json"
        path.write_bytes(pool.request("GET", url).data)
        session, series = _GROUPED.fullmatch(entry["path"]), _RANGE.fullmatch(entry["path"])
        bodies.append([str(path), session.group(1) if session else None, series.group(1) if series else None])
    pool.clear()
    return bodies


# ---- the raw path, as its own process -------------------------------------------------------

def empty_database(name: str, workdir: Path, pg) -> str:
    """The URL of an empty database with no table: CandleThrob makes its own schema (Alembic)."""
    if name == "sqlite":
        return f"sqlite:///{workdir / f'ingest-{uuid.uuid4().hex[:8]}.db'}"
    return pg.create_database(f"ingest_{uuid.uuid4().hex[:8]}")


def fresh_database(name: str, workdir: Path, pg) -> tuple[str, object]:
    """(SQLAlchemy URL, the raw writer's target) of an empty database with the bars schema
    (``metadata.create_all``: what a raw loader needs, not a CandleThrob warehouse)."""
    if name == "sqlite":
        path = workdir / f"raw-{uuid.uuid4().hex[:8]}.db"
        url, target = f"sqlite:///{path}", str(path)
    else:
        database = f"raw_{uuid.uuid4().hex[:8]}"
        url, target = pg.create_database(database), {"host": pg.dir, "user": pg.user, "dbname": database}
    engine = create_engine(url)
    metadata.create_all(engine)
    engine.dispose()
    return url, target


def run_raw(name: str, target: object, tickers: list[str], bodies: list[list], workdir: Path):
    job = workdir / f"raw-{name}.json"
    job.write_text(json.dumps({"db": name, "target": target, "columns": list(BAR_COLUMNS_DB),
                               "tickers": tickers, "bodies": bodies}))
    child = run_child([PYTHON, str(ROOT / "bench" / "_raw.py"), str(job)], env=clean_env(), cwd=workdir)
    if child.returncode != 0:
        raise RuntimeError(f"raw loader exited {child.returncode}: {child.stderr[-3000:]}")
    return child, json.loads(child.stdout)


# ---- where the CPU goes: the per-answer path, step by step ----------------------------------

def stage_cpu(bodies: list[list], tickers: list[str], database_url: str) -> str:
    """CandleThrob's per-answer steps over the saved answers, as the executor chains them
    (batches of BATCH answers), each step's CPU (``process_time``) summed."""
    import pandas as pd

    from CandleThrob.bars import bars_from_polygon, concat_bars
    from CandleThrob.ingestion.writer import with_source
    from CandleThrob.quality.validator import DataQualityValidator
    from CandleThrob.warehouse.bulk import upsert_bars

    engine = create_engine(database_url)
    validator = DataQualityValidator()
    wanted = set(tickers)
    spent: dict[str, float] = {}
    run_id, now = str(uuid.uuid4()), dt.datetime.now()

    def timed(step: str, function, *args, **kwargs):
        began = time.process_time()
        result = function(*args, **kwargs)
        spent[step] = spent.get(step, 0.0) + time.process_time() - began
        return result

    rows = 0
    for start in range(0, len(bodies), BATCH):
        frames, grouped = [], bodies[start][2] is None  # a batch is of one kind, as the executor's
        source = "grouped" if grouped else "range"
        for path, _, ticker in bodies[start:start + BATCH]:
            data = Path(path).read_bytes()
            results = timed("json.loads", json.loads, data).get("results") or []
            # as PolygonSource.fetch_grouped: the universe's results only are converted
            bars = timed("bars_from_polygon (universe's results)", bars_from_polygon, results, ticker=ticker,
                         tickers=wanted)
            frames.append(bars.assign(source=source))
        bars = timed("concat + source", lambda parts: with_source(concat_bars(parts)), frames)
        check = timed("validate (check)", validator.check, bars, end=pd.Timestamp(END), gaps=not grouped)

        def write(accepted) -> int:
            with engine.begin() as conn:
                return upsert_bars(conn, accepted, run_id, now)
        rows += timed("bulk upsert (one transaction per batch)", write, check.accepted)
    engine.dispose()
    total = sum(spent.values())
    table = [[step, f"{seconds:.2f}", f"{seconds / total:.0%}"] for step, seconds in spent.items()]
    table.append(["total", f"{total:.2f}", "100%"])
    return (f"per-answer path in this process, {len(bodies)} answers, {rows:,} rows written "
            f"(CPU by process_time):\n\n" + markdown_table(["step", "CPU s", "share"], table))


# (label, module, owner, attribute) as bench_ingest's PHASES, timed by each thread's CPU. Indented
# labels run inside the one above them; the unindented ones do not overlap.
CPU_PHASES = [
    ("HTTP request and body (HttpGuard, urllib3)", "source.http", "HttpGuard", "request"),
    ("json.loads", "source.polygon", "PolygonSource", "_decode"),
    ("bars_from_polygon", "source.polygon", None, "bars_from_polygon"),
    ("store (validate and write a batch)", "ingestion.executor", "BatchExecutor", "store"),
    ("  answers: cells of each grouped day (answers._grouped)", "ingestion.answers", None, "_grouped"),
    ("  quality check", "quality.validator", "DataQualityValidator", "check"),
    ("  record_check (audit bookkeeping)", "ingestion.state", "RunState", "record_check"),
    ("  commit (one transaction)", "ingestion.writer", "BatchWriter", "commit"),
    ("    add_coverage (merge per ticker)", "warehouse.storage", "Warehouse", "add_coverage"),
    ("    write_bars (bulk upsert)", "warehouse.storage", "Warehouse", "write_bars"),
    ("    write_audit", "warehouse.storage", "Warehouse", "write_audit"),
    ("    update_run", "warehouse.storage", "Warehouse", "update_run"),
    ("executor: cells wanted per grouped day (_wanted_on)", "ingestion.executor", None, "_wanted_on"),
    ("universe", "universe.stage", "UniverseStage", "resolve"),
    ("coverage + plan", "planning.stage", "CallPlanner", "plan"),
    ("finish (report)", "ingestion.pipeline", "CompleteDataIngestion", "_finish"),
]


def cpu_phases(server_url: str, database_url: str, start: dt.date) -> str:
    """An in-process cold run configured like the CLI (4 fetch workers, batch 25), the CPU of
    each phase summed over the threads that ran it."""
    from bench_ingest import PhaseTimer

    from CandleThrob.ingestion.pipeline import CompleteDataIngestion, RunOptions

    config, extra = in_process_config(server_url, database_url, start)
    with PhaseTimer(CPU_PHASES, time.thread_time) as timer:
        ingestion = CompleteDataIngestion(config, **extra)
        began = time.process_time()
        try:
            result = ingestion.run(RunOptions(end=END))
        finally:
            ingestion.warehouse.dispose()
        total = time.process_time() - began
    rows = [[label, f"{timer.seconds[label]:.2f}", f"{timer.seconds[label] / total:.0%}", timer.calls[label]]
            for label, *_ in CPU_PHASES if label in timer.seconds]
    outer = sum(timer.seconds.get(label, 0.0) for label, *_ in CPU_PHASES if not label.startswith(" "))
    rows.append(["the rest (engine, schema, lock, threads, progress, GC)", f"{total - outer:.2f}",
                 f"{(total - outer) / total:.0%}", ""])
    rows.append(["run total (process CPU)", f"{total:.2f}", "100%", ""])
    return (f"in-process cold run, {config.workers} fetch workers, batch {config.batch_size}"
            + f": {result['rows_written']:,} rows, CPU by phase (each thread's time.thread_time, summed)\n\n"
            + markdown_table(["phase", "CPU s", "share", "calls"], rows))


def profile_cold_run(server_url: str, database_url: str, start: dt.date, top: int) -> str:
    """Top functions of an in-process cold run with one fetch worker. The executor fetches
    the next batch in its own thread, so that thread is profiled too; every profiler
    times its thread's CPU (``time.thread_time``), so the two add up to the run's CPU."""
    from CandleThrob.ingestion.executor import BatchExecutor
    from CandleThrob.ingestion.pipeline import CompleteDataIngestion, RunOptions

    config, extra = in_process_config(server_url, database_url, start, parallel_processing=False)
    profiles = []
    fetch = BatchExecutor.fetch

    def profiled_fetch(self, *args, **kwargs):
        profile = cProfile.Profile(time.thread_time)
        profiles.append(profile)
        profile.enable()
        try:
            return fetch(self, *args, **kwargs)
        finally:
            profile.disable()

    BatchExecutor.fetch = profiled_fetch
    main = cProfile.Profile(time.thread_time)
    began, cpu_began = time.perf_counter(), time.process_time()
    try:
        ingestion = CompleteDataIngestion(config, **extra)
        main.enable()
        try:
            result = ingestion.run(RunOptions(end=END))
        finally:
            main.disable()
            ingestion.warehouse.dispose()
    finally:
        BatchExecutor.fetch = fetch
    wall, cpu_spent = time.perf_counter() - began, time.process_time() - cpu_began
    sections = []
    for order, title in (("tottime", "own time"), ("cumulative", "cumulative time")):
        text = io.StringIO()
        stats = pstats.Stats(main, stream=text)
        for profile in profiles:
            stats.add(profile)
        stats.strip_dirs().sort_stats(order).print_stats(top)
        body = text.getvalue()
        sections.append(f"top {top} by {title}:\n" + body[body.find("   ncalls"):].rstrip())
    return (f"cProfile, in-process cold run, 1 fetch worker: {wall:.1f} s wall, {cpu_spent:.1f} s CPU "
            f"(both inflated by the profiler), {result['rows_written']:,} rows\n\n" + "\n\n".join(sections))


# ---- one database -----------------------------------------------------------------------------

def bench_database(name: str, url: str, server: ServerProcess, workdir: Path, start: dt.date, tickers: list[str],
                   saved: dict, pg, args) -> dict:
    env = ingest_env(server.url, url, start)
    server_proc = psutil.Process(server.proc.pid)
    server_cpu = sum(server_proc.cpu_times()[:2])
    log_offset = server.request_log.stat().st_size
    cold, report = run_cli(env, workdir, f"{name}-cold")
    figures = {"name": name, "rows": report["rows_written"], "calls": report["api_calls"],
               "rss_report": report["peak_rss_mb"], "server_cpu": sum(server_proc.cpu_times()[:2]) - server_cpu,
               "ingest": [cold], "raw": []}
    requests = data_requests(server.request_log, log_offset)  # the cold run's own, before any other run's
    if "bodies" not in saved:
        saved["bodies"] = save_bodies(server.url, requests, workdir / "bodies")
        print(f"  saved the cold run's {len(requests)} data answers", flush=True)
    noop, _ = run_cli(env, workdir, f"{name}-noop")
    figures["noop_cpu"] = cpu(noop)
    for i in range(args.repeat):
        if i:
            again = ingest_env(server.url, empty_database(name, workdir, pg), start)
            figures["ingest"].append(run_cli(again, workdir, f"{name}-cold{i}")[0])
        raw, counts = run_raw(name, fresh_database(name, workdir, pg)[1], tickers, saved["bodies"], workdir)
        figures["raw"].append(raw)
        print(f"  {name}: ingest {cpu(figures['ingest'][-1]):.1f} s CPU ({figures['ingest'][-1].wall_s:.1f} s wall)"
              + f", raw {cpu(raw):.1f} s CPU ({raw.wall_s:.1f} s wall)", flush=True)
    figures.update(raw_rows=counts["rows"], results=counts["results"])
    if counts["rows"] != figures["rows"]:
        print(f"  warning: the raw path kept {counts['rows']:,} rows, the ingest wrote {figures['rows']:,}")
    return figures


def least(runs: list) -> object:
    return min(runs, key=cpu)


def spread(runs: list) -> str:
    return f"{cpu(least(runs)):.1f} s" + (f" (max {max(map(cpu, runs)):.1f})" if len(runs) > 1 else "")


def report(all_figures: list[dict], args, start: dt.date) -> None:
    def row(label, fn):
        return [label] + [fn(f) for f in all_figures]

    def ratio(f, runs: str) -> float:
        return cpu(least(f[runs])) / cpu(least(f["raw"]))

    def net_ratio(f) -> float:
        return (cpu(least(f["ingest"])) - f["noop_cpu"]) / cpu(least(f["raw"]))

    def split(run) -> str:
        return f"{run.user_s:.1f} + {run.sys_s:.1f}"

    least_of = f"least of {args.repeat}" if args.repeat > 1 else "one run"
    rows = [
        row("rows written (ingest) / kept (raw)", lambda f: f"{f['rows']:,} / {f['raw_rows']:,}"),
        row("data answers, results parsed", lambda f: f"{f['calls']}, {f['results']:,}"),
        row(f"ingest CPU, {least_of}", lambda f: spread(f["ingest"])),
        row(f"raw CPU, {least_of}", lambda f: spread(f["raw"])),
        row(f"ratio ingest / raw (goal <= {TARGET_RATIO:g})",
            lambda f: f"{ratio(f, 'ingest'):.2f} {'ok' if ratio(f, 'ingest') <= TARGET_RATIO else 'OVER'}"),
        row("user + sys: ingest | raw", lambda f: f"{split(least(f['ingest']))} | {split(least(f['raw']))}"),
        row("no-op ingest CPU (fixed: start-up, universe, coverage)", lambda f: f"{f['noop_cpu']:.1f} s"),
        row("ratio (ingest - no-op) / raw: the per-answer part", lambda f: f"{net_ratio(f):.2f}"),
        row("wall: ingest | raw", lambda f: f"{least(f['ingest']).wall_s:.1f} s | {least(f['raw']).wall_s:.1f} s"),
        row("server CPU during the first ingest", lambda f: f"{f['server_cpu']:.1f} s"),
        row("peak RSS of the ingest: wait4 / report",
            lambda f: f"{max(r.max_rss_mb for r in f['ingest']):.0f} / {f['rss_report']:.0f} MB"),
    ]
    print(f"\n{args.tickers} tickers + 20 ETFs x {args.years} years ({start}..{END}), grouped answers of "
          f"{args.market_size:,} symbols, no rate limit:\n")
    print(markdown_table(["figure"] + [f["name"] for f in all_figures], rows))


def main(argv=None) -> int:
    args = parse_args(argv)
    start = history_start(args.years)
    tickers = [c.symbol for c in sp500_companies()[:args.tickers]] + list(ETF_TICKERS)
    print(machine_line())
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    databases = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    pg = None
    if "postgresql" in databases:
        sys.path.insert(0, str(ROOT / "tests"))
        from pg_server import TempPostgres, server_binaries
        if server_binaries() is None:
            print("PostgreSQL: no /usr/lib/postgresql/*/bin/initdb here; measuring SQLite only")
            databases.remove("postgresql")
        else:
            pg = TempPostgres().start()
    began = time.perf_counter()
    all_figures, sections, saved = [], [], {}
    try:
        with tempfile.TemporaryDirectory(prefix="candlethrob-bench-cpu-") as tmp, \
                ServerProcess(args.tickers, start.isoformat(), END.isoformat(), args.seed,
                              request_log=Path(tmp) / "requests.jsonl", market_size=args.market_size) as server:
            workdir = Path(tmp)
            os.chmod(workdir, 0o755)
            print(f"server process {server.proc.pid} at {server.url}", flush=True)
            for name in databases:
                url = f"sqlite:///{workdir / 'warehouse.db'}" if name == "sqlite" else pg.create_database("warehouse")
                all_figures.append(bench_database(name, url, server, workdir, start, tickers, saved, pg, args))
            for name in databases if args.stages else ():
                print(f"  {name}: the per-answer path, step by step ...", flush=True)
                url, _ = fresh_database(name, workdir, pg)
                sections.append((f"steps: {name}", stage_cpu(saved["bodies"], tickers, url)))
            for name in databases if args.phases else ():
                print(f"  {name}: CPU by phase of an in-process run ...", flush=True)
                sections.append((f"phases: {name}", cpu_phases(server.url, empty_database(name, workdir, pg), start)))
            if args.cprofile:
                print("  cProfile of an in-process cold run (SQLite) ...", flush=True)
                url = empty_database("sqlite", workdir, pg)
                sections.append(("cProfile: sqlite", profile_cold_run(server.url, url, start, args.top)))
    finally:
        if pg is not None:
            pg.stop()
    report(all_figures, args, start)
    for title, text in sections:
        print(f"\n## {title}\n\n{text}")
    print(f"\ntotal bench time {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
