"""compress's ``evaluate`` tool and ``evaluation`` sub-agent: a scripted agent asks the sub-agent, then scores the
base and an experiment on an lm-eval task; the figures (interval, paired difference) are computed in code, cached in
the run folder (a repeated call and a resumed run read them back), bad arguments are errors the agent reads (the
router's, against the tool's schema, and the tool's own behind it), and the tool calls do not use the experiment
budget."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from agentlab.compress.agent import evaluate, items_needed
from agentlab.compress.evaluate import Z90, accuracy_interval, bootstrap, paired_difference, task_items
from agentlab.core.errors import AgentlabError
from agentlab.core.vote import wilson_interval


def test_wilson_interval_matches_the_formula() -> None:
    low, high = wilson_interval(7, 10, Z90)  # 90%: z = 1.645; the Wilson interval of 7/10 is about [0.442, 0.873]
    assert low == pytest.approx(0.4417, abs=1e-3) and high == pytest.approx(0.8731, abs=1e-3)
    for bound in (low, high):  # its defining property: each bound b is z standard errors (at b) from 7/10
        assert abs(0.7 - bound) == pytest.approx(1.6449 * math.sqrt(bound * (1 - bound) / 10), rel=1e-4)
    assert wilson_interval(0, 20, Z90)[0] == 0.0 and 0.0 < wilson_interval(0, 20, Z90)[1] < 0.15
    assert accuracy_interval([1.0, 0.0, 1.0, 1.0]) == wilson_interval(3, 4, Z90)  # 0/1 items: Wilson
    low, high = accuracy_interval([0.5, 0.25, 0.75, 0.5])  # fractional scores: a (seeded) bootstrap
    assert 0.25 <= low < 0.5 < high <= 0.75 and (low, high) == bootstrap([0.5, 0.25, 0.75, 0.5])


def test_paired_difference_uses_the_common_items_only() -> None:
    base = {"0": 1.0, "1": 1.0, "2": 0.0, "3": 1.0}
    target = {"0": 0.0, "1": 1.0, "2": 0.0, "9": 1.0}
    paired = paired_difference(target, base)
    assert paired is not None and paired["n"] == 3 and paired["diff"] == pytest.approx(-1 / 3)
    assert paired["worse"] == 1 and paired["better"] == 0 and paired["low"] <= paired["diff"] <= paired["high"]
    assert paired_difference({"5": 1.0}, base) is None


def test_items_needed_grow_as_the_difference_shrinks() -> None:
    assert items_needed(-0.3) < items_needed(-0.1) < items_needed(-0.05) == 200
    assert items_needed(None) == 200 and items_needed(-0.9) == 10
    assert task_items("agentlab_capitals_mc") == 33 and task_items("not_a_task") is None


pytest.importorskip("torch")
pytest.importorskip("codecarbon")
pytest.importorskip("optuna")
pytest.importorskip("langgraph")
pytest.importorskip("lm_eval")

SMALL = ["measure.context=32", "measure.stride=16", "measure.max_eval_tokens=160", "measure.prompt_tokens=8",
         "measure.new_tokens=4", "measure.repeats=1", "task_questions=3", "agent.max_steps=12",
         "agent.keep=40"]
GOAL = "maximize speedup with <2% accuracy loss"
TASK = "agentlab_arithmetic_mc"
PRUNE = {"prune": "magnitude", "sparsity": 0.5, "pattern": "unstructured"}


def _events(run: Path, kind: str) -> list[dict[str, Any]]:
    lines = (run / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("kind", e.get("event")) == kind]


@pytest.mark.timeout(900)  # two compress searches (a run and its resume) on the tiny model
def test_evaluation_then_evaluate_on_base_and_an_experiment(in_tmp: Path, tiny_model: dict[str, Path]) -> None:
    from agentlab.compress import run_compression
    from agentlab.testing.agents import ScriptAgent, scripted_llm

    score = {"task": TASK, "limit": 10}
    model = ScriptAgent([
        ("try_experiment", {"changes": PRUNE, "reason": "prune half"}),
        ("evaluation", {"question": "is experiment 1's accuracy drop real?", "target": "1"}),
        ("answer", {"task": TASK, "limit": 10, "reason": "a quick look"}),  # the sub-agent's own step
        ("evaluate", {"target": "base", **score}),
        ("evaluate", {"target": "7", **score}),  # no such experiment: the router asks again, and the next call answers
        ("evaluate", {"target": "1", **score}),
        ("evaluate", {"target": "1", **score}),  # the same again: the earlier answer, not run again (suggest next)
        ("suggest", {}),
        ("try_experiment", {"changes": {"quantize": "int8_dynamic"}, "reason": "int8 is cheap"})])
    run = in_tmp / "R"
    results = run_compression(str(tiny_model["hf"]), GOAL, planner="agent", llm=scripted_llm(model), max_iterations=2,
                              workspace=str(in_tmp / "ws"), out=run, overrides=SMALL)
    assert [r["label"] for r in results["experiments"][1:]] == ["magnitude 50% unstructured", "int8_dynamic"]

    # the sub-agent saw the figures computed in code and its advice names the exact calls
    sub = model.seen[2]
    assert sub[0]["content"].startswith("You are the evaluation sub-agent")
    assert "90% interval" in sub[1]["content"] and "items needed" in sub[1]["content"]
    assert "agentlab_capitals_mc (33)" in sub[1]["content"]
    main = [c for c in model.seen if str(c[0].get("content", "")).startswith("You plan")]  # not the reflection's
    tools = [m["content"] for m in main[-1] if m.get("role") == "tool"]
    advice, base, first, again, _ = tools[-5:]
    # the router's repair: the model is shown its error once (a repaired call is not kept in the agent's history)
    unknown = next(str(c[-1]["content"]) for c in main if "is not one of" in str(c[-1]["content"]))
    assert advice.startswith(f"evaluation sub-agent: {TASK}, 10 questions (a quick look). To settle it: evaluate "
                             f'{{"target": "1", "task": "{TASK}", "limit": 10}} then evaluate {{"target": "base"')
    assert base.startswith(f"base model on {TASK} (acc, 10 items): accuracy") and "Model: the base model" in base
    assert "against the base on the same 10 items" in first and "reloaded from the workspace's checkpoint" in first
    assert again.startswith("you made this same call already since the last run_experiment; its answer was: ")
    assert first[:300] in again
    # the candidates came with the last result: no suggest step first
    assert again.endswith("Decide now: call run_experiment with one of the suggested candidates.")
    assert "(evaluate): target: '7' is not one of ['base', '1']" in unknown

    # in events.jsonl and cached in the run folder (the repeated call scored nothing)
    evals = _events(run, "agent_evaluate")
    assert [(e["target"], e["cached"]) for e in evals] == [("base", False), ("1", False)]
    assert evals[1]["paired"]["n"] == 10
    assert 0.0 <= evals[1]["low"] <= evals[1]["accuracy"] <= evals[1]["high"] <= 1.0
    assert len(list((run / "agent_evals").glob("*.json"))) == 2 and not (run / "agent_evals" / "work").exists()
    assert [e["name"] for e in _events(run, "agent_subagent")] == ["evaluation", "reflection"]  # then the note

    # the budget: two experiments; every call of the agent counted, the sub-agent's answer is not the agent's
    block = results["agent"]
    # the main agent's steps; the model answered one more time, the router's repair of target '7'
    assert block["trials_by_agent"] == 2 and block["tool_calls"] == 7 and len(main) == 8
    assert block["rejected_calls"] == 0 and "target: '7'" in _events(run, "invalid_tool_call")[0]["error"]

    # a resumed run reads the evaluation back: nothing is scored again; a GGUF experiment is scored on the file it kept
    again_model = ScriptAgent([("evaluate", {"target": "1", **score}),
                               ("try_experiment", {"changes": {"quantize": "gguf", "gguf_type": "Q8_0"},
                                                   "reason": "r"}),
                               ("evaluate", {"target": "3", **score}),
                               ("try_experiment", {"changes": {"quantize": "torch_dynamic_int8"}, "reason": "r"})])
    resumed = run_compression(resume=run, llm=scripted_llm(again_model), overrides=["max_iterations=4"])
    assert [r["label"] for r in resumed["experiments"][3:]] == ["gguf Q8_0", "torch_dynamic_int8"]
    assert [(e["target"], e["cached"]) for e in _events(run, "agent_evaluate")][-2:] == [("1", True), ("3", False)]
    main = [c for c in again_model.seen if str(c[0].get("content", "")).startswith("You plan")]
    gguf = [m["content"] for m in main[-1] if m.get("role") == "tool"][-1]
    # the Pareto front's GGUF is kept in the workspace's checkpoints/: evaluate reloads it from there
    assert "Model: reloaded from the workspace's checkpoint (" in gguf
    assert "against the base on the same 10 items" in gguf


def test_evaluate_refuses_what_the_schema_would_in_words_the_agent_reads() -> None:
    """The tool's own checks, behind the router's (a model whose calls no schema checked would meet them)."""
    from types import SimpleNamespace

    domain = SimpleNamespace(records=[{"index": 0}, {"index": 1, "state": "done", "experiment": {"a": 1},
                                                     "label": "int8"}])
    evaluator = SimpleNamespace(tasks={TASK: None})
    for args, error in [({"target": "7", "task": TASK, "limit": 10},
                         "evaluate: target '7' is not the base or a finished experiment (one of base, 1)"),
                        ({"target": "1", "task": TASK, "limit": 500},
                         "evaluate: limit 500 must be a whole number of questions from 10 to 200"),
                        ({"target": "1", "task": "mmlu", "limit": 10}, "evaluate: task 'mmlu' is not offered")]:
        with pytest.raises(AgentlabError) as caught:
            evaluate(evaluator, domain, args)  # type: ignore[arg-type]
        assert caught.value.message.startswith(error)


def test_an_experiment_with_recovery_keeps_no_model(tmp_path: Path) -> None:
    from agentlab.compress.config import MeasureSettings
    from agentlab.compress.evaluate import Evaluator, Target
    from agentlab.compress.experiment import Inputs

    inputs = Inputs(model="unused", device="cpu", eval_text="a", calib_text="b", questions=[],
                    measure=MeasureSettings())
    exp = {"prune": {"method": "magnitude", "sparsity": 0.5}, "recover": {"method": "lora", "steps": 40, "lr": 2e-4}}
    with pytest.raises(AgentlabError, match=r"experiment 3 \(m\) keeps no model: .* \(lora, 40 steps\)"):
        Evaluator(inputs, tmp_path).evaluate(Target("3", "m", exp, {}), TASK, 10)
    assert not list(tmp_path.glob("*.json"))


def test_a_medium_models_evaluate_tools_stay_the_same_as_experiments_finish(tmp_path: Path) -> None:
    """Its prompt cache keeps the tools (rendered first by the chat template): the targets are checked in code, not
    listed in the schema, so a finished experiment does not change them; a small model still picks from the list."""
    from types import SimpleNamespace

    from agentlab.compress.agent import compress_kit
    from agentlab.compress.config import CompressConfig
    from agentlab.compress.planners import ExperimentDomain
    from agentlab.compress.space import Space
    from agentlab.compress.workspace import Workspace
    from agentlab.core.llm.config import PROFILES

    space = Space.build(n_layers=4, cuda=False)
    kit = compress_kit("a goal", dict, Workspace(tmp_path / "ws"), "0" * 32,
                       evaluator=SimpleNamespace(tasks={TASK: None}))  # type: ignore[arg-type]
    base = {"index": 0, "state": "done"}
    done = {"index": 1, "state": "done", "experiment": {"quantize": {"method": "int8_dynamic"}}, "label": "int8"}

    def specs(profile: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        domain = ExperimentDomain(CompressConfig().goal(), space, 0, len(records), records, [])
        tools = kit.tools(domain.context(), SimpleNamespace(profile=PROFILES[profile]))
        return {t.name: t.spec() for t in tools if t.name in ("evaluate", "evaluation")}

    assert specs("medium", [base]) == specs("medium", [base, done])
    target = specs("medium", [base])["evaluate"]["function"]["parameters"]["properties"]["target"]
    assert "enum" not in target and target["pattern"] == "^(base|[0-9]{1,4})$"
    small = specs("small", [base, done])["evaluate"]["function"]["parameters"]["properties"]["target"]
    assert small == {"type": "string", "enum": ["base", "1"]} and specs("small", [base]) != specs("small", [base, done])
