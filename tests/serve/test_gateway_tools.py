"""Tool calling through the gateway with the real `openai` SDK: calls from an HTTP upstream (plain and streamed,
parallel calls interleaved by index) through a fallback chain, a full tool round trip, validation with one repair,
the wire format (finish_reason tool_calls, content null) and the tool-call metrics."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from serve_helpers import UPSTREAM_KEY, upstream_llm

from agentlab.testing.server import Reply, ScriptedServer

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}},
                                       "required": ["zone"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris and the time in Tokyo?"}]
ROUTES = {"main": {"primary": ["down"], "fallback": ["good"]}, "checked": {"primary": ["bad"], "fallback": ["good"]}}


@pytest.fixture(autouse=True)
def _upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", UPSTREAM_KEY)


@pytest.fixture
def gw(srv: ScriptedServer, gateway):  # noqa: ANN001, ANN201
    srv.default("down", Reply(status=503))
    return gateway(upstream_llm(srv.base_url, ["good", "down", "bad"], ROUTES))


def client(gw) -> openai.OpenAI:  # noqa: ANN001
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)


def two_calls(**kw: object) -> Reply:
    return Reply(text="", tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}},
                                      {"name": "get_time", "arguments": {"zone": "Asia/Tokyo"}}], **kw)


def test_plain_tool_calls_through_a_fallback_chain_and_a_round_trip(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    srv.script("good", [two_calls(), Reply(text="It is 18 C in Paris and 09:00 in Tokyo.")])
    reply = client(gw).chat.completions.create(model="main", messages=ASK, tools=[WEATHER, TIME],
                                               tool_choice="auto", parallel_tool_calls=True)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None and reply.model == "main"
    calls = choice.message.tool_calls
    assert [(c.id, c.type, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("call_1", "function", "get_weather", {"city": "Paris", "unit": "c"}),
        ("call_2", "function", "get_time", {"zone": "Asia/Tokyo"})]
    assert reply.model_extra["agentlab"]["fallbacks"] == 1
    sent = srv.requests[-1]  # the upstream got the tools as the client sent them
    assert sent["tools"] == [WEATHER, TIME] and sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is True

    # the round trip: the assistant's calls and the tool results go back through the route
    history = [*ASK, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 18}'},
               {"role": "tool", "tool_call_id": "call_2", "content": '"09:00"'}]
    final = client(gw).chat.completions.create(model="main", messages=history, tools=[WEATHER, TIME])
    assert final.choices[0].message.content == "It is 18 C in Paris and 09:00 in Tokyo."
    assert final.choices[0].finish_reason == "stop"
    upstream = srv.requests[-1]["messages"]
    assert upstream[1]["tool_calls"][1]["function"] == {"name": "get_time", "arguments": '{"zone": "Asia/Tokyo"}'}
    assert upstream[2] == {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 18}'}


def test_streamed_tool_calls_are_assembled_and_sent_in_openai_format(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    # upstream: arguments in 3-character pieces, the two calls interleaved by index
    srv.script("good", [two_calls(args_chunk_chars=3, interleave_calls=True)])
    chunks = list(client(gw).chat.completions.create(model="main", messages=ASK, tools=[WEATHER, TIME],
                                                     stream=True, stream_options={"include_usage": True}))
    pieces = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    by_index: dict[int, dict[str, str]] = {}
    for tc in pieces:
        call = by_index.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
        call["id"] += tc.id or ""
        call["name"] += (tc.function.name or "") if tc.function else ""
        call["arguments"] += (tc.function.arguments or "") if tc.function else ""
    assert by_index == {0: {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'},
                        1: {"id": "call_2", "name": "get_time", "arguments": '{"zone": "Asia/Tokyo"}'}}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"] and chunks[-1].usage is not None
    assert srv.requests[-1]["stream"] is True  # the upstream streamed; the router assembled its pieces


def test_invalid_call_is_repaired_once_then_the_chain_moves_on(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    srv.script("bad", [Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": 7}}]),
                       Reply(tool_calls=[{"name": "get_weather", "arguments": '{"city": "Paris"'}])])
    srv.script("good", [Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}])])
    reply = client(gw).chat.completions.create(model="checked", messages=ASK, tools=[WEATHER], tool_choice="required")
    assert reply.model == "checked" and reply.model_extra["agentlab"]["model"] == "good"
    assert reply.choices[0].message.tool_calls[0].function.arguments == '{"city": "Paris"}'
    outcomes = [(a["model"], a["outcome"]) for a in reply.model_extra["agentlab"]["attempts"]]
    assert outcomes == [("bad", "ok"), ("bad", "ok"), ("bad", "invalid_tool_call"), ("good", "ok")]
    repair = [r for r in srv.requests if r["model"] == "bad"][1]["messages"]
    # the repair shows the model its call and the validation error, as a tool result answering that call
    assert repair[-2]["tool_calls"][0]["function"]["arguments"] == '{"city": 7}'
    assert repair[-1]["role"] == "tool" and repair[-1]["tool_call_id"] == "call_1"
    assert "city: 7 is not of type 'string'" in repair[-1]["content"]
    metrics = httpx.get(gw.base_url.removesuffix("/v1") + "/metrics").text
    assert 'agentlab_invalid_tool_calls_total{model="bad"} 2.0' in metrics
    assert 'agentlab_tool_calls_total{model="good",route="checked"} 1.0' in metrics
    assert gw.router.stats()["bad"]["invalid_tool_calls"] == 2


def test_tool_requests_are_checked_before_any_upstream_call(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    url = gw.base_url + "/chat/completions"
    cases = [
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice names 'nope'"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                                  "required": 3}}}]},
         "tools[0].function.parameters is not a valid JSON schema"),
        ({"tool_choice": "required"}, "'tool_choice' needs 'tools'"),
        ({"tools": [WEATHER, WEATHER]}, "given twice"),
        ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "'parallel_tool_calls' must be true or false"),
    ]
    for extra, says in cases:
        response = httpx.post(url, json={"model": "good", "messages": ASK, **extra})
        assert response.status_code == 400 and says in response.json()["error"]["message"], response.text
    assert srv.requests == []


def test_a_local_llama_cpp_model_answers_tool_calls_through_the_gateway(gateway, tiny_model) -> None:  # noqa: ANN001
    # The tiny model's weights are random: the grammar alone makes its calls valid (plain and streamed).
    mode = {"type": "function", "function": {"name": "set_mode", "parameters": {
        "type": "object", "properties": {"mode": {"type": "string", "enum": ["eco", "fast"]}},
        "required": ["mode"], "additionalProperties": False}}}
    gw = gateway({"providers": {"local": {"kind": "llama_cpp", "n_ctx": 4096}},
                  "models": {"tiny": {"provider": "local", "model": str(tiny_model["gguf"]),
                                      "params": {"max_tokens": 120, "temperature": 0}}},
                  "routes": {}, "timeout_s": 120, "retries": 0})
    ask = [{"role": "user", "content": "Go fast."}]
    reply = client(gw).chat.completions.create(model="tiny", messages=ask, tools=[mode, WEATHER],
                                               tool_choice={"type": "function", "function": {"name": "set_mode"}},
                                               parallel_tool_calls=False)
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls" and call.function.name == "set_mode"
    assert json.loads(call.function.arguments)["mode"] in ("eco", "fast")
    chunks = list(client(gw).chat.completions.create(model="tiny", messages=ask, tools=[mode], stream=True,
                                                     tool_choice="required", parallel_tool_calls=False))
    args = "".join(tc.function.arguments or "" for c in chunks if c.choices
                   for tc in c.choices[0].delta.tool_calls or [])
    assert json.loads(args)["mode"] in ("eco", "fast")


def test_a_call_cut_at_max_tokens_is_finish_reason_length_without_the_models_markup(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    """A local model writes its calls as text; cut by max_tokens mid-call, the block does not parse and its raw
    `<tool_call>[{"name": "` was sent as the content (chat) or the output_text (Responses)."""
    cut = Reply(text='Let me look. <tool_call>[{"name": "', finish_reason="length")
    srv.default("good", cut)
    c = client(gw)
    reply = c.chat.completions.create(model="good", messages=ASK, tools=[WEATHER], max_tokens=10)
    choice = reply.choices[0]
    assert (choice.finish_reason, choice.message.content, choice.message.tool_calls) == ("length", "Let me look.", None)
    chunks = list(c.chat.completions.create(model="good", messages=ASK, tools=[WEATHER], max_tokens=10, stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "Let me look."
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == ["length"]
    flat = {"type": "function", **WEATHER["function"]}
    response = c.responses.create(model="good", input=ASK[0]["content"], tools=[flat], max_output_tokens=24)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "Let me look." and [i.type for i in response.output] == ["message"]
    events = list(c.responses.create(model="good", input=ASK[0]["content"], tools=[flat], max_output_tokens=24,
                                     stream=True))
    assert events[-1].type == "response.incomplete" and events[-1].response.output_text == "Let me look."
    srv.default("good", Reply(text='<tool_call>[{"name": "get_weather", "arguments": {"ci', finish_reason="length"))
    reply = c.chat.completions.create(model="good", messages=ASK, tools=[WEATHER], max_tokens=10)
    assert (reply.choices[0].finish_reason, reply.choices[0].message.content) == ("length", "")
    requests = len(srv.requests)
    # a call tool_choice requires, cut: the request's limit, a 400 (a 502 made the openai SDK ask twice more)
    retrying = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=2)
    with pytest.raises(openai.BadRequestError) as refused:
        retrying.chat.completions.create(model="good", messages=ASK, tools=[WEATHER], max_tokens=10,
                                         tool_choice="required")
    assert refused.value.code == "max_tokens" and len(srv.requests) == requests + 1
    assert "every model failed (good: max_tokens); last: the reply was cut" in str(refused.value)  # not `replied`
    # without tools the text is the model's own, whatever it holds
    srv.default("good", cut)
    assert c.chat.completions.create(model="good", messages=ASK, max_tokens=10).choices[0].message.content == cut.text


def test_a_local_model_cut_mid_call_sends_no_markup(gateway, tiny_model) -> None:  # noqa: ANN001
    # Under tool_choice auto the grammar starts the tiny model's answer with SmolLM2's `<tool_call>[`: a few tokens
    # cut it inside the tag ("<tool_c") or after it, and the text that did not parse was sent as the content.
    gw = gateway({"providers": {"local": {"kind": "llama_cpp", "n_ctx": 4096}},
                  "models": {"tiny": {"provider": "local", "model": str(tiny_model["gguf"]),
                                      "params": {"temperature": 0}}},
                  "routes": {}, "timeout_s": 120, "retries": 0})
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    for max_tokens in (4, 10):
        reply = client(gw).chat.completions.create(model="tiny", messages=ask, tools=[WEATHER], max_tokens=max_tokens)
        choice = reply.choices[0]
        assert (choice.finish_reason, choice.message.content, choice.message.tool_calls) == ("length", "", None)


def test_history_arguments_that_are_not_json_are_taken_as_openai_takes_them(gw, srv: ScriptedServer,  # noqa: ANN001
                                                                            gateway, tiny_model) -> None:  # noqa: ANN001
    """`arguments` is a string on OpenAI's API, whatever it holds (a model's badly written call stays in the
    history): passed on as it is to an upstream, shown as a string by a local model's chat template, never a 500."""
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "not json"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "error: the arguments are not JSON"}]
    srv.default("good", Reply(text="Sorry."))
    reply = client(gw).chat.completions.create(model="good", messages=history, tools=[WEATHER])
    assert reply.choices[0].message.content == "Sorry."
    assert srv.requests[-1]["messages"][1]["tool_calls"][0]["function"]["arguments"] == "not json"
    local = gateway({"providers": {"local": {"kind": "llama_cpp", "n_ctx": 4096}},
                     "models": {"tiny": {"provider": "local", "model": str(tiny_model["gguf"]),
                                         "params": {"temperature": 0}}},
                     "routes": {}, "timeout_s": 120, "retries": 0})
    for tools in ([WEATHER], None):
        answer = httpx.post(local.base_url + "/chat/completions", json={
            "model": "tiny", "messages": history, "max_tokens": 4, **({"tools": tools} if tools else {})})
        assert answer.status_code == 200, answer.text
    # an object is not a string: OpenAI's API refuses it too
    refused = httpx.post(gw.base_url + "/chat/completions", json={"model": "good", "messages": [
        *ASK, {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {}}}]}]})
    assert refused.status_code == 400
    assert "function.arguments must be a string (the arguments as JSON text), got {}" in refused.text


