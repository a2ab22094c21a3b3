"""The native Anthropic provider against a loopback server speaking Anthropic's Messages wire format: text, tools,
streaming (text and tool_use blocks), error mapping, the router's fallbacks over it, and the key kept out of errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from agentlab.core.errors import LLMError
from agentlab.core.llm import GenParams, LLMConfig, Router
from agentlab.core.llm.providers.anthropic import AnthropicProvider, to_anthropic
from agentlab.core.llm.types import Completion, StreamDelta
from agentlab.testing.anthropic_server import AnthropicServer
from agentlab.testing.server import Reply

KEY = "sk-ant-test-0123456789-SECRET"
TOOLS = [{"type": "function", "function": {"name": "weather", "description": "the weather in a city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture(scope="module")
def anthropic() -> Iterator[AnthropicServer]:
    server = AnthropicServer(keep_requests=50).start()
    yield server
    server.stop()


@pytest.fixture
def srv(anthropic: AnthropicServer) -> AnthropicServer:
    anthropic.reset()
    return anthropic


def provider(srv: AnthropicServer) -> AnthropicProvider:
    return AnthropicProvider("claude", srv.base_url.removesuffix("/v1"), KEY, api_key_env="ANTHROPIC_API_KEY")


async def collect(p: AnthropicProvider, *args: Any) -> tuple[list[str], Completion]:
    pieces, final = [], None
    async for item in p.stream(*args):
        if isinstance(item, StreamDelta):
            pieces.append(item.text)
        else:
            final = item
    assert final is not None
    await p.aclose()
    return pieces, final


def test_messages_map_to_anthropic_turns() -> None:
    system, turns = to_anthropic([
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
            {"id": "toolu_2", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Lyon"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "rain"},
        {"role": "user", "content": [{"type": "text", "text": "and so?"}]},
    ])
    assert system == "be brief"
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]  # tool results and the next user text merge
    assert turns[1]["content"][0] == {"type": "tool_use", "id": "toolu_1", "name": "weather",
                                      "input": {"city": "Paris"}}
    assert turns[2]["content"][:2] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "rain"}]}]
    assert turns[2]["content"][2] == {"type": "text", "text": "and so?"}


def test_generate_sends_the_wire_format_and_reads_text_and_usage(srv: AnthropicServer) -> None:
    srv.default("claude-x", Reply(text="four words of answer"))
    p = provider(srv)

    async def go() -> Completion:
        try:
            return await p.generate("claude-x", [{"role": "system", "content": "be brief"},
                                                 {"role": "user", "content": "two plus two"}],
                                    GenParams(temperature=0.2, stop=["\n"]), 10)
        finally:
            await p.aclose()

    reply = asyncio.run(go())
    assert (reply.text, reply.finish_reason) == ("four words of answer", "stop")
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (5, 4)
    sent = srv.requests[-1]
    assert sent["system"] == "be brief" and sent["max_tokens"] == 1024 and sent["stop_sequences"] == ["\n"]
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "two plus two"}]}]
    assert sent["_headers"]["x-api-key"] == KEY


def test_tools_and_tool_choice_map_both_ways(srv: AnthropicServer) -> None:
    srv.default("claude-x", Reply(text="let me check", tool_calls=[{"name": "weather", "arguments": {"city": "Oslo"},
                                                                   "id": "toolu_9"}]))
    p = provider(srv)
    params = GenParams(tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_tokens=50)
    reply = asyncio.run(p.generate("claude-x", [{"role": "user", "content": "weather?"}], params, 10))
    assert reply.finish_reason == "tool_calls" and reply.text == "let me check"
    assert [(c.id, c.name, c.args) for c in reply.tool_calls] == [("toolu_9", "weather", {"city": "Oslo"})]
    sent = srv.requests[-1]
    assert sent["tools"] == [{"name": "weather", "description": "the weather in a city",
                              "input_schema": TOOLS[0]["function"]["parameters"]}]
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert sent["max_tokens"] == 50
    # streamed: text deltas as they come, the call assembled from input_json_delta pieces
    pieces, final = asyncio.run(collect(provider(srv), "claude-x", [{"role": "user", "content": "weather?"}],
                                        GenParams(tools=TOOLS), 10))
    assert "".join(pieces) == "let me check" and final.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in final.tool_calls] == [("weather", {"city": "Oslo"})]
    assert srv.requests[-1]["stream"] is True


def test_stream_text_usage_and_a_cut_stream(srv: AnthropicServer) -> None:
    srv.default("claude-x", Reply(text="one two three four", finish_reason="length"))
    pieces, final = asyncio.run(collect(provider(srv), "claude-x", [{"role": "user", "content": "count"}],
                                        GenParams(), 10))
    assert pieces == ["one ", "two ", "three ", "four"] and final.text == "one two three four"
    assert (final.usage.prompt_tokens, final.usage.completion_tokens, final.finish_reason) == (1, 4, "length")
    assert final.ttft_s is not None
    srv.default("claude-cut", Reply(text="one two three four", cut_after_chunks=2))
    with pytest.raises(LLMError) as err:
        asyncio.run(collect(provider(srv), "claude-cut", [{"role": "user", "content": "count"}], GenParams(), 10))
    assert err.value.kind == "stream_cut"


@pytest.mark.parametrize(("status", "kind"), [(429, "rate_limited"), (529, "server_error"), (401, "auth"),
                                              (404, "not_found"), (400, "bad_request")])
def test_errors_map_to_kinds_and_never_show_the_key(srv: AnthropicServer, status: int, kind: str) -> None:
    srv.default("claude-x", Reply(status=status, text=f"it failed, key {KEY}", headers={"retry-after": "3"}))
    p = provider(srv)
    with pytest.raises(LLMError) as err:
        asyncio.run(p.generate("claude-x", [{"role": "user", "content": "hi"}], GenParams(), 10))
    assert err.value.kind == kind and f"HTTP {status}" in err.value.message
    assert KEY not in err.value.message and KEY not in (err.value.hint or "")
    if status == 429:
        assert err.value.retry_after == 3


def test_router_falls_back_from_an_overloaded_claude(srv: AnthropicServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    srv.default("claude-busy", Reply(status=529))
    srv.default("claude-ok", Reply(text="fine"))
    base = srv.base_url.removesuffix("/v1")
    config = LLMConfig.model_validate({
        "providers": {"claude": {"kind": "anthropic", "base_url": base}},
        "models": {"busy": {"provider": "claude", "model": "claude-busy"},
                   "ok": {"provider": "claude", "model": "claude-ok"}},
        "routes": {"default": {"primary": ["busy"], "fallback": ["ok"]}}, "retries": 0})
    events: list[dict[str, Any]] = []
    router = Router.from_config(config, on_event=lambda kind, **f: events.append(f))
    result = router.generate_sync([{"role": "user", "content": "hi"}], stream=True)
    router.close()
    assert result.model == "ok" and result.text == "fine" and result.fallbacks == 1
    assert [e["outcome"] for e in events] == ["server_error", "ok"]
    assert KEY in router.secrets and KEY not in json.dumps(events)


def test_the_gateway_serves_a_claude_model_to_the_openai_sdk(srv: AnthropicServer,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import openai

    from agentlab.serve import Gateway, ServeConfig

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    srv.default("claude-x", Reply(text="hello from claude"))
    llm = LLMConfig.model_validate({
        "providers": {"claude": {"kind": "anthropic", "base_url": srv.base_url.removesuffix("/v1")}},
        "models": {"sonnet": {"provider": "claude", "model": "claude-x"}}})
    with Gateway(ServeConfig(port=0), llm) as gw:
        check_gateway(gw, openai)


def check_gateway(gw: Any, openai: Any) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "hello from claude" and reply.model == "sonnet"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (1, 3)
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "hi"}], stream=True) if c.choices]
    assert "".join(pieces) == "hello from claude" and len([p for p in pieces if p]) == 3
