"""The ``conduitwatch`` console entry point.

It imports the command line inside a guard: a Ctrl-C while Python is still importing it (the first
fifth of a second) ends as one line, as it does once the command runs (click's "Aborted!"), not as a
traceback.
"""

from __future__ import annotations

import sys

EXIT_RUNTIME = 1


def main() -> None:
    try:
        from agent.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("Aborted!\n")
        sys.exit(EXIT_RUNTIME)
    cli_main()
