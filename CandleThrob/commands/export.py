"""``candlethrob export``: the warehouse as a Hive-partitioned Parquet dataset, incrementally."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from CandleThrob.commands.arguments import add_adjust, add_database

if TYPE_CHECKING:
    from CandleThrob.cli import Context

NAME = "export"
HELP = "write every stored bar as a Parquet dataset partitioned by year; later exports rewrite changed years only"
EPILOG = ("Exit codes: 0 ok; 2 bad usage or configuration, or no warehouse at that URL; 3 the database cannot "
          "be reached; 4 another export is writing to that directory.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("parquet",), default="parquet", help="parquet (the only one)")
    parser.add_argument("--output", type=Path, required=True,
                        help="the dataset's directory (created if missing): DIR/year=YYYY/bars.parquet")
    add_adjust(parser)
    add_database(parser)


def run(args: argparse.Namespace, context: "Context") -> int:
    from CandleThrob.read import files
    from CandleThrob.read.export import export_parquet

    directory = files.check_directory(args.output, "--output")
    with context.warehouse(args) as warehouse:
        result = export_parquet(warehouse, directory, args.adjust, context.clock)
    print(result.summary(), file=context.stdout)
    return 0
