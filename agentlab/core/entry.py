"""Which agentlab command line this process is running, if any: ``cli.main`` says so around each command it runs (the
console script's, ``python -m agentlab``'s and an in-process ``main([...])`` alike); outside it, work was started from
Python (``run_nas_optimization``, ...). A module of its own, importing nothing heavy, so that saying it costs
``--help`` nothing; run.json's ``argv`` reads it (``core.runs``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_lines: list[list[str]] = []  # innermost last


@contextlib.contextmanager
def command_line(argv: list[str]) -> Iterator[None]:
    """Within it, this process runs the agentlab command ``argv``."""
    _lines.append(list(argv))
    try:
        yield
    finally:
        _lines.pop()


def current() -> list[str] | None:
    """The agentlab command line this process is running, or None (started from Python)."""
    return list(_lines[-1]) if _lines else None
