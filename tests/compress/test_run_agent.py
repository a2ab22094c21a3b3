"""The agent planner of `agentlab compress` with scripted agent models: an agent that calls ``suggest`` and runs
candidate 0 is the NSGA-II search experiment for experiment; an agent's own experiment runs as it gave it; the tools
answer from the measurements; results.json and report.md say what the agent did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("codecarbon")
pytest.importorskip("optuna")
pytest.importorskip("langgraph")

from agentlab.compress import run_compression  # noqa: E402
from agentlab.core.runs import read_events  # noqa: E402
from agentlab.testing.agents import ScriptAgent, SuggestAgent, scripted_llm  # noqa: E402

SMALL = ["measure.context=32", "measure.stride=16", "measure.max_eval_tokens=160", "measure.prompt_tokens=8",
         "measure.new_tokens=4", "measure.repeats=1", "task_questions=3"]
GOAL = "maximize speedup with <2% accuracy loss"


@pytest.mark.timeout(900)  # two compress searches on the tiny model: minutes on a busy 2-core machine
def test_agent_suggest_is_the_nsga2_search(in_tmp: Path, tiny_model: dict[str, Path]) -> None:
    common = {"max_iterations": 3, "workspace": str(in_tmp / "ws"), "overrides": [*SMALL, "agent.guard_patience=2"]}
    model = SuggestAgent(action="run_experiment")
    agent = run_compression(str(tiny_model["hf"]), GOAL, planner="agent", llm=scripted_llm(model), out=in_tmp / "A",
                            **common)
    nsga2 = run_compression(str(tiny_model["hf"]), GOAL, planner="nsga2", out=in_tmp / "N", **common)
    assert [r["label"] for r in agent["experiments"]] == [r["label"] for r in nsga2["experiments"]]
    block = agent["agent"]
    assert block["invalid_tool_calls"] == 0 and block["trials_by_agent"] + block["trials_by_guard"] == 3
    assert block["tool_calls"] == 2 * block["trials_by_agent"]
    # then the reflection asks the same model for its note, and the router asks again (its call is not the answer
    # tool): a SuggestAgent writes none; the router is still open (it was closed before the reflection once)
    assert model.steps == block["tool_calls"] + 2 and agent["reflection"]["note"] == ""
    assert agent["reflection"]["problem"].startswith("no answer: invalid_tool_call")
    assert {r["origin"] for r in agent["experiments"][1:]} <= {"agent", "guard"}
    assert "## The agent" in (in_tmp / "A" / "report.md").read_text()
    assert nsga2.get("agent") is None


def test_the_agents_own_experiment_runs_and_the_tools_answer(in_tmp: Path, tiny_model: dict[str, Path]) -> None:
    model = ScriptAgent([("measure_base", {}), ("pareto_front", {}), ("workspace", {}),
                         ("try_experiment", {"changes": {"prune": "nothing"}, "reason": "bad value"}),
                         ("try_experiment", {"changes": {"quantize": "int8_dynamic"}, "reason": "int8 is cheap"}),
                         ("suggest", {}), ("run_experiment", {"candidate": 1, "reason": "r"})])
    results = run_compression(str(tiny_model["hf"]), GOAL, planner="agent", llm=scripted_llm(model), max_iterations=2,
                              workspace=str(in_tmp / "ws"), out=in_tmp / "R", overrides=SMALL)
    first = results["experiments"][1]
    assert first["label"] == "int8_dynamic" and first["note"].endswith("int8 is cheap")
    tool_results = [m["content"] for m in model.seen[4] if m.get("role") == "tool"]
    assert tool_results[0].startswith("base model: perplexity")
    assert tool_results[1] == "no feasible experiment yet"
    # the schema offers the space's values alone: the router shows the model its error, and the next call answers
    assert "changes.prune: 'nothing' is not one of ['none', 'magnitude', 'wanda', 'structured']" in tool_results[3]
    assert "techniques" in model.seen[0][1]["content"].lower()  # the knowledge base in the brief
    assert results["agent"]["rejected_calls"] == 0  # the router refused the bad value, in events.jsonl:
    assert "'nothing'" in next(read_events(in_tmp / "R", "invalid_tool_call"))["error"]


@pytest.mark.timeout(900)  # two experiments on the tiny model, one with a LoRA recovery
def test_the_lora_sub_agent_uses_its_own_tools_through_task(in_tmp: Path, tiny_model: dict[str, Path]) -> None:
    prune = {"prune": "magnitude", "sparsity": 0.5, "pattern": "unstructured"}
    model = ScriptAgent([("try_experiment", {"changes": prune, "reason": "see the damage"}),
                         ("task", {"subagent": "lora", "changes": prune}),
                         ("estimate", {"steps": 50}),  # the sub-agent's own tools, in its own graph
                         ("compare", {"steps_a": 0, "steps_b": 50}),
                         ("configure", {"steps": 7}),  # refused: not a step count the space offers
                         ("configure", {"steps": 50}),
                         ("try_experiment", {"changes": {**prune, "recover": "lora", "recover_steps": 50},
                                             "reason": "the sub-agent's advice"})])
    results = run_compression(str(tiny_model["hf"]), GOAL, planner="agent", llm=scripted_llm(model), max_iterations=2,
                              workspace=str(in_tmp / "ws"), out=in_tmp / "R", overrides=SMALL)
    labels = [r["label"] for r in results["experiments"][1:]]
    assert labels[0].startswith("magnitude") and labels[1].endswith("+lora 50")
    sub = model.seen[2]  # the sub-agent's own conversation: its prompt, then the prune it was handed
    assert sub[0]["role"] == "system" and sub[0]["content"].startswith("You are the lora sub-agent")
    assert '"prune": "magnitude"' in sub[1]["content"] and len(sub) == 2
    assert model.offered[2] == ["estimate", "compare", "configure"]
    answers = [m["content"] for m in model.seen[5] if m.get("role") == "tool"]
    assert "magnitude prune + lora 50 steps: not measured on this model yet" in answers[0]
    assert "magnitude prune without recovery: 1 run(s), accuracy" in answers[0]
    assert "no difference measured yet" in answers[1]
    assert "(configure): steps: 7 is not one of [20, 50]" in answers[2]  # the router's check of the schema
    advice = [m["content"] for m in model.seen[6] if m.get("role") == "tool"][-1]
    assert advice.startswith("lora sub-agent: magnitude 50% unstructured > +lora 50. To run it: try_experiment")
    events = [json.loads(x) for x in (in_tmp / "R" / "events.jsonl").read_text().splitlines()]
    sub_event = next(e for e in events if e["kind"] == "agent_subagent" and e["name"] == "lora")
    # the refused configure never reached the sub-agent: the router asked again
    assert sub_event["calls"] == ["estimate", "compare", "configure"] and sub_event["answer"]


@pytest.mark.timeout(900)  # a killed compress search and its resume
def test_agent_compress_killed_resumes_from_its_checkpoint(in_tmp: Path, tiny_model: dict[str, Path],
                                                           sigkill_when: Any) -> None:
    import json

    import yaml

    from agentlab.cli import main
    from agentlab.testing.server import spawn_server_process

    calls = [{"name": "suggest", "arguments": {}},
             {"name": "run_experiment", "arguments": {"candidate": 1, "reason": "x"}}]
    upstream, base_url = spawn_server_process({"scripts": {"m": [{"tool_calls": [c]} for c in calls * 30]}})
    llm = in_tmp / "llm.yaml"
    llm.write_text(yaml.safe_dump({"providers": {"loop": {"kind": "openai", "base_url": base_url}},
                                   "models": {"m": {"provider": "loop", "model": "m"}},
                                   "routes": {"planner": {"primary": ["m"]}}, "retries": 0, "timeout_s": 10}))
    run = in_tmp / "RUN"
    sets = [x for s in SMALL for x in ("--set", s)]
    cmd = ["compress", "--model", str(tiny_model["hf"]), "--objective", GOAL, "--max-iterations", "3",
           "--planner", "agent", "--llm", str(llm), "--set", f"workspace={in_tmp / 'ws'}", *sets, "--out", str(run)]

    def lines() -> list[dict[str, Any]]:
        path = run / "experiments.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []

    try:
        sigkill_when(cmd, lambda: len(lines()) >= 2)  # the base and the agent's first experiment
        before = lines()
        assert (run / "agent.sqlite").is_file() and 2 <= len(before) < 4
        assert main(["compress", "--resume", str(run), "--llm", str(llm)]) == 0
    finally:
        upstream.kill()
        upstream.wait()
    after = lines()
    assert len(after) == 4 and after[:len(before)] == before
    keys = [json.dumps(r["experiment"], sort_keys=True) for r in after]
    assert len(set(keys)) == 4, "an experiment ran twice"
    block = json.loads((run / "results.json").read_text())["agent"]
    assert block["tool_calls"] >= 4 and block["trials_by_agent"] + block["trials_by_guard"] == 3


def test_an_unknown_setting_is_named_not_a_crash() -> None:
    from agentlab.compress.agent import ExperimentView
    from agentlab.compress.space import Space

    config, error = ExperimentView(domain(Space.build(n_layers=4, cuda=False))).config({"prune": "magnitude",
                                                                                        "speed": "max"})
    assert config is None and error.startswith("speed: not a setting (settings: prune, sparsity")


def domain(space: Any) -> Any:
    """A search of ``space`` with nothing run yet."""
    from agentlab.compress.config import CompressConfig
    from agentlab.compress.planners import ExperimentDomain

    return ExperimentDomain(CompressConfig().goal(), space, 0, 1, [], [])


def test_the_knowledge_base_leads_are_whole_model_gguf_experiments_least_lossy_first(tmp_path: Path) -> None:
    from agentlab.compress.agent import ExperimentView, compress_kit, knowledge_leads
    from agentlab.compress.space import Space
    from agentlab.compress.workspace import Workspace

    space = Space.build(n_layers=4, cuda=False)
    leads = knowledge_leads(space.choices)
    assert [c["gguf_type"] for c, _ in leads] == ["Q8_0", "Q5_K_M", "Q4_K_M"]
    assert all(why.startswith("from the knowledge base: GGUF") for _, why in leads)
    view = ExperimentView(domain(space))
    for changes, _ in leads:  # each lead is an experiment of the space: nothing pruned, the whole model quantized
        params, error = view.config(changes)
        assert error == "" and params is not None and params["prune"] == "none" and params["quantize"] == "gguf"
    assert knowledge_leads({**space.choices, "quantize": ["none", "int8_dynamic"]}) == []  # no GGUF offered
    kit = compress_kit("a goal", dict, Workspace(tmp_path / "ws"), "0" * 32, space=space)
    assert kit.leads() == leads
    assert compress_kit("a goal", dict, Workspace(tmp_path / "ws"), "0" * 32).leads() == []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_builtin_model_is_asked_for_its_note(in_tmp: Path, tiny_model: dict[str, Path]) -> None:
    """The reflection asks the planner model once the search is over: in 0.1.0 it asked a router the search had
    closed, so no real model ever wrote a note (smollm2-135m through llama.cpp, in process)."""
    pytest.importorskip("llama_cpp")
    llm = Path(__file__).resolve().parents[2] / "configs" / "llm.local.yaml"
    results = run_compression(str(tiny_model["hf"]), GOAL, planner="agent", llm=llm, max_iterations=2,
                              workspace=str(in_tmp / "ws"), out=in_tmp / "R", overrides=SMALL)
    reflection = [e for e in read_events(in_tmp / "R", "agent_subagent") if e["name"] == "reflection"]
    # whatever the model wrote (a 135M model's note is rarely worth keeping), the router was there to ask
    assert len(reflection) == 1 and "the router is closed" not in reflection[0]["problem"], reflection
    assert reflection[0]["problem"] == results["reflection"]["problem"][:200]  # results.json says the same
