"""Sub-agents: an agent's tool that is itself a small agent, with its own system prompt and graph.

- ``SubAgent``: answers one question under a schema from facts the caller computed in code (LangGraph: ask -> check
  -> answer, one repair). compress's ``evaluation`` sub-agent (which task and how many questions settle a question
  about an accuracy) is one.
- ``ToolSubAgent``: a sub-agent with tools of its own, on LangChain's ``create_agent`` (the same harness as the main
  agent, a sub-graph of its own with its own messages): it calls its tools until its ``final`` tool accepts an
  answer, or ``max_calls`` model calls have run. compress's ``lora`` and ``distill`` sub-agents are these (reached
  through the main agent's ``task`` tool): configure from the space, estimate from the measurements, compare.

The answer is the sub-agent's one tool call (``answer``, whose JSON schema is the answer's); ``check(answer)`` may
refuse it with a reason the sub-agent is shown once; a sub-agent that gives no valid answer returns None and the
reason, and the calling agent is told so (it never waits on it)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

from agentlab.core.agent.runtime import RESULT_CHARS, AgentModel, Tool
from agentlab.core.errors import AgentlabError, LLMError
from agentlab.core.tracing import span


class _State(TypedDict, total=False):
    messages: list[dict[str, Any]]
    answer: dict[str, Any] | None
    problem: str
    tries: int
    tokens: int


@dataclass
class SubAgent:
    """``name`` (the tool the parent sees), ``system`` (its own prompt), ``schema`` (its answer's JSON schema),
    ``check`` (None: the answer stands; else why not)."""

    name: str
    system: str
    schema: dict[str, Any]
    model: AgentModel
    check: Callable[[dict[str, Any]], str | None] = lambda answer: None
    on_event: Callable[..., None] | None = None

    def _graph(self) -> Any:
        from langgraph.graph import END, START, StateGraph

        graph = StateGraph(_State)
        graph.add_node("ask", self._ask)
        graph.add_node("check", self._check)
        graph.add_edge(START, "ask")
        graph.add_edge("ask", "check")
        graph.add_conditional_edges("check", lambda s: "ask" if s.get("problem") and s.get("tries", 0) < 2 else END,
                                    ["ask", END])
        return graph.compile()

    def _ask(self, state: _State) -> _State:
        tool = Tool("answer", f"the {self.name} sub-agent's answer", self.schema).spec()
        messages = list(state["messages"])
        try:
            reply = self.model.step(list(messages), [tool])
        except LLMError as exc:  # kept by the check below: why the model gave nothing is what the user needs
            return {"answer": None, "problem": f"no answer: {exc.kind}: {exc.message}", "tries": 2}
        call = next((c for c in reply.calls if c.name == "answer"), None)
        answer = call.args if call is not None else None
        messages.append({"role": "assistant", "content": None,
                         "tool_calls": [call.to_openai()] if call is not None else []})
        return {"messages": messages, "answer": answer, "tries": state.get("tries", 0) + 1,
                "tokens": state.get("tokens", 0) + reply.tokens, "problem": ""}

    def _check(self, state: _State) -> _State:
        answer = state.get("answer")
        problem = state.get("problem") or ("no answer" if answer is None else (_invalid(answer, self.schema)
                                                                              or self.check(answer)))
        if not problem:
            return {"problem": ""}
        messages = list(state["messages"])
        last = messages[-1].get("tool_calls") or []
        if last:
            messages.append({"role": "tool", "tool_call_id": last[0]["id"], "content": f"not accepted: {problem}"})
        return {"messages": messages, "problem": problem, "answer": None}

    def ask(self, facts: str) -> tuple[dict[str, Any] | None, str]:
        """(the answer, "") or (None, why there is none)."""
        start = time.perf_counter()
        with span(f"agent.subagent.{self.name}"):
            out = self._graph().invoke({"messages": [{"role": "system", "content": self.system},
                                                     {"role": "user", "content": facts}], "tries": 0, "tokens": 0})
        answer, problem = out.get("answer"), out.get("problem", "")
        if self.on_event is not None:
            self.on_event("agent_subagent", name=self.name, answer=json.dumps(answer)[:300] if answer else None,
                          problem=problem[:200], tokens=out.get("tokens", 0),
                          seconds=round(time.perf_counter() - start, 3))
        return (answer, "") if answer is not None and not problem else (None, problem or "no answer")


@dataclass
class SubAgentRun:
    """What a ``ToolSubAgent`` gave: its answer (the ``final`` tool's accepted result; None: none), why there is none,
    and its counters."""

    answer: str | None
    problem: str = ""
    calls: list[str] = field(default_factory=list)  # the tools it called, in order
    tokens: int = 0
    invalid_tool_calls: int = 0
    seconds: float = 0.0


@dataclass
class ToolSubAgent:
    """A sub-agent with its own tools (``Tool``: a JSON schema, a function computing the result in code; an
    ``AgentlabError`` it raises is the error the sub-agent reads). ``final`` names the tool whose result, once
    accepted (no error), is the answer and ends the sub-graph; ``max_calls``: model calls at most (LangChain's
    ``ModelCallLimitMiddleware``)."""

    name: str
    system: str
    tools: list[Tool]
    final: str
    model: AgentModel
    max_calls: int = 4
    on_event: Callable[..., None] | None = None

    def _graph(self) -> Any:
        from langchain.agents import create_agent
        from langchain.agents.middleware import AgentMiddleware, AgentState, ModelCallLimitMiddleware, hook_config
        from langchain.tools import ToolRuntime
        from langchain_core.messages import ToolMessage
        from langchain_core.tools import StructuredTool
        from langgraph.types import Command

        from agentlab.core.agent.chat import AgentlabChatModel

        class State(AgentState):
            answer: NotRequired[str | None]

        class Done(AgentMiddleware):
            """Ends the sub-graph once the final tool accepted an answer (graph structure, not message text)."""

            state_schema = State

            @hook_config(can_jump_to=["end"])
            def before_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
                return {"jump_to": "end"} if state.get("answer") else None

        def wrap(tool: Tool) -> StructuredTool:
            def call(runtime: ToolRuntime, **args: Any) -> Any:
                problem = _invalid(args, tool.parameters)
                text: str
                if problem is None:
                    try:
                        with span(f"agent.subagent.{self.name}.{tool.name}"):
                            out = tool.run(args) if tool.run is not None else ""
                        text = out if isinstance(out, str) else out[0]
                    except AgentlabError as exc:
                        problem = exc.message
                if problem is not None:
                    return ToolMessage(f"error: {problem}"[:RESULT_CHARS], tool_call_id=runtime.tool_call_id,
                                       status="error")
                message = ToolMessage(text[:RESULT_CHARS], tool_call_id=runtime.tool_call_id)
                if tool.name == self.final:
                    return Command(update={"answer": text, "messages": [message]})
                return message

            # the annotation LangChain reads to inject the runtime (a string under postponed annotations, which it
            # would resolve in this module's globals, where ToolRuntime is not: it is imported here, lazily)
            call.__annotations__["runtime"] = ToolRuntime
            return StructuredTool(name=tool.name, description=tool.description, args_schema=tool.parameters,
                                  func=call)

        middleware: list[Any] = [Done(), ModelCallLimitMiddleware(run_limit=self.max_calls, exit_behavior="end")]
        return create_agent(AgentlabChatModel(agent=self.model), tools=[wrap(t) for t in self.tools],
                            system_prompt=self.system, middleware=middleware)

    def ask(self, facts: str) -> SubAgentRun:
        """Run the sub-agent on ``facts`` (its first user message): its answer, or None and why."""
        from langchain_core.messages import AIMessage

        start = time.perf_counter()
        with span(f"agent.subagent.{self.name}"):
            try:
                out = self._graph().invoke({"messages": [{"role": "user", "content": facts}]},
                                           {"recursion_limit": 4 * self.max_calls + 10})
                problem = ""
            except LLMError as exc:
                out, problem = {}, f"no answer: {exc.kind}: {exc.message}"
        replies = [m for m in out.get("messages", []) if isinstance(m, AIMessage)]
        result = SubAgentRun(
            out.get("answer"), problem, [c["name"] for m in replies for c in m.tool_calls],
            sum(m.usage_metadata["total_tokens"] if m.usage_metadata else 0 for m in replies),
            sum(int(m.response_metadata.get("invalid_tool_calls", 0)) for m in replies),
            round(time.perf_counter() - start, 3))
        if result.answer is None and not result.problem:
            result.problem = f"no accepted {self.final} in {self.max_calls} model calls"
        if self.on_event is not None:
            self.on_event("agent_subagent", name=self.name, answer=(result.answer or "")[:300] or None,
                          problem=result.problem[:200], calls=result.calls, tokens=result.tokens,
                          invalid=result.invalid_tool_calls, seconds=result.seconds)
        return result


def _invalid(answer: dict[str, Any], schema: dict[str, Any]) -> str | None:
    """Why ``answer`` breaks ``schema`` (the router checks a model's calls; this checks any model's, scripted too)."""
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(answer))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message
