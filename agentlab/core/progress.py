"""Progress reporting without a UI dependency: the library calls this protocol, the CLI draws rich bars.

Library code takes ``progress: Progress | None`` and uses ``progress or NullProgress()``.
"""

from __future__ import annotations

from typing import Protocol


class ProgressTask(Protocol):
    def advance(self, n: float = 1, description: str | None = None) -> None: ...

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: float | None = None) -> ProgressTask: ...


class _NullTask:
    def advance(self, n: float = 1, description: str | None = None) -> None:
        pass

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        pass


class NullProgress:
    """Progress that draws nothing (library use, tests, --json)."""

    def task(self, description: str, total: float | None = None) -> ProgressTask:
        return _NullTask()
