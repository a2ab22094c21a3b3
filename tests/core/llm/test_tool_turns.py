"""A tool turn that ends (issue 48): under the small profile a call already answered in the conversation is not made
again, the model answers from the result in text; a new call (a multi-step question) goes through; the grammar
bounds strings and arrays a schema leaves open; a local reply cut at max_tokens is reported as that."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from agentlab.core.errors import AllModelsFailed
from agentlab.core.llm import GenParams, LLMConfig, Router, ScriptedProvider
from agentlab.core.llm.providers.scripted import Calls
from agentlab.core.llm.tools import (
    ARRAY_MAX_ITEMS,
    STRING_MAX_CHARS,
    answer_messages,
    answered_calls,
    calls_schema,
)

MUL = {"type": "function", "function": {"name": "multiply", "description": "Multiply two numbers.", "parameters": {
    "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}}}
ADD = {"type": "function", "function": {"name": "add", "description": "Add two numbers.", "parameters": {
    "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}}}
AUTO = GenParams(tools=[MUL, ADD], tool_choice="auto")


def history(*steps: tuple[str, dict[str, Any], str], question: str = "What is 23 times 19?") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "user", "content": question}]
    for i, (name, args, result) in enumerate(steps):
        out.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]})
        out.append({"role": "tool", "tool_call_id": f"c{i}", "content": result})
    return out


def router(provider: ScriptedProvider, profile: str | None) -> Router:
    model: dict[str, Any] = {"provider": "p", "model": "m", **({"profile": profile} if profile else {})}
    cfg = LLMConfig.model_validate({"providers": {"p": {"kind": "scripted"}}, "models": {"m": model},
                                    "routes": {"default": {"primary": ["m"]}}, "retries": 0})
    return Router(cfg, {"p": provider}, rng=random.Random(0))


def test_answered_calls_are_keyed_by_name_and_canonical_arguments() -> None:
    done = history(("multiply", {"a": 23, "b": 19}, "437"))
    assert answered_calls(done) == {json.dumps(["multiply", {"a": 23, "b": 19}], sort_keys=True)}
    # a call without its tool result is not answered
    assert answered_calls(done[:2]) == set()


def test_small_profile_answers_from_the_result_instead_of_repeating_the_call() -> None:
    # SmolLM2 under the grammar: the same call again after its result (the LangGraph agent never ended).
    provider = ScriptedProvider("p", [Calls([("multiply", {"b": 19, "a": 23})]), "23 times 19 is 437."])
    rc = asyncio.run(router(provider, "small").generate(history(("multiply", {"a": 23, "b": 19}, "437")), params=AUTO))
    assert rc.completion.tool_calls == [] and rc.text == "23 times 19 is 437."
    answer = provider.calls[-1]
    assert answer.params.tools is None  # answered in text, without the tools
    assert answer.messages[-1] == {"role": "user", "content": "The result of multiply is: 437\nUsing this result, "
                                                              "answer: What is 23 times 19?"}
    # the full profile (an API model) gets no such help: its repeat is its own
    provider = ScriptedProvider("p", [Calls([("multiply", {"a": 23, "b": 19})])])
    rc = asyncio.run(router(provider, "full").generate(history(("multiply", {"a": 23, "b": 19}, "437")), params=AUTO))
    assert [c.name for c in rc.completion.tool_calls] == ["multiply"]


def test_medium_profile_answers_from_the_question_and_the_results_in_one_turn() -> None:
    # Qwen2.5-Coder-0.5B: the same call after its result; given the words version it echoed "I called multiply(...)"
    provider = ScriptedProvider("p", [Calls([("multiply", {"a": 23, "b": 19})]), "23 multiplied by 19 is 437."])
    rc = asyncio.run(router(provider, "medium").generate(
        [{"role": "system", "content": "Be brief."}, *history(("multiply", {"a": 23, "b": 19}, "437"))], params=AUTO))
    assert rc.completion.tool_calls == [] and rc.text == "23 multiplied by 19 is 437."
    answer = provider.calls[-1]
    assert answer.params.tools is None and answer.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 23 times 19?\n\nTool results:\nmultiply returned: 437\n\nAnswer the "
                                    "question using these results."}]


def test_a_repeat_of_an_earlier_turn_s_call_is_answered_from_the_whole_conversation() -> None:
    # no result in this turn to answer from: the words version of the whole conversation instead of an empty list
    from agentlab.core.llm.tools import results_messages

    done = [*history(("multiply", {"a": 23, "b": 19}, "437")), {"role": "assistant", "content": "437."},
            {"role": "user", "content": "And again?"}]
    assert results_messages(done) == answer_messages(done)


def test_small_profile_keeps_a_new_call_and_drops_the_repeated_one() -> None:
    # multi-step: "23 times 19, plus 5": the result feeds the next call, which goes through
    provider = ScriptedProvider("p", [Calls([("multiply", {"a": 23, "b": 19}), ("add", {"a": 437, "b": 5})])])
    rc = asyncio.run(router(provider, "small").generate(
        history(("multiply", {"a": 23, "b": 19}, "437"), question="What is 23 times 19, plus 5?"), params=AUTO))
    assert [(c.name, c.args) for c in rc.completion.tool_calls] == [("add", {"a": 437, "b": 5})]
    assert len(provider.calls) == 1


def test_answer_messages_keep_every_step_in_words() -> None:
    msgs = answer_messages(history(("multiply", {"a": 2, "b": 3}, "6"), ("add", {"a": 6, "b": 1}, "7"),
                                   question="2 times 3 plus 1?"))
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"] == 'I called multiply({"a": 2, "b": 3}).'
    assert msgs[-1]["content"] == "The result of add is: 7\nUsing this result, answer: 2 times 3 plus 1?"


def test_grammar_bounds_open_strings_and_arrays_and_keeps_the_schema_s_own() -> None:
    note = {"type": "function", "function": {"name": "note", "parameters": {"type": "object", "properties": {
        "text": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}},
        "code": {"type": "string", "maxLength": 4}, "kind": {"type": "string", "enum": ["a", "b"]},
        "many": {"type": "array", "items": {"type": "integer"}, "minItems": 40}}}}}
    schema = calls_schema(GenParams(tools=[note], tool_choice="required"))
    assert schema is not None
    props = schema["items"]["properties"]["arguments"]["properties"]
    assert props["text"]["maxLength"] == STRING_MAX_CHARS
    assert props["tags"]["maxItems"] == ARRAY_MAX_ITEMS and props["tags"]["items"]["maxLength"] == STRING_MAX_CHARS
    assert props["code"]["maxLength"] == 4 and "maxLength" not in props["kind"]
    assert props["many"]["maxItems"] == 40  # never below the schema's own minimum


def test_llama_cpp_string_closes_under_the_bound_and_a_cut_reply_is_max_tokens(tiny_model: dict[str, Any]) -> None:
    from agentlab.core.llm.providers.llama_cpp import tool_grammar_text

    note = {"type": "function", "function": {"name": "note", "parameters": {"type": "object", "properties": {
        "text": {"type": "string"}}, "required": ["text"], "additionalProperties": False}}}
    schema = calls_schema(GenParams(tools=[note], tool_choice="required"))
    assert schema is not None
    grammar = tool_grammar_text(schema, False)
    assert f"char{{0,{STRING_MAX_CHARS}}}" in grammar  # the string's bound is in the GBNF
    cfg = LLMConfig.model_validate({
        "providers": {"local": {"kind": "llama_cpp", "n_ctx": 1024}},
        "models": {"tiny": {"provider": "local", "model": str(tiny_model["gguf"]),
                            "params": {"temperature": 0, "max_tokens": 6}}},
        "routes": {"default": {"primary": ["tiny"]}}, "retries": 0, "timeout_s": 120})
    with Router.from_config(cfg) as r, pytest.raises(AllModelsFailed) as failed:
        r.generate_sync([{"role": "user", "content": "note this"}],
                        params=GenParams(tools=[note], tool_choice="required"))
    assert failed.value.kind == "max_tokens" and "calls no tool" not in str(failed.value)


def test_small_profile_does_not_feed_a_tool_its_own_result() -> None:
    # SmolLM2: 23 x 19 = 437, then multiply(437, 19), then multiply(8303, 19), until LangGraph's step limit
    provider = ScriptedProvider("p", [Calls([("multiply", {"a": 437, "b": 19})]), "23 times 19 is 437."])
    rc = asyncio.run(router(provider, "small").generate(history(("multiply", {"a": 23, "b": 19}, "437")), params=AUTO))
    assert rc.completion.tool_calls == [] and rc.text == "23 times 19 is 437."


def test_parallel_calls_stay_several_and_distinct_under_the_small_profile() -> None:
    # BFCL `parallel`: with parallel_tool_calls (OpenAI's default) the grammar's call list is open and the small
    # profile keeps every distinct call of a reply, after a result too
    schema = calls_schema(AUTO)
    assert schema is not None and "maxItems" not in schema
    two = Calls([("multiply", {"a": 2, "b": 3}), ("add", {"a": 4, "b": 5})])
    provider = ScriptedProvider("p", [two, Calls([("multiply", {"a": 2, "b": 3}), ("add", {"a": 1, "b": 1})])])
    r = router(provider, "small")
    rc = asyncio.run(r.generate([{"role": "user", "content": "2 times 3, and 4 plus 5?"}], params=AUTO))
    assert [c.name for c in rc.completion.tool_calls] == ["multiply", "add"]
    rc = asyncio.run(r.generate(history(("multiply", {"a": 2, "b": 3}, "6"), question="2 times 3, and 1 plus 1?"),
                                params=AUTO))
    assert [(c.name, c.args) for c in rc.completion.tool_calls] == [("add", {"a": 1, "b": 1})]


def test_llama_cpp_grammar_keeps_integer_bounds_that_its_converter_ignores() -> None:
    # llama-cpp-python's converter drops minimum / maximum: SmolLM2 wrote 1000 for an integer of -999..999 (LangChain's
    # standard test_tool_choice). Each bounded integer becomes a rule of exactly the values in range.
    import re

    from llama_cpp import LlamaGrammar

    from agentlab.core.llm.providers.llama_cpp import int_range_gbnf, json_gbnf

    rng = random.Random(0)
    for _ in range(400):
        low = rng.randint(-(10 ** rng.randint(0, 5)), 10 ** rng.randint(0, 5))
        high = low + rng.randint(0, 10 ** rng.randint(0, 5))
        pattern = re.compile("(" + int_range_gbnf(low, high).replace('"', "").replace(" ", "") + ")")
        for v in [*range(low - 2, low + 3), *range(high - 2, high + 3), *(rng.randint(low - 99, high + 99)
                                                                        for _ in range(10))]:
            assert bool(pattern.fullmatch(str(v))) == (low <= v <= high), (low, high, v)
        assert not pattern.fullmatch("-0") and not pattern.fullmatch("007")
    schema = {"type": "object", "properties": {"x": {"type": "integer", "exclusiveMinimum": -1000,
                                                     "exclusiveMaximum": 1000},
                                               "n": {"type": "integer", "minimum": 1}}}
    text = json_gbnf(schema)
    assert "agentlab-int-range" not in text and text.count("int-range-") == 4
    LlamaGrammar.from_string(text, verbose=False)  # compiles
    with pytest.raises(ValueError, match="no integer lies"):
        json_gbnf({"type": "integer", "minimum": 3, "maximum": 2})
