"""``candlethrob report``: one self-contained HTML page (coverage, runs, rejected bars, a ticker's prices)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from CandleThrob.commands.arguments import add_database, count_arg

if TYPE_CHECKING:
    from CandleThrob.cli import Context

NAME = "report"
HELP = ("write one HTML page that opens offline: coverage heatmap, run history, rejected bars by reason, "
        "and a ticker's raw against adjusted close")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, required=True, help="the HTML file to write, replaced whole")
    parser.add_argument("--ticker", help="add this ticker's close as traded, split-adjusted and total return, "
                        "with its splits and dividends")
    parser.add_argument("--runs", type=count_arg, default=60, help="recent runs in the run history (default 60)")
    add_database(parser)


def run(args: argparse.Namespace, context: "Context") -> int:
    from CandleThrob.read import files
    from CandleThrob.read.bars import BarsRequest
    from CandleThrob.read.html_report import build_report, write_report

    ticker = BarsRequest.of([args.ticker]).tickers[0] if args.ticker is not None else None
    files.check_file(args.output, "--output")
    with context.warehouse(args) as warehouse:
        page = build_report(warehouse, ticker=ticker, runs=args.runs)
    write_report(args.output, page)
    print(f"wrote {args.output} ({len(page.encode('utf-8')) / 1024:,.0f} KB)", file=context.stdout)
    return 0
