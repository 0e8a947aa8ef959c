"""CandleThrob's entrypoint: bring the daily-bar warehouse up to the last completed NYSE session.

    python -m CandleThrob.ingestion.ingest_data [options]
    PYTHONPATH=/app python3 /app/CandleThrob/ingestion/ingest_data.py [options]

Exit codes: 0 success; 1 finished but something failed, was quarantined or was
refused, or a budget stopped the run (resumable); 2 bad configuration or usage
(nothing written); 3 fatal (authentication, database, no universe); 4 another
run holds the lock; 130/143 interrupted by SIGINT/SIGTERM (checkpoint kept).

This module also carries the seed's public API, so that existing code keeps
importing everything from here.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Mapping, Optional, Sequence

if __package__ in (None, ""):
    # Run by path (the Kestra task does this): make the package importable and
    # behave exactly like ``python -m CandleThrob.ingestion.ingest_data``. The
    # script's own folder leaves the path, so its modules cannot shadow others.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parents[1]))
    __package__ = "CandleThrob.ingestion"

from CandleThrob import __version__
from CandleThrob.config import AdvancedBatchConfig, BatchConfig, read_environment
from CandleThrob.errors import CandleThrobError, ConfigError, InvalidTickerError
from CandleThrob.ingestion.pipeline import CompleteDataIngestion, RunOptions
from CandleThrob.logs import configure_logging, get_ingestion_logger, scrub, set_run_context
from CandleThrob.planning.shards import parse_shard
from CandleThrob.quality.validator import DataQualityValidator
from CandleThrob.reporting.monitor import PerformanceMonitor
from CandleThrob.reporting.report import check_report_path, publish_to_kestra, summary, write_report
from CandleThrob.source.ratelimit import RateLimiter
from CandleThrob.source.retry import retry_on_failure
from CandleThrob.universe.constituents import get_sp500_tickers
from CandleThrob.universe.tickers import clean_ticker, get_etf_tickers, parse_ticker_list

AdvancedCompleteDataIngestion = CompleteDataIngestion

__all__ = [
    "AdvancedBatchConfig", "BatchConfig", "RateLimiter", "retry_on_failure", "PerformanceMonitor",
    "DataQualityValidator", "CompleteDataIngestion", "AdvancedCompleteDataIngestion",
    "clean_ticker", "get_sp500_tickers", "get_etf_tickers", "get_ingestion_logger", "main",
]

log = get_ingestion_logger("cli")
DEMO_DATABASE = Path("data") / "candlethrob-demo.db"
DEMO_TICKERS = 40
# Demo prices start here whatever today is, so reruns on later days extend the
# same series instead of generating a different history.
DEMO_HISTORY_FROM = "2020-01-02"
DEMO_FRED_KEY = "demo" * 8  # the demo FRED server's key, in FRED's shape (32 lower-case letters and digits)
EPILOG = ("Exit codes: 0 ok; 1 finished, but something failed, was quarantined or refused, or a budget "
          "stopped it (the next run resumes); 2 bad configuration or usage (nothing written); 3 fatal (key, "
          "database, universe); 4 another run holds the lock; 130/143 interrupted (checkpoint kept).")


def build_parser(prog: str = "candlethrob-ingest") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, epilog=EPILOG,
        description="Bring the daily OHLCV warehouse up to the last completed NYSE session "
                    "with the fewest Polygon API calls.")
    add_ingest_arguments(parser)
    parser.add_argument("--version", action="version", version=f"CandleThrob {__version__}")
    return parser


def add_ingest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--end", type=_date_arg, help="last session to load (default: the last completed "
                        "NYSE session, New York time); a weekend or holiday means the session before")
    parser.add_argument("--start", type=_date_arg, help="history start (default HISTORY_START, else two "
                        "years before --end); earlier than what is stored backfills the gap")
    parser.add_argument("--tickers", help="comma-separated tickers: restrict the universe (no constituents fetch)")
    parser.add_argument("--plan", action="store_true", help="print every API call the run would make and its "
                        "time at the configured rate; fetch nothing, write no rows")
    parser.add_argument("--full-refresh", action="store_true", help="refetch the whole history of the selected tickers")
    parser.add_argument("--macro-only", action="store_true", help="only bring the MACRO_SERIES up to date from FRED "
                        "(needs FRED_API_KEY, not a Polygon key)")
    parser.add_argument("--verify-adjustments", action="store_true", help="compare our split-adjusted history "
                        "with the vendor's (one range call per ticker) and report differences; nothing is "
                        "overwritten")
    parser.add_argument("--demo", action="store_true", help="run against the built-in local Polygon-compatible "
                        "server with generated data (no key needed)")
    parser.add_argument("--shard", help="process only shard K of N (K/N) of the universe")
    parser.add_argument("--report", type=Path, help="write the run report as JSON to this path")
    parser.add_argument("--log-format", choices=("text", "json"), default="text", help="log format on stderr")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (it is off anyway when "
                        "stderr is not a terminal)")
    parser.add_argument("--database-url", help="SQLAlchemy URL (overrides DATABASE_URL)")


def _date_arg(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; expected YYYY-MM-DD") from None


def parse_options(args: argparse.Namespace, run_id: Optional[str] = None) -> RunOptions:
    tickers = None
    if args.tickers is not None:  # --tickers "" is a mistake, not "the whole universe"
        try:
            tickers = parse_ticker_list(args.tickers)
        except InvalidTickerError as exc:
            raise ConfigError(f"--tickers: {exc}") from None
    if args.start and args.end and args.start > args.end:
        raise ConfigError(f"--start {args.start} is after --end {args.end}")
    if args.report is not None:
        check_report_path(args.report)
    if args.macro_only:
        _check_macro_only(args)
    return RunOptions(end=args.end, start=args.start, tickers=tickers, plan_only=args.plan,
                      full_refresh=args.full_refresh, verify_adjustments=args.verify_adjustments,
                      shard=parse_shard(args.shard) if args.shard else None,
                      progress=not args.no_progress, run_id=run_id, macro_only=args.macro_only)


def _check_macro_only(args: argparse.Namespace) -> None:
    """Options about bars say the caller meant a bars run: refuse rather than ignore them."""
    bars_options = {"--tickers": args.tickers is not None, "--start": args.start is not None,
                    "--full-refresh": args.full_refresh, "--verify-adjustments": args.verify_adjustments,
                    "--shard": args.shard is not None}
    given = [name for name, present in bars_options.items() if present]
    if given:
        raise ConfigError(f"--macro-only cannot be combined with {', '.join(given)}: those options are about bars")


def main(argv: Optional[Sequence[str]] = None, environ: Optional[Mapping[str, str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run_ingest(args, environ)


def run_ingest(args: argparse.Namespace, environ: Optional[Mapping[str, str]] = None) -> int:
    """The ingest command: a run id first (every log line carries it), then the run."""
    run_id = str(uuid.uuid4())
    set_run_context(run_id)
    configure_logging(args.log_format)
    servers: tuple = ()
    secrets: list[str] = []
    try:
        env = read_environment(Path.cwd() / ".env", os.environ if environ is None else environ)
        options = parse_options(args, run_id)
        config = AdvancedBatchConfig.from_env(env, **({"database_url": args.database_url} if args.database_url
                                                      else {}))
        secrets = config.secrets()
        set_run_context(run_id, secrets)
        if args.demo:
            servers, demo_settings = _start_demo(config)
            config = dataclasses.replace(config, **demo_settings)
        ingestion = CompleteDataIngestion(config)
        if not options.plan_only and not options.macro_only:
            ingestion.source  # noqa: B018 - a missing key is a usage error, before any write
        _install_signal_handlers(ingestion)
        result = ingestion.run(options)
    except CandleThrobError as exc:
        return _fail(str(exc), exc.exit_code, args.log_format, secrets)
    except KeyboardInterrupt:
        return _fail("interrupted before the run started; nothing was written", 130, args.log_format, secrets)
    finally:
        for server in servers:
            server.stop()
    if options.plan_only:
        print(result["plan_text"])
        return 0
    if args.report:
        write_report(args.report, result, secrets=secrets)
    print(scrub(summary(result), secrets))
    publish_to_kestra(result, env)
    return result["exit_code"]


def _fail(message: str, code: int, log_format: str, secrets: Sequence[str]) -> int:
    """A usage or fatal error: one line, no traceback (JSON when the logs are JSON)."""
    if log_format == "json":
        log.error("%s", message)
    else:
        print(f"candlethrob: {scrub(message, secrets)}", file=sys.stderr)
    return code


def _start_demo(config: AdvancedBatchConfig) -> tuple:
    """The local Polygon- and FRED-compatible servers with generated data, on free loopback ports."""
    from CandleThrob.planning.trading_calendar import TradingCalendar
    from CandleThrob.testing.datagen import generate_market
    from CandleThrob.testing.fred_server import DEMO_SERIES, FredServer, generate_demo
    from CandleThrob.testing.polygon_server import PolygonServer

    today = TradingCalendar().last_final_session(dt.datetime.now(dt.timezone.utc))
    market = generate_market(DEMO_TICKERS, DEMO_HISTORY_FROM, today, seed=7)
    server = PolygonServer(market, api_key="demo").start()
    fred = FredServer(generate_demo(DEMO_HISTORY_FROM, today, seed=7), api_key=DEMO_FRED_KEY).start()
    database = config.database_url or f"sqlite:///{(Path.cwd() / DEMO_DATABASE).as_posix()}"
    settings = {"polygon_api_key": "demo", "polygon_base_url": server.url,
                "sp500_url": f"{server.url}/wiki/List_of_S%26P_500_companies",
                "rate_limit_seconds": 0, "history_start": None, "min_sp500_symbols": DEMO_TICKERS,
                "fred_api_key": DEMO_FRED_KEY, "fred_base_url": fred.url, "macro_series": tuple(DEMO_SERIES),
                "database_url": database}
    log.info("demo: local Polygon-compatible server at %s with %d S&P-like tickers + 20 ETFs, FRED-compatible "
             "server at %s with %s; data goes to %s", server.url, DEMO_TICKERS, fred.url, ", ".join(DEMO_SERIES),
             database)
    return (server, fred), settings


def _install_signal_handlers(ingestion: CompleteDataIngestion) -> None:
    def handler(signum: int, _frame: object) -> None:
        log.warning("signal %d received: cutting the requests in flight, keeping what is stored, stopping", signum)
        ingestion.request_stop(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread (embedded use): the caller handles signals
            pass


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
