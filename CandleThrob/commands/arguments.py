"""Arguments several subcommands share, with the same spelling and the same messages."""

from __future__ import annotations

import argparse
import datetime as dt

from CandleThrob.read import ADJUSTMENTS


def date_arg(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; expected YYYY-MM-DD") from None


def count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count; expected a whole number from 0")
    return value


def add_database(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="SQLAlchemy URL of the warehouse (overrides DATABASE_URL and .env)")


def add_adjust(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adjust", choices=ADJUSTMENTS, default="split",
                        help="split: split-adjusted, as ticker_data (default); total: splits and dividends "
                             "(total return); none: as traded")
