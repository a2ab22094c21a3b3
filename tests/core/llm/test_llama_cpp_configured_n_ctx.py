"""The llama.cpp provider holds a request to the configured ``n_ctx``, not to the context llama.cpp allocates (padded
to a multiple of 256): with ``n_ctx: 32`` a 200-token prompt passed the check, and the answer came back empty with
exit 0; a refused prompt named the padded size (256), not the 32 the user wrote."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from agentlab.core.errors import LLMError  # noqa: E402
from agentlab.core.llm.config import LlamaCppProviderConfig, ResourceConfig  # noqa: E402
from agentlab.core.llm.providers import llama_cpp as lc  # noqa: E402
from agentlab.core.llm.types import Completion, GenParams, StreamDelta  # noqa: E402

SHORT = [{"role": "user", "content": "Say something about the sea."}]


@pytest.fixture(scope="module", autouse=True)
def _fresh_cache() -> Iterator[None]:
    lc.unload_all()
    yield
    lc.unload_all()


def _provider(n_ctx: int) -> lc.LlamaCppProvider:
    return lc.LlamaCppProvider("local", LlamaCppProviderConfig(n_ctx=n_ctx), ResourceConfig())


def test_a_prompt_over_the_configured_n_ctx_is_refused_naming_it(tiny_model: dict[str, Path]) -> None:
    model = str(tiny_model["gguf"])
    long = [{"role": "user", "content": "the sea and the sky " * 20}]  # ~100 tokens: inside the 256 allocated
    with pytest.raises(LLMError) as info:
        asyncio.run(_provider(32).generate(model, long, GenParams(temperature=0, max_tokens=8), 30))
    assert info.value.kind == "context_length"
    assert "but n_ctx is 32" in info.value.message and "256" not in info.value.message
    assert "n_ctx above" in (info.value.hint or "")


def test_an_answer_stops_at_the_configured_n_ctx(tiny_model: dict[str, Path]) -> None:
    model, provider = str(tiny_model["gguf"]), _provider(64)
    params = GenParams(temperature=0, max_tokens=200)  # past n_ctx: cut there, as a length cut
    out = asyncio.run(provider.generate(model, SHORT, params, 60))
    assert out.finish_reason == "length" and out.usage.prompt_tokens + out.usage.completion_tokens <= 64

    async def drain() -> tuple[list[str], Completion]:
        deltas: list[str] = []
        final: Completion | None = None
        async for item in provider.stream(model, SHORT, params, 60):
            if isinstance(item, StreamDelta):
                deltas.append(item.text)
            else:
                final = item
        assert final is not None
        return deltas, final

    deltas, final = asyncio.run(drain())
    assert final.finish_reason == "length" and final.usage.prompt_tokens + final.usage.completion_tokens <= 64
    assert "".join(deltas) == final.text
