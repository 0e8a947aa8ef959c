"""``candlethrob macro``: print stored macro series as ``read_macro`` (or ``read_macro_daily``) returns them."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

import pandas as pd

from CandleThrob.commands.arguments import add_database, date_arg

if TYPE_CHECKING:
    from CandleThrob.cli import Context

NAME = "macro"
HELP = "print stored macro series (FRED) as known on a date: one row per observation, or per day with --daily"
EPILOG = ("Values are those known on --as-of (default: the latest vintage); --daily carries each value forward "
          "from the day FRED published it, as a backtest on that day saw it. Exit codes: 0 ok; 2 bad usage "
          "(or no such warehouse); 3 the database cannot be reached.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("series", nargs="+", help="FRED series ids, separated by commas or spaces: CPIAUCSL,UNRATE")
    parser.add_argument("--start", type=date_arg, help="first observation (or day, with --daily), YYYY-MM-DD")
    parser.add_argument("--end", type=date_arg, help="last observation (or day, with --daily), YYYY-MM-DD")
    parser.add_argument("--as-of", type=date_arg, help="the values as known on this date (default: the latest)")
    parser.add_argument("--daily", action="store_true",
                        help="one row per series and calendar day from --start to --end (both required)")
    parser.add_argument("--format", choices=("csv", "json"), default="csv", help="csv (default) or json")
    add_database(parser)


def run(args: argparse.Namespace, context: "Context") -> int:
    from CandleThrob.macro.read import read_macro, read_macro_daily

    if args.daily and (args.start is None or args.end is None):
        print("candlethrob macro: --daily needs --start and --end (the days to fill)", file=sys.stderr)
        return 2
    series = [s.strip().upper() for part in args.series for s in part.split(",") if s.strip()]
    with context.warehouse(args) as warehouse:  # read-only, and it must exist already
        if args.daily:
            frame = read_macro_daily(series, args.start, args.end, as_of=args.as_of, database_url=warehouse.engine)
        else:
            frame = read_macro(series, args.start, args.end, as_of=args.as_of, database_url=warehouse.engine)
    for name in frame.columns:  # dates as dates: 2024-01-01, not 2024-01-01 00:00:00
        if pd.api.types.is_datetime64_any_dtype(frame[name]):
            frame[name] = frame[name].dt.strftime("%Y-%m-%d")
    if args.format == "json":
        records = [{k: (None if v is None or v != v else v) for k, v in row.items()}
                   for row in frame.to_dict("records")]
        print(json.dumps(records), file=context.stdout)
    else:
        frame.to_csv(context.stdout, index=False, lineterminator="\n")
    return 0
