"""The subcommands of ``candlethrob``, one module each.

A subcommand module has ``NAME``, ``HELP`` (one line for ``candlethrob --help``),
``add_arguments(parser)`` and ``run(args, context) -> exit code``; it may set
``EPILOG`` (its own exit codes) and ``PASS_THROUGH = True`` (it parses its own
arguments). Adding one is a module and a line here.
"""

from CandleThrob.commands import bars, export, ingest, macro, members, report, status

COMMANDS = (ingest, bars, export, status, report, members, macro)
