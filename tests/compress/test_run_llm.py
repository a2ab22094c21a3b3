"""The LLM planner of `agentlab compress` against a scripted loopback OpenAI-compatible server: the plan (a validated
experiment) runs with its reasoning, the prompt carries the goal and the base model, and a repeated plan falls back
to NSGA-II for that iteration with the reason recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("codecarbon")
pytest.importorskip("optuna")

from agentlab.compress import run_compression  # noqa: E402
from agentlab.testing.server import Reply, ScriptedServer  # noqa: E402

PLANNER = "planner-m"
SMALL = ["measure.context=32", "measure.stride=16", "measure.max_eval_tokens=160", "measure.prompt_tokens=8",
         "measure.new_tokens=4", "measure.repeats=1", "task_questions=3"]


def test_llm_plan_runs_and_a_repeated_plan_falls_back_to_nsga2(in_tmp: Path, tiny_model: dict[str, Path],
                                                                 srv: ScriptedServer) -> None:
    plan = {"reasoning": "int8 weights keep accuracy", "experiment": {"quantize": {"method": "int8_weight_only"}}}
    # the same experiment again, with a setting int8 does not use: still "already tried"
    again = {"reasoning": "again", "experiment": {"quantize": {"method": "int8_weight_only", "gguf_type": "Q4_K_M"}}}
    srv.script(PLANNER, [Reply(text=json.dumps(plan)), Reply(text=json.dumps(again))])
    srv.default(PLANNER, Reply(text=json.dumps(plan)))
    llm = in_tmp / "llm.yaml"
    llm.write_text(yaml.safe_dump({"providers": {"loop": {"kind": "openai", "base_url": srv.base_url}},
                                   "models": {PLANNER: {"provider": "loop", "model": PLANNER}},
                                   "routes": {"planner": {"primary": [PLANNER]}}, "retries": 0, "timeout_s": 5}))
    results = run_compression(str(tiny_model["hf"]), "maximize speedup with <2% accuracy loss", planner="llm",
                              llm=str(llm), max_iterations=2, workspace=str(in_tmp / "ws"), out=in_tmp / "R",
                              overrides=SMALL)
    first, second = results["experiments"][1:]
    assert first["planner"] == "llm" and first["label"] == "int8_weight_only"
    assert first["note"] == "int8 weights keep accuracy"
    assert second["planner"] == "llm->nsga2" and "already tried" in second["note"]
    prompt = "\n".join(m["content"] for m in srv.requests[0]["messages"])
    assert "maximize speedup subject to accuracy >= 0.98 x base" in prompt and "Base model: perplexity" in prompt
