"""``candlethrob status``: freshness, gaps, quarantines, corporate actions and the last runs;
``--check`` makes it an exit code a monitor can alert on."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from CandleThrob.commands.arguments import add_database, count_arg

if TYPE_CHECKING:
    from CandleThrob.cli import Context

NAME = "status"
HELP = "is the warehouse fresh? last stored vs last final NYSE session, gaps, quarantines, corporate actions, runs"
EPILOG = ("Exit codes: 0 ok (without --check, always 0 once the warehouse was read); 2 bad usage or no warehouse; "
          "3 the database cannot be reached. With --check, the first that applies of: 10 stale (the last stored "
          "session is before the last final NYSE session; a session is final from 20:00 New York time); "
          "11 tickers behind (active tickers last loaded more than --max-behind sessions before it); "
          "12 the last run failed (non-zero exit, or died); 13 gaps (pending cells above --max-pending or "
          "vendor holes above --max-holes).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="exit non-zero when something needs attention "
                        "(codes below)")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or json")
    parser.add_argument("--runs", type=count_arg, default=5, help="how many recent runs to list (default 5)")
    parser.add_argument("--max-behind", type=count_arg, default=0,
                        help="sessions a ticker may lag before --check reports it (default 0)")
    parser.add_argument("--max-pending", type=count_arg, default=0,
                        help="cells pending a retry that --check tolerates (default 0)")
    parser.add_argument("--max-holes", type=count_arg, default=0,
                        help="vendor holes that --check tolerates (default 0)")
    add_database(parser)


def run(args: argparse.Namespace, context: "Context") -> int:
    from CandleThrob.read import status as health_status
    from CandleThrob.read import status_text

    thresholds = health_status.Thresholds(args.max_behind, args.max_pending, args.max_holes)
    with context.warehouse(args) as warehouse:
        status = health_status.warehouse_status(warehouse, runs=args.runs)
    problems = health_status.check(status, thresholds)
    if args.format == "json":
        status["check"] = {"exit_code": health_status.exit_code(problems),
                           "problems": [p.__dict__ for p in problems]}
        print(json.dumps(status, indent=2, default=str), file=context.stdout)
    else:
        print(status_text.render(status, problems), file=context.stdout)
    return health_status.exit_code(problems) if args.check else 0
