"""The `agentlab` console script and `python -m agentlab` start here, before typer, rich and agentlab's core are
imported (about a second on a small machine). A Ctrl-C in that second raised KeyboardInterrupt inside some import and
printed its traceback; the command's own handling (one line, exit 130) only begins once ``agentlab.cli`` is loaded."""

from __future__ import annotations

import sys


def run() -> None:
    try:
        from agentlab.cli import run as run_command
    except KeyboardInterrupt:
        _interrupted()
    try:
        run_command()
    except KeyboardInterrupt:  # before the command's own handling began (setting up the handlers): nothing written
        _interrupted()


def _interrupted() -> None:
    try:
        sys.stderr.write("interrupted before the command started: nothing was written; run it again\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # the reader went away
        pass
    raise SystemExit(130)
