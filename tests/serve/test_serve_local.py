"""Local models behind the gateway: two LoRA adapters of one base model served as two model names (the way vLLM
serves multi-LoRA), each with its own answer and batched together; a GGUF model through llama.cpp, streamed and held
to a JSON schema."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import openai
import pytest

from agentlab.core.llm.config import LLMConfig
from agentlab.serve import Gateway, ServeConfig


@pytest.fixture(scope="module")
def two_adapters(tiny_model: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from agentlab.core.train.tiny import make_tiny_adapter

    root = tmp_path_factory.mktemp("serve-adapters")
    return {name: make_tiny_adapter(tiny_model["hf"], root / name, seed=seed, scale=0.5)
            for seed, name in enumerate(("persona_a", "persona_b"), start=1)}


def test_two_adapters_are_two_models_with_different_answers_batched_together(
        tiny_model: dict[str, Path], two_adapters: dict[str, Path], one_torch_thread: None) -> None:
    llm = LLMConfig.model_validate({
        "providers": {"local": {"kind": "hf", "device": "cpu", "batch_wait_ms": 500,
                                "adapters": {name: str(path) for name, path in two_adapters.items()}}},
        "models": {"tiny": {"provider": "local", "model": str(tiny_model["hf"]),
                            "params": {"temperature": 0, "max_tokens": 12}}},
        "timeout_s": 120})
    with Gateway(ServeConfig(port=0), llm) as gw:
        listed = {m["id"]: m["agentlab"] for m in httpx.get(gw.base_url + "/models").json()["data"]}
        assert listed["persona_a"] == {"kind": "adapter", "chain": ["persona_a"], "provider": "local",
                                       "adapter": "persona_a"}
        assert set(listed) == {"default", "tiny", "persona_a", "persona_b"}
        provider = gw.router.providers["local"]

        async def ask_all() -> dict[str, str]:
            async with openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0,
                                          timeout=120) as client:
                replies = await asyncio.gather(*(client.chat.completions.create(
                    model=name, messages=[{"role": "user", "content": "Tell me a story."}])
                    for name in ("persona_a", "persona_b", "tiny")))
            assert [r.model for r in replies] == ["persona_a", "persona_b", "tiny"]
            assert all(r.usage.completion_tokens > 0 for r in replies)
            return {r.model: r.choices[0].message.content for r in replies}

        together = asyncio.run(ask_all())
        assert 3 in provider.batch_sizes  # one generate call for both adapters and the base model
        assert len(set(together.values())) == 3, together  # each adapter answers in its own way
        alone = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0).chat.completions.create(
            model="persona_b", messages=[{"role": "user", "content": "Tell me a story."}])
        assert alone.choices[0].message.content == together["persona_b"]  # a mixed batch changes no answer


def test_a_gguf_model_through_llama_cpp_streams_and_follows_a_json_schema(tiny_model: dict[str, Path]) -> None:
    pytest.importorskip("llama_cpp")
    llm = LLMConfig.model_validate({
        "providers": {"gguf": {"kind": "llama_cpp", "n_ctx": 512}},
        "models": {"tiny-gguf": {"provider": "gguf", "model": str(tiny_model["gguf"]),
                                 "params": {"temperature": 0, "max_tokens": 8}}},
        "timeout_s": 120})
    ask = [{"role": "user", "content": "Name a colour."}]
    with Gateway(ServeConfig(port=0), llm) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=120)
        whole = client.chat.completions.create(model="tiny-gguf", messages=ask)
        assert whole.model == "tiny-gguf" and whole.usage.completion_tokens > 0
        again = client.chat.completions.create(model="tiny-gguf", messages=ask)  # its prompt is in the KV cache
        assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1
        answer = client.responses.create(model="tiny-gguf", input="Name a colour.", max_output_tokens=8)
        assert answer.usage.input_tokens_details.cached_tokens == answer.usage.input_tokens - 1
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="tiny-gguf", messages=ask, stream=True) if c.choices)
        assert streamed == whole.choices[0].message.content  # greedy: the same text, in pieces
        schema = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 12},
                                                   "ok": {"type": "boolean"}},
                  "required": ["colour", "ok"], "additionalProperties": False}
        reply = client.chat.completions.create(model="tiny-gguf", messages=ask, max_tokens=60, response_format={
            "type": "json_schema", "json_schema": {"name": "pick", "schema": schema}})
        value = json.loads(reply.choices[0].message.content)  # a random tiny model, held to the schema by grammar
        assert set(value) == {"colour", "ok"} and isinstance(value["ok"], bool) and len(value["colour"]) <= 12
