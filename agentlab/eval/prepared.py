"""What ``eval``'s ``prepare`` hands to ``run``: checked before a run folder exists (``run.py`` for local models,
``served.py`` for a served backend)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Prepared:
    """What ``prepare`` checked and loaded: the rows (name -> adapter, None for the base), the task manager, and
    the loaded model (local) or the served backend's arguments."""

    rows: dict[str, str | None]
    manager: Any
    adapters: dict[str, Path] = field(default_factory=dict)
    harness: Any = None  # HarnessModel, local models
    served: Any = None  # ServedModels, with base_url
    probe: dict[str, float] = field(default_factory=dict)
    chat_template: bool = False
