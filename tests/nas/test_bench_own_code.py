"""benchmarks/own_code.py reads a search's trials from events.jsonl (the last event per trial number) and counts only
complete trials in "best after n"; its settings keep the example's search and seed the script's own params; the LLM
planners' line adds up their results.json blocks."""

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


def test_llm_line_adds_up_the_agent_and_chooser_blocks(tmp_path: Path, bench: ModuleType) -> None:
    agent = {"tool_calls": 5, "invalid_tool_calls": 1, "defaulted": 0, "trials_by_agent": 4, "trials_by_guard": 2,
             "model_seconds": 20.0}
    chooser = {"asked": 3, "differed": 1, "no_answer": 1}
    folders = []
    for i in range(2):
        folder = tmp_path / f"s{i}"
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps({"agent": agent, "llm_contribution": chooser}))
        folders.append(folder)
    assert bench.llm_line("agent", folders) == ("agent: 10 tool calls (2 invalid), 0 defaulted to candidate 0; 8 "
                                                "trials by the agent, 4 by the guard (TPE); 5.0 s of the model per "
                                                "agent trial")
    assert bench.llm_line("llm", folders) == ("llm: asked on 6 trials, its pick differed from TPE's candidate 0 on "
                                              "2; 2 without an answer")
    assert bench.llm_line("tpe", folders) is None
