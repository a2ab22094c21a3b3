"""Each local model's own tool format (core/llm/tool_formats.py): chosen in one place, rendered the model's way, parsed
back from its text (the lenient forms included), its grammar accepting exactly its calls."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentlab.core.llm import GenParams
from agentlab.core.llm.tool_formats import FORMATS, detect_format, format_for, parse_blocks
from agentlab.core.llm.tools import calls_schema, parse_tagged

QWEN, SMOL = FORMATS["qwen"], FORMATS["smollm2"]
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
# Qwen2.5's chat template, the parts that decide the format (the whole template is in the GGUF).
QWEN_TEMPLATE = ("{%- if tools %}{{- '<tools>' }}{%- for tool in tools %}{{- tool | tojson }}{%- endfor %}"
                 "{%- endif %}{%- for message in messages %}{%- for tool_call in message.tool_calls %}"
                 "{{- '\\n<tool_call>\\n{\"name\": \"' }}{{- tool_call.name }}{{- '\"}\\n</tool_call>' }}"
                 "{%- endfor %}{%- endfor %}")


def test_the_format_comes_from_the_param_then_the_table_then_the_template() -> None:
    assert detect_format(QWEN_TEMPLATE) == "qwen"
    assert detect_format("{{ messages }}") == "smollm2" and detect_format(None) == "smollm2"
    assert format_for(QWEN_TEMPLATE).name == "qwen"
    assert format_for(QWEN_TEMPLATE, builtin="smollm2").name == "smollm2"
    assert format_for("", "qwen", "smollm2").name == "qwen"
    with pytest.raises(ValueError, match="unknown tool_format 'hermes2'"):
        format_for("", "hermes2")


def test_a_qwen_call_in_its_own_format_is_read_as_a_call() -> None:
    # Qwen2.5's way: one <tool_call> block per call, a JSON object inside. SmolLM2's parser (the only one before
    # tool_formats) reads the block as a call only when it holds a list; Qwen's two blocks make two calls.
    text = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Nice"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>')
    rest, calls = QWEN.parse(text)
    assert rest == "" and [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Nice"}), ("get_weather", {"city": "Oslo"})]


@pytest.mark.parametrize("text", [
    '```json\n{"name": "get_weather", "arguments": {"city": "Nice"}}\n```',
    '{"name": "get_weather", "arguments": {"city": "Nice"}}',
    '[{"name": "get_weather", "arguments": {"city": "Nice"}}]',
])
def test_qwen_s_ungrammared_answers_of_bare_or_fenced_json_are_calls(text: str) -> None:
    # Without a grammar Qwen2.5-Coder answers in a ```json block or bare JSON (20 of 20 raw answers, issue 57).
    rest, calls = parse_blocks(text, {"get_weather"})
    assert rest == "" and len(calls) == 1 and json.loads(calls[0].arguments) == {"city": "Nice"}
    assert parse_blocks(text) == (text, [])  # no call allowed on this request (tool_choice none, the gate): text


def test_a_call_written_inside_text_is_read_only_for_the_request_s_tools() -> None:
    # after a tool result Qwen2.5-Coder-0.5B wrote the call again inside text, then repeated it
    call = '{"name": "get_weather", "arguments": {"city": "Nice"}}'
    looped = f"({call})\n{call}"
    rest, calls = parse_blocks(looped, {"get_weather"})
    assert [c.name for c in calls] == ["get_weather"] and rest == "()"
    assert QWEN.close_repeats(looped, {"get_weather"}) == f"({call})"
    # prose that quotes a call of another tool, or echoes a tool's definition, stays text
    prose = 'To call a tool, write {"name": "foo", "arguments": {}}. The answer is 42.'
    assert parse_blocks(prose, {"get_weather"}) == (prose, [])
    echo = json.dumps(WEATHER)
    assert parse_blocks(echo, {"get_weather"}) == (echo, [])
    assert QWEN.close_repeats(f"{prose} {prose}", {"get_weather"}) is None


def test_prose_and_json_that_is_not_a_call_stay_text() -> None:
    for text in ("It is sunny in Nice.", '{"city": "Nice"}', "Here: {\"name\": 1}", "<tool_call>\n{oops\n</tool_call>"):
        assert parse_blocks(text, {"get_weather"}) == (text, [])


def test_each_format_renders_the_history_its_own_way() -> None:
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Nice?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Nice"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    params = GenParams(tools=[WEATHER])
    # a Qwen template renders tools itself: the history goes to it as structures, the arguments as an object
    shown, give = QWEN.render(history, params, template_tools=True)
    assert give is True and shown[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Nice"}
    assert shown[1]["content"] == "" and shown[2]["role"] == "tool"
    # the qwen format on a template without tools: Qwen's prompt after the system text, its blocks as text
    shown, give = QWEN.render([{"role": "system", "content": "Be brief."}, *history], params, template_tools=False)
    assert give is False and shown[0]["content"].startswith("Be brief.\n\n# Tools")
    assert shown[2]["content"] == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Nice"}}\n</tool_call>'
    assert shown[3] == {"role": "user", "content": "<tool_response>\nsunny\n</tool_response>"}
    # SmolLM2's: its prompt first, its list in one block
    shown, give = SMOL.render(history, params, template_tools=False)
    assert shown[0]["content"].startswith("You are an expert in composing functions")
    assert parse_tagged(shown[2]["content"])[1][0].name == "get_weather"


def test_qwen_repeats_are_cut_after_the_distinct_calls() -> None:
    one = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Nice"}}\n</tool_call>'
    two = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    assert QWEN.close_repeats(f"{one}\n{two}\n{one[:-12]}") == f"{one}\n{two}"
    assert QWEN.close_repeats(f"{one}\n{two}") is None and QWEN.close_repeats(one) is None


def test_grammars_of_the_qwen_format_accept_its_calls_and_refuse_the_list() -> None:
    llama_grammar = pytest.importorskip("llama_cpp.llama_grammar")
    from agentlab.core.llm.providers.llama_cpp import tool_grammar_text

    schema = calls_schema(GenParams(tools=[WEATHER], tool_choice="auto"))
    assert schema is not None
    text = tool_grammar_text(schema, True, QWEN)
    assert "free-text" in text and '"<tool_call>\\n"' in text
    llama_grammar.LlamaGrammar.from_string(text, verbose=False)  # llama.cpp parses it
    one = calls_schema(GenParams(tools=[WEATHER], tool_choice="required", parallel_tool_calls=False))
    assert one is not None
    assert "call{" not in tool_grammar_text(one, False, QWEN)  # one call at most: no repetition


def test_the_lark_grammar_of_the_qwen_format_accepts_blocks_and_text() -> None:
    llguidance = pytest.importorskip("llguidance")
    from agentlab.core.llm.grammar import tool_lark

    schema = calls_schema(GenParams(tools=[WEATHER], tool_choice="auto"))
    assert schema is not None
    lark = tool_lark(schema, True, QWEN)
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(lark)
    assert not is_error, messages
