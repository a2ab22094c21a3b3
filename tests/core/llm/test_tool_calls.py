"""Tool calls in the router: validation against the tools' JSON schemas, one repair, the invalid_tool_call kind and
its stats and events, every strategy (fallback chain, fastest, best_of_n), the HTTP provider's stream delta assembly
against the loopback server, and the local text format (SmolLM2's ``<tool_call>[...]</tool_call>``)."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from agentlab.core.errors import AllModelsFailed, LLMError
from agentlab.core.llm import GenParams, LLMConfig, Router, ScriptedProvider
from agentlab.core.llm.providers.openai import OpenAIProvider
from agentlab.core.llm.providers.scripted import Calls
from agentlab.core.llm.tools import (
    ToolCallAssembler,
    call_problem,
    calls_schema,
    check_tools,
    parse_tagged,
    render_tool_messages,
)
from agentlab.core.llm.types import Completion, ToolCall, Usage
from agentlab.testing.server import Reply, ScriptedServer

T = TypeVar("T")
ASK = [{"role": "user", "content": "Weather in Paris?"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city"], "additionalProperties": False}}}
NEWS = {"type": "function", "function": {"name": "get_news", "parameters": {
    "type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]}}}
TOOLS = GenParams(tools=[WEATHER, NEWS], tool_choice="required")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def make_router(providers: dict[str, ScriptedProvider], route: dict[str, Any] | None = None,
                events: list[tuple[str, dict[str, Any]]] | None = None, **settings: Any) -> Router:
    config = LLMConfig.model_validate({
        "providers": {name: {"kind": "scripted"} for name in providers},
        "models": {name: {"provider": name, "model": name} for name in providers},
        "routes": {"default": route or {"primary": list(providers)}}, "retries": 0, **settings})
    on_event = (lambda kind, **data: events.append((kind, data))) if events is not None else None
    return Router(config, dict(providers), on_event, rng=random.Random(0))


def completion(*calls: tuple[str, str], text: str = "") -> Completion:
    return Completion(text, "m", tool_calls=[ToolCall(f"c{i}", n, a) for i, (n, a) in enumerate(calls)])


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("calls, params, problem", [
    ([("get_weather", '{"city": "Paris", "days": 3}')], TOOLS, None),
    ([("get_weather", '{"city": "Paris", "days": 9}')], TOOLS, "days: 9 is greater than the maximum of 7"),
    ([("get_weather", '{"town": "Paris"}')], TOOLS, "'city' is a required property"),
    ([("get_weather", '{"city": "Paris"')], TOOLS, "the arguments are not JSON"),
    ([("get_weather", '["Paris"]')], TOOLS, "must be a JSON object"),
    ([("get_time", "{}")], TOOLS, "there is no tool 'get_time'"),
    ([], TOOLS, "calls no tool, but a tool call is required"),
    ([], GenParams(tools=[WEATHER], tool_choice="auto"), None),
    ([("get_weather", '{"city": "A"}')], GenParams(tools=[WEATHER], tool_choice="none"), "tool_choice is none"),
    ([("get_news", '{"topic": "x"}')], GenParams(tools=[WEATHER, NEWS], tool_choice={
        "type": "function", "function": {"name": "get_weather"}}), "tool_choice asks for 'get_weather'"),
    ([("get_weather", '{"city": "A"}'), ("get_weather", '{"city": "B"}')],
     GenParams(tools=[WEATHER], parallel_tool_calls=False), "parallel_tool_calls is false"),
    ([("get_weather", '{"city": "A"}'), ("get_news", '{"topic": "B"}')], TOOLS, None),
])
def test_call_problem(calls: list[tuple[str, str]], params: GenParams, problem: str | None) -> None:
    found = call_problem(completion(*calls), params)
    assert (found is None) if problem is None else (found is not None and problem in found), found


def test_check_tools_names_the_faulty_field() -> None:
    assert set(check_tools([WEATHER, NEWS])) == {"get_weather", "get_news"}
    bad = [([{"type": "function", "function": {"name": "a b"}}], None, "tools[0].function.name"),
           ([{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}], None, "not a valid JSON"),
           ([WEATHER], {"type": "function", "function": {"name": "x"}}, "tool_choice names 'x'"),
           ([WEATHER], "sometimes", "tool_choice must be"), ([], "required", "needs at least one tool")]
    for tools, choice, says in bad:
        with pytest.raises(LLMError, match=re.escape(says)) as exc:
            check_tools(tools, choice)
        assert exc.value.kind == "bad_request"


# --------------------------------------------------------------------------- the router


def test_valid_call_passes_and_args_parse() -> None:
    router = make_router({"a": ScriptedProvider("a", [Calls([("get_weather", {"city": "Paris", "days": 2})])])})
    rc = run(router.generate(ASK, params=TOOLS))
    call = rc.completion.tool_calls[0]
    assert (call.name, call.args, rc.completion.finish_reason) == ("get_weather", {"city": "Paris", "days": 2},
                                                                  "tool_calls")
    assert json.loads(call.arguments) == call.args and call.to_openai()["type"] == "function"
    assert router.providers["a"].calls[0].params.tools == [WEATHER, NEWS]  # the tools reached the provider


def test_invalid_call_is_repaired_with_the_validation_error() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    a = ScriptedProvider("a", [Calls([("get_weather", {"city": "Paris", "days": 30})]),
                               Calls([("get_weather", {"city": "Paris", "days": 7})])])
    router = make_router({"a": a}, events=events)
    rc = run(router.generate(ASK, params=TOOLS))
    assert rc.completion.tool_calls[0].args == {"city": "Paris", "days": 7} and rc.model == "a"
    repair = a.calls[1].messages
    assert repair[-2]["role"] == "assistant" and repair[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert repair[-1]["role"] == "tool" and repair[-1]["tool_call_id"] == "call_1"
    assert "days: 30 is greater than the maximum of 7" in repair[-1]["content"]
    assert router.stats()["a"]["invalid_tool_calls"] == 1 and router.stats()["a"]["errors"] == {}
    invalid = [data for kind, data in events if kind == "invalid_tool_call"]
    assert invalid == [{"route": "default", "model": "a", "error": invalid[0]["error"]}]
    assert "days: 30" in invalid[0]["error"]


def test_a_second_invalid_reply_moves_the_chain_on_and_is_its_own_kind() -> None:
    a = ScriptedProvider("a", ["I would rather chat.", Calls([("get_time", {})])])
    b = ScriptedProvider("b", [Calls([("get_news", {"topic": "rain"})])])
    router = make_router({"a": a, "b": b}, {"primary": ["a"], "fallback": ["b"]})
    rc = run(router.generate(ASK, params=TOOLS))
    assert rc.model == "b" and rc.fallbacks == 1
    assert [(x.model, x.outcome) for x in rc.attempts] == [("a", "ok"), ("a", "ok"), ("a", "invalid_tool_call"),
                                                           ("b", "ok")]
    assert a.calls[1].messages[-1] == {"role": "user", "content": a.calls[1].messages[-1]["content"]}
    assert "a tool call is required" in a.calls[1].messages[-1]["content"]  # no call: a user message says so
    assert router.stats()["a"]["invalid_tool_calls"] == 2
    only_a = make_router({"a": ScriptedProvider("a", ["no", "still no"])})
    with pytest.raises(AllModelsFailed) as failed:
        run(only_a.generate(ASK, params=TOOLS))
    assert failed.value.kind == "invalid_tool_call"
    # the replies that came back and were then refused are told by the verdict, not as `ok` (or an undocumented
    # `replied`) in a list of failures
    assert "every model failed (a: invalid_tool_call)" in str(failed.value)


def test_a_malformed_tools_list_fails_before_any_call() -> None:
    a = ScriptedProvider("a")
    with pytest.raises(LLMError, match="not a valid JSON schema") as exc:
        run(make_router({"a": a}).generate(ASK, params=GenParams(tools=[
            {"type": "function", "function": {"name": "f", "parameters": {"required": "x"}}}])))
    assert exc.value.kind == "bad_request" and a.calls == []


def test_fastest_and_best_of_n_carry_tools() -> None:
    fast = make_router({"a": ScriptedProvider("a", [Calls([("get_weather", {"city": "Oslo"})])])},
                       {"primary": ["a"], "strategy": "fastest"})
    assert run(fast.generate(ASK, params=TOOLS)).completion.tool_calls[0].args == {"city": "Oslo"}

    judge = ScriptedProvider("j", ['{"best": 2, "reason": "it asks for the right city"}'])
    a = ScriptedProvider("a", [Calls([("get_weather", {"city": "Lyon"})], text="Checking.")])
    b = ScriptedProvider("b", [Calls([("get_weather", {"city": "Paris"})])])
    router = make_router({"a": a, "b": b, "j": judge}, {"primary": ["a", "b"], "strategy": "best_of_n", "n": 2,
                                                        "judge": "j"})
    rc = run(router.generate(ASK, params=TOOLS))
    assert rc.model == "b" and rc.completion.tool_calls[0].args == {"city": "Paris"}
    assert [c.text for c in rc.candidates or []] == ['Checking.\ncalls get_weather({"city": "Lyon"})',
                                                     'calls get_weather({"city": "Paris"})']
    assert judge.calls[0].params.tools is None  # the judge is asked for its verdict, not offered the tools


def test_streaming_with_tools_hands_nothing_on_early() -> None:
    pieces: list[str] = []
    router = make_router({"a": ScriptedProvider("a", [Calls([("get_weather", {"city": "Rome"})], text="One sec.")])})
    rc = run(router.generate(ASK, params=TOOLS, stream=True, on_delta=lambda m, t: pieces.append(t)))
    assert pieces == [] and rc.text == "One sec." and rc.completion.tool_calls[0].name == "get_weather"


# --------------------------------------------------------------------------- HTTP: streamed deltas


def test_assembler_joins_pieces_split_anywhere_and_by_index() -> None:
    asm = ToolCallAssembler()
    asm.add([{"index": 1, "id": "b", "type": "function", "function": {"name": "get_news", "arguments": ""}}])
    asm.add([{"index": 0, "id": "a", "function": {"name": "get_weather", "arguments": '{"ci'}}])
    asm.add([{"index": 1, "function": {"arguments": '{"topic": "\\u00e9t'}}])
    asm.add([{"index": 0, "function": {"arguments": 'ty": "Par'}}, {"index": 1, "function": {"arguments": 'é"}'}}])
    asm.add([{"index": 0, "function": {"arguments": 'is"}'}}])
    calls = asm.calls()
    assert [(c.id, c.name, c.args) for c in calls] == [("a", "get_weather", {"city": "Paris"}),
                                                       ("b", "get_news", {"topic": "été"})]


@pytest.mark.parametrize("stream", [False, True])
def test_http_provider_returns_whole_calls(server: ScriptedServer, stream: bool) -> None:
    server.reset()
    calls = [{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}, "id": "call_w"},
             {"name": "get_news", "arguments": {"topic": "the weather in Paris, long enough to split"}}]
    server.script("m", [Reply(text="Let me look.", tool_calls=calls, args_chunk_chars=4, interleave_calls=True)])
    provider = OpenAIProvider("up", server.base_url)

    async def go() -> Completion:
        try:
            if not stream:
                return await provider.generate("m", ASK, TOOLS, 10)
            items = [item async for item in provider.stream("m", ASK, TOOLS, 10)]
            assert isinstance(items[-1], Completion)
            return items[-1]
        finally:
            await provider.aclose()

    done = run(go())
    assert done.text == "Let me look." and done.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.args) for c in done.tool_calls] == [
        ("call_w", "get_weather", {"city": "Paris", "days": 3}),
        ("call_2", "get_news", {"topic": "the weather in Paris, long enough to split"})]
    sent = server.requests[-1]
    assert sent["tools"] == [WEATHER, NEWS] and sent["tool_choice"] == "required"


# --------------------------------------------------------------------------- the local text format


def test_parse_tagged_and_render_round_trip() -> None:
    text, calls = parse_tagged('<tool_call>[{"name": "get_weather", "arguments": {"city": "Nice"}}]</tool_call>')
    assert text == "" and [(c.name, c.args) for c in calls] == [("get_weather", {"city": "Nice"})]
    assert parse_tagged("<tool_call>[]</tool_call>") == ("", [])
    assert parse_tagged("<tool_call>[{oops</tool_call>") == ("<tool_call>[{oops</tool_call>", [])
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [calls[0].to_openai()]},
               {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"}]
    shown = render_tool_messages(history, GenParams(tools=[WEATHER]))
    assert shown[0]["role"] == "system" and '"name": "get_weather"' in shown[0]["content"]
    assert shown[2] == {"role": "assistant", "content":
                        '<tool_call>[{"name": "get_weather", "arguments": {"city": "Nice"}}]</tool_call>'}
    assert shown[3] == {"role": "user", "content": "<tool_response>sunny</tool_response>"}
    assert render_tool_messages(history, GenParams(tools=[WEATHER], tool_choice="none"))[0] == ASK[0]


def test_calls_schema_follows_tool_choice() -> None:
    required = calls_schema(TOOLS)
    assert required is not None and required["minItems"] == 1 and len(required["items"]["anyOf"]) == 2
    named = calls_schema(GenParams(tools=[WEATHER, NEWS], tool_choice={"type": "function",
                                                                      "function": {"name": "get_news"}},
                                   parallel_tool_calls=False))
    assert named is not None and named["items"]["properties"]["name"] == {"const": "get_news"}
    assert named["maxItems"] == 1
    auto = calls_schema(GenParams(tools=[WEATHER]))
    assert auto is not None and auto["minItems"] == 0
    assert calls_schema(GenParams(tools=[WEATHER], tool_choice="none")) is None


# --------------------------------------------------------------------------- local providers on the tiny model

BOUNDED = {"type": "function", "function": {"name": "set_mode", "parameters": {
    "type": "object", "properties": {"mode": {"type": "string", "enum": ["eco", "fast"]},
                                     "level": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["mode", "level"], "additionalProperties": False}}}


def local_router(kind: str, path: str, **provider: Any) -> Router:
    cfg = LLMConfig.model_validate({
        "providers": {"local": {"kind": kind, **provider}},
        "models": {"tiny": {"provider": "local", "model": path, "params": {"max_tokens": 200, "temperature": 0}}},
        "routes": {"default": {"primary": ["tiny"]}}, "retries": 0, "timeout_s": 120})
    return Router.from_config(cfg)


def test_llama_cpp_grammar_makes_even_a_random_model_call_validly(tiny_model: dict[str, Any]) -> None:
    params = GenParams(tools=[BOUNDED, WEATHER], tool_choice={"type": "function", "function": {"name": "set_mode"}},
                       parallel_tool_calls=False)
    with local_router("llama_cpp", str(tiny_model["gguf"]), n_ctx=4096) as router:
        rc = router.generate_sync(ASK, params=params)
        history = [*ASK, {"role": "assistant", "content": None,
                          "tool_calls": [c.to_openai() for c in rc.completion.tool_calls]},
                   {"role": "tool", "tool_call_id": rc.completion.tool_calls[0].id, "content": "done"}]
        again = router.generate_sync(history, params=GenParams(tools=[BOUNDED], tool_choice="required"), stream=True)
    call = rc.completion.tool_calls[0]
    assert call.name == "set_mode" and call_problem(rc.completion, params) is None
    assert [a.outcome for a in rc.attempts] == ["ok"]  # valid the first time: the grammar, not a repair
    assert again.completion.tool_calls and all(c.name == "set_mode" for c in again.completion.tool_calls)


def test_llama_cpp_grammar_keeps_control_characters_out_of_strings(tiny_model: dict[str, Any]) -> None:
    # llama-cpp-python's converter let a string hold a raw newline, which JSON forbids: SmolLM2 wrote such a `note`
    # and the call was refused as "calls no tool". A random model at temperature 1 over a free string finds the
    # newline quickly; under the grammar every reply must parse.
    from agentlab.core.llm.providers.llama_cpp import json_gbnf

    assert "\\x00-\\x1F" in json_gbnf({"type": "string"})
    note = {"type": "function", "function": {"name": "note", "parameters": {"type": "object", "properties": {
        "text": {"type": "string", "maxLength": 60}}, "required": ["text"], "additionalProperties": False}}}
    with local_router("llama_cpp", str(tiny_model["gguf"]), n_ctx=4096) as router:
        outcomes = []
        for seed in range(6):
            params = GenParams(tools=[note], tool_choice="required", parallel_tool_calls=False, temperature=1.0,
                               seed=seed, max_tokens=120)
            try:
                rc = router.generate_sync(ASK, params=params)
                outcomes.append([a.outcome for a in rc.attempts])
            except AllModelsFailed as exc:
                outcomes.append([exc.kind])
    assert outcomes == [["ok"]] * 6


def test_llama_cpp_tool_grammar_false_leaves_the_random_model_free(tiny_model: dict[str, Any]) -> None:
    # the same random model, the grammar off (model param tool_grammar: false, the BFCL benchmark's baseline): it
    # writes no call and runs into max_tokens, so the route fails with max_tokens (no repair under the same limit)
    cfg = LLMConfig.model_validate({
        "providers": {"local": {"kind": "llama_cpp", "n_ctx": 4096}},
        "models": {"tiny": {"provider": "local", "model": str(tiny_model["gguf"]),
                            "params": {"max_tokens": 24, "temperature": 0, "tool_grammar": False}}},
        "routes": {"default": {"primary": ["tiny"]}}, "retries": 0, "timeout_s": 120})
    with Router.from_config(cfg) as router:
        with pytest.raises(AllModelsFailed) as failed:
            router.generate_sync(ASK, params=GenParams(tools=[BOUNDED], tool_choice="required"))
        stats = router.stats()["tiny"]
    assert failed.value.kind == "max_tokens" and stats["invalid_tool_calls"] == 0


def test_annotation_only_parameters_get_a_grammar_and_an_unbuildable_one_is_a_bad_request(
        tiny_model: dict[str, Any]) -> None:
    # BFCL's "any" parameters arrive as {"description": ...}: a valid JSON schema that llama.cpp's converter rejected
    # with an AssertionError (a traceback out of the router); annotations are left out of the grammar now
    anything = {"type": "function", "function": {"name": "fit", "parameters": {"type": "object", "properties": {
        "data": {"description": "The training data."}, "description": {"type": "string", "title": "a name"}},
        "required": ["data", "description"]}}}
    schema = calls_schema(GenParams(tools=[anything], tool_choice="required"))
    assert schema is not None
    assert schema["items"]["properties"]["arguments"]["properties"] == {
        "data": {}, "description": {"type": "string", "maxLength": 256}}  # bounded: tools.STRING_MAX_CHARS
    no_string = {"type": "function", "function": {"name": "odd", "parameters": {"type": "object", "properties": {
        "x": {"not": {"type": "string"}}}}}}
    from agentlab.core.llm.providers.llama_cpp import _tool_grammar

    assert _tool_grammar(schema, False) is not None  # llama.cpp compiles it
    with local_router("llama_cpp", str(tiny_model["gguf"]), n_ctx=4096) as router:
        with pytest.raises(AllModelsFailed) as failed:
            router.generate_sync(ASK, params=GenParams(tools=[no_string], tool_choice="required"))
    assert failed.value.kind == "bad_request" and "cannot build a grammar" in failed.value.attempts[-1][2]


def test_long_bounds_get_a_grammar_llama_cpp_parses_and_a_refused_one_is_a_bad_request(
        tiny_model: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # llama-cpp-python's converter nested one optional group per allowed character; llama.cpp's parser refuses about
    # 1,000 levels and llama-cpp-python then crashed the process (a segfault) on a maxLength of 2000
    from llama_cpp import llama_grammar

    from agentlab.core.llm.providers import llama_cpp as provider

    long = {"type": "object", "properties": {"text": {"type": "string", "maxLength": 3000},
                                             "code": {"type": "string", "minLength": 2, "maxLength": 2000},
                                             "rows": {"type": "array", "items": {"type": "integer"},
                                                      "maxItems": 1500}},
            "required": ["text", "code", "rows"], "additionalProperties": False}
    tool = {"type": "function", "function": {"name": "edit", "parameters": long}}
    assert "char{2,2000}" in provider.json_gbnf(long)
    llm = pytest.importorskip("llama_cpp").Llama(str(tiny_model["gguf"]), vocab_only=True, verbose=False)
    for high in (1999, 2000, 2001, 2002, 5000):  # around llama.cpp's threshold of 2,000: every one parses
        for bounded in ({"type": "array", "items": {"type": "integer"}, "maxItems": high},
                        {"type": "string", "maxLength": high}, {"type": "string", "minLength": high}):
            provider._check_parses(llm, provider._grammar(bounded))
    with local_router("llama_cpp", str(tiny_model["gguf"]), n_ctx=4096) as router:
        for params in (GenParams(max_tokens=40, json_schema={"name": "x", "schema": long}),
                       GenParams(tools=[tool], tool_choice="required", max_tokens=40)):
            try:  # an answer, or a random model still inside a long string at max_tokens
                router.generate_sync(ASK, params=params)
            except AllModelsFailed as exc:
                assert exc.kind == "max_tokens", exc.attempts
        # a minimum above its maximum: in llama.cpp's {5,3} the count wrapped around and filled the memory
        for empty in ({"type": "string", "minLength": 5, "maxLength": 3},
                      {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 2}):
            with pytest.raises(AllModelsFailed) as failed:
                router.generate_sync(ASK, params=GenParams(max_tokens=8, json_schema={"name": "x", "schema": {
                    "type": "object", "properties": {"v": empty}}}))
            assert failed.value.kind == "bad_request" and "a minimum above its maximum" in str(failed.value.attempts)
        # the library's own nesting: refused by the parse check, a bad request, not a crash
        monkeypatch.setattr(provider, "_repetition", llama_grammar._build_repetition)
        nested = {"type": "object", "properties": {"text": {"type": "string", "maxLength": 2500}}}
        with pytest.raises(AllModelsFailed) as failed:
            router.generate_sync(ASK, params=GenParams(max_tokens=8, json_schema={"name": "x", "schema": nested}))
    assert failed.value.kind == "bad_request" and "grammar parser refused" in failed.value.attempts[-1][2]


@pytest.mark.parametrize("schema, valid", [
    ({"type": "string", "minLength": 2, "maxLength": 4}, lambda v: isinstance(v, str) and 2 <= len(v) <= 4),
    ({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3},
     lambda v: isinstance(v, list) and 2 <= len(v) <= 3),
    ({"type": "array", "items": {"type": "boolean"}, "maxItems": 2}, lambda v: isinstance(v, list) and len(v) <= 2),
    ({"type": "string", "pattern": "^(ab){2,3}c?$"}, lambda v: re.fullmatch(r"(ab){2,3}c?", v) is not None),
])
def test_repetition_bounds_hold_under_the_grammar(tiny_model: dict[str, Any], schema: dict[str, Any],
                                                  valid: Callable[[Any], bool]) -> None:
    # a random model at temperature 1 wanders to both ends of a bound; under the grammar every answer keeps it
    wrapped = {"type": "object", "properties": {"v": schema}, "required": ["v"], "additionalProperties": False}
    values = []
    with local_router("llama_cpp", str(tiny_model["gguf"]), n_ctx=4096) as router:
        for seed in range(8):
            rc = router.generate_sync(ASK, params=GenParams(temperature=1.0, seed=seed, max_tokens=60,
                                                            json_schema={"name": "x", "schema": wrapped}))
            values.append(json.loads(rc.text)["v"])
    assert all(valid(v) for v in values), values


def test_hf_reads_calls_from_the_text() -> None:
    # (The tiny hf model's 512-token context cannot hold SmolLM2's tool prompt, so this checks the parsing alone.)
    from agentlab.core.llm.providers.hf import _tool_calls

    text = 'Sure. <tool_call>[{"name": "set_mode", "arguments": {"mode": "eco", "level": 2}}]</tool_call>'
    out, finish, calls = _tool_calls(text, "stop", GenParams(tools=[BOUNDED]))
    assert (out, finish, [(c.name, c.args) for c in calls]) == ("Sure.", "tool_calls",
                                                               [("set_mode", {"mode": "eco", "level": 2})])
    assert _tool_calls(text, "stop", GenParams()) == (text, "stop", [])


# ----------------------------------------------------------------------- auto on a small local model: gate, repeats

AREA = {"type": "function", "function": {
    "name": "triangle_area", "description": "Area of a triangle from its base and height.",
    "parameters": {"type": "object", "properties": {"base": {"type": "number"}, "height": {"type": "number"}}}}}


@pytest.mark.parametrize("messages, params, choice", [
    (ASK, GenParams(tools=[WEATHER, NEWS], tool_choice="auto"), "auto"),  # "weather" is in the tool's name
    (ASK, GenParams(tools=[AREA], tool_choice="auto"), "none"),  # nothing in common: answered in text
    (ASK, GenParams(tools=[AREA]), "none"),  # tool_choice unset is auto
    (ASK, GenParams(tools=[AREA], tool_choice="required"), "required"),  # only auto is gated
    (ASK, GenParams(tools=[AREA], tool_choice="auto", extra={"tool_gate": False}), "auto"),  # switched off
    ([{"role": "user", "content": "How big is a triangle with base 3 and height 4?"}],
     GenParams(tools=[AREA], tool_choice="auto"), "auto"),  # a parameter's name counts
    ([*ASK, {"role": "tool", "tool_call_id": "c1", "content": "21 C"}],
     GenParams(tools=[AREA], tool_choice="auto"), "auto"),  # after a tool result: not a fresh question
    ([{"role": "user", "content": [{"type": "text", "text": "The areaOfTriangles please"}]}],
     GenParams(tools=[AREA], tool_choice="auto"), "auto"),  # content parts, camelCase split
])
def test_tool_gate_answers_in_text_only_when_no_tool_shares_a_word(messages: list[dict[str, Any]],
                                                                   params: GenParams, choice: str) -> None:
    from agentlab.core.llm.tools import tool_gate

    gated = tool_gate(messages, params)
    assert gated.tool_choice == choice
    if choice == "none" or len(params.tools or []) == 1:
        assert gated.tools == params.tools  # the tools stay: the reply is still checked against them


MULTIPLY = {"type": "function", "function": {"name": "multiply", "description": "Multiply two numbers a and b.",
                                              "parameters": {"type": "object", "properties": {"a": {}, "b": {}}}}}
ADD = {"type": "function", "function": {"name": "add", "description": "Add two numbers a and b.",
                                         "parameters": {"type": "object", "properties": {"a": {}, "b": {}}}}}
SUBTRACT = {"type": "function", "function": {"name": "subtract", "description": "Subtract b from a.",
                                              "parameters": {"type": "object", "properties": {"a": {}, "b": {}}}}}


@pytest.mark.parametrize("question, kept", [
    ("What is 12 times 7?", ["multiply"]),  # shares no word with multiply(a, b): answered in text before
    ("What is 15 multiplied by 4?", ["multiply"]),
    ("What is 6 x 9?", ["multiply"]), ("6*9?", ["multiply"]), ("What is 6 × 9?", ["multiply"]),
    ("What is 234 plus 589?", ["add"]), ("234 + 589 = ?", ["add"]),
    ("What is 12 times 7, plus 3?", ["multiply", "add"]),
    ("What is the weather in Paris?", ["get_weather"]),
    ("Who wrote Hamlet?", None),  # still nothing in common: text
    ("What is 84 minus 12?", ["subtract"]), ("84 - 12", ["subtract"]),
    ("Some x-rays and a 3-1 win", None),  # a sign needs a number on each side (a minus, spaces around it too)
])
def test_tool_gate_reads_arithmetic_words_and_signs_as_the_operation(question: str, kept: list[str] | None) -> None:
    from agentlab.core.llm.tools import tool_gate

    weather = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                                "parameters": {"type": "object", "properties": {"city": {}}}}}
    gated = tool_gate([{"role": "user", "content": question}],
                      GenParams(tools=[MULTIPLY, ADD, SUBTRACT, weather], tool_choice="auto"))
    if kept is None:
        assert gated.tool_choice == "none"
    else:
        assert gated.tool_choice == "auto" and [t["function"]["name"] for t in gated.tools or []] == kept


def test_tool_gate_offers_only_the_tools_that_share_a_word_with_the_question() -> None:
    from agentlab.core.llm.tools import tool_gate

    miles = {"type": "function", "function": {"name": "km_to_miles", "description": "Convert kilometres to miles.",
                                              "parameters": {"type": "object", "properties": {"km": {}}}}}
    people = {"type": "function", "function": {"name": "get_population", "description": "People living in a city.",
                                               "parameters": {"type": "object", "properties": {"city": {}}}}}
    convert = [{"role": "user", "content": "Convert 5 km to miles."}]
    assert tool_gate(convert, GenParams(tools=[people, miles], tool_choice="auto")).tools == [miles]
    both = [{"role": "user", "content": "Convert 5 km to miles, then the population of Paris."}]
    assert tool_gate(both, GenParams(tools=[people, miles], tool_choice="auto")).tools == [people, miles]
    assert tool_gate(ASK, GenParams(tools=[WEATHER, NEWS], tool_choice="auto")).tools == [WEATHER]
    for off in (GenParams(tools=[people, miles], tool_choice="required"),
                GenParams(tools=[people, miles], tool_choice="auto", extra={"tool_gate": False})):
        assert tool_gate(convert, off).tools == [people, miles]  # only the gate narrows


def test_close_repeats_keeps_the_distinct_calls_of_a_looping_reply() -> None:
    from agentlab.core.llm.tools import close_repeats

    one, two = '{"name": "f", "arguments": {"a": 1}}', '{"name": "f", "arguments": {"a": 2}}'
    looped = f"<tool_call>[{one}, {two},\n {one}, " + '{"name": "f", "argu'
    closed = close_repeats(looped)
    assert closed is not None
    text, calls = parse_tagged(closed)
    assert text == "" and [json.loads(c.arguments) for c in calls] == [{"a": 1}, {"a": 2}]
    assert close_repeats(f"<tool_call>[{one}, {two}, " + '{"na') is None  # cut, but not looping
    assert close_repeats(f"<tool_call>[{one}, {one}]</tool_call>") is None  # a closed block is the model's
    assert close_repeats("no call here") is None and close_repeats("<tool_call>{") is None


class _CutProvider(ScriptedProvider):
    """Answers like a local model under the tool grammar that ran out of max_tokens inside a JSON string."""

    async def generate(self, model: str, messages: Any, params: GenParams, timeout_s: float) -> Completion:
        await self._answer(model, messages, params, timeout_s)  # recorded in self.calls
        return Completion('<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris]}}]</tool_call>... ',
                          model, usage=Usage(12, 64), finish_reason="length")


def test_a_reply_cut_at_max_tokens_is_reported_as_that_not_as_an_invalid_call() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    cut = _CutProvider("a")
    only_a = make_router({"a": cut}, events=events)
    with pytest.raises(AllModelsFailed) as failed:
        run(only_a.generate(ASK, params=GenParams(tools=[WEATHER], tool_choice="required", max_tokens=64)))
    assert failed.value.kind == "max_tokens", failed.value
    assert "cut at max_tokens (64)" in failed.value.attempts[-1][2] and "calls no tool" not in str(failed.value)
    assert len(cut.calls) == 1  # no repair round: the same limit would cut it again
    assert not [kind for kind, _ in events if kind == "invalid_tool_call"]
    b = ScriptedProvider("b", [Calls([("get_weather", {"city": "Paris"})])])
    router = make_router({"a": _CutProvider("a"), "b": b}, {"primary": ["a"], "fallback": ["b"]})
    rc = run(router.generate(ASK, params=TOOLS))
    assert rc.model == "b" and [(x.model, x.outcome) for x in rc.attempts] == [("a", "max_tokens"), ("b", "ok")]
    # the cut attempt is that in the events (serve's /metrics), the stats (results.json, report.md), not a success
    calls = [(e["model"], e["outcome"]) for kind, e in events if kind == "llm_call"]
    assert calls == [("a", "max_tokens")]
    stats = only_a.stats()["a"]
    assert (stats["successes"], stats["errors"]) == (0, {"max_tokens": 1})
    assert (stats["tokens_in"], stats["tokens_out"]) == (12, 64)  # generated, and billed by a paid provider
