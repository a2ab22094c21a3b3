"""Sub-agents: an agent's tool that is itself a small agent, with its own system prompt and graph (LangGraph:
ask -> check -> answer, one repair), answering one question under a schema from facts the caller computed in code.
compress's agent has a ``recovery`` sub-agent (which recovery, how many steps, given the measured damage) and an
``evaluation`` sub-agent (which task and how many questions settle a question about an accuracy).

The answer is the sub-agent's one tool call (``answer``, whose JSON schema is the answer's); ``check(answer)`` may
refuse it with a reason the sub-agent is shown once; a sub-agent that gives no valid answer returns None and the
reason, and the calling agent is told so (it never waits on it)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict

from agentlab.core.agent.runtime import AgentModel, Tool
from agentlab.core.errors import LLMError
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
        except LLMError as exc:
            return {"answer": None, "problem": f"no answer: {exc.kind}", "tries": 2}
        call = next((c for c in reply.calls if c.name == "answer"), None)
        answer = call.args if call is not None else None
        messages.append({"role": "assistant", "content": None,
                         "tool_calls": [call.to_openai()] if call is not None else []})
        return {"messages": messages, "answer": answer, "tries": state.get("tries", 0) + 1,
                "tokens": state.get("tokens", 0) + reply.tokens}

    def _check(self, state: _State) -> _State:
        answer = state.get("answer")
        problem = "no answer" if answer is None else (_invalid(answer, self.schema) or self.check(answer))
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


def _invalid(answer: dict[str, Any], schema: dict[str, Any]) -> str | None:
    """Why ``answer`` breaks ``schema`` (the router checks a model's calls; this checks any model's, scripted too)."""
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(answer))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message
