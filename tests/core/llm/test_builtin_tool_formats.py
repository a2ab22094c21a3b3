"""Each built-in model speaks its own tool format through the llama.cpp provider: its chat template renders the tools
and the history, the grammar writes its calls the way it was trained to, and the calls are read back, streamed
too. On the real models (SmolLM2-135M, Qwen2.5-Coder-0.5B): a few short generations each."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from agentlab.core.llm import GenParams, LLMConfig
from agentlab.core.llm.types import Completion, StreamDelta
from agentlab.core.models.builtin import find_builtin

pytest.importorskip("llama_cpp")

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The current weather of a city.",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]
HISTORY: list[dict[str, Any]] = [
    *ASK,
    {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21 C"}]
# How each model's own template writes the tools and an earlier call.
FORMATS = {
    "smollm2-135m": ("You are an expert in composing functions", '<tool_call>[{"name": "get_weather", '
                     '"arguments": {"city": "Paris"}}]</tool_call>', "<tool_call>["),
    "qwen2.5-coder-0.5b": ("# Tools\n\nYou may call one or more functions", '<tool_call>\n{"name": "get_weather", '
                           '"arguments": {"city": "Paris"}}\n</tool_call>', '<tool_call>\n{"name": "get_weather"'),
}


def provider(model: str) -> Any:
    if find_builtin(model) is None:
        pytest.skip(f"the built-in model {model} is not installed (make install)")
    from agentlab.core.llm.providers.llama_cpp import LlamaCppProvider

    cfg = LLMConfig.model_validate({"providers": {"local": {"kind": "llama_cpp", "n_ctx": 2048}},
                                    "models": {"m": {"provider": "local", "model": model}}})
    return LlamaCppProvider("local", cfg.providers["local"])  # type: ignore[arg-type]


@pytest.mark.parametrize("model", list(FORMATS))
def test_the_template_renders_the_tools_and_the_history_in_the_model_s_format(model: str) -> None:
    llm = provider(model)
    loaded = llm.load(model)
    prompt_head, earlier_call, _ = FORMATS[model]
    tokens, _ = llm._prepare(loaded, model, HISTORY, GenParams(tools=[WEATHER], extra={"tool_gate": False}))
    prompt = loaded.llm.detokenize(tokens).decode("utf-8")
    assert prompt_head in prompt and earlier_call in prompt and "sunny, 21 C" in prompt
    assert loaded.tool_format(GenParams()).name == ("qwen" if "qwen" in model else "smollm2")


@pytest.mark.parametrize("model", list(FORMATS))
def test_calls_come_in_the_model_s_format_and_are_read_back_streamed(model: str) -> None:
    llm = provider(model)
    params = GenParams(tools=[WEATHER], tool_choice="required", temperature=0.0, max_tokens=64,
                       extra={"tool_gate": False})

    async def stream() -> tuple[str, Completion]:
        pieces, final = [], None
        async for item in llm.stream(model, ASK, params, 120):
            if isinstance(item, StreamDelta):
                pieces.append(item.text)
            else:
                final = item
        assert final is not None
        return "".join(pieces), final

    raw, final = asyncio.run(stream())
    assert raw.startswith(FORMATS[model][2]), raw  # the grammar wrote the model's own format
    assert [(c.name, json.loads(c.arguments)["city"]) for c in final.tool_calls] == [("get_weather", "Paris")]
    assert final.finish_reason == "tool_calls" and final.text == ""


def test_qwen_without_a_grammar_is_read_from_its_own_json() -> None:
    # Qwen2.5-Coder, asked with tools and no grammar, answers with JSON (fenced or bare, issue 57): read as a call.
    # SmolLM2's parser alone (agentlab before the tool formats) read no call from such an answer.
    model = "qwen2.5-coder-0.5b"
    llm = provider(model)
    done = asyncio.run(llm.generate(model, ASK, GenParams(tools=[WEATHER], temperature=0.0, max_tokens=64, extra={
        "tool_grammar": False, "tool_gate": False}), 120))
    assert [c.name for c in done.tool_calls] == ["get_weather"], done.text
    assert json.loads(done.tool_calls[0].arguments) == {"city": "Paris"}


def test_qwen_answers_in_text_when_no_tool_fits() -> None:
    # Under tool_choice auto Qwen's format allows text on a fresh question: the model decides (SmolLM2's grammar
    # allows only calls or an empty list there).
    model = "qwen2.5-coder-0.5b"
    llm = provider(model)
    done = asyncio.run(llm.generate(model, [{"role": "user", "content": "Write one short sentence about autumn."}],
                                    GenParams(tools=[WEATHER], temperature=0.0, max_tokens=40,
                                              extra={"tool_gate": False}), 120))
    assert done.tool_calls == [] and len(done.text) > 10
