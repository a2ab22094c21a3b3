"""Scripted agent models for the ``agent`` planner, for tests and benchmarks: they stand where a model would,
without one.

- ``SuggestAgent``: calls ``suggest``, then ``run_trial`` with candidate 0, every trial: the classical sampler
  trial for trial (the property tests, the benchmarks' ``agent-suggest``).
- ``ScriptAgent``: plays a list of calls (name, arguments) in order, then repeats the last; to drive every tool.

Each is an ``AgentModel`` (``step``), for the planner's own tests, and a reply function of the scripted provider
(``__call__``): ``scripted_llm(agent)`` is the routing config whose ``planner`` route it answers, so a command runs
it through the router, as it would a real model.
"""

from __future__ import annotations

import json
from typing import Any

from agentlab.core.agent.runtime import Reply
from agentlab.core.llm.config import LLMConfig, ModelConfig, RouteConfig, ScriptedProviderConfig
from agentlab.core.llm.providers.scripted import Calls
from agentlab.core.llm.types import GenParams, ToolCall


def _last_call(messages: list[dict[str, Any]]) -> str | None:
    """The name of the last tool the conversation called (None before any)."""
    for msg in reversed(messages):
        for call in msg.get("tool_calls") or []:
            return str(call["function"]["name"])
    return None


class _Scripted:
    name = "scripted"

    def step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Reply:
        raise NotImplementedError

    def __call__(self, model: str, messages: list[dict[str, Any]], params: GenParams) -> Calls:
        """The scripted provider's reply: this step's calls."""
        reply = self.step([dict(m) for m in messages], list(params.tools or []))
        return Calls([(c.name, c.arguments) for c in reply.calls], reply.text, [c.id for c in reply.calls])


class SuggestAgent(_Scripted):
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


class ScriptAgent(_Scripted):
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


def scripted_llm(agent: _Scripted, profile: str = "small") -> LLMConfig:
    """The routing config whose ``planner`` route is ``agent`` (the scripted provider), under ``profile`` (small:
    the guards the built-in model gets)."""
    return LLMConfig(providers={"scripted": ScriptedProviderConfig(script=agent)},
                     models={agent.name: ModelConfig(provider="scripted", model=agent.name, profile=profile)},
                     routes={"planner": RouteConfig(primary=[agent.name])})
