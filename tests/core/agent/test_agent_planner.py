"""The agent planner on a cheap objective with scripted agent models: an agent that always calls ``suggest`` and
runs candidate 0 is TPE trial for trial; the guard takes over after ``guard_patience`` trials without a new best and
tells the agent; every tool answers from code; a killed search resumes from the graph's checkpoint without running a
trial twice; approval answers yes / no / edit; results count the steps and tool calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest

from agentlab.core.agent.harness import AgentRun
from agentlab.core.agent.runtime import Reply, window
from agentlab.core.errors import LLMError
from agentlab.core.llm.types import ToolCall
from agentlab.core.search.agent import AgentKit, AgentPlanner, TrialView, agent_streak
from agentlab.core.search.engine import new_study  # noqa: E402
from agentlab.core.search.evaluator import HybridEvaluator
from agentlab.core.search.loop import Hooks, SearchLoop, StopRules
from agentlab.core.search.planners import OptunaPlanner, trial_results
from agentlab.core.search.records import TrialRecord
from agentlab.core.search.settings import AgentSettings
from agentlab.core.search.space import ParamSpec, SearchSpace
from agentlab.testing.agents import ScriptAgent, SuggestAgent

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = SearchSpace({"x": ParamSpec(low=-5.0, high=5.0), "y": ParamSpec(low=-5.0, high=5.0),
                     "kind": ParamSpec(choices=["a", "b", "c"]), "width": ParamSpec(choices=[8, 16, 32, 64])})
BASE = {"x": 4.0, "y": 4.0, "kind": "c", "width": 64}


class Bowl:
    def __init__(self, die_at: int | None = None):
        self.runs: list[dict[str, Any]] = []
        self.die_at = die_at

    def check(self, params: dict[str, Any]) -> list[str]:
        return []

    def run(self, number: int, params: dict[str, Any], report: Any) -> dict[str, Any]:
        if self.die_at is not None and number == self.die_at:
            raise KeyboardInterrupt  # the process is stopped mid-trial
        self.runs.append(dict(params))
        value = ((params["x"] - 1) ** 2 + (params["y"] + 2) ** 2 + {"a": 0.0, "b": 1.0, "c": 3.0}[params["kind"]]
                 + params["width"] / 32)
        return {"value": value}


def search(planner: Any, seed: int, trials: int = 12, study: Any = None, objective: Any = None,
           events: list[tuple[str, dict[str, Any]]] | None = None) -> list[TrialRecord]:
    study = study or new_study(direction="minimize")
    loop = SearchLoop(study=study, space=SPACE, base_params=dict(BASE), objective=objective or Bowl(),
                      planner=planner, evaluator=HybridEvaluator(0.0), stop=StopRules(trials), seed=seed,
                      metric="val", hooks=Hooks(on_event=(lambda kind, **f: events.append((kind, f)))
                                                if events is not None else None))
    return loop.run().records


def agent(model: Any, tmp_path: Path, name: str = "a", **settings: Any) -> AgentPlanner:
    return AgentPlanner(model, AgentSettings(**settings), tmp_path / name / "agent.sqlite",
                        AgentKit("a test search", facts=lambda: "the bowl is smooth"))


def test_an_agent_that_runs_suggest_candidate_0_is_tpe_trial_for_trial(tmp_path: Path) -> None:
    for seed in (0, 1):
        tpe = [r.params for r in search(OptunaPlanner("tpe"), seed)]
        model = SuggestAgent()
        planner = agent(model, tmp_path, f"s{seed}", guard_patience=2)
        records = search(planner, seed)
        assert [r.params for r in records] == tpe
        origins = {r.origin for r in records[1:]}
        assert origins <= {"agent", "guard"} and "agent" in origins
        block = planner.report(trial_results(records, False, lambda best: {}))["agent"]
        assert model.steps == block["tool_calls"] == 2 * block["trials_by_agent"]  # suggest + run_trial per trial
        assert block["invalid_tool_calls"] == 0 and block["trials_by_agent"] + block["trials_by_guard"] == 11
        planner.close()


def test_each_result_brings_the_next_candidates_so_a_pick_needs_no_suggest_step(tmp_path: Path) -> None:
    """suggest once, then candidate 0 straight after each result: still TPE trial for trial, one call a trial,
    nothing refused (before, each such pick was refused with the candidates and made again: two calls a trial)."""
    tpe = [r.params for r in search(OptunaPlanner("tpe"), 0)]
    model = ScriptAgent([("suggest", {}), ("run_trial", {"candidate": 0, "reason": "r"})])
    planner = agent(model, tmp_path, guard_patience=50)
    records = search(planner, 0)
    assert [r.params for r in records] == tpe
    counts = planner.stats()
    assert counts["rejected_calls"] == 0 and counts["steps"] == 1 + 11
    results = [m["content"] for m in planner.run.messages() if m.get("role") == "tool"]
    assert all("the candidates for the next trial:\ncandidate 0: " in r for r in results[1:])
    planner.close()


def test_the_guard_takes_over_after_patience_and_the_agent_is_told(tmp_path: Path) -> None:
    # an agent that keeps trying the worst config it can name never improves: the guard runs TPE
    worst = ScriptAgent([("try_config", {"changes": {"kind": "c", "width": 8}, "reason": "r"}),
                         *[("try_config", {"changes": {"x": v}, "reason": "r"}) for v in (-5.0, 5.0, -4.0, 4.5)],
                         ("suggest", {}), ("run_trial", {"candidate": 1, "reason": "r"})])
    planner = agent(worst, tmp_path, guard_patience=2)
    records = search(planner, 0, trials=10)
    origins = [r.origin for r in records[1:]]
    assert "guard" in origins
    first_guard = origins.index("guard") + 1  # records[0] is the base
    assert [r.origin for r in records[first_guard - 2:first_guard]] == ["agent", "agent"]
    streak, guarded = agent_streak(TrialView(planner.ctx.domain).done()[:first_guard], 2)  # type: ignore[union-attr]
    assert guarded and streak >= 2  # the guard came only after two agent trials without a new best
    told = [m["content"] for step in worst.seen for m in step if m.get("role") == "tool"
            and "meanwhile the guard" in str(m.get("content"))]
    assert told, "the agent is told what the guard ran"
    planner.close()


def test_tools_answer_from_code_and_invalid_actions_are_shown_the_error(tmp_path: Path) -> None:
    model = ScriptAgent([("history", {"top": 3}), ("todo", {"items": ["try kind a"]}),
                         ("try_config", {"changes": {"x": 99.0}, "reason": "out of range"}),
                         ("try_config", {"changes": {"kind": "a"}, "reason": "kind a is cheap, ±1"})])
    planner = agent(model, tmp_path)
    events: list[tuple[str, dict[str, Any]]] = []
    planner.run.on_event = lambda kind, **f: events.append((kind, f))
    records = search(planner, 0, trials=2)
    assert records[1].params["kind"] == "a" and records[1].reasoning == "kind a is cheap, ±1"
    tool_results = [m["content"] for m in planner.run.messages() if m.get("role") == "tool"]
    assert tool_results[0].startswith("trial 0") or "val" in tool_results[0]  # history: the base trial
    assert tool_results[1].startswith("todo: try kind a. Next: call suggest, then run_trial")  # what to do next
    assert tool_results[2].startswith("not run: x:")  # the space's own error, naming the key
    counts = planner.stats()
    assert counts["rejected_calls"] == 1 and counts["steps"] == 4
    assert [k for k, _ in events].count("agent_step") == 4
    assert "cheap, ±1" in [f for k, f in events if k == "agent_step"][-1]["arguments"]  # the console showed \u00b1
    brief = planner.run.messages()[1]["content"]
    assert "the bowl is smooth" in brief
    planner.close()


def test_a_repeated_call_gets_its_earlier_answer_and_a_push_not_a_second_run(tmp_path: Path) -> None:
    model = ScriptAgent([("history", {"top": 3}), ("history", {"top": 3}), ("history", {"top": 2}),
                         ("try_config", {"changes": {"kind": "a"}, "reason": "decided"}), ("history", {"top": 3}),
                         ("try_config", {"changes": {"kind": "b"}, "reason": "again"})])
    planner = agent(model, tmp_path)
    events: list[tuple[str, dict[str, Any]]] = []
    planner.run.on_event = lambda kind, **f: events.append((kind, f))
    search(planner, 0, trials=3)
    results = [m["content"] for m in planner.run.messages() if m.get("role") == "tool"]
    assert results[1].startswith("you made this same call already since the last run_trial; its answer was: ")
    assert results[0] in results[1]
    assert results[1].endswith("Decide now: call suggest, then run_trial with one of the suggested candidates.")
    # the step after a repeat may only see or run the suggested candidates: history(top=2) was not offered; nothing
    # was suggested yet, so run_trial (which could only be refused) was not offered either
    assert model.offered[2] == ["suggest"] and "history" in model.offered[0]
    assert "run_trial" not in model.offered[0] and "try_config" in model.offered[0]
    assert not results[4].startswith("you made")  # an action ran since: the same call is answered afresh
    tools = [f["summary"] for kind, f in events if kind == "agent_tool"]
    assert sum(t.startswith("repeated call: ") for t in tools) == 1  # not run again
    planner.close()


def test_no_tool_call_or_an_error_runs_candidate_0(tmp_path: Path) -> None:
    class Mute:
        name = "mute"

        def step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Reply:
            raise LLMError("all models failed", "timeout")

    tpe = [r.params for r in search(OptunaPlanner("tpe"), 3, trials=6)]
    planner = agent(Mute(), tmp_path, guard_patience=50)
    records = search(planner, 3, trials=6)
    assert [r.params for r in records] == tpe
    assert {r.origin for r in records[1:]} == {"default"}
    assert planner.stats()["defaulted"] == 5
    planner.close()


def test_a_killed_search_resumes_from_the_checkpoint_without_running_a_trial_twice(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = new_study(direction="minimize", storage=storage, study_name="s")
    first = Bowl(die_at=4)
    model = SuggestAgent()
    planner = agent(model, tmp_path, guard_patience=50)
    with pytest.raises(KeyboardInterrupt):
        search(planner, 0, trials=8, study=study, objective=first)
    pending = planner.run.pending()
    assert pending is not None and pending["kind"] == "execute"
    planner.close()
    # a new process: a new planner on the same checkpoint and study
    again = Bowl()
    planner = agent(SuggestAgent(), tmp_path, guard_patience=50)
    study = new_study(storage, study_name="s", direction="minimize", load_if_exists=True)
    records = search(planner, 0, trials=8, study=study, objective=again)
    assert again.runs[0] == pending["action"]["params"]  # the pending trial runs first, not planned again
    done = [json.dumps(r.params, sort_keys=True) for r in records if r.state == "complete"]
    assert len(done) == 8 and len(set(done)) == 8  # every trial once
    assert len(first.runs) + len(again.runs) == 8
    planner.close()


def test_approval_yes_no_edit(tmp_path: Path) -> None:
    answers = iter([{"answer": "no", "note": "not that one"}, {"answer": "edit", "args": {"changes": {"kind": "b"}}},
                    {"answer": "yes"}])
    asked: list[dict[str, Any]] = []

    def approver(action: dict[str, Any]) -> dict[str, Any]:
        asked.append(action)
        return next(answers)

    model = ScriptAgent([("try_config", {"changes": {"kind": "a"}, "reason": "r"})] * 2
                        + [("try_config", {"changes": {"width": 8}, "reason": "r"})])
    planner = AgentPlanner(model, AgentSettings(approve=True), tmp_path / "agent.sqlite", AgentKit("t"),
                           approver=approver)
    records = search(planner, 0, trials=3)
    assert records[1].params["kind"] == "b"  # the user's edit ran
    assert len(asked) >= 3
    declined = [m["content"] for m in planner.run.messages() if m.get("role") == "tool" and "declined" in m["content"]]
    assert declined and "not that one" in declined[0]
    planner.close()


def test_window_keeps_the_brief_and_never_starts_with_a_tool_result() -> None:
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "b"}]
    for i in range(10):
        msgs += [{"role": "assistant", "content": None,
                  "tool_calls": [ToolCall(f"c{i}", "suggest", "{}").to_openai()]},
                 {"role": "tool", "tool_call_id": f"c{i}", "content": "r"}]
    shown = window(msgs, 2, 5)
    assert shown[:2] == msgs[:2] and shown[2]["role"] == "assistant" and len(shown) <= 7


def test_agent_run_needs_an_approver_only_when_approval_is_pending(tmp_path: Path) -> None:
    assert AgentRun.__dataclass_fields__["approver"].default is None


def test_the_kits_leads_follow_candidate_0_best_first_until_tried_and_candidate_0_stays_tpes(tmp_path: Path) -> None:
    """No order chosen for one model's position habit: candidate 0 is the sampler's, then the leads best first,
    then the sampler's other draws."""
    leads = [({"kind": "a", "width": 8}, "from the literature: best"), ({"kind": "b"}, "from the literature: next"),
             ({"kind": "zzz"}, "not in the space: left out")]
    kit = AgentKit("a test search", leads=lambda: leads)
    # the script: suggest, then run candidate 1, every trial
    model = ScriptAgent([("suggest", {}), ("run_trial", {"candidate": 1, "reason": "first lead"})] * 5)
    planner = AgentPlanner(model, AgentSettings(guard_patience=50), tmp_path / "agent.sqlite", kit)
    records = search(planner, 0, trials=5)
    # trial 1: the best lead (the incumbent, the base, with kind a and width 8); trial 2: the next lead, changed
    # from the best so far; then TPE's own draw again
    assert {k: records[1].params[k] for k in ("kind", "width")} == {"kind": "a", "width": 8}
    assert records[2].params["kind"] == "b"
    suggested = [str(step[-1].get("content")) for step in model.seen  # each suggest's answer, in order
                 if step[-1].get("role") == "tool" and "candidate 0:" in str(step[-1].get("content"))]
    assert "candidate 1 (from the literature: best)" in suggested[0]
    assert "candidate 2 (from the literature: next)" in suggested[0] and "zzz" not in " ".join(suggested)
    assert "candidate 3:" in suggested[0] and "(from" not in suggested[0].split("candidate 3:")[1]
    assert "from the literature" not in suggested[-1]  # both leads ran: the sampler's draws again
    planner.close()
    # candidate 0 is still TPE's own: the suggest-candidate-0 agent with leads is TPE trial for trial
    tpe = [r.params for r in search(OptunaPlanner("tpe"), 1, trials=8)]
    zero = AgentPlanner(SuggestAgent(), AgentSettings(guard_patience=50), tmp_path / "z" / "agent.sqlite", kit)
    assert [r.params for r in search(zero, 1, trials=8)] == tpe
    zero.close()


