"""LangChain / LangGraph over agentlab: a LangGraph ReAct agent on the in-process chat model (router over a scripted
model) and on ``ChatOpenAI`` pointed at the gateway (over the loopback upstream) each complete a tool round trip;
the chat model's streaming, async calls, usage metadata and tool_choice spellings."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

pytest.importorskip("langchain_core")
prebuilt = pytest.importorskip("langgraph.prebuilt")

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402

from agentlab.core.llm import LLMConfig, Router, ScriptedProvider  # noqa: E402
from agentlab.core.llm.providers.scripted import Calls  # noqa: E402
from agentlab.integrations.langchain import AgentlabChatModel  # noqa: E402
from agentlab.testing.server import Reply, ScriptedServer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:create_react_agent has been moved")  # langgraph 1.x
ASKED: list[str] = []


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    ASKED.append(city)
    return json.dumps({"city": city, "temp_c": 18})


def scripted_router(*replies: Any) -> tuple[Router, ScriptedProvider]:
    """A router whose route falls back from a model that is down to a scripted one answering ``replies``."""
    from agentlab.core.errors import LLMError

    good = ScriptedProvider("good").queue(*replies)
    down = ScriptedProvider("down", [LLMError("down", "unavailable")])
    config = LLMConfig.model_validate({
        "providers": {"good": {"kind": "scripted"}, "down": {"kind": "scripted"}},
        "models": {"good": {"provider": "good", "model": "good-1"}, "down": {"provider": "down", "model": "down-1"}},
        "routes": {"default": {"primary": ["down"], "fallback": ["good"]}}, "retries": 0})
    return Router(config, {"good": good, "down": down}, rng=random.Random(0)), good


def test_react_agent_on_the_in_process_model_completes_a_tool_round_trip() -> None:
    ASKED.clear()
    router, good = scripted_router(Calls([("get_weather", {"city": "Paris"})]), "It is 18 C in Paris.")
    with router:
        agent = prebuilt.create_react_agent(AgentlabChatModel(router=router), [get_weather])
        out = agent.invoke({"messages": [HumanMessage("Weather in Paris?")]})
        stats = router.stats()
    msgs = out["messages"]
    assert ASKED == ["Paris"]
    call = msgs[1]
    assert isinstance(call, AIMessage) and call.tool_calls[0]["name"] == "get_weather"
    assert call.tool_calls[0]["args"] == {"city": "Paris"} and call.response_metadata["fallbacks"] == 1
    assert call.usage_metadata is not None and call.usage_metadata["total_tokens"] > 0
    assert isinstance(msgs[2], ToolMessage) and json.loads(msgs[2].content)["temp_c"] == 18
    assert msgs[-1].content == "It is 18 C in Paris."
    # the model was offered the tool, then got its call and the tool's result back in OpenAI's shapes
    first, second = good.calls
    assert first.params.tools is not None and first.params.tools[0]["function"]["name"] == "get_weather"
    assert second.messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert second.messages[1]["content"] is None
    assert second.messages[2]["role"] == "tool" and second.messages[2]["tool_call_id"] == call.tool_calls[0]["id"]
    assert stats["good"]["successes"] == 2 and stats["good"]["invalid_tool_calls"] == 0


def test_async_agent_and_an_invalid_call_repaired_by_the_router() -> None:
    ASKED.clear()
    # the first call misses the required city: the router shows the model the error once, and it corrects itself
    router, good = scripted_router(Calls([("get_weather", {"town": "Oslo"})]),
                                   Calls([("get_weather", {"city": "Oslo"})]), "Cold in Oslo.")
    agent = prebuilt.create_react_agent(AgentlabChatModel(router=router), [get_weather])

    async def main() -> dict[str, Any]:
        try:
            return await agent.ainvoke({"messages": [HumanMessage("Weather in Oslo?")]})
        finally:
            await asyncio.to_thread(router.close)

    out = asyncio.run(main())
    assert ASKED == ["Oslo"] and out["messages"][-1].content == "Cold in Oslo."
    assert "'city' is a required property" in good.calls[1].messages[-1]["content"]


def test_streaming_usage_and_tool_choice() -> None:
    router, good = scripted_router("one two three", "four five", Calls([("get_weather", {"city": "Rome"})]))
    with router:
        model = AgentlabChatModel(router=router, temperature=0.2, max_tokens=16)
        chunks = list(model.stream("count"))
        assert "".join(str(c.content) for c in chunks) == "one two three" and len(chunks) >= 3
        total = chunks[0]
        for c in chunks[1:]:
            total = total + c
        assert total.usage_metadata is not None and total.usage_metadata["output_tokens"] == 3

        async def astream() -> list[Any]:
            return [c async for c in model.astream("count")]

        achunks = asyncio.run(astream())
        assert "".join(str(c.content) for c in achunks) == "four five"
        bound = model.bind_tools([get_weather], tool_choice="any", parallel_tool_calls=False)
        streamed = list(bound.stream("Weather in Rome?"))
        merged = streamed[0]
        for c in streamed[1:]:
            merged = merged + c
        assert merged.tool_calls == [{"name": "get_weather", "args": {"city": "Rome"}, "id": "call_1",
                                      "type": "tool_call"}]
    sent = good.calls[-1].params
    assert sent.tool_choice == "required" and sent.parallel_tool_calls is False
    assert sent.temperature == 0.2 and sent.max_tokens == 16
    with pytest.raises(ValueError, match="not auto, none, required"):
        model.bind_tools([get_weather], tool_choice="get_time")


def test_react_agent_on_chat_openai_through_the_gateway(srv: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    openai_chat = pytest.importorskip("langchain_openai")
    from agentlab.serve import Gateway, ServeConfig

    ASKED.clear()
    monkeypatch.setenv("UPSTREAM_KEY", "sk-upstream")
    srv.default("down", Reply(status=503))
    srv.script("good", [Reply(text="", tool_calls=[{"name": "get_weather", "arguments": {"city": "Lima"}}]),
                        Reply(text="Warm in Lima.")])
    llm = LLMConfig.model_validate({
        "providers": {"up": {"kind": "openai", "base_url": srv.base_url, "api_key_env": "UPSTREAM_KEY"}},
        "models": {m: {"provider": "up", "model": m} for m in ("good", "down")},
        "routes": {"main": {"primary": ["down"], "fallback": ["good"]}}, "timeout_s": 10, "retries": 0})
    gw = Gateway(ServeConfig(port=0), llm, None).start()
    try:
        chat = openai_chat.ChatOpenAI(model="main", base_url=gw.base_url, api_key="unused", max_retries=0)
        agent = prebuilt.create_react_agent(chat, [get_weather])
        out = agent.invoke({"messages": [HumanMessage("Weather in Lima?")]})
    finally:
        gw.stop()
    assert ASKED == ["Lima"] and out["messages"][-1].content == "Warm in Lima."
    assert out["messages"][1].tool_calls[0]["args"] == {"city": "Lima"}
    upstream = srv.requests[-1]
    assert upstream["tools"][0]["function"]["name"] == "get_weather"
    assert upstream["messages"][-1]["role"] == "tool" and "Lima" in upstream["messages"][-1]["content"]


def test_langchain_create_agent_runs_on_the_in_process_model() -> None:
    agents = pytest.importorskip("langchain.agents")
    ASKED.clear()
    router, _ = scripted_router(Calls([("get_weather", {"city": "Kyiv"})]), "Mild in Kyiv.")
    with router:
        out = agents.create_agent(AgentlabChatModel(router=router), [get_weather]).invoke(
            {"messages": [HumanMessage("Weather in Kyiv?")]})
    assert ASKED == ["Kyiv"] and out["messages"][-1].content == "Mild in Kyiv."
