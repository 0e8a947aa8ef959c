"""``candlethrob bars``: print or write exactly what ``read_bars`` returns."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from CandleThrob.commands.arguments import add_adjust, add_database, date_arg
from CandleThrob.read import BAR_FORMATS, BINARY_FORMATS

if TYPE_CHECKING:
    from CandleThrob.cli import Context

NAME = "bars"
HELP = "print or write stored daily bars of some tickers, as read_bars returns them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tickers", nargs="+", help="tickers, separated by commas or spaces: AAPL,MSFT or BRK.B")
    parser.add_argument("--start", type=date_arg, help="first session, YYYY-MM-DD (default: the first stored)")
    parser.add_argument("--end", type=date_arg, help="last session, YYYY-MM-DD (default: the last stored)")
    add_adjust(parser)
    parser.add_argument("--continuous", action="store_true",
                        help="each company across its renames (FB then META), under its latest symbol, with a "
                             "traded_as column")
    parser.add_argument("--format", choices=BAR_FORMATS, default="csv",
                        help="csv (default), json (an array of objects) or parquet (needs --output)")
    parser.add_argument("--output", type=Path, help="write to this file, replaced whole (default: standard output)")
    add_database(parser)


def run(args: argparse.Namespace, context: "Context") -> int:
    from CandleThrob.errors import ReadRequestError
    from CandleThrob.read import files, formats
    from CandleThrob.read.bars import BarsRequest, bars_frame

    request = BarsRequest.of(",".join(args.tickers), args.start, args.end, args.adjust, args.continuous)
    if args.output is not None:
        files.check_file(args.output, "--output")
    elif args.format in BINARY_FORMATS:
        raise ReadRequestError(f"--format {args.format} is binary; give --output FILE (csv and json can go to "
                               "standard output)")
    with context.warehouse(args) as warehouse:
        frame = bars_frame(warehouse, request)
    if args.output is None:
        formats.write_text(frame, args.format, context.stdout)
    else:
        with files.replaced(args.output) as path:
            formats.write_file(frame, args.format, path)
    missing = sorted(set(request.tickers) - set(frame["ticker"]))
    if missing:
        print(f"candlethrob bars: no bars stored for {', '.join(missing)} in that window", file=sys.stderr)
    return 0
