"""The agent runtime's light half: the types a command gives the agent (``Driver``, ``Tool``, ``AgentModel``,
``RouterModel``, the model's profile) and the helpers the middleware shares. ``harness.py`` is the other half, which
needs LangChain: ``AgentRun``, LangChain's agent harness (``create_agent`` with agentlab's middleware) on the router's
tool calling, with its checkpoints in the run folder. Imports run one way, harness -> runtime.

A command gives a ``Driver``: the brief (system prompt and the first user message, with the facts computed in code),
the tools (``Tool``: a name, a JSON schema for the arguments, a function that computes the result in code), and the
one *action* tool whose call is the costly step (nas's ``run_trial``, compress's ``run_experiment``). The agent runs
the model's tool calls until it calls the action with valid arguments; then the action tool stops at an interrupt
whose payload is the action, the command runs it (a trial) and resumes the graph with the result
(``AgentRun.advance``). With ``approve`` the graph stops before the action too, and the answer (yes / no / edit) is
the resume value.

The checkpointer is LangGraph's SQLite saver on ``agent.sqlite`` in the run folder, and everything the agent needs
is in the graph's state (messages, counters, the pending action, declined actions, its todo and notes): after
``kill -9`` a new process opens the same thread and continues from the last checkpoint.

Guards against a weak model are in code (``harness.py``'s middleware, never the text of a message): every call is
validated by the router; no tool call, or ``max_steps`` calls without the action, runs the driver's
``default_action``; a call repeated since the last action gets its earlier answer and the next step offers only
``suggest`` and the action; the model sees the brief and the last exchanges.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from agentlab.core.llm.config import PROFILES, ModelProfile
from agentlab.core.llm.results import invalid_replies
from agentlab.core.llm.types import GenParams, ToolCall

if TYPE_CHECKING:
    from agentlab.core.llm.router import Router

RESULT_CHARS = 1500  # a tool's result as a sub-agent sees it, at most (the agent's: its profile's result_chars)
SUMMARY_CHARS = 200  # a tool's result in events.jsonl


@dataclass
class Tool:
    """One tool: ``parameters`` is its arguments' JSON schema (a pydantic model's ``model_json_schema()`` or one
    built for the moment, e.g. an ``enum`` of the candidates' indices); ``run(args)`` computes the result in code
    (text the model reads), or (that text, an update of the agent's state: ``todo``, a list that replaces the plan;
    ``notes``, a list appended to the notes). The action tool has no ``run``: its call leaves the graph."""

    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[dict[str, Any]], str | tuple[str, dict[str, Any]]] | None = None

    def spec(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


def arguments(properties: dict[str, Any], *optional: str) -> dict[str, Any]:
    """A tool's (or a sub-agent's answer's) JSON schema: these properties, each required but ``optional``, no other."""
    return {"type": "object", "properties": properties, "required": [k for k in properties if k not in optional],
            "additionalProperties": False}


@dataclass
class Reply:
    """One model step: its tool calls (validated by the router), text, tokens and seconds, and the invalid calls
    the router passed to the next model (one it repaired, in the same model's second answer, is counted in
    llm_stats.json and events.jsonl only)."""

    calls: list[ToolCall]
    text: str = ""
    tokens: int = 0
    seconds: float = 0.0
    invalid: int = 0
    model: str = ""
    prompt_tokens: int = 0  # of ``tokens``: the prompt's (what the model's context must hold)
    cached_tokens: int = 0  # of ``prompt_tokens``: those the model read from its cache (prompt reuse)


class AgentModel(Protocol):
    """What plans: ``RouterModel`` (a route of the routing config) or a scripted model (``agentlab.testing``). A
    model may carry a ``profile`` (``core.llm.config.ModelProfile``: which guards it needs); one that does not is
    taken for a small model (``profile_of``)."""

    name: str

    def step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Reply: ...


def profile_of(model: AgentModel) -> ModelProfile:
    """The agent model's profile: its own, else ``small`` (scripted models stand in for the built-in one)."""
    profile = getattr(model, "profile", None)
    return profile if isinstance(profile, ModelProfile) else PROFILES["small"]


class RouterModel:
    """A route of the router as the agent's model. Its profile says whether a step may be text (``text_steps``:
    tool_choice ``auto``, else ``required``) and whether it makes one call (``one_call``: no parallel calls)."""

    def __init__(self, router: Router, route: str = "planner", max_tokens: int | None = None):
        self.router, self.route, self.max_tokens = router, route, max_tokens
        chain = router.route(route)[1]
        self.name = chain[0] if chain else route
        # the first model's: the one that answers unless it fails (a fallback of another kind gets the same guards)
        self.profile = router.config.profile(chain[0]) if chain else PROFILES["full"]

    def step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Reply:
        # the agent's tools are all its own: the relevance gate has nothing to keep out
        params = GenParams(tools=tools, tool_choice="auto" if self.profile.text_steps else "required",
                           parallel_tool_calls=False if self.profile.one_call else None, max_tokens=self.max_tokens,
                           extra={} if self.profile.one_call else {"tool_gate": False})
        start = time.perf_counter()
        result = self.router.generate_sync(messages, route=self.route, params=params)
        usage = result.completion.usage
        invalid = invalid_replies(result.attempts)  # the repaired ones too (a schema-invalid call asked again)
        return Reply(list(result.completion.tool_calls), result.completion.text,
                     (usage.prompt_tokens or 0) + (usage.completion_tokens or 0), time.perf_counter() - start,
                     invalid, result.model, usage.prompt_tokens or 0, usage.cached_tokens)


class Driver(Protocol):
    """What a command gives the runtime. ``tools()`` is asked before every step (schemas may change: the
    candidates' indices); ``actions`` names the action tools (the first is the default's); ``check_action(args, tool)``
    returns the action (a dict the command can run: the interrupt's payload) or an error the model is shown;
    ``default_action(why)`` is the action when the model gives none; ``reflect()`` is what the model is told after
    each action (computed in code)."""

    actions: tuple[str, ...]

    def brief(self) -> list[dict[str, Any]]: ...

    def tools(self) -> list[Tool]: ...

    def check_action(self, args: dict[str, Any], tool: str | None = None) -> tuple[dict[str, Any] | None, str]: ...

    def default_action(self, why: str) -> dict[str, Any]: ...

    def reflect(self) -> str: ...


def new_counts() -> dict[str, Any]:
    return {"steps": 0, "tool_calls": 0, "invalid_tool_calls": 0, "failed_calls": 0, "rejected_calls": 0,
            "idle_steps": 0, "defaulted": 0, "tokens": 0, "prompt_tokens": 0, "cached_tokens": 0,
            "largest_prompt_tokens": 0, "seconds": 0.0}


def window(messages: list[Any], head: int, keep: int) -> list[Any]:
    """The first ``head`` messages (the brief) and about the last ``keep``, starting after any tool result so none
    is shown without its call (OpenAI dicts or LangChain messages)."""
    if len(messages) <= head + keep:
        return list(messages)
    tail = messages[head:][-keep:]
    while tail and (tail[0].get("role") if isinstance(tail[0], dict) else tail[0].type) == "tool":
        tail = tail[1:]
    return [*messages[:head], *tail]


def summary(text: str, chars: int = SUMMARY_CHARS) -> str:
    """``text`` on one line, at most ``chars`` characters (a cut one ends in ``...``)."""
    line = " ".join(text.split())
    return line if len(line) <= chars else line[:chars - 3] + "..."
