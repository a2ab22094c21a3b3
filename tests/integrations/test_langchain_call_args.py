"""``AgentlabChatModel``'s call-time arguments (``invoke(..., temperature=0)``, ``bind(top_k=3)``): validated as a
routing config's ``params`` are, an unknown one refused naming it; LangChain's own arguments (bind_tools,
with_structured_output, create_agent's response_format) still pass."""

from __future__ import annotations

import random
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from pydantic import BaseModel  # noqa: E402

from agentlab.core.llm import LLMConfig, Router, ScriptedProvider  # noqa: E402
from agentlab.core.llm.providers.scripted import Calls  # noqa: E402
from agentlab.integrations.langchain import AgentlabChatModel  # noqa: E402


def router(*replies: Any) -> tuple[Router, ScriptedProvider]:
    good = ScriptedProvider("good").queue(*replies)
    config = LLMConfig.model_validate({
        "providers": {"good": {"kind": "scripted"}}, "models": {"good": {"provider": "good", "model": "good-1"}},
        "routes": {"default": {"primary": ["good"]}}, "retries": 0})
    return Router(config, {"good": good}, rng=random.Random(0)), good


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"temprature": 0.5}, r"unknown call argument 'temprature' \(did you mean temperature\?\)"),
    ({"bogus": 1}, r"unknown call argument 'bogus'; it takes .*top_k"),
    ({"temperature": -3}, r"call argument temperature=-3: .*greater than or equal to 0"),
    ({"max_tokens": 0}, r"call argument max_tokens=0: .*greater than or equal to 1"),
    ({"top_p": 2}, r"call argument top_p=2"),
    # LangChain reads its tracing params (float(temperature), int(max_tokens)) before _generate: refused there too
    ({"temperature": "hot"}, r"call argument temperature='hot': .*valid number"),
    ({"max_tokens": "lots"}, r"call argument max_tokens='lots': .*valid integer"),
    ({"response_format": {"type": "xml"}}, r"response_format must be OpenAI's"),
])
def test_a_bad_call_argument_is_refused_naming_it(kwargs: dict[str, Any], message: str) -> None:
    r, good = router("hi")
    with r:
        model = AgentlabChatModel(router=r)
        with pytest.raises(ValueError, match=message):
            model.invoke("Say hi", **kwargs)
        with pytest.raises(ValueError, match=message):
            list(model.bind(**kwargs).stream("Say hi"))
    assert good.calls == []  # refused before any request went out


def test_the_constructor_range_checks_as_the_call_does() -> None:
    r, _ = router()
    with r:
        for fields in ({"temperature": -3}, {"max_tokens": 0}, {"bogus": 1}):
            with pytest.raises(ValueError, match=next(iter(fields))):
                AgentlabChatModel(router=r, **fields)


def test_valid_call_arguments_reach_the_request() -> None:
    r, good = router("a", "b")
    with r:
        model = AgentlabChatModel(router=r, temperature=0.7)
        assert model.invoke("Say hi", temperature=0, max_tokens=8, top_k=3, seed=1, stop="x").content == "a"
        sent = good.calls[-1].params
        assert (sent.temperature, sent.max_tokens, sent.seed, sent.stop) == (0, 8, 1, ["x"])
        assert sent.extra == {"top_k": 3}  # what llama.cpp reads (and an OpenAI-compatible server is sent)
        schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
        model.invoke("Say hi", response_format={"type": "json_schema", "json_schema": {"name": "X", "schema": schema,
                                                                                       "strict": True}})
        assert good.calls[-1].params.json_schema == {"name": "X", "schema": schema}


class Answer(BaseModel):
    """The answer."""

    value: int


def test_langchains_own_arguments_still_pass() -> None:
    r, good = router(Calls([("Answer", {"value": 4})]), Calls([("Answer", {"value": 5})]), "done")
    with r:
        model = AgentlabChatModel(router=r)
        assert model.with_structured_output(Answer).invoke("2+2?") == Answer(value=4)
        bound = model.bind_tools([Answer], tool_choice="Answer", parallel_tool_calls=False, strict=True)
        assert bound.invoke("2+3?", stream=False).tool_calls[0]["args"] == {"value": 5}
        assert model.invoke("ok", model="default", stream=True).content == "done"
    assert good.calls[1].params.parallel_tool_calls is False


def test_create_agent_with_a_provider_strategy_sends_the_schema() -> None:
    agents = pytest.importorskip("langchain.agents")
    structured = pytest.importorskip("langchain.agents.structured_output")
    r, good = router('{"value": 4}')
    with r:
        out = agents.create_agent(AgentlabChatModel(router=r), [],
                                  response_format=structured.ProviderStrategy(Answer)).invoke(
            {"messages": [("user", "2+2?")]})
    assert out["structured_response"] == Answer(value=4)
    assert good.calls[0].params.json_schema is not None
    assert good.calls[0].params.json_schema["schema"]["properties"]["value"]["type"] == "integer"
