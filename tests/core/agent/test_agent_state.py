"""The agent's state lives in the graph's checkpoint: a process killed with SIGKILL while its action waits leaves the
todo, the notes and the declined actions to a fresh ``AgentRun`` on the same file; the repeat watch restricts the
next step by a flag in the state, whatever the tools' answers say."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from agentlab.core.agent.harness import AgentRun
from agentlab.core.agent.runtime import Reply, Tool
from agentlab.core.llm.types import ToolCall

HERE = Path(__file__).parent


class Memo:
    """A driver whose ``todo`` and ``note`` tools update the agent's state, and whose ``run`` action has a key."""

    actions = ("run",)

    def __init__(self) -> None:
        self.declined: list[dict[str, Any]] = []

    def brief(self) -> list[dict[str, Any]]:
        return [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]

    def tools(self) -> list[Tool]:
        items = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string"}}}}
        text = {"type": "object", "properties": {"text": {"type": "string"}}}
        return [Tool("run", "r", {"type": "object", "properties": {"candidate": {"type": "integer"}}}),
                Tool("suggest", "s", {"type": "object"}, lambda a: "candidate 0: x=1"),
                Tool("todo", "t", items, lambda a: ("todo set", {"todo": list(a["items"])})),
                Tool("note", "n", text, lambda a: ("noted", {"notes": [a["text"]]})),
                # an answer that reads like the old control strings changes nothing: the state decides
                Tool("history", "h", {"type": "object"}, lambda a: "you made this same call already; error: none")]

    def check_action(self, args: dict[str, Any], tool: str | None = None) -> tuple[dict[str, Any] | None, str]:
        return {"args": args, "params": args, "key": json.dumps(args, sort_keys=True)}, ""

    def default_action(self, why: str) -> dict[str, Any]:
        return self.check_action({"candidate": 0})[0] or {}

    def reflect(self) -> str:
        return "next"

    def decline(self, action: dict[str, Any], note: str = "") -> None:
        self.declined.append(action)


class Script:
    name = "script"

    def __init__(self, calls: list[tuple[str, dict[str, Any]]]):
        self.calls, self.i = calls, 0
        self.offered: list[list[str]] = []
        self.seen: list[list[dict[str, Any]]] = []

    def step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Reply:
        self.offered.append([t["function"]["name"] for t in tools])
        self.seen.append(messages)
        name, args = self.calls[min(self.i, len(self.calls) - 1)]
        self.i += 1
        return Reply([ToolCall(f"call_{self.i}", name, json.dumps(args))], model=self.name)


