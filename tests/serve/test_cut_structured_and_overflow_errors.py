"""What a new user's pass found: a structured answer cut at the client's own `max_tokens` was a 502
`invalid_output` (the openai SDK sent it twice more, three identical failures), where a required tool call cut there
is a 400 `max_tokens`; a prompt too long had `code: "context_length"`, `param: null`, where OpenAI's clients
(langchain-openai) look for `context_length_exceeded`."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from serve_helpers import UPSTREAM_KEY, upstream_llm

from agentlab.core.errors import LLMError
from agentlab.core.llm.config import LLMConfig
from agentlab.core.llm.providers.scripted import ScriptedProvider
from agentlab.serve import Gateway, ServeConfig
from agentlab.testing.server import Reply, ScriptedServer

ASK = [{"role": "user", "content": "Describe the sea."}]
SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "sea", "schema": SCHEMA}}
CUT = Reply(text='{"lab', finish_reason="length")
SCRIPTED = {"providers": {"canned": {"kind": "scripted", "replies": ["hi"]}},
            "models": {"m": {"provider": "canned", "model": "m"}}, "routes": {"default": {"primary": ["m"]}},
            "retries": 0}


@pytest.fixture
def gw(srv: ScriptedServer, gateway, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201
    monkeypatch.setenv("UPSTREAM_KEY", UPSTREAM_KEY)
    return gateway(upstream_llm(srv.base_url, ["good"], retries=0), max_repairs=1)


def _error(response: httpx.Response) -> tuple[int, str, str | None, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["param"], error["message"]


def test_a_structured_answer_cut_at_the_clients_max_tokens_is_a_400_naming_the_field(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    srv.default("good", CUT)
    chat = gw.base_url + "/chat/completions"
    for field in ("max_tokens", "max_completion_tokens"):
        for stream in (False, True):
            body = {"model": "good", "messages": ASK, field: 3, "response_format": JSON_SCHEMA, "stream": stream}
            status, code, param, message = _error(httpx.post(chat, json=body))
            assert (status, code, param) == (400, "max_tokens", field), message
            assert message.endswith(f"before its JSON object was complete: raise {field}"), message
    body = {"model": "good", "input": "Describe the sea.", "max_output_tokens": 3,
            "text": {"format": {"type": "json_schema", "name": "sea", "schema": SCHEMA}}}
    status, code, param, message = _error(httpx.post(gw.base_url + "/responses", json=body))
    assert (status, code, param) == (400, "max_tokens", "max_output_tokens"), message
    assert message.endswith("raise max_output_tokens")
    # a 400 is not sent again by the SDK (a 502 was, twice): one request, its repair, and no more
    requests = len(srv.requests)
    retrying = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=2)
    with pytest.raises(openai.BadRequestError) as refused:
        retrying.chat.completions.create(model="good", messages=ASK, max_tokens=3, response_format=JSON_SCHEMA)
    assert refused.value.code == "max_tokens" and refused.value.param == "max_tokens"
    assert len(srv.requests) == requests + 2


def test_a_cut_the_client_did_not_ask_for_and_a_garbage_reply_stay_502(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    chat = gw.base_url + "/chat/completions"
    srv.default("good", CUT)  # no max_tokens in the request: the schema's bound or the model's configured one cut it
    status, code, param, _ = _error(httpx.post(chat, json={"model": "good", "messages": ASK,
                                                           "response_format": JSON_SCHEMA}))
    assert (status, code, param) == (502, "invalid_output", None)
    srv.default("good", Reply(text="no JSON here"))
    status, code, param, _ = _error(httpx.post(chat, json={"model": "good", "messages": ASK, "max_tokens": 3,
                                                           "response_format": JSON_SCHEMA}))
    assert (status, code, param) == (502, "invalid_output", None)


@pytest.fixture
def overflowing() -> Iterator[Gateway]:
    """A gateway whose model refuses every prompt as longer than its context (a local model's error)."""
    too_long = LLMError("m: the prompt is 5000 tokens but n_ctx is 8", "context_length", model="m")
    gw = Gateway(ServeConfig(port=0), LLMConfig.model_validate(SCRIPTED),
                 providers={"canned": ScriptedProvider(replies=[too_long])}).start()
    yield gw
    gw.stop()


def test_a_prompt_too_long_has_openais_code_and_param(overflowing: Gateway) -> None:
    base = overflowing.base_url
    status, code, param, _ = _error(httpx.post(base + "/chat/completions", json={"model": "m", "messages": ASK}))
    assert (status, code, param) == (400, "context_length_exceeded", "messages")
    status, code, param, _ = _error(httpx.post(base + "/responses", json={"model": "m", "input": "hi"}))
    assert (status, code, param) == (400, "context_length_exceeded", "input")


def test_langchain_openai_sees_a_context_overflow(overflowing: Gateway) -> None:
    """langchain-openai raises its OpenAIContextOverflowError only when "context_length_exceeded" is in the error."""
    base = pytest.importorskip("langchain_openai.chat_models.base")
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="m", base_url=overflowing.base_url, api_key="unused", max_retries=0)
    with pytest.raises(base.OpenAIContextOverflowError):
        llm.invoke("a prompt too long")
