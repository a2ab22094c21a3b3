"""The in-process llama.cpp provider on the tiny random GGUF: mechanics, not meaning (the model babbles)."""

from __future__ import annotations

import asyncio
import enum
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from agentlab.core.errors import AllModelsFailed, LLMError
from agentlab.core.llm.config import LlamaCppProviderConfig, LLMConfig, ResourceConfig
from agentlab.core.llm.providers import build_provider
from agentlab.core.llm.providers import llama_cpp as lc
from agentlab.core.llm.resources import ResourceError, loaded_estimates
from agentlab.core.llm.router import Router
from agentlab.core.llm.types import Completion, GenParams, StreamDelta

MSGS = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say something about the sea."}]
GREEDY = GenParams(temperature=0, max_tokens=24)


@pytest.fixture(scope="module", autouse=True)
def _fresh_cache() -> Iterator[None]:
    lc.unload_all()
    yield
    lc.unload_all()


def _provider(n_ctx: int = 512, **kwargs: object) -> lc.LlamaCppProvider:
    return lc.LlamaCppProvider("local", LlamaCppProviderConfig(n_ctx=n_ctx, **kwargs), ResourceConfig())


def _run(coro):  # noqa: ANN001, ANN202 - a tiny helper for sync tests
    return asyncio.run(coro)


async def _drain(provider: lc.LlamaCppProvider, model: str, params: GenParams,
                 timeout_s: float = 30, messages: list[dict] = MSGS) -> tuple[list[str], Completion]:
    deltas: list[str] = []
    final: Completion | None = None
    async for item in provider.stream(model, messages, params, timeout_s):
        if isinstance(item, StreamDelta):
            assert final is None, "a delta after the final completion"
            deltas.append(item.text)
        else:
            final = item
    assert final is not None
    return deltas, final


