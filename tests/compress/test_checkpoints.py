"""The Pareto front's compressed models kept in the workspace's checkpoints/ (within ``checkpoints_mb``): only the
front's, the least recently used dropped beyond the cap; the agent's ``evaluate`` reloads a kept model instead of
building it again."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from agentlab.compress.workspace import Workspace


def _fake(ws: Workspace, key: str, mb: float, mtime: float) -> None:
    path = ws.checkpoint_dir(key) / "model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * int(mb * 2**20))
    os.utime(path, (mtime, mtime))


def test_only_the_front_is_kept_within_the_cap(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    for key, mb, when in (("old", 1, 100), ("a", 1, 200), ("b", 1, 300), ("off", 1, 400), ("other_run", 1, 50)):
        _fake(ws, key, mb, when)
    dropped = ws.keep_checkpoints(front={"a", "b"}, others={"a", "b", "off"}, cap_mb=3.5)
    # off the front: dropped; then beyond 3.5 MB the least recently used not on the front (another run's) first
    assert dropped == ["off", "other_run"] and set(ws.checkpoints_mb()) == {"old", "a", "b"}
    dropped = ws.keep_checkpoints(front={"a", "b"}, others={"a", "b"}, cap_mb=1.5)
    assert dropped == ["old", "a"] and ws.checkpoint("b") == ws.checkpoint_dir("b") / "model.pt"
    assert ws.checkpoint("a") is None


pytest.importorskip("torch")
pytest.importorskip("codecarbon")
pytest.importorskip("optuna")
pytest.importorskip("langgraph")
pytest.importorskip("lm_eval")


@pytest.mark.timeout(900)  # a compress search on the tiny model and two lm-eval scorings
def test_evaluate_reloads_a_front_member_instead_of_rebuilding(in_tmp: Path, tiny_model: dict[str, Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from test_agent_evaluate import GOAL, PRUNE, SMALL, TASK

    import agentlab.compress.evaluate as E
    from agentlab.compress import run_compression
    from agentlab.testing.agents import ScriptAgent, scripted_llm

    def rebuild(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("evaluate built the model again")

    monkeypatch.setattr(E, "apply_steps", rebuild)
    model = ScriptAgent([("try_experiment", {"changes": {**PRUNE, "recover": "lora", "recover_steps": 20},
                                             "reason": "prune and recover"}),
                         ("evaluate", {"target": "1", "task": TASK, "limit": 10}),
                         ("evaluate", {"target": "1", "task": TASK, "limit": 20}),
                         ("try_experiment", {"changes": {"quantize": "int8_dynamic"}, "reason": "r"})])
    results = run_compression(str(tiny_model["hf"]), GOAL, planner="agent", llm=scripted_llm(model), max_iterations=2,
                              workspace=str(in_tmp / "ws"), out=in_tmp / "R", overrides=SMALL)
    first = results["experiments"][1]
    assert first["label"].endswith("+lora 20") and first["state"] == "done"
    ws = Workspace(in_tmp / "ws")
    main = [c for c in model.seen if str(c[0].get("content", "")).startswith("You plan")]  # not the reflection's
    answers = [m["content"] for m in main[-1] if m.get("role") == "tool"][-2:]
    assert len(answers) == 2
    for answer in answers:  # a recovery's model: without the checkpoint evaluate could not score it at all
        assert "Model: reloaded from the workspace's checkpoint" in answer, answer
    import json

    key = json.loads((in_tmp / "R" / "experiments.jsonl").read_text().splitlines()[1])["key"]
    # kept: the compressed models' own front of those meeting the constraints, the recommendation's (the base needs
    # no checkpoint, and a model it dominates may still be evaluated); int8_dynamic alone keeps nothing (it is rebuilt
    # in seconds)
    from agentlab.compress.objective import parse_objective
    from agentlab.compress.scoring import feasible_front

    done = [r for r in [*map(json.loads, (in_tmp / "R" / "experiments.jsonl").read_text().splitlines())][1:]
            if r.get("state") == "done"]
    on = [done[i]["index"] for i in feasible_front(parse_objective(GOAL), done)]
    assert set(ws.checkpoints_mb()) == ({key} if 1 in on else set())
