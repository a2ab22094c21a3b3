"""Constrained tool calls in the transformers provider: a random-weight model, whose free text is never a call, calls
validly under the tools' grammar (llguidance), for every tool_choice; the grammar's language itself; and rows with
and without a grammar sharing one batch.

The session's tiny model has a 512-token context, too short for SmolLM2's tool prompt: this module builds its own
(the same recipe, 2,048 positions).
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
llguidance = pytest.importorskip("llguidance")
pytest.importorskip("llguidance.hf")
pytest.importorskip("jsonschema")

from agentlab.core.errors import LLMError  # noqa: E402
from agentlab.core.llm import GenParams, LLMConfig, Router  # noqa: E402
from agentlab.core.llm.config import HFProviderConfig  # noqa: E402
from agentlab.core.llm.grammar import check_grammar, tool_lark  # noqa: E402
from agentlab.core.llm.providers import hf  # noqa: E402
from agentlab.core.llm.providers.hf import HFProvider  # noqa: E402
from agentlab.core.llm.tools import call_problem, calls_schema, tool_constraint  # noqa: E402
from agentlab.core.llm.types import Completion, StreamDelta  # noqa: E402
from agentlab.core.models.convert import gguf_to_hf  # noqa: E402
from agentlab.core.models.modelref import ModelNotFound, resolve_model  # noqa: E402
from agentlab.core.train.tiny import make_tiny_model  # noqa: E402

ASK = [{"role": "user", "content": "What will the weather be in Paris?"}]
FORECAST = {"type": "function", "function": {"name": "get_forecast", "parameters": {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 10},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "options": {"type": "object", "properties": {
            "hourly": {"type": "boolean"},
            "fields": {"type": "array", "items": {"enum": ["temp", "rain", "wind"]}, "minItems": 1, "maxItems": 3}},
            "required": ["hourly", "fields"], "additionalProperties": False}},
    "required": ["city", "unit", "days", "options"], "additionalProperties": False}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"],
    "additionalProperties": False}}}
SEEDS = range(4)
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is faster on a busy machine


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny-2k"), seed=0, max_position_embeddings=2048))


@pytest.fixture(scope="module")
def prov() -> Any:
    provider = HFProvider("local", HFProviderConfig(device="cpu"))
    yield provider
    run(provider.aclose())
    hf.unload_all()


def ask(prov: HFProvider, model_dir: str, params: GenParams, messages: list[dict[str, Any]] | None = None
        ) -> Completion:
    return run(prov.generate(model_dir, messages or ASK, params, 120))


def sampled(seed: int, **tools: Any) -> GenParams:
    return GenParams(temperature=1.0, seed=seed, max_tokens=200, tools=[FORECAST, CLOCK], **tools)


# --------------------------------------------------------------------------- the grammar's language


@functools.cache
def tokenizers(model_dir: str) -> tuple[Any, Any]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return tok, llguidance.hf.from_tokenizer(tok)


def accepts(model_dir: str, lark: str, text: str) -> bool:
    """Whether the grammar accepts ``text`` as a whole answer."""
    tok, ll = tokenizers(model_dir)
    matcher = llguidance.LLMatcher(ll, lark, log_level=0)
    return bool(matcher.consume_tokens(tok.encode(text))) and matcher.is_accepting()


def test_tool_lark_accepts_valid_calls_only(model_dir: str) -> None:
    calls = calls_schema(GenParams(tools=[FORECAST, CLOCK], tool_choice="required", parallel_tool_calls=False))
    assert calls is not None
    strict, free = tool_lark(calls, free_text=False), tool_lark(calls, free_text=True)
    good = '<tool_call>[{"name": "get_time", "arguments": {"zone": "CET"}}]</tool_call>'
    assert accepts(model_dir, strict, good) and accepts(model_dir, free, good)
    for bad in ['<tool_call>[{"name": "get_time", "arguments": {"zone": "PST"}}]</tool_call>',  # not in the enum
                '<tool_call>[{"name": "nope", "arguments": {}}]</tool_call>',  # no such tool
                '<tool_call>[]</tool_call>',  # required: at least one call
                '<tool_call>[' + ", ".join(['{"name": "get_time", "arguments": {"zone": "UTC"}}'] * 2) +
                ']</tool_call>']:  # parallel_tool_calls false: one call
        assert not accepts(model_dir, strict, bad) and not accepts(model_dir, free, bad), bad
    assert accepts(model_dir, free, "It is sunny.") and not accepts(model_dir, strict, "It is sunny.")
    assert not accepts(model_dir, free, "<b>sunny</b>")  # text may not start with "<": no half-written tag


def test_tool_constraint_rules() -> None:
    tools = [FORECAST]
    after = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_forecast", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    assert tool_constraint(ASK, GenParams(tools=tools, tool_choice="none")) is None
    assert tool_constraint(ASK, GenParams(tools=tools, extra={"tool_grammar": False})) is None
    auto = tool_constraint(ASK, GenParams(tools=tools))
    assert auto is not None and auto[1] is False and auto[0]["minItems"] == 0
    assert tool_constraint(after, GenParams(tools=tools))[1] is True  # type: ignore[index]
    assert tool_constraint(after, GenParams(tools=tools, tool_choice="required"))[1] is False  # type: ignore[index]


def test_a_schema_llguidance_cannot_build_is_a_bad_request() -> None:
    params = GenParams(tools=[{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "string", "pattern": "(?=a)a"}}, "required": ["x"]}}}],
        tool_choice="required")
    calls = calls_schema(params)
    assert calls is not None
    with pytest.raises(LLMError) as err:
        check_grammar(tool_lark(calls, False), "m")
    assert err.value.kind == "bad_request" and "tool_grammar: false" in (err.value.hint or "")


# --------------------------------------------------------------------------- a random model under the grammar


def test_required_always_returns_a_valid_call(prov: HFProvider, model_dir: str) -> None:
    for seed in SEEDS:
        params = sampled(seed, tool_choice="required")
        out = ask(prov, model_dir, params)
        assert out.tool_calls and call_problem(out, params) is None, (seed, out.text, out.tool_calls)
        assert out.finish_reason == "tool_calls" and out.text == ""


def test_a_named_tool_and_parallel_false_give_exactly_that_one_call(prov: HFProvider, model_dir: str) -> None:
    for seed in SEEDS:
        params = sampled(seed, tool_choice={"type": "function", "function": {"name": "get_forecast"}},
                         parallel_tool_calls=False)
        out = ask(prov, model_dir, params)
        assert [c.name for c in out.tool_calls] == ["get_forecast"] and call_problem(out, params) is None
        args = json.loads(out.tool_calls[0].arguments)
        assert set(args) == {"city", "unit", "days", "options"} and 1 <= args["days"] <= 7


def test_auto_allows_no_call_and_after_results_free_text(prov: HFProvider, model_dir: str) -> None:
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": '{"zone": "UTC"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "12:00"}]
    texts = 0
    for seed in SEEDS:
        params = sampled(seed)  # tool_choice auto
        fresh = ask(prov, model_dir, params)
        assert call_problem(fresh, params) is None  # an empty list or valid calls; never a broken call
        later = ask(prov, model_dir, params, history)
        assert call_problem(later, params) is None
        texts += bool(later.text and not later.tool_calls)
    assert texts  # after tool results, the random model answers in text (free text is allowed then)


def test_none_and_tool_grammar_false_leave_the_model_free(prov: HFProvider, model_dir: str) -> None:
    plain = ask(prov, model_dir, GenParams(temperature=0, max_tokens=30))
    none = ask(prov, model_dir, GenParams(temperature=0, max_tokens=30, tools=[FORECAST], tool_choice="none"))
    assert none.text == plain.text and not none.tool_calls  # no tool prompt, no grammar: the same answer
    free = GenParams(temperature=0, max_tokens=30, tools=[FORECAST], tool_choice="required",
                     extra={"tool_grammar": False})
    out = ask(prov, model_dir, free)
    assert not out.tool_calls and call_problem(out, free) is not None  # the random model writes no call by itself


def test_constrained_and_free_rows_share_a_batch(prov: HFProvider, model_dir: str) -> None:
    required = GenParams(temperature=0, max_tokens=200, tools=[FORECAST, CLOCK], tool_choice="required")
    free = GenParams(temperature=0, max_tokens=30)
    alone = [ask(prov, model_dir, required), ask(prov, model_dir, free)]

    async def together() -> list[Completion]:
        return list(await asyncio.gather(prov.generate(model_dir, ASK, required, 120),
                                         prov.generate(model_dir, ASK, free, 120)))

    both = run(together())
    assert [c.raw["batch_size"] for c in both] == [2, 2]
    assert call_problem(both[0], required) is None and both[0].tool_calls
    assert both[1].text == alone[1].text  # the free row is not masked by its neighbour's grammar
    assert [c.to_openai()["function"] for c in both[0].tool_calls] == \
        [c.to_openai()["function"] for c in alone[0].tool_calls]


def test_stream_and_router_give_a_valid_call_without_repair(prov: HFProvider, model_dir: str) -> None:
    params = GenParams(temperature=0, max_tokens=200, tools=[FORECAST], tool_choice="required")

    async def stream() -> list[Any]:
        return [item async for item in prov.stream(model_dir, ASK, params, 120)]

    items = run(stream())
    final = items[-1]
    assert isinstance(final, Completion) and final.tool_calls and call_problem(final, params) is None
    assert "".join(i.text for i in items if isinstance(i, StreamDelta)).startswith("<tool_call>")
    cfg = LLMConfig.model_validate({
        "providers": {"local": {"kind": "hf", "device": "cpu"}},
        "models": {"tiny": {"provider": "local", "model": model_dir}},
        "routes": {"default": {"primary": ["tiny"]}}, "retries": 0, "timeout_s": 120})
    with Router.from_config(cfg) as router:
        rc = router.generate_sync(ASK, params=params)
    assert [a.outcome for a in rc.attempts] == ["ok"] and call_problem(rc.completion, params) is None


@pytest.mark.slow  # converts the built-in GGUF once (cached after)
def test_builtin_smollm2_does_not_mangle_the_tags() -> None:
    # "<tool_call>" must not be a special token of the tokenizer, or decoding would drop it
    from transformers import AutoTokenizer

    pytest.importorskip("gguf")
    try:
        path = gguf_to_hf(resolve_model("smollm2-135m").path)
    except ModelNotFound:
        pytest.skip("the built-in model is not installed")
    tok = AutoTokenizer.from_pretrained(path)
    text = '<tool_call>[{"name": "f", "arguments": {}}]</tool_call>'
    assert tok.decode(tok.encode(text), skip_special_tokens=True) == text



@pytest.mark.slow  # the built-in SmolLM2-135M on the CPU (converted from its GGUF once, then cached)
def test_builtin_smollm2_calls_a_tool_it_never_saw() -> None:
    try:
        resolve_model("smollm2-135m")
    except ModelNotFound:
        pytest.skip("the built-in model is not installed")
    params = GenParams(temperature=0, max_tokens=120, tools=[FORECAST, CLOCK], tool_choice="required",
                       parallel_tool_calls=False)
    provider = HFProvider("local", HFProviderConfig(device="cpu"))
    try:
        out = run(provider.generate("smollm2-135m", ASK, params, 300))
    finally:
        run(provider.aclose())
    assert len(out.tool_calls) == 1 and call_problem(out, params) is None, (out.text, out.tool_calls)