def test_generate_text_usage_and_chatml_prompt(tiny_model: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    provider = build_provider("local", LlamaCppProviderConfig(n_ctx=512), resources=ResourceConfig())
    assert isinstance(provider, lc.LlamaCppProvider)
    out = _run(provider.generate(str(tiny_model["gguf"]), MSGS, GREEDY, 30))
    assert isinstance(out.text, str) and out.model == str(tiny_model["gguf"])
    assert out.finish_reason in ("stop", "length") and out.latency_s > 0
    assert 0 < out.usage.completion_tokens <= 24
    # The prompt is the GGUF's ChatML template, tokenized like the HF tokenizer does it.
    hf_tok = AutoTokenizer.from_pretrained(str(tiny_model["hf"]))
    chatml = hf_tok.apply_chat_template(MSGS, tokenize=False, add_generation_prompt=True)
    assert chatml.startswith("<|im_start|>system\n") and chatml.endswith("<|im_start|>assistant\n")
    assert out.usage.prompt_tokens == len(hf_tok(chatml, add_special_tokens=False)["input_ids"])
    # Greedy decoding is deterministic; the same prompt again comes from the KV cache (all but the token that is
    # evaluated again to refresh the logits).
    again = _run(provider.generate(str(tiny_model["gguf"]), MSGS, GREEDY, 30))
    assert again.text == out.text
    assert (again.usage.prompt_tokens, again.usage.completion_tokens) == (out.usage.prompt_tokens,
                                                                            out.usage.completion_tokens)
    assert again.usage.cached_tokens == out.usage.prompt_tokens - 1


def test_prompt_reuse_is_reported_and_can_be_turned_off(tiny_model: dict[str, Path]) -> None:
    model = str(tiny_model["gguf"])
    longer = [*MSGS, {"role": "assistant", "content": "Waves."}, {"role": "user", "content": "And the sky?"}]
    reused = _provider()
    _run(reused.generate(model, MSGS, GREEDY, 30))
    second = _run(reused.generate(model, longer, GREEDY, 30))
    # the system and first user turn are the shared prefix: read from the cache, the rest evaluated
    assert 0 < second.usage.cached_tokens < second.usage.prompt_tokens
    whole = _provider(prompt_cache=False)
    _run(whole.generate(model, MSGS, GREEDY, 30))
    third = _run(whole.generate(model, longer, GREEDY, 30))
    assert third.usage.cached_tokens == 0 and third.usage.prompt_tokens == second.usage.prompt_tokens


def test_a_conversation_displaced_by_another_gets_its_cache_back(tiny_model: dict[str, Path]) -> None:
    """An agent's conversation and an unrelated request (the evaluator route) on one model: with prompt_states the
    agent's next step reads its whole history from the snapshot kept when the other request displaced it, and answers
    as it would have on a cache that was never displaced; with 0 it evaluates its prompt whole."""
    model = str(tiny_model["gguf"])
    agent = [{"role": "system", "content": "You plan trials. " + "A trial's loss and its settings. " * 60},
             {"role": "user", "content": "Which trial next?"}]
    later = [*agent, {"role": "assistant", "content": "Trial two."}, {"role": "user", "content": "It ran: 0.4."}]
    other = [{"role": "system", "content": "You judge. " + "Evaluation words. " * 70},
             {"role": "user", "content": "Is 0.4 better?"}]

    def steps(provider: lc.LlamaCppProvider) -> tuple[Completion, Completion, Completion]:
        lc.unload_all()
        first = _run(provider.generate(model, agent, GREEDY, 30))
        displacing = _run(provider.generate(model, other, GREEDY, 30))
        return first, displacing, _run(provider.generate(model, later, GREEDY, 30))

    first, displacing, kept = steps(_provider(n_ctx=2048))
    assert first.usage.prompt_tokens > 2 * lc.SNAPSHOT_MIN and displacing.usage.prompt_tokens > lc.SNAPSHOT_MIN
    assert displacing.usage.cached_tokens < 20  # the two share only the template's first tokens
    assert kept.usage.cached_tokens >= first.usage.prompt_tokens  # its prompt and its answer, from the snapshot
    (kept_other,) = lc.loaded_models()[0].snapshots  # now the other one is kept: its prompt and what it generated
    used = displacing.usage
    assert used.prompt_tokens < len(kept_other.ids) <= used.prompt_tokens + used.completion_tokens
    # a seeded request evaluates its whole prompt though a snapshot holds it (its draw must not depend on what ran
    # before); the agent's cache it displaces is kept
    seeded = _run(_provider(n_ctx=2048).generate(model, other, GenParams(temperature=0, max_tokens=24, seed=1), 30))
    assert seeded.usage.cached_tokens == 0 and seeded.text == displacing.text
    assert len(lc.loaded_models()[0].snapshots) == 2
    # embeddings reset the cache: the live conversation (a third one) is kept first, and goes on from its snapshot
    third = [{"role": "system", "content": "You summarise. " + "Words to summarise. " * 70},
             {"role": "user", "content": "Summarise."}]
    before = _run(_provider(n_ctx=2048).generate(model, third, GREEDY, 30))
    _run(_provider(n_ctx=2048).embed(model, ["a short text"], GREEDY, 30))
    again = _run(_provider(n_ctx=2048).generate(model, third, GREEDY, 30))
    assert again.usage.cached_tokens == again.usage.prompt_tokens - 1 and again.text == before.text
    lc.unload_all()
    alone = _run(_provider(n_ctx=2048).generate(model, agent, GREEDY, 30))
    never_displaced = _run(_provider(n_ctx=2048).generate(model, later, GREEDY, 30))
    assert (alone.text, never_displaced.text) == (first.text, kept.text)

    _, _, whole = steps(_provider(n_ctx=2048, prompt_states=0))
    assert whole.usage.cached_tokens < 20 and whole.text == kept.text
    assert lc.loaded_models()[0].snapshots == []


def test_completions_between_an_agents_steps_leave_its_snapshot(tiny_model: dict[str, Path]) -> None:
    """Raw completions (the gateway's /v1/completions) evaluate each prompt whole: the first keeps the agent's cache
    as a snapshot, and none of them is kept in its place, so the agent's next step reads its history back."""
    from agentlab.core.llm.scoring import RawRequest

    model, provider = str(tiny_model["gguf"]), _provider(n_ctx=2048)
    agent = [{"role": "system", "content": "You plan trials. " + "A trial's loss and its settings. " * 60},
             {"role": "user", "content": "Which trial next?"}]
    lc.unload_all()
    first = _run(provider.generate(model, agent, GREEDY, 30))
    for i in range(3):
        _run(provider.complete(model, RawRequest([f"Text {i}: " + "words of a document " * 80], max_tokens=4),
                               GREEDY, 30))
    later = [*agent, {"role": "assistant", "content": "Trial two."}, {"role": "user", "content": "It ran: 0.4."}]
    assert _run(provider.generate(model, later, GREEDY, 30)).usage.cached_tokens >= first.usage.prompt_tokens
    assert len(lc.loaded_models()[0].snapshots) == 0  # put back, and nothing else was kept


def test_stream_deltas_add_up_to_the_final_text(tiny_model: dict[str, Path]) -> None:
    provider, model = _provider(), str(tiny_model["gguf"])
    plain = _run(provider.generate(model, MSGS, GREEDY, 30))
    deltas, final = _run(_drain(provider, model, GREEDY))
    assert deltas and "".join(deltas) == final.text == plain.text
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (plain.usage.prompt_tokens,
                                                                          plain.usage.completion_tokens)
    assert final.finish_reason == plain.finish_reason
    assert final.ttft_s is not None and 0 < final.ttft_s <= final.latency_s
    # Sampled, with stop strings the babble is likely to hit: still prefix-consistent, and equal to generate.
    for seed in range(4):
        params = GenParams(temperature=1.0, max_tokens=60, seed=seed, stop=["e ", "ow"])
        deltas, final = _run(_drain(provider, model, params))
        assert "".join(deltas) == final.text == _run(provider.generate(model, MSGS, params, 30)).text


def test_loaded_once_across_providers_and_routers(tiny_model: dict[str, Path]) -> None:
    lc.unload_all()
    before = lc.load_count()
    cfg = LLMConfig.model_validate({
        "providers": {"local": {"kind": "llama_cpp", "n_ctx": 512}},
        "models": {"tiny": {"provider": "local", "model": str(tiny_model["gguf"]),
                            "params": {"temperature": 0, "max_tokens": 8}}},
    })

    async def both() -> list[str]:
        answers = []
        for streamed in (False, True):
            async with Router.from_config(cfg) as router:
                routed = await router.generate(MSGS, stream=streamed)
                assert (routed.completion.ttft_s is not None) == streamed
                answers.append(routed.text)
        return answers

    first, second = _run(both())
    _run(_provider().generate(str(tiny_model["gguf"]), MSGS, GREEDY, 30))  # a third, separate provider
    assert lc.load_count() - before == 1 and first == second
    assert [e.name for e in loaded_estimates()].count(str(tiny_model["gguf"])) == 1


def test_relative_path_resolves_against_models_directory(tiny_model: dict[str, Path]) -> None:
    provider = _provider(models_directory=str(tiny_model["gguf"].parent))
    assert provider.resolve("model.gguf") == tiny_model["gguf"].resolve()
    assert _run(provider.generate("model.gguf", MSGS, GREEDY, 30)).usage.completion_tokens > 0


def test_missing_file_is_unavailable(in_tmp: Path) -> None:
    with pytest.raises(LLMError) as info:
        _run(_provider().generate("nope/missing.gguf", MSGS, GREEDY, 30))
    assert info.value.kind == "unavailable" and not info.value.retryable
    assert str(in_tmp / "nope" / "missing.gguf") in info.value.message and info.value.hint


def test_over_budget_is_refused_before_loading(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    lc.unload_all()  # models loaded by earlier tests would count against the budget too
    gguf = shutil.copy(tiny_model["gguf"], tmp_path / "big.gguf")  # a distinct file: not in the cache
    provider = lc.LlamaCppProvider("local", LlamaCppProviderConfig(n_ctx=4096),
                                   ResourceConfig(memory_budget_gb=0.01))
    before, held = lc.load_count(), len(loaded_estimates())
    with pytest.raises(ResourceError) as info:
        _run(provider.generate(str(gguf), MSGS, GREEDY, 30))
    assert lc.load_count() == before and len(loaded_estimates()) == held
    assert str(gguf) in info.value.message and "at n_ctx 4096" in info.value.message
    assert "would fit" in info.value.message and "n_ctx" in info.value.hint


def test_quantized_cache_needs_block_sized_heads(tiny_model: dict[str, Path]) -> None:
    before = lc.load_count()
    with pytest.raises(LLMError, match="cache_type q8_0") as info:
        _run(_provider(cache_type="q8_0").generate(str(tiny_model["gguf"]), MSGS, GREEDY, 30))
    assert info.value.kind == "unavailable" and "f16" in info.value.hint and lc.load_count() == before


def test_prompt_longer_than_n_ctx(tiny_model: dict[str, Path]) -> None:
    long = [{"role": "user", "content": "the sea and the sky " * 200}]
    with pytest.raises(LLMError) as info:
        _run(_provider().generate(str(tiny_model["gguf"]), long, GREEDY, 30))
    assert info.value.kind == "context_length" and not info.value.retryable
    assert "n_ctx is 512" in info.value.message and "n_ctx" in info.value.hint


def test_answer_cut_at_n_ctx_warns(tiny_model: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    # Greedy babble on this model runs into split UTF-8 characters near the end of the context, where
    # llama-cpp-python alone would decode past n_ctx and fail: the answer must end as a clean length cut.
    provider, model, params = _provider(), str(tiny_model["gguf"]), GenParams(temperature=0, max_tokens=600)
    with caplog.at_level(logging.WARNING, logger=lc.__name__):
        out = _run(provider.generate(model, MSGS, params, 60))
    assert "will be cut" in caplog.text
    assert out.finish_reason == "length" and out.usage.prompt_tokens + out.usage.completion_tokens <= 512
    deltas, final = _run(_drain(provider, model, params, timeout_s=60))
    assert "".join(deltas) == final.text == out.text and final.finish_reason == "length"


def test_timeout(tiny_model: dict[str, Path]) -> None:
    provider, model = _provider(), str(tiny_model["gguf"])
    provider.load(model)  # the load itself is not part of a request's time
    params = GenParams(temperature=1.0, max_tokens=400)
    with pytest.raises(LLMError) as info:
        _run(provider.generate(model, MSGS, params, 1e-4))
    assert info.value.kind == "timeout" and info.value.retryable
    with pytest.raises(LLMError) as info:
        _run(_drain(provider, model, params, timeout_s=1e-4))
    assert info.value.kind == "timeout"
    # The model is free again afterwards.
    assert _run(provider.generate(model, MSGS, GREEDY, 30)).text


def test_concurrent_requests_and_early_stream_exit(tiny_model: dict[str, Path]) -> None:
    provider, model = _provider(), str(tiny_model["gguf"])

    async def scenario() -> list[Completion]:
        async for item in provider.stream(model, MSGS, GenParams(temperature=1.0, max_tokens=400), 30):
            assert isinstance(item, StreamDelta)
            break  # leaving early must stop generation and free the model
        return await asyncio.gather(*(provider.generate(model, MSGS, GREEDY, 30) for _ in range(3)))

    outs = _run(asyncio.wait_for(scenario(), 30))
    assert len({o.text for o in outs}) == 1


def test_gpu_layers_without_gpu_build_warns(tiny_model: dict[str, Path], caplog: pytest.LogCaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python build offloads to a GPU")
    monkeypatch.setattr(lc, "_warned_no_gpu", False)
    with caplog.at_level(logging.WARNING, logger=lc.__name__):
        out = _run(_provider(n_gpu_layers=-1).generate(str(tiny_model["gguf"]), MSGS, GREEDY, 30))
    assert "no GPU offload" in caplog.text and out.text is not None


class Mood(enum.StrEnum):
    calm = "calm"
    stormy = "stormy"


class SeaReport(BaseModel):
    wavy: bool
    mood: Mood


def test_router_structured_is_grammar_constrained(tiny_model: dict[str, Path]) -> None:
    cfg = LLMConfig.model_validate({
        "providers": {"local": {"kind": "llama_cpp", "n_ctx": 1024}},
        "models": {"tiny": {"provider": "local", "model": str(tiny_model["gguf"]),
                            "params": {"temperature": 0, "max_tokens": 64}}},
    })
    with Router.from_config(cfg) as router:
        result = router.structured_sync([{"role": "user", "content": "How is the sea?"}], SeaReport)
    assert isinstance(result.value, SeaReport) and result.repairs == 0  # a random model is valid only by grammar
    assert SeaReport.model_validate_json(result.completion.completion.text) == result.value


def test_completion_tokens_never_exceed_max_tokens(tiny_model: dict[str, Path]) -> None:
    """llama-cpp-python checks max_tokens only between complete UTF-8 characters: a run of split characters (byte
    tokens) went past it, and usage said e.g. 9 tokens for max_tokens 2 (OpenAI's contract and serve's key budgets
    hold completion_tokens <= max_tokens). These seeds' babbles split characters at the cut."""
    provider, model = _provider(), str(tiny_model["gguf"])
    messages = [{"role": "user", "content": "Say something \U0001f30a\U0001f41f about the sea."}]
    for seed in (0, 4, 6, 10):
        for max_tokens in (1, 2, 4, 8):
            params = GenParams(temperature=1.0, max_tokens=max_tokens, seed=seed)
            out = _run(provider.generate(model, messages, params, 30))
            assert out.usage.completion_tokens <= max_tokens, (seed, max_tokens, out.usage)
            if out.usage.completion_tokens == max_tokens:
                assert out.finish_reason == "length", (seed, max_tokens)
            deltas, final = _run(_drain(provider, model, params, messages=messages))
            assert "".join(deltas) == final.text == out.text
            assert final.usage.completion_tokens == out.usage.completion_tokens


def test_structured_reply_cut_at_max_tokens_is_reported_as_cut(tiny_model: dict[str, Path]) -> None:
    cfg = LLMConfig.model_validate({
        "providers": {"local": {"kind": "llama_cpp", "n_ctx": 1024}},
        "models": {"tiny": {"provider": "local", "model": str(tiny_model["gguf"])}}, "retries": 0,
    })
    with Router.from_config(cfg) as router, pytest.raises(AllModelsFailed) as info:
        router.structured_sync([{"role": "user", "content": "How is the sea?"}], SeaReport, max_repairs=1,
                               params=GenParams(temperature=0, max_tokens=4))
    # both the reply and its repair stop at 4 tokens, inside the grammar's JSON: cut, not "no JSON object found"
    assert [a[1] for a in info.value.attempts] == ["ok", "ok", "invalid_output"]
    assert info.value.attempts[-1][2] == ("the reply was cut off at max_tokens (after 4 tokens) before its JSON "
                                          "object was complete")


def test_a_cancelled_request_stops_decoding_at_the_next_token(tiny_model: dict[str, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in a sync caller cancels the router's task: the request's job is told, so llama.cpp's stopping
    criterion ends decoding at the next token instead of at max_tokens (it kept the model, and agentlab's exit, busy
    for half a minute on the built-in model). Decoding is stood in for by a loop that runs until the job is
    cancelled, or 10 s."""
    import time

    from agentlab.core.llm.types import Usage

    provider, model = _provider(), str(tiny_model["gguf"])
    provider.load(model)
    seen: list[tuple[bool, float]] = []

    def decoding(loaded: object, model: str, messages: object, params: object, job: lc._Job) -> object:
        t0 = time.monotonic()
        while not job.should_stop([]) and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        seen.append((job.cancelled, time.monotonic() - t0))
        return "", "stop", Usage(0, 0), []

    monkeypatch.setattr(provider, "_run", decoding)

    async def scenario() -> None:
        task = asyncio.create_task(provider.generate(model, MSGS, GREEDY, 60))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        while not seen:
            await asyncio.sleep(0.02)

    _run(asyncio.wait_for(scenario(), 30))
    (cancelled, seconds), = seen
    assert cancelled and seconds < 5, seen


def test_a_stream_consumer_cancelled_as_a_token_arrives_stops_decoding(tiny_model: dict[str, Path],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel that lands as a token arrives was dropped by Python 3.11's ``asyncio.wait_for`` (it returns the
    token): the stream went on, and the model decoded to max_tokens for a client that had left (the gateway's
    disconnected streams, now and then under load). Decoding is stood in for by a loop that hands over tokens as fast
    as it can until the job stops; each of 30 consumers is cancelled a few tokens in."""
    import threading

    from agentlab.core.llm.types import Usage

    provider, model = _provider(), str(tiny_model["gguf"])
    provider.load(model)
    decoded: list[int] = []

    def decoding(loaded: object, model: str, messages: object, params: object, job: lc._Job,
                 on_text: object = None) -> object:
        n = 0
        while not job.should_stop([]) and n < 200_000:
            on_text("x")  # type: ignore[operator]
            n += 1
        decoded.append(n)
        return "", "stop", Usage(0, n), []

    monkeypatch.setattr(provider, "_run", decoding)
    monkeypatch.setattr(lc, "_StreamText", None)  # unused: ``on_text`` goes straight to the queue
    finished = threading.Event()

    async def consume() -> None:
        async for _ in provider.stream(model, MSGS, GREEDY, 60):
            await asyncio.sleep(0)

    async def scenario() -> None:
        for _ in range(30):
            task = asyncio.create_task(consume())
            await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        while len(decoded) < 30:
            await asyncio.sleep(0.01)
        finished.set()

    _run(asyncio.wait_for(scenario(), 120))
    assert finished.is_set() and max(decoded) < 200_000, decoded


def test_a_request_cancelled_while_waiting_its_turn_never_evaluates_its_prompt(
        tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A request whose caller left while another held the model evaluated its whole prompt once the model was free,
    for nobody, delaying the next request."""
    provider, model = _provider(), str(tiny_model["gguf"])
    loaded = provider.load(model)
    prepared: list[object] = []
    monkeypatch.setattr(provider, "_prepare", lambda *args: prepared.append(args) or ([], {}))

    async def scenario() -> None:
        loaded.lock.acquire()  # another request holds the model
        try:
            task = asyncio.create_task(provider.generate(model, MSGS, GREEDY, 60))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            loaded.lock.release()

    _run(scenario())
    loaded.executor.submit(lambda: None).result(timeout=30)  # one worker thread: the cancelled job has ended
    assert loaded.lock.acquire(timeout=5)  # and let go of the model
    loaded.lock.release()
    assert prepared == []


def test_a_stream_its_consumer_left_ends_without_a_divergence_warning(tiny_model: dict[str, Path],
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A stream cut by its consumer (a client gone, the gateway stopping) compared the streamed text with llama.cpp's
    final text of a decode stopped midway and warned "stream text diverged" on every such stop."""
    import threading

    provider, model = _provider(), str(tiny_model["gguf"])
    done = threading.Event()
    run = provider._run

    def watched(*args: object, **kwargs: object) -> object:
        try:
            return run(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            done.set()

    provider._run = watched  # type: ignore[method-assign]

    async def scenario() -> None:
        stream = provider.stream(model, MSGS, GenParams(temperature=0, max_tokens=400), 60)
        async for _ in stream:
            break  # the first piece, then gone
        await stream.aclose()

    with caplog.at_level("WARNING"):
        _run(scenario())
        assert done.wait(30)
    assert "diverged" not in caplog.text
