"""Model profiles applied in one place, and the candidates of ``suggest`` in the graph's state: an HTTP model (the
``full`` profile) gets none of the small model's crutches (the order of the calls, the short brief, tools without
descriptions); a small one is told the order of the calls once; ``run_trial`` of a candidate never suggested is
refused by the state, not by a text; the candidates shown survive ``kill -9`` and are the ones that run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna

from agentlab.core.agent.runtime import Reply, RouterModel
from agentlab.core.llm.config import PROFILES, LLMConfig
from agentlab.core.llm.router import Router
from agentlab.core.llm.types import ToolCall
from agentlab.core.search.agent import AgentKit, AgentPlanner
from agentlab.core.search.planners import trial_results
from agentlab.core.search.settings import AgentSettings

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from test_agent_planner import search  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Recorder:
    """A scripted model that keeps what it was shown: the messages and the tools' full specs of each step."""

    name = "recorder"

    def __init__(self, calls: list[tuple[str, dict[str, Any]]], profile: Any = None):
        self.calls, self.i = calls, 0
        self.seen: list[list[dict[str, Any]]] = []
        self.tools: list[list[dict[str, Any]]] = []
        if profile is not None:
            self.profile = profile

    def step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Reply:
        self.seen.append(messages)
        self.tools.append(tools)
        name, args = self.calls[min(self.i, len(self.calls) - 1)]
        self.i += 1
        return Reply([ToolCall(f"call_{self.i}", name, json.dumps(args))], model=self.name)


CALLS = [("suggest", {}), ("run_trial", {"candidate": 1, "reason": "the second"})] * 3


def _reason(tools: list[dict[str, Any]]) -> dict[str, Any]:
    spec = next(t for t in tools if t["function"]["name"] == "run_trial")
    return spec["function"]["parameters"]["properties"]["reason"]


def test_an_http_model_gets_none_of_the_small_profiles_crutches(tmp_path: Path) -> None:
    cfg = LLMConfig.model_validate({
        "providers": {"api": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}},
        "models": {"big": {"provider": "api", "model": "gpt"}}, "routes": {"planner": {"primary": ["big"]}}})
    router = Router.from_config(cfg)
    try:
        assert RouterModel(router, "planner").profile == PROFILES["full"]  # an HTTP model's profile: full
    finally:
        router.close()
    runs = {}
    for name, profile in (("full", PROFILES["full"]), ("small", PROFILES["small"])):
        model = Recorder(CALLS, profile)
        planner = AgentPlanner(model, AgentSettings(guard_patience=50), tmp_path / name / "agent.sqlite",
                               AgentKit("a test search"))
        search(planner, 0, trials=3)
        planner.close()
        runs[name] = model
    full, small = runs["full"], runs["small"]
    # the order of the calls: said once, in the small profile's brief only; never in a tool's answer or reflection
    said = "first suggest, then run_trial"
    assert said in small.seen[0][0]["content"] and said not in full.seen[0][0]["content"]
    for model in (full, small):
        later = [m for m in model.seen[-1][1:] if said in str(m.get("content"))]
        assert later == [] and not any("Next: call" in str(m.get("content")) for m in model.seen[-1])
    # the full brief explains the guard and the leads; the short one does not
    assert "the guard" in full.seen[0][0]["content"] and "the guard" not in small.seen[0][0]["content"]
    assert len(small.seen[0][0]["content"]) < len(full.seen[0][0]["content"]) / 2
    # descriptions: kept for the full profile, the small one's reason has none (and a plain character set)
    # (step 2: run_trial is offered once suggest has run)
    assert "description" in _reason(full.tools[1]) and "pattern" not in _reason(full.tools[1])
    assert "description" not in _reason(small.tools[1]) and "pattern" in _reason(small.tools[1])


def test_run_trial_of_a_candidate_never_suggested_is_refused(tmp_path: Path) -> None:
    model = Recorder([("run_trial", {"candidate": 2, "reason": "blind"}), ("suggest", {}),
                      ("run_trial", {"candidate": 2, "reason": "seen"})])
    planner = AgentPlanner(model, AgentSettings(guard_patience=50), tmp_path / "agent.sqlite", AgentKit("t"))
    records = search(planner, 0, trials=2)
    tool_answers = [m["content"] for m in planner.run.messages() if m.get("role") == "tool"]
    assert tool_answers[0].startswith("not run: nothing was suggested since the last trial")
    assert records[1].origin == "agent" and records[1].choice == 2  # after suggest, the same call runs
    assert planner.report(trial_results(records, False, lambda best: {}))["agent"]["rejected_calls"] == 1
    # a model under a grammar could not have made the blind call: run_trial is offered only once suggest has run
    offered = [[t["function"]["name"] for t in step] for step in model.tools]
    assert "run_trial" not in offered[0] and "try_config" in offered[0] and "run_trial" in offered[2]
    planner.close()