@pytest.mark.parametrize("text, sent", [
    ('Let me look. <tool_call>[{"name": "get_weather", "argu', "Let me look."),  # SmolLM2's list in a block
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par', ""),  # Qwen's block
    ("<tool_c", ""),  # cut inside the tag
    ('```json\n{\n  "name": "get', ""),  # Qwen2.5-Coder's fenced call (its answer at max_tokens 10)
    ("Sure.\n```json\n{", "Sure."),
    ('[{"name": "get_time", "arguments": {}}, {"na', ""),
    ('{"na', ""),
    # text that starts no call stays as it was cut
    ("The weather in Paris is", "The weather in Paris is"), ('x = {"y', 'x = {"y'), ("set {", "set {"),
    ('{"city": "Par', '{"city": "Par'), ('It is {"name": "x"} here', 'It is {"name": "x"} here'),
    # JSON of the answer, no tool's name in it: the user's data, not a call
    ('Use {"name": value} in your config file, then restart', 'Use {"name": value} in your config file, then restart'),
    ('Here are the users:\n[{"name": "Alice", "age": 3}, {"name": "Bo',
     'Here are the users:\n[{"name": "Alice", "age": 3}, {"name": "Bo'),
    ('Sure: {"name": "get_wea', "Sure:"),  # cut inside a tool's name
    ('Sure: {"name"', "Sure:"), ('Sure: {"name":', "Sure:"), ('Sure: {"name": ', "Sure:"),  # before the name
    ('Sure: {"age":', 'Sure: {"age":'),
])
def test_the_call_a_cut_answer_was_writing_is_dropped(text: str, sent: str) -> None:
    from agentlab.serve.protocol import before_cut_call

    assert before_cut_call(text, {"get_weather", "get_time"}) == sent
