"""/v1/responses refused the function-tool fields OpenAI documents beyond chat's (`defer_loading`, which LangChain's
ChatOpenAI(use_responses_api=True) passes through, `allowed_callers`, `output_schema`) as unknown fields."""

from __future__ import annotations

from typing import Any

import pytest

from agentlab.serve.protocol import ApiError
from agentlab.serve.responses import parse_responses

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}}
# A value of each documented field that asks nothing this gateway cannot do; a new SDK field gets None, which
# check_fields still refuses when the field is not known: the test then fails and names it.
SERVED = {"type": "function", "name": "weather", "parameters": WEATHER, "strict": False, "description": "d",
          "defer_loading": False, "allowed_callers": ["direct", "programmatic"], "output_schema": None}


def _parse(tool: dict[str, Any]) -> Any:
    return parse_responses({"model": "good", "input": "hi", "tools": [tool]}, max_tokens_limit=64, max_messages=8,
                           history=lambda _: None)


def test_every_field_the_openai_sdk_documents_for_a_function_tool_is_accepted() -> None:
    tool_param = pytest.importorskip("openai.types.responses.function_tool_param")
    keys = set(tool_param.FunctionToolParam.__annotations__)
    assert {"name", "parameters", "defer_loading"} <= keys
    req = _parse({key: SERVED.get(key) for key in keys})
    tools = req.chat.params.tools
    assert tools == [{"type": "function", "function": {"name": "weather", "description": "d", "parameters": WEATHER}}]


def test_langchains_defer_loading_false_and_direct_callers_are_served() -> None:
    _parse({"type": "function", "name": "weather", "parameters": WEATHER, "defer_loading": False})
    _parse({"type": "function", "name": "weather", "parameters": WEATHER, "allowed_callers": ["direct"]})


@pytest.mark.parametrize("field, value, code, says", [
    ("defer_loading", True, "unsupported_parameter", "deferred tools"),
    ("allowed_callers", ["programmatic"], "unsupported_parameter", "include 'direct'"),
    ("allowed_callers", [], "unsupported_parameter", "include 'direct'"),
    ("output_schema", {"type": "object"}, "unsupported_parameter", "not shown to the model"),
    ("defer_loading", "yes", "invalid_request", "must be true or false"),
    ("allowed_callers", "direct", "invalid_request", "must be a list"),
    ("output_schema", "x", "invalid_request", "must be a JSON schema object"),
])
def test_a_value_the_gateway_cannot_honour_is_a_400_naming_the_field(field: str, value: Any, code: str,
                                                                      says: str) -> None:
    with pytest.raises(ApiError) as err:
        _parse({"type": "function", "name": "weather", "parameters": WEATHER, field: value})
    assert err.value.status == 400 and err.value.code == code and err.value.param == f"tools[0].{field}"
    assert says in err.value.message
