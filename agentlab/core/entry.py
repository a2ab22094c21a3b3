"""Which agentlab command line this process is running, if any: ``cli.main`` says so around each command it runs (the
console script's, ``python -m agentlab``'s and an in-process ``main([...])`` alike); outside it, work was started from
Python (``run_nas_optimization``, ...). A module of its own, importing nothing heavy, so that saying it costs
``--help`` nothing; run.json's ``argv`` reads it (``core.runs``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_line: ContextVar[tuple[str, ...] | None] = ContextVar("agentlab_command_line", default=None)


@contextlib.contextmanager
def command_line(argv: list[str]) -> Iterator[None]:
    """Within it (this thread or task, and those it starts with its context), the agentlab command ``argv`` runs."""
    token = _line.set(tuple(argv))
    try:
        yield
    finally:
        _line.reset(token)


def current() -> list[str] | None:
    """The agentlab command line running here, or None (started from Python)."""
    line = _line.get()
    return list(line) if line is not None else None