class _Driver:
    """The smallest driver: one action ``run`` (and ``own``), two information tools."""

    actions = ("run", "own")

    def brief(self) -> list[dict[str, Any]]:
        return [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]

    def tools(self) -> list[Any]:
        from agentlab.core.agent.runtime import Tool

        return [Tool("run", "r", {"type": "object"}), Tool("own", "o", {"type": "object"}),
                Tool("history", "h", {"type": "object"}, lambda a: "HISTORY"),
                Tool("note", "n", {"type": "object"}, lambda a: "NOTED")]

    def check_action(self, args: dict[str, Any], tool: str | None = None) -> tuple[dict[str, Any] | None, str]:
        return {"args": args}, ""

    def default_action(self, why: str) -> dict[str, Any]:
        return {"args": {"candidate": 0}}

    def reflect(self) -> str:
        return ""


class _Steps:
    """Scripted steps whose call ids repeat (a provider may number calls per reply); dies at step ``die_at``."""

    name = "steps"

    def __init__(self, script: list[tuple[str, dict[str, Any]]], die_at: int | None = None):
        self.script, self.die_at, self.i = script, die_at, 0

    def step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Reply:
        self.i += 1
        if self.i == self.die_at:
            raise KeyboardInterrupt  # killed during a model step, between checkpoints
        name, args = self.script[min(self.i - 1, len(self.script) - 1)]
        return Reply([ToolCall("call_1", name, json.dumps(args))], model=self.name)


