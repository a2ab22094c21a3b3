"""Scripted agent models for the ``agent`` planner (``core.agent.runtime.AgentModel``), for tests and benchmarks:
they stand where a model would, without one.

- ``SuggestAgent``: calls ``suggest``, then ``run_trial`` with candidate 0, every trial: the classical sampler
  trial for trial (the property tests, the benchmarks' ``agent-suggest``).
- ``ScriptAgent``: plays a list of calls (name, arguments) in order, then repeats the last; to drive every tool.
"""

from __future__ import annotations

import json
from typing import Any

from agentlab.core.agent.runtime import Reply
from agentlab.core.llm.types import ToolCall


def _last_call(messages: list[dict[str, Any]]) -> str | None:
    """The name of the last tool the conversation called (None before any)."""
    for msg in reversed(messages):
        for call in msg.get("tool_calls") or []:
            return str(call["function"]["name"])
    return None


class SuggestAgent:
    name = "agent-suggest"

    def __init__(self, action: str = "run_trial"):
        self.action, self.steps = action, 0

    def step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Reply:
        self.steps += 1
        if _last_call(messages) == "suggest" and messages[-1].get("role") == "tool":
            call = ToolCall(f"call_{self.steps}", self.action, json.dumps({"candidate": 0, "reason": "candidate 0"}))
        else:
            call = ToolCall(f"call_{self.steps}", "suggest", "{}")
        return Reply([call], tokens=0, model=self.name)


class ScriptAgent:
    name = "agent-script"

    def __init__(self, calls: list[tuple[str, dict[str, Any]]]):
        self.calls, self.steps = calls, 0
        self.seen: list[list[dict[str, Any]]] = []  # the messages of each step
        self.offered: list[list[str]] = []  # the tools offered at each step, by name

    def step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Reply:
        self.seen.append(messages)
        self.offered.append([t["function"]["name"] for t in tools])
        name, args = self.calls[min(self.steps, len(self.calls) - 1)]
        self.steps += 1
        return Reply([ToolCall(f"call_{self.steps}", name, json.dumps(args))], model=self.name)
