"""``candlethrob``: one console script with a subcommand per job, thin over the library.

    candlethrob ingest [options]      # the same as python -m CandleThrob.ingestion.ingest_data
    candlethrob bars AAPL,MSFT --start 2024-01-02 --adjust total --format csv
    candlethrob export --format parquet --output bars/
    candlethrob status --check
    candlethrob report --output report.html --ticker AAPL

Every subcommand reads the ingest's configuration (the environment over ``.env``
in the working directory; ``--database-url`` wins). A mistake in what was asked
is one line on stderr naming what was wrong and what is allowed, and exit 2;
never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass, field
from typing import Iterator, Mapping, NoReturn, Optional, Sequence, TextIO

from CandleThrob import __version__
from CandleThrob.clock import Clock
from CandleThrob.commands import COMMANDS
from CandleThrob.errors import CandleThrobError

EPILOG = ("Exit codes: 0 ok; 2 bad usage or configuration, or no warehouse at that URL (nothing written); "
          "3 the database cannot be reached. candlethrob ingest has its own (candlethrob ingest --help), "
          "and status --check adds 10-13 (candlethrob status --help).")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (what was wrong, where to look), then exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


@dataclass
class Context:
    """What a subcommand gets besides its arguments: the process's environment, clock and output."""

    environ: Mapping[str, str]
    clock: Clock = field(default_factory=Clock)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)

    @contextlib.contextmanager
    def warehouse(self, args: argparse.Namespace) -> Iterator:
        from CandleThrob.read.connect import load_config, open_warehouse

        warehouse = open_warehouse(load_config(args.database_url, self.environ), self.clock)
        try:
            yield warehouse
        finally:
            warehouse.dispose()


def build_parser() -> Parser:
    parser = Parser(prog="candlethrob", epilog=EPILOG,
                    description="A warehouse of daily OHLCV bars for the S&P 500 and 20 ETFs: load it, read it, "
                                "check it, look at it.")
    parser.add_argument("--version", action="version", version=f"CandleThrob {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for command in COMMANDS:
        pass_through = getattr(command, "PASS_THROUGH", False)
        sub = commands.add_parser(command.NAME, help=command.HELP, description=command.HELP,
                                  epilog=getattr(command, "EPILOG", EPILOG), add_help=not pass_through)
        command.add_arguments(sub)
        sub.set_defaults(module=command, parser=sub)
    return parser


def main(argv: Optional[Sequence[str]] = None, environ: Optional[Mapping[str, str]] = None,
         clock: Optional[Clock] = None, stdout: Optional[TextIO] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    command = args.module
    if extra and not getattr(command, "PASS_THROUGH", False):
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    context = Context(os.environ if environ is None else environ, clock or Clock(), stdout or sys.stdout)
    try:
        return command.run(args, context)
    except CandleThrobError as exc:
        print(f"candlethrob {command.NAME}: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # A reader that stopped early (| head) is not an error; keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