def test_a_repeat_is_matched_to_its_own_answer_when_call_ids_repeat(tmp_path: Path) -> None:
    model = _Steps([("history", {}), ("note", {"text": "x"}), ("history", {}), ("run", {"candidate": 1})])
    run = AgentRun(_Driver(), model, tmp_path / "a.sqlite")
    assert run.advance(None)["args"] == {"candidate": 1}
    results = [m["content"] for m in run.messages() if m.get("role") == "tool"]
    assert results[:2] == ["HISTORY", "NOTED"] and "its answer was: HISTORY\n" in results[2]
    run.close()


def test_killed_during_a_model_step_the_graph_continues_from_its_last_checkpoint(tmp_path: Path) -> None:
    script = [("history", {}), ("note", {"text": "x"}), ("run", {"candidate": 2})]
    run = AgentRun(_Driver(), _Steps(script, die_at=3), tmp_path / "a.sqlite")
    with pytest.raises(KeyboardInterrupt):
        run.advance(None)
    kept = run.messages()
    run.close()
    resumed = AgentRun(_Driver(), _Steps(script[2:]), tmp_path / "a.sqlite")
    assert resumed.advance(None)["args"] == {"candidate": 2}
    assert resumed.messages()[:len(kept)] == kept and len(kept) == 6  # brief + two answered calls, not started over
    assert resumed.counts()["steps"] == 3
    resumed.close()
