"""``ToolSubAgent``: a sub-agent with its own tools on LangChain's create_agent, driven by a scripted model: its
tools run in code, a bad call is an error it reads, the final tool's accepted answer ends its graph, and a sub-agent
that never answers stops at its call limit with the reason."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain")

from agentlab.core.agent.runtime import Tool  # noqa: E402
from agentlab.core.agent.subagent import ToolSubAgent  # noqa: E402
from agentlab.core.errors import AgentlabError  # noqa: E402
from agentlab.testing.agents import ScriptAgent  # noqa: E402


def _tools() -> list[Tool]:
    def pick(args: dict) -> str:
        if args["n"] == 3:
            raise AgentlabError("3 was measured already")
        return f"picked {args['n']}"

    schema = {"type": "object", "properties": {"n": {"type": "integer", "enum": [1, 2, 3]}}, "required": ["n"],
              "additionalProperties": False}
    return [Tool("look", "a figure", {"type": "object", "properties": {}}, lambda args: "figure 0.42"),
            Tool("pick", "the answer", schema, pick)]


def test_the_sub_agent_calls_its_tools_until_its_answer_is_accepted() -> None:
    model = ScriptAgent([("look", {}), ("pick", {"n": 9}), ("pick", {"n": 3}), ("pick", {"n": 2}),
                         ("look", {})])
    events: list[tuple[str, dict]] = []
    run = ToolSubAgent("s", "You are s.", _tools(), "pick", model, max_calls=6,
                       on_event=lambda kind, **f: events.append((kind, f))).ask("the facts")
    assert run.answer == "picked 2" and run.calls == ["look", "pick", "pick", "pick"]
    assert model.steps == 4  # the accepted answer ended the graph: no fifth call
    assert model.seen[0][0] == {"role": "system", "content": "You are s."}
    tool_answers = [m["content"] for m in model.seen[3] if m["role"] == "tool"]
    assert tool_answers[0] == "figure 0.42"
    assert tool_answers[1].startswith("error: n: 9 is not one of [1, 2, 3]")
    assert tool_answers[2] == "error: 3 was measured already"
    assert events[0][0] == "agent_subagent" and events[0][1]["answer"] == "picked 2"


def test_a_sub_agent_without_an_answer_stops_at_its_call_limit() -> None:
    model = ScriptAgent([("look", {})])
    run = ToolSubAgent("s", "You are s.", _tools(), "pick", model, max_calls=3).ask("the facts")
    assert run.answer is None and model.steps == 3 and "no accepted pick in 3 model calls" in run.problem


def test_a_sub_agent_whose_model_fails_says_why() -> None:
    """The reflection of a compress search once asked a closed router: 'no answer' alone hid that."""
    from agentlab.core.agent.runtime import arguments
    from agentlab.core.agent.subagent import SubAgent
    from agentlab.core.errors import LLMError

    class Closed(ScriptAgent):
        def step(self, messages: list, tools: list) -> object:  # type: ignore[override]
            raise LLMError("the router is closed", "unavailable")

    agent = SubAgent("reflection", "write a note", arguments({"note": {"type": "string"}}), Closed([]))
    assert agent.ask("the facts") == (None, "no answer: unavailable: the router is closed")
    answered = SubAgent("reflection", "write a note", arguments({"note": {"type": "string"}}),
                        ScriptAgent([("answer", {"note": "ok"})]))
    assert answered.ask("the facts") == ({"note": "ok"}, "")
    refused_then_answered = SubAgent("reflection", "write a note", arguments({"note": {"type": "string"}}),
                                     ScriptAgent([("answer", {"note": 5}), ("answer", {"note": "ok"})]))
    assert refused_then_answered.ask("the facts") == ({"note": "ok"}, "")  # the refusal does not stick
