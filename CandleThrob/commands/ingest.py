"""``candlethrob ingest``: today's ingest, unchanged (``python -m CandleThrob.ingestion.ingest_data``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from CandleThrob.cli import Context

NAME = "ingest"
HELP = ("bring the warehouse up to the last completed NYSE session with the fewest API calls "
        "(candlethrob ingest --help for its options)")
# The ingest parses its own options, so that both entry points stay one command.
PASS_THROUGH = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """None here: everything after ``ingest`` goes to the ingest's own parser."""


def run(args: argparse.Namespace, context: "Context") -> int:
    from CandleThrob.ingestion import ingest_data

    ingest_args = ingest_data.build_parser(prog="candlethrob ingest").parse_args(args.extra)
    return ingest_data.run_ingest(ingest_args, context.environ)
