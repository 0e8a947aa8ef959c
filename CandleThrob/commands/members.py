"""``candlethrob members``: the index members on a date, as the point-in-time universe knows them."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from CandleThrob.commands.arguments import add_database, date_arg

if TYPE_CHECKING:
    from CandleThrob.cli import Context

NAME = "members"
HELP = "the S&P 500 members on a date: ticker (as of that date), cik, name, sector"
EPILOG = ("Reads the membership the ingest stored (its constituents page, the page's changes table and the "
          "tool's own sightings). On a database where nothing is stored yet it reads the constituents page "
          "(SP500_URL) itself. Exit codes: 0 ok; 2 bad usage; 3 the database or the page cannot be reached.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--as-of", type=date_arg, required=True, help="the date, YYYY-MM-DD")
    parser.add_argument("--format", choices=("csv", "json"), default="csv", help="csv (default) or json")
    add_database(parser)


def run(args: argparse.Namespace, context: "Context") -> int:
    from CandleThrob.read.connect import load_config
    from CandleThrob.universe.read import members

    frame = members(args.as_of, config=load_config(args.database_url, context.environ))
    if args.format == "json":
        records = [{k: (None if v != v else v) for k, v in row.items()} for row in frame.to_dict("records")]
        print(json.dumps(records), file=context.stdout)
    else:
        frame.to_csv(context.stdout, index=False, lineterminator="\n")
    return 0