def test_a_blind_pick_is_refused_with_the_candidates_it_can_pick_from(tmp_path: Path) -> None:
    """A medium-profile model is offered run_trial before suggest (its tools stay the same for its prompt cache): a
    pick with nothing suggested is refused with suggest's candidates, and the same call next step runs the one shown
    (Qwen2.5-Coder-0.5B repeated such a call until the default took over)."""
    model = Recorder([("run_trial", {"candidate": 2, "reason": "blind"})], PROFILES["medium"])
    planner = AgentPlanner(model, AgentSettings(guard_patience=50), tmp_path / "agent.sqlite", AgentKit("t"))
    records = search(planner, 0, trials=2)
    refusal = next(m["content"] for m in planner.run.messages() if m.get("role") == "tool")
    assert refusal.startswith("not run: nothing was suggested since the last trial. suggest's candidates now:")
    assert "call suggest" not in refusal and refusal.endswith("Call run_trial with one of them.")
    shown = refusal.split("candidate 2: ")[1].splitlines()[0]
    assert records[1].origin == "agent" and records[1].choice == 2 and len(model.seen) == 2
    assert planner._view().describe(records[1].params) == shown  # the candidate the refusal showed is the one run
    assert planner.report(trial_results(records, False, lambda best: {}))["agent"]["rejected_calls"] == 1
    planner.close()


def test_the_same_call_refused_twice_runs_the_default_at_once(tmp_path: Path) -> None:
    """A refused action call sent again unchanged would be refused again: the default runs at once instead of the
    step budget running out (Qwen2.5-Coder-0.5B sent one refused try_config five times running, 5 s each)."""
    out_of_range = ("try_config", {"changes": {"x": 99.0}, "reason": "far"})
    model = Recorder([out_of_range, ("try_config", {"changes": {"x": 98.0}, "reason": "far"}), out_of_range,
                      ("suggest", {}), ("run_trial", {"candidate": 1, "reason": "the second"})],
                     PROFILES["medium"])
    planner = AgentPlanner(model, AgentSettings(guard_patience=50), tmp_path / "agent.sqlite", AgentKit("t"))
    records = search(planner, 0, trials=3)
    assert len(model.seen) == 5  # the third step repeated the first: no fourth step for that trial
    assert records[1].origin == "default" and records[2].origin == "agent" and records[2].choice == 1
    block = planner.report(trial_results(records, False, lambda best: {}))["agent"]
    assert block["rejected_calls"] == 3 and block["defaulted"] == 1
    planner.close()


class KillAfterSuggest:
    """Calls suggest, then dies (SIGKILL) in the next model step: the candidates are in the checkpoint only."""

    name = "killer"

    def __init__(self) -> None:
        self.steps = 0

    def step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Reply:
        self.steps += 1
        if self.steps == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return Reply([ToolCall("call_1", "suggest", "{}")], model=self.name)


def first_life(path: str) -> None:
    planner = AgentPlanner(KillAfterSuggest(), AgentSettings(guard_patience=50), Path(path), AgentKit("t"))
    search(planner, 0, trials=2)


