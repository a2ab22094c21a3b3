"""LangChain's standard ``*_with_model_override`` tests (langchain_tests' ChatModelIntegrationTests: invoke, ainvoke,
stream, astream), their assertions as written there, on ``ChatOpenAI`` pointed at the gateway: the reply's
``model_name`` is the name the call asked for, not the model that answered behind the route."""

from __future__ import annotations

import asyncio

import pytest
from serve_helpers import UPSTREAM_KEY, upstream_llm

from agentlab.testing.server import Reply, ScriptedServer

langchain_openai = pytest.importorskip("langchain_openai")
from langchain_core.messages import AIMessage, AIMessageChunk  # noqa: E402

OVERRIDE = "cheap"  # a route whose answering model is named otherwise ("small-model")


@pytest.fixture
def model(srv: ScriptedServer, gateway, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201
    monkeypatch.setenv("UPSTREAM_KEY", UPSTREAM_KEY)
    srv.default("big-model", Reply(text="from the big one"))
    srv.default("small-model", Reply(text="from the small one"))
    gw = gateway(upstream_llm(srv.base_url, ["big-model", "small-model"],
                              {"main": {"primary": ["big-model"]}, OVERRIDE: {"primary": ["small-model"]}}))
    return langchain_openai.ChatOpenAI(model="main", base_url=gw.base_url, api_key="unused", max_retries=0)


def check(model_name: object) -> None:
    assert model_name is not None, "model_name not found in response_metadata"
    assert OVERRIDE in str(model_name), f"Expected model '{OVERRIDE}' but got '{model_name}'"


def test_invoke_with_model_override(model) -> None:  # noqa: ANN001
    result = model.invoke("Hello", model=OVERRIDE)
    assert isinstance(result, AIMessage) and result.content == "from the small one"
    check(result.response_metadata.get("model_name"))


def test_ainvoke_with_model_override(model) -> None:  # noqa: ANN001
    result = asyncio.run(model.ainvoke("Hello", model=OVERRIDE))
    assert isinstance(result, AIMessage)
    check(result.response_metadata.get("model_name"))


def test_stream_with_model_override(model) -> None:  # noqa: ANN001
    full = None
    for chunk in model.stream("Hello", model=OVERRIDE):
        assert isinstance(chunk, AIMessageChunk)
        full = chunk if full is None else full + chunk
    assert full is not None and full.content == "from the small one"
    check(full.response_metadata.get("model_name"))


def test_astream_with_model_override(model) -> None:  # noqa: ANN001
    async def go() -> AIMessageChunk | None:
        full = None
        async for chunk in model.astream("Hello", model=OVERRIDE):
            assert isinstance(chunk, AIMessageChunk)
            full = chunk if full is None else full + chunk
        return full

    full = asyncio.run(go())
    assert full is not None
    check(full.response_metadata.get("model_name"))
