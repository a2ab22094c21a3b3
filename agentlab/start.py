"""The `agentlab` console script and `python -m agentlab` start here, before typer, rich and agentlab's core are
imported (about a second on a small machine). A Ctrl-C in that second raised KeyboardInterrupt inside some import and
printed its traceback; the command's own handling (one line, exit 130) only begins once ``agentlab.cli`` is loaded."""

from __future__ import annotations

import sys


def run() -> None:
    try:
        from agentlab.cli import run as run_command
    except KeyboardInterrupt:
        _interrupted("interrupted before the command started: nothing was written; run it again")
    try:
        run_command()
    except KeyboardInterrupt:  # outside the command's own handling (setting it up, printing its last line): what
        _interrupted("interrupted")  # was written, and how to go on, is whatever the command has said


def _interrupted(said: str) -> None:
    try:
        sys.stderr.write(said + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # the reader went away
        pass
    raise SystemExit(130)