def test_the_suggested_candidates_survive_a_sigkill_and_are_the_ones_that_run(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite"
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_agent_profiles as t; "
            f"t.first_life({str(path)!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    # a new process (another seed: its sampler would draw other candidates) continues the same graph: candidate 2
    # is the one the killed process showed the model
    model = Recorder([("run_trial", {"candidate": 2, "reason": "the third"})])
    planner = AgentPlanner(model, AgentSettings(guard_patience=50), path, AgentKit("t"))
    shown = planner.run._values()["suggested"]
    assert len(shown) == 4
    records = search(planner, 5, trials=2)
    assert records[1].params == shown[2]["params"] and records[1].choice == 2
    assert planner.report(trial_results(records, False, lambda best: {}))["agent"]["rejected_calls"] == 0
    planner.close()


class Steps:
    """A scripted full-profile model: each step is a list of calls (several allowed) or a text with no call."""

    name = "steps"

    def __init__(self, steps: list[list[tuple[str, dict[str, Any]]] | str]):
        self.steps, self.i = steps, 0
        self.profile = PROFILES["full"]
        self.tools: list[list[str]] = []
        self.seen: list[list[dict[str, Any]]] = []

    def step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Reply:
        self.seen.append(messages)
        self.tools.append([json.dumps(t, sort_keys=True) for t in tools])
        step = self.steps[min(self.i, len(self.steps) - 1)]
        self.i += 1
        if isinstance(step, str):
            return Reply([], text=step, model=self.name)
        return Reply([ToolCall(f"c{self.i}_{n}", name, json.dumps(args)) for n, (name, args) in enumerate(step)],
                     model=self.name)


def test_a_full_profile_model_thinks_in_text_makes_several_calls_and_sees_the_same_tools(tmp_path: Path) -> None:
    model = Steps(["Let me look at the history first.",
                   [("history", {}), ("suggest", {})],
                   [("try_config", {"changes": {"x": 1.2345, "y": -2.04}, "reason": "near the bowl's floor"})]])
    planner = AgentPlanner(model, AgentSettings(guard_patience=50), tmp_path / "agent.sqlite", AgentKit("t"))
    records = search(planner, 0, trials=2)
    # a value of its own inside the bounds, off any grid (the small profile's try_config offers a grid)
    assert records[1].origin == "agent" and records[1].params["x"] == 1.2345 and records[1].params["y"] == -2.04
    messages = planner.run.messages()
    # the text step is answered with what to do next and counted; both calls of the next step ran
    nudge = next(m["content"] for m in messages if m.get("role") == "user" and "ran no tool" in str(m["content"]))
    assert "Next: call suggest, then run_trial" in nudge
    answers = [m["content"] for m in messages if m.get("role") == "tool"]
    assert answers[0].startswith("run_0000 val") and answers[1].startswith("candidate 0")
    block = planner.report(trial_results(records, False, lambda best: {}))["agent"]
    assert block["idle_steps"] == 1 and block["tool_calls"] == 3 and block["defaulted"] == 0
    # the same tools, byte for byte, at every step: run_trial is offered before suggest (the prompt cache keeps them)
    assert all(tools == model.tools[0] for tools in model.tools) and any("run_trial" in t for t in model.tools[0])
    planner.close()


def test_a_full_profile_model_that_only_talks_gets_the_default_after_max_steps(tmp_path: Path) -> None:
    model = Steps(["I am thinking."])
    planner = AgentPlanner(model, AgentSettings(guard_patience=50, max_steps=3), tmp_path / "agent.sqlite",
                           AgentKit("t"))
    records = search(planner, 0, trials=2)
    block = planner.report(trial_results(records, False, lambda best: {}))["agent"]
    assert records[1].origin == "default" and block["idle_steps"] == 3 and block["defaulted"] == 1
    assert model.i == 3  # three steps counted against the budget, then the default ran
    planner.close()


def test_a_route_that_fails_outright_is_a_failed_call_not_an_invalid_one(tmp_path: Path) -> None:
    from agentlab.core.errors import LLMError

    class Failing(Steps):
        def step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Reply:
            raise LLMError("every model failed", "unavailable")

    planner = AgentPlanner(Failing([]), AgentSettings(guard_patience=50), tmp_path / "agent.sqlite", AgentKit("t"))
    records = search(planner, 0, trials=2)
    block = planner.report(trial_results(records, False, lambda best: {}))["agent"]
    assert block["failed_calls"] == 1 and block["invalid_tool_calls"] == 0 and records[1].origin == "default"
    from agentlab.core.search.records import planner_label

    assert planner_label({"planner": "agent", "origin": "default"}) == "agent's default: the sampler's candidate 0"
    planner.close()


def test_each_profile_asks_the_router_for_its_kind_of_step() -> None:
    from agentlab.core.llm.providers.scripted import Calls, ScriptedProvider

    tools = [{"type": "function", "function": {"name": "suggest", "parameters": {"type": "object", "properties": {}}}}]
    seen = {}
    for profile in ("small", "medium", "full"):
        provider = ScriptedProvider("p", [Calls([("suggest", {})])])
        cfg = LLMConfig.model_validate({"providers": {"p": {"kind": "scripted"}},
                                        "models": {"m": {"provider": "p", "model": "m", "profile": profile}},
                                        "routes": {"planner": {"primary": ["m"]}}})
        router = Router(cfg, {"p": provider})
        try:
            reply = RouterModel(router, "planner").step([{"role": "user", "content": "plan"}], tools)
        finally:
            router.close()
        assert [c.name for c in reply.calls] == ["suggest"]
        params = provider.calls[0].params
        seen[profile] = (params.tool_choice, params.parallel_tool_calls, params.extra.get("tool_gate"))
    # small: one required call; medium (measured: Qwen2.5-Coder-0.5B answered in text when allowed): required, several
    # allowed; full: text allowed. A non-small model's own tools skip the relevance gate.
    assert seen == {"small": ("required", False, None), "medium": ("required", None, False),
                    "full": ("auto", None, False)}
