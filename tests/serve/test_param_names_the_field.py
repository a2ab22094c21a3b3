"""What a new user's pass found: an error's `param` was coarser than the field its message named (`response_format`
for `response_format.json_schema.schema`, `tools` for `tools[1].function.name`), and `"response_format": "json"`
was told as a wrong `'response_format.type'`, a field a string does not have."""

from __future__ import annotations

from typing import Any

import pytest

from agentlab.serve.protocol import ApiError, parse_chat
from agentlab.serve.responses import parse_responses

ASK = [{"role": "user", "content": "hi"}]
TOOL = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
CHAT_TOOL = {"type": "function", "function": TOOL}
FLAT_TOOL = {"type": "function", **TOOL}
ARRAY = {"type": "array", "items": {"type": "string"}}


def _refusal(parse: Any, body: dict[str, Any]) -> tuple[str | None, str]:
    with pytest.raises(ApiError) as refused:
        parse(body)
    assert refused.value.status == 400
    return refused.value.param, refused.value.message


def _chat(body: dict[str, Any]) -> object:
    return parse_chat({"model": "m", "messages": ASK, **body}, max_tokens_limit=64, max_messages=8)


def _responses(body: dict[str, Any]) -> object:
    return parse_responses({"model": "m", "input": "hi", **body}, max_tokens_limit=64, max_messages=8,
                           history=lambda _: None)


@pytest.mark.parametrize("parse, body, param, message", [
    (_chat, {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": ARRAY}}},
     "response_format.json_schema.schema", "'response_format.json_schema.schema' must describe an object"),
    (_chat, {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format.json_schema.schema", "'response_format.json_schema.schema' must be a JSON schema object"),
    (_chat, {"response_format": {"type": "xml"}}, "response_format.type",
     "'response_format.type' must be text, json_object or json_schema, got \"xml\""),
    (_chat, {"response_format": "json"}, "response_format",
     "'response_format' must be an object such as {\"type\": \"json_object\"}"),
    (_chat, {"tools": [CHAT_TOOL, CHAT_TOOL]}, "tools[1].function.name",
     "tools[1].function.name 'get_weather' is given twice"),
    (_chat, {"tools": [{"type": "function", "function": {**TOOL, "parameters": {"type": 5}}}]},
     "tools[0].function.parameters", "tools[0].function.parameters is not a valid JSON schema"),
    # the Responses API's own paths: text.format holds the schema itself, a tool's fields are flat
    (_responses, {"text": {"format": {"type": "json_schema", "name": "x", "schema": ARRAY}}},
     "text.format.schema", "'text.format.schema' must describe an object"),
    (_responses, {"text": {"format": "json"}}, "text.format", "'text.format' must be an object such as"),
    (_responses, {"text": {"format": {"type": "xml"}}}, "text.format.type", "'text.format.type' must be text"),
    (_responses, {"tools": [FLAT_TOOL, FLAT_TOOL]}, "tools[1].name", "tools[1].name 'get_weather' is given twice"),
])
def test_param_is_the_field_the_message_names(parse: Any, body: dict[str, Any], param: str, message: str) -> None:
    got_param, got_message = _refusal(parse, body)
    assert got_param == param and got_message.startswith(message), got_message


def test_a_format_of_the_wrong_type_says_what_was_given() -> None:
    assert _refusal(_chat, {"response_format": "json"})[1].endswith('got a string "json"')
    assert _refusal(_responses, {"text": {"format": ["json"]}})[1].endswith('got a list ["json"]')
