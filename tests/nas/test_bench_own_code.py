"""benchmarks/own_code.py reads a search's trials from events.jsonl (the last event per trial number) and counts only
complete trials in "best after n"; its settings keep the example's search and seed the script's own params."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture
def bench(load_script: Callable[[str], ModuleType]) -> ModuleType:
    return load_script("benchmarks/own_code.py")


def test_best_after_counts_complete_trials_only_and_the_last_event_per_trial(tmp_path: Path,
                                                                            bench: ModuleType) -> None:
    events = [{"kind": "trial", "number": 0, "state": "complete", "value": 1.0},
              {"kind": "trial", "number": 1, "state": "pruned", "value": 0.2},  # a partial curve, not a result
              {"kind": "epoch", "trial": 2},
              {"kind": "trial", "number": 2, "state": "interrupted", "value": None},
              {"kind": "trial", "number": 2, "state": "complete", "value": 0.9},  # re-run after an interruption
              {"kind": "trial", "number": 3, "state": "failed", "value": None},
              {"kind": "trial", "number": 4, "state": "complete", "value": 0.5}]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    records = bench.trials(tmp_path)
    assert [r["number"] for r in records] == [0, 1, 2, 3, 4]
    assert [bench.best_after(records, n) for n in (1, 2, 3, 5)] == [1.0, 1.0, 0.9, 0.5]


def test_settings_seed_the_search_and_the_scripts_own_seed(bench: ModuleType) -> None:
    cfg = bench.settings(3, {"pruner": "none"})
    assert cfg["search"]["seed"] == 3 and cfg["objective"]["params"]["seed"] == 3
    assert cfg["search"]["pruner"] == "none" and Path(cfg["objective"]["cwd"]).is_dir()
    assert cfg["search"]["space"]  # the example's own space, unchanged
