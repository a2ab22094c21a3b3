"""The LLM planner of `agentlab compress` against a scripted loopback OpenAI-compatible server: it chooses among
NSGA-II's proposals (the prompt carries the goal in words and the base model), its pick runs with its reasoning,
always choosing candidate 0 is the NSGA-II search, and results.json / report.md say what the LLM contributed."""

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
         "measure.new_tokens=4", "measure.repeats=1", "task_questions=3", "llm_share=1.0", "llm_adapt=false"]


def routing(in_tmp: Path, srv: ScriptedServer) -> str:
    llm = in_tmp / "llm.yaml"
    llm.write_text(yaml.safe_dump({"providers": {"loop": {"kind": "openai", "base_url": srv.base_url}},
                                   "models": {PLANNER: {"provider": "loop", "model": PLANNER}},
                                   "routes": {"planner": {"primary": [PLANNER]}}, "retries": 0, "timeout_s": 5}))
    return str(llm)


def test_llm_chooses_among_nsga2_proposals(in_tmp: Path, tiny_model: dict[str, Path], srv: ScriptedServer) -> None:
    srv.default(PLANNER, Reply(text=json.dumps({"choice": 1, "reasoning": "int8 weights keep accuracy"})))
    results = run_compression(str(tiny_model["hf"]), "maximize speedup with <2% accuracy loss", planner="llm",
                              llm=routing(in_tmp, srv), max_iterations=4, workspace=str(in_tmp / "ws"),
                              out=in_tmp / "R", overrides=SMALL)
    runs = results["experiments"][1:]
    assert [r["planner"] for r in runs] == ["llm"] * 4
    assert [r["origin"] for r in runs] == ["classical", "classical", "picked", "picked"]  # two warm-up experiments
    assert [r["choice"] for r in runs] == [0, 0, 1, 1] and runs[2]["note"] == "int8 weights keep accuracy"
    assert srv.count(PLANNER) == 2
    request = srv.requests[0]
    prompt = "\n".join(m["content"] for m in request["messages"])
    assert "Goal: maximize speedup subject to accuracy >= 0.98 x base. Trials left: 2." in prompt
    assert "Base model: perplexity" in prompt and "Candidate experiments:" in prompt
    assert request["response_format"]["json_schema"]["schema"]["properties"]["choice"]["enum"] == [0, 1, 2, 3]
    block = results["llm_contribution"]
    assert block["model"] == PLANNER and block["warmup_trials"] == 2 and block["trials"] == 2
    assert block["asked"] == 2 and block["differed"] == 2
    assert "hypervolume" in block["without_llm_picks"]
    report = (in_tmp / "R" / "report.md").read_text()
    assert "## LLM contribution" in report and "picked 1 of 4" in report
    picks = json.loads((in_tmp / "ws" / "llm_picks.json").read_text())["models"][PLANNER]
    assert list(picks) == [str((in_tmp / "R").resolve())]


def test_always_candidate_0_is_the_nsga2_search(in_tmp: Path, tiny_model: dict[str, Path],
                                                srv: ScriptedServer) -> None:
    srv.default(PLANNER, Reply(text=json.dumps({"choice": 0, "reasoning": "the sampler's"})))
    common = {"max_iterations": 4, "workspace": str(in_tmp / "ws"), "overrides": SMALL}
    goal = "maximize speedup with <2% accuracy loss"
    chosen = run_compression(str(tiny_model["hf"]), goal, planner="llm", llm=routing(in_tmp, srv),
                             out=in_tmp / "L", **common)
    nsga2 = run_compression(str(tiny_model["hf"]), goal, planner="nsga2", out=in_tmp / "N", **common)
    assert [r["label"] for r in chosen["experiments"]] == [r["label"] for r in nsga2["experiments"]]
    assert chosen["llm_contribution"]["chosen_by_llm"] == 2 and chosen["llm_contribution"]["differed"] == 0
    assert nsga2["llm_contribution"] is None


def test_resume_asks_the_first_runs_models(in_tmp: Path, tiny_model: dict[str, Path], srv: ScriptedServer) -> None:
    """--resume without --llm asks the models the first run's --llm named (its llm.yaml), as nas does: not the
    default routing config, which would be another planner half-way through a search."""
    from agentlab.cli import main

    srv.default(PLANNER, Reply(text=json.dumps({"choice": 1, "reasoning": "r"})))
    run = in_tmp / "R"
    first = ["compress", "--model", str(tiny_model["hf"]), "--objective", "maximize speedup with <2% accuracy loss",
             "--planner", "llm", "--llm", routing(in_tmp, srv), "--max-iterations", "3", "--out", str(run),
             "--set", f"workspace={in_tmp / 'ws'}", *(a for s in SMALL for a in ("--set", s))]
    assert main(first) == 0
    assert (run / "llm.yaml").is_file() and srv.count(PLANNER) == 1
    (in_tmp / "llm.yaml").unlink()  # the first run's file gone: the run folder's copy is what is read
    assert main(["compress", "--resume", str(run), "--max-iterations", "4"]) == 0
    assert srv.count(PLANNER) == 2
    results = json.loads((run / "results.json").read_text())
    assert results["llm_contribution"]["model"] == PLANNER and results["llm_contribution"]["asked"] == 2
    again = run_compression(resume=run, overrides=["max_iterations=5"])  # the Python API reads it back too
    assert srv.count(PLANNER) == 3 and again["llm_contribution"]["model"] == PLANNER
    # another routing config given on this call wins over the saved one: --llm, or --set llm= (the config's field)
    other = in_tmp / "other.yaml"
    other.write_text(yaml.safe_dump({"providers": {"loop": {"kind": "openai", "base_url": srv.base_url}},
                                     "models": {"other-m": {"provider": "loop", "model": "other-m"}},
                                     "routes": {"planner": {"primary": ["other-m"]}}, "retries": 0, "timeout_s": 5}))
    srv.default("other-m", Reply(text=json.dumps({"choice": 1, "reasoning": "r"})))
    assert main(["compress", "--resume", str(run), "--max-iterations", "6", "--llm", str(other)]) == 0
    run_compression(resume=run, overrides=["max_iterations=7", f"llm={other}"])
    assert srv.count("other-m") == 2 and srv.count(PLANNER) == 3
    # a resume's keyword settings apply as its overrides do (max_iterations=8 was ignored: the saved 7 ran)
    assert run_compression(resume=run, max_iterations=8, overrides=[f"llm={other}"])["counts"]["experiments"] == 8
