"""The compress agent's ``query_experiments`` and ``best_config``: over the run's records and the workspace, and
over an MLflow store `agentlab compress --mlflow` logged to (read back through mlflow's client), the same rows."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from test_reflect import RECORDS  # tests/compress is on sys.path (pytest's rootdir-less prepend import)

from agentlab.compress.objective import parse_objective
from agentlab.compress.queries import best_config, local_rows, mlflow_rows, query_experiments, technique_of
from agentlab.compress.workspace import Workspace

GOAL = parse_objective("maximize speedup, minimize perplexity")
CONTEXT = {"measure": "same"}


def _records() -> list[dict[str, Any]]:
    return copy.deepcopy(RECORDS)


def test_query_and_best_over_the_run_and_the_workspace(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    ws.put("a", {"model_hash": "h", "label": "int8_dynamic", "state": "done", "context": CONTEXT,
                 "experiment": {"quantize": {"method": "int8_dynamic"}},
                 "metrics": {"perplexity": 21.0, "accuracy": 0.4, "decode_tps": 25.0, "size_mb": 200.0}})
    ws.put("b", {"model_hash": "h", "label": "gguf Q8_0", "state": "done", "context": {"measure": "other"},
                 "experiment": {"quantize": {"method": "gguf", "gguf_type": "Q8_0"}}, "metrics": {"decode_tps": 9e9}})
    rows = local_rows(_records(), ws, "h", CONTEXT)
    assert [r["label"] for r in rows] == ["gguf Q4_K_M", "magnitude 50% 2:4 > +lora 50", "int8_dynamic"]
    assert rows[2]["speedup"] == pytest.approx(0.5) and rows[2]["source"] == "workspace"  # against this base
    text = query_experiments(rows, "any", "speedup", GOAL, 2)
    assert text.splitlines()[1].startswith("gguf Q4_K_M [this run #1]: speedup 3.19")
    assert "(meets the constraints)" in text.splitlines()[1] and len(text.splitlines()) == 3
    assert query_experiments(rows, "quantize int8", "perplexity", GOAL, 5).count("\n") == 1
    assert "no measured experiment with recover distill" in query_experiments(rows, "recover distill", "speedup",
                                                                                 GOAL, 5)
    best = best_config(rows, "perplexity", GOAL)  # the pruned one breaks a constraint: never the answer
    assert best.startswith("best perplexity (not breaking a constraint): int8_dynamic [workspace]")
    assert best.endswith('its settings: {"quantize": {"method": "int8_dynamic"}}')
    assert technique_of({"prune": {"method": "wanda"}}, "quantize none") and not technique_of(None, "prune wanda")


def test_the_mlflow_store_is_read_through_the_client(in_tmp: Path) -> None:
    pytest.importorskip("mlflow")
    from agentlab.compress.tracking import MLFLOW_EXPERIMENT, log_experiments
    from agentlab.core.runs import RunDir
    from agentlab.core.tracking import open_tracker

    uri = f"sqlite:///{in_tmp / 'mlflow.db'}"
    assert mlflow_rows(uri) == []  # nothing logged yet: no experiment in the store
    run_dir = RunDir.create("compress", {"a": 1}, out=in_tmp / "run")
    records = [{**r, "reused": False, "planner": "agent"} for r in _records()]
    with open_tracker(uri, MLFLOW_EXPERIMENT, run_dir) as tracker:
        log_experiments(tracker, records)
    rows = mlflow_rows(uri)
    assert sorted(r["label"] for r in rows) == ["gguf Q4_K_M", "magnitude 50% 2:4 > +lora 50"]
    gguf = next(r for r in rows if r["label"] == "gguf Q4_K_M")
    assert gguf["experiment"] == {"quantize": {"method": "gguf", "gguf_type": "Q4_K_M"}}
    assert gguf["speedup"] == pytest.approx(3.194) and gguf["feasible"] is True and gguf["source"].startswith("mlflow")
    assert best_config(rows, "speedup", GOAL).startswith("best speedup (not breaking a constraint): gguf Q4_K_M")
    assert "magnitude 50% 2:4 > +lora 50" in query_experiments(rows, "recover lora", "speedup", GOAL, 3)
