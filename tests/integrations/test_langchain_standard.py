"""LangChain's standard chat-model tests (``langchain-tests``, the suite every LangChain integration runs) on
``AgentlabChatModel``: the unit tests here on a router over a scripted model; the integration tests on the built-in
model in tests/integrations/test_langchain_standard_builtin.py (slow). Then the standard constructor arguments
(``timeout``, ``max_retries``, ``streaming``) honoured and an unknown one refused."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

pytest.importorskip("langchain_core")
standard = pytest.importorskip("langchain_tests.unit_tests")

from langchain_core.messages import HumanMessage  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from agentlab.core.errors import LLMError  # noqa: E402
from agentlab.core.llm import LLMConfig, Router, ScriptedProvider  # noqa: E402
from agentlab.integrations.langchain import AgentlabChatModel  # noqa: E402


def scripted(*replies: Any, latency_s: float = 0.0) -> tuple[Router, ScriptedProvider]:
    provider = ScriptedProvider("s", list(replies) or ["ok"], latency_s=latency_s)
    cfg = LLMConfig.model_validate({"providers": {"s": {"kind": "scripted"}},
                                    "models": {"m": {"provider": "s", "model": "m-1"}},
                                    "routes": {"default": {"primary": ["m"]}}, "retries": 0})
    return Router(cfg, {"s": provider}, rng=random.Random(0)), provider


ROUTER, _ = scripted()


class TestAgentlabChatModelUnit(standard.ChatModelUnitTests):
    """Skipped, and why: ``test_init_from_env`` (the model reads no environment variable itself: keys are the routing
    config's ``${ENV}`` references, read when the router is built) and ``test_serdes`` (not LangChain-serializable:
    it holds a live ``Router`` with its providers and event loop, as ``is_lc_serializable`` says)."""

    @property
    def chat_model_class(self) -> type[AgentlabChatModel]:
        return AgentlabChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"router": ROUTER}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # ChatModelUnitTests adds api_key="test" for HTTP integrations; this model takes no key (the router's
        # providers hold them), and refuses arguments it does not take.
        return {k: v for k, v in super().standard_chat_model_params.items() if k != "api_key"}


def test_standard_arguments_are_kept_and_an_unknown_one_is_refused() -> None:
    router, _ = scripted()
    model = AgentlabChatModel(router=router, timeout=5, max_retries=2, streaming=True, temperature=0, max_tokens=9)
    assert (model.timeout, model.max_retries, model.streaming) == (5, 2, True)
    with pytest.raises(ValidationError, match="bogus"):
        AgentlabChatModel(router=router, bogus=1)
    ls = model._get_ls_params()
    assert ls["ls_provider"] == "agentlab" and ls["ls_model_name"] == "default" and ls["ls_max_tokens"] == 9


def test_timeout_bounds_the_call_and_max_retries_asks_the_route_again() -> None:
    router, slow = scripted("late", latency_s=2.0)
    with router:
        with pytest.raises(LLMError) as failed:
            AgentlabChatModel(router=router, timeout=0.2).invoke([HumanMessage("hi")])
        assert failed.value.kind == "timeout"
    router, flaky = scripted()
    flaky.queue(LLMError("busy", "server_error"), LLMError("busy", "server_error"), "third time")
    with router:
        assert AgentlabChatModel(router=router, max_retries=2).invoke([HumanMessage("hi")]).content == "third time"
        flaky.queue(LLMError("busy", "server_error"))
        with pytest.raises(LLMError):
            AgentlabChatModel(router=router).invoke([HumanMessage("hi")])  # max_retries 0: the router's own only


def test_streaming_true_makes_invoke_stream() -> None:
    router, provider = scripted("one two three")
    seen: list[str] = []


    from langchain_core.callbacks import BaseCallbackHandler

    class Collect(BaseCallbackHandler):
        def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            seen.append(token)

    with router:
        out = AgentlabChatModel(router=router, streaming=True).invoke([HumanMessage("hi")],
                                                                        config={"callbacks": [Collect()]})
        assert out.content == "one two three" and len(seen) > 1
        asyncio.run(AgentlabChatModel(router=router).ainvoke([HumanMessage("hi")]))