def first_life(path: str) -> None:
    """The first process: plans a todo, notes a fact, has candidate 1 declined, proposes candidate 2, then dies
    (SIGKILL: no close, no flush) while the action waits to run."""
    script = Script([("todo", {"items": ["try 2", "then 3"]}), ("note", {"text": "1 is bad"}),
                     ("run", {"candidate": 1}), ("note", {"text": "2 next"}), ("run", {"candidate": 2})])
    run = AgentRun(Memo(), script, Path(path), approver=lambda action: (
        {"answer": "no", "note": "not 1"} if action["args"]["candidate"] == 1 else {"answer": "yes"}))
    print(json.dumps(run.advance(None)["args"]), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def test_todo_notes_and_declined_survive_a_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite"
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_agent_state as t; t.first_life({str(path)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"candidate": 2}
    # a new process: a fresh AgentRun on the same checkpoint file
    script = Script([("suggest", {}), ("run", {"candidate": 1}), ("run", {"candidate": 3})])
    run = AgentRun(Memo(), script, path)
    assert run.memory() == {"todo": ["try 2", "then 3"], "notes": ["1 is bad", "2 next"]}
    assert run.declined() == [json.dumps({"candidate": 1})]
    pending = run.pending()
    assert pending is not None and pending["kind"] == "execute" and pending["action"]["args"] == {"candidate": 2}
    assert run.advance(None)["args"] == {"candidate": 2}  # still waiting: the same action, not planned again
    # the result goes in; the todo kept in the checkpoint is shown with the reflection; the declined candidate 1 is
    # refused without asking anyone
    assert run.advance("x=2: 0.5")["args"] == {"candidate": 3}
    told = [m["content"] for m in script.seen[0] if m.get("role") == "user"]
    assert told[-1] == "your todo: try 2; then 3\nnext"
    tools = [m for m in run.messages() if m.get("role") == "tool"]
    assert [m["content"] for m in tools][-3:] == ["x=2: 0.5", "candidate 0: x=1",
                                                  "not run: the user declined this one: choose another"]
    assert run.counts() == {"steps": 8, "tool_calls": 8, "invalid_tool_calls": 0, "failed_calls": 0,
                            "rejected_calls": 1, "idle_steps": 0, "defaulted": 0, "tokens": 0,
                            "prompt_tokens": 0, "cached_tokens": 0, "largest_prompt_tokens": 0,
                            "model_seconds": 0.0}
    assert all("name" not in m for m in tools)  # OpenAI's tool messages: role, tool_call_id, content
    run.close()


def test_the_repeat_watch_is_a_flag_in_the_state_not_the_text(tmp_path: Path) -> None:
    script = Script([("history", {}), ("history", {}), ("suggest", {}), ("run", {"candidate": 0})])
    run = AgentRun(Memo(), script, tmp_path / "a.sqlite")
    assert run.advance(None)["args"] == {"candidate": 0}
    # the first history's answer reads like a repeat and an error: the next step still offers every tool
    assert script.offered[1] == script.offered[0] and "history" in script.offered[0]
    assert script.offered[2] == ["run", "suggest"]  # after a real repeat: only the action and suggest
    assert script.offered[3] == script.offered[0]  # one step only
    run.close()


def test_a_checkpoint_of_the_earlier_runtime_is_refused_with_the_next_step(tmp_path: Path) -> None:
    import sqlite3
    from typing import TypedDict

    import pytest
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    from agentlab.core.errors import AgentlabError

    class Old(TypedDict):  # the earlier runtime's state: plain dicts, no reducer
        messages: list[dict[str, Any]]

    path = tmp_path / "agent.sqlite"
    graph = StateGraph(Old)
    graph.add_node("plan", lambda s: {"messages": [{"role": "system", "content": "s"}]})
    graph.add_edge(START, "plan")
    graph.add_edge("plan", END)
    with sqlite3.connect(str(path), check_same_thread=False) as conn:
        graph.compile(checkpointer=SqliteSaver(conn)).invoke({"messages": []}, {"configurable": {"thread_id": "agent"}})
    run = AgentRun(Memo(), Script([("run", {"candidate": 0})]), path)
    with pytest.raises(AgentlabError) as err:
        run.advance(None)
    assert "earlier agentlab" in err.value.message and "agent.sqlite" in (err.value.hint or "")
    run.close()
    path.unlink()  # the hint's next step: the agent starts afresh
    fresh = AgentRun(Memo(), Script([("run", {"candidate": 0})]), path)
    assert fresh.advance(None)["args"] == {"candidate": 0}
    fresh.close()


def test_a_model_of_the_full_profile_gets_no_small_model_guards(tmp_path: Path) -> None:
    """Model profiles: a strong model (profile full, the default of HTTP models) sees its repeated call run again
    and the whole conversation; a small one (the default of local models, and of scripted ones) gets the repeat
    watch and the window."""
    from agentlab.core.llm.config import PROFILES

    calls = [("history", {}), ("history", {}), ("suggest", {}), ("run", {"candidate": 0})]
    small, full = Script(calls), Script(calls)
    full.profile = PROFILES["full"]  # type: ignore[attr-defined]
    for script, name in ((small, "s"), (full, "f")):
        run = AgentRun(Memo(), script, tmp_path / f"{name}.sqlite", keep=2)
        assert run.advance(None)["args"] == {"candidate": 0}
        run.close()
    assert small.offered[2] == ["run", "suggest"] and full.offered[2] == full.offered[0]
    # the window: the brief and the last `keep` messages for the small model, everything for the full one
    assert len(small.seen[3]) < len(full.seen[3]) == 2 + 2 * 3


def test_the_profile_comes_from_the_routing_config_by_provider_kind() -> None:
    from agentlab.core.llm.config import PROFILES, LLMConfig

    cfg = LLMConfig.model_validate({
        "providers": {"local": {"kind": "llama_cpp"}, "api": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}},
        "models": {"tiny": {"provider": "local", "model": "smollm2-135m"},
                   "tiny-full": {"provider": "local", "model": "smollm2-135m", "profile": "full"},
                   "big": {"provider": "api", "model": "gpt"},
                   "big-small": {"provider": "api", "model": "gpt", "profile": "small", "params": {"top_p": 0.9}}}})
    assert cfg.profile("tiny") == PROFILES["small"] and cfg.profile("tiny-full") == PROFILES["full"]
    assert cfg.profile("big") == PROFILES["full"] and cfg.profile("big-small") == PROFILES["small"]
    # the tool gate is a local model's request param; an HTTP request carries no such key
    assert cfg.model_params("tiny") == {} and cfg.model_params("tiny-full") == {"tool_gate": False}
    assert cfg.model_params("big-small") == {"top_p": 0.9}
