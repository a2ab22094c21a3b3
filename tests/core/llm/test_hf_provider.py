"""The in-process transformers provider on the session's tiny random model: exact greedy output, micro-batching,
PEFT adapters, streaming, errors, and the router on top.

Tiny random models write gibberish: the tests check tokens, batches, adapters and errors, never meaning.
No pytest-asyncio: each test drives its own coroutine with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from agentlab.core.errors import LLMError  # noqa: E402
from agentlab.core.llm.config import HFProviderConfig, LLMConfig, ResourceConfig  # noqa: E402
from agentlab.core.llm.providers import build_provider, hf  # noqa: E402
from agentlab.core.llm.providers.hf import HFProvider  # noqa: E402
from agentlab.core.llm.types import Completion, GenParams, StreamDelta  # noqa: E402

MAXES = (3, 20, 7, 1, 12)  # per-request max_tokens, one per prompt
PROMPTS = ["hi", "tell me a story about the sea", "x", "what is two plus two? answer briefly please", "ok then"]


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


def provider(**cfg: Any) -> HFProvider:
    """CPU float32 unless told otherwise: exactness checks compare against a CPU float32 reference."""
    return HFProvider("local", HFProviderConfig(**{"device": "cpu", **cfg}))


def greedy(max_tokens: int = 12, **extra: Any) -> GenParams:
    return GenParams(temperature=0, max_tokens=max_tokens, extra=extra)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def warm(prov: HFProvider, model_dir: str) -> None:
    """Load before a batching test: requests that wait for a load resume at scattered times and may miss a batch."""
    run(prov.generate(model_dir, chat("warm up"), greedy(1), 60))
    prov.batch_sizes.clear()


@pytest.fixture(scope="module", autouse=True)
def _unload_at_end() -> Any:
    yield
    hf.unload_all()  # frees the models and their entries in the resource registry for the modules after us


@pytest.fixture(scope="module")
def model_dir(tiny_model: dict[str, Path]) -> str:
    return str(tiny_model["hf"])


@pytest.fixture(scope="module")
def adapters(model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Three LoRA adapters with random (non-zero) B matrices, so each really changes the model's output; gamma
    targets other layers (every linear one) than alpha and beta, as a mixed batch must cope with."""
    root = tmp_path_factory.mktemp("adapters")
    return {name: make_adapter(model_dir, root / name, seed, targets)
            for name, seed, targets in (("alpha", 1, ["q_proj", "v_proj"]), ("beta", 2, ["q_proj", "v_proj"]),
                                        ("gamma", 3, "all-linear"))}


def make_adapter(model_dir: str, folder: Path, seed: int, targets: Any, **lora: Any) -> str:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False, task_type="CAUSAL_LM",
                        **lora)
    get_peft_model(base, config).save_pretrained(str(folder))
    return str(folder)


def with_adapter(max_tokens: int, adapter: str | None) -> GenParams:
    return greedy(max_tokens, **({"adapter": adapter} if adapter else {}))


def test_greedy_matches_model_generate(model_dir: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tok.apply_chat_template(chat(PROMPTS[1]), add_generation_prompt=True, return_dict=False)
    expected = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              max_new_tokens=16, do_sample=False)[0, len(ids):].tolist()

    got = run(provider().generate(model_dir, chat(PROMPTS[1]), greedy(16), 30))
    assert got.text == tok.decode(expected, skip_special_tokens=True)
    assert got.usage.prompt_tokens == len(ids)
    assert got.usage.completion_tokens == len(expected)
    assert got.finish_reason == ("stop" if expected[-1] in model.generation_config.eos_token_id else "length")


def test_concurrent_requests_are_batched_and_match_one_at_a_time(model_dir: str) -> None:
    # Left padding with an attention mask is exact enough on this fp32 model that greedy text matches token for token.
    prov = provider(max_batch_size=8, batch_wait_ms=50)
    warm(prov, model_dir)

    async def main() -> tuple[list[Completion], list[Completion]]:
        together = await asyncio.gather(*(prov.generate(model_dir, chat(p), greedy(), 30) for p in PROMPTS))
        alone = [await prov.generate(model_dir, chat(p), greedy(), 30) for p in PROMPTS]
        return together, alone

    together, alone = run(main())
    assert list(prov.batch_sizes) == [len(PROMPTS)] + [1] * len(PROMPTS)
    assert [c.raw["batch_size"] for c in together] == [len(PROMPTS)] * len(PROMPTS)
    assert [c.text for c in together] == [c.text for c in alone]
    assert [c.usage.prompt_tokens for c in together] == [c.usage.prompt_tokens for c in alone]
    assert [c.usage.completion_tokens for c in together] == [c.usage.completion_tokens for c in alone]
    assert len({c.usage.prompt_tokens for c in together}) == len(PROMPTS)  # really different lengths


def test_batches_respect_max_size_and_split_on_sampling_settings(model_dir: str) -> None:
    prov = provider(max_batch_size=2, batch_wait_ms=50)
    warm(prov, model_dir)

    async def main() -> list[Completion]:
        return await asyncio.gather(*(prov.generate(model_dir, chat(p), greedy(), 30) for p in PROMPTS))

    run(main())
    assert sorted(prov.batch_sizes) == [1, 2, 2]

    prov = provider(max_batch_size=8, batch_wait_ms=50)
    hot = GenParams(temperature=0.8, max_tokens=8, seed=3)

    async def mixed() -> list[Completion]:
        return await asyncio.gather(prov.generate(model_dir, chat("a"), greedy(8), 30),
                                    prov.generate(model_dir, chat("b"), hot, 30),
                                    prov.generate(model_dir, chat("c"), greedy(8), 30))

    run(mixed())
    assert sorted(prov.batch_sizes) == [1, 2]


def test_batch_fills_while_the_model_is_busy(model_dir: str) -> None:
    prov = provider(batch_wait_ms=1)
    warm(prov, model_dir)
    # Cache key: (folder, device, dtype, load_in_4bit, adapters).
    loaded = hf._CACHE[(str(Path(model_dir).resolve()), "cpu", "float32", False, ())]

    async def main() -> list[Completion]:
        loaded.lock.acquire()  # the model is busy: the first batch waits for it, holding the gate
        first = asyncio.ensure_future(prov.generate(model_dir, chat("a"), greedy(4), 30))
        late = []
        for prompt in ("b", "c", "d"):  # each far later than batch_wait_ms, yet all in one batch
            await asyncio.sleep(0.02)
            late.append(asyncio.ensure_future(prov.generate(model_dir, chat(prompt), greedy(4), 30)))
        await asyncio.sleep(0.02)
        loaded.lock.release()
        return await asyncio.gather(first, *late)

    answers = run(main())
    assert list(prov.batch_sizes) == [1, 3]
    assert [c.raw["batch_size"] for c in answers] == [1, 3, 3, 3]


def test_each_row_keeps_its_own_max_tokens(model_dir: str) -> None:
    prov = provider(batch_wait_ms=50)
    warm(prov, model_dir)

    async def main() -> list[Completion]:
        return await asyncio.gather(*(prov.generate(model_dir, chat(p), greedy(n), 30)
                                      for p, n in zip(PROMPTS, MAXES, strict=True)))

    together = run(main())
    alone = [run(prov.generate(model_dir, chat(p), greedy(n), 30)) for p, n in zip(PROMPTS, MAXES, strict=True)]
    assert prov.batch_sizes[0] == len(PROMPTS)
    for c, a, n in zip(together, alone, MAXES, strict=True):
        assert c.usage.completion_tokens <= n
        assert (c.text, c.usage.completion_tokens, c.finish_reason) == (a.text, a.usage.completion_tokens,
                                                                         a.finish_reason)


def test_seeded_sampling_is_reproducible(model_dir: str) -> None:
    prov = provider()
    params = GenParams(temperature=1.0, top_p=0.95, max_tokens=16, seed=7)
    first = run(prov.generate(model_dir, chat("hi"), params, 30))
    again = run(prov.generate(model_dir, chat("hi"), params, 30))
    other = run(prov.generate(model_dir, chat("hi"), GenParams(temperature=1.0, max_tokens=16, seed=8), 30))
    assert first.text == again.text
    assert first.text != other.text


def test_stop_strings_cut_the_text(model_dir: str) -> None:
    prov = provider()
    full = run(prov.generate(model_dir, chat(PROMPTS[1]), greedy(24), 30)).text
    stop = full[8:10]
    cut = run(prov.generate(model_dir, chat(PROMPTS[1]), GenParams(temperature=0, max_tokens=24, stop=[stop]), 30))
    assert cut.text == full[: full.index(stop)]
    assert cut.finish_reason == "stop"


def test_adapters_change_output_and_load_once(model_dir: str, adapters: dict[str, str]) -> None:
    hf.unload_all()
    loads = hf.load_count()
    first, second = provider(adapters=adapters), provider(adapters=adapters)

    base = run(first.generate(model_dir, chat(PROMPTS[1]), greedy(16), 30)).text
    alpha = run(first.generate(model_dir, chat(PROMPTS[1]), greedy(16, adapter="alpha"), 30)).text
    beta = run(second.generate(model_dir, chat(PROMPTS[1]), greedy(16, adapter="beta"), 30)).text
    plain = run(provider().generate(model_dir, chat(PROMPTS[1]), greedy(16), 30)).text

    assert hf.load_count() - loads == 2  # one base+adapters model shared by both providers, one plain model
    assert alpha != base and beta != base and alpha != beta
    assert base == plain  # no adapter: the adapters are really disabled


def test_mixed_adapters_share_one_batch_and_match_one_at_a_time(model_dir: str, adapters: dict[str, str]) -> None:
    prov = provider(adapters=adapters, batch_wait_ms=50)
    warm(prov, model_dir)
    names = [None, "alpha", "beta", "gamma", "alpha"]  # base, three adapters (one twice), different prompt lengths

    async def main() -> list[Completion]:
        return await asyncio.gather(*(prov.generate(model_dir, chat(p), with_adapter(n, a), 30)
                                      for p, a, n in zip(PROMPTS, names, (10, 10, 10, 10, 4), strict=True)))

    together = run(main())
    assert list(prov.batch_sizes) == [len(PROMPTS)]  # one generate call for every adapter and the base model
    assert [c.raw["batch_size"] for c in together] == [len(PROMPTS)] * len(PROMPTS)
    # the fused multi-LoRA forward, by default; alpha twice: concatenate-and-mask
    assert {c.raw["mixed"] for c in together} == {"fused-concat"}
    alone = [run(prov.generate(model_dir, chat(p), with_adapter(n, a), 30))
             for p, a, n in zip(PROMPTS, names, (10, 10, 10, 10, 4), strict=True)]
    for c, a_row, a in zip(together, alone, names, strict=True):
        assert c.raw["adapter"] == a
        assert (c.text, c.usage.completion_tokens, c.finish_reason) == (a_row.text, a_row.usage.completion_tokens,
                                                                         a_row.finish_reason)
    # The same prompt through each adapter and the base: four different answers, so each row really used its own.
    four = (None, "alpha", "beta", "gamma")

    async def same_prompt() -> list[Completion]:
        return await asyncio.gather(*(prov.generate(model_dir, chat(PROMPTS[1]), with_adapter(12, a), 30)
                                      for a in four))

    same = run(same_prompt())
    assert prov.batch_sizes[-1] == 4 and len({c.text for c in same}) == 4
    assert [c.text for c in same] == [run(prov.generate(model_dir, chat(PROMPTS[1]), with_adapter(12, a), 30)).text
                                      for a in four]


def test_mixed_lora_peft_switches_back_to_peft_and_both_paths_agree(model_dir: str, adapters: dict[str, str]) -> None:
    names = [None, "alpha", "beta", "gamma"]

    def answers(prov: HFProvider) -> list[Completion]:
        warm(prov, model_dir)

        async def main() -> list[Completion]:
            return await asyncio.gather(*(prov.generate(model_dir, chat(p), with_adapter(10, a), 30)
                                          for p, a in zip(PROMPTS, names, strict=False)))

        out = run(main())
        assert list(prov.batch_sizes) == [len(names)]
        return out

    fused = answers(provider(adapters=adapters, batch_wait_ms=50))
    peft = answers(provider(adapters=adapters, batch_wait_ms=50, mixed_lora="peft"))
    # one row per adapter and the base: grouped by adapter, the batched matmul needs no gather
    assert {c.raw["mixed"] for c in fused} == {"fused-bmm"} and {c.raw["mixed"] for c in peft} == {"peft"}
    assert [c.text for c in fused] == [c.text for c in peft]
    single = run(provider(adapters=adapters).generate(model_dir, chat("hi"), greedy(4, adapter="alpha"), 30))
    assert single.raw["mixed"] is None  # a batch of one adapter is no mixed batch


def test_fused_forward_restacks_after_an_adapter_is_added(
        model_dir: str, adapters: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    # serve-style: the model outlives a change of its adapter set; the next mixed batch restacks
    prov = provider(adapters={"alpha": adapters["alpha"], "beta": adapters["beta"]}, batch_wait_ms=50)
    warm(prov, model_dir)
    loaded = next(e for e in hf._CACHE.values() if e.adapters == ("alpha", "beta"))
    first = loaded.stack
    assert first is not None and first.adapters == ("alpha", "beta")  # stacked at load
    loaded.model.load_adapter(adapters["gamma"], adapter_name="gamma")
    loaded.adapters = (*loaded.adapters, "gamma")
    names = ["gamma", "alpha", None]

    async def main() -> list[Completion]:
        return await asyncio.gather(*(prov.generate(model_dir, chat(p), with_adapter(8, a), 30)
                                      for p, a in zip(PROMPTS, names, strict=False)))

    try:
        with caplog.at_level("INFO", logger=hf.__name__):
            together = run(main())
        assert loaded.stack is not first and loaded.stack.adapters == ("alpha", "beta", "gamma")
        assert sum("restacked 3 adapters" in r.getMessage() for r in caplog.records) == 1
        assert {c.raw["mixed"] for c in together} == {"fused-bmm"}
        alone = [run(prov.generate(model_dir, chat(p), with_adapter(8, a), 30)).text
                 for p, a in zip(PROMPTS, names, strict=False)]
        assert [c.text for c in together] == alone
    finally:
        hf.unload_all()  # this model's adapter set no longer matches its cache key


def test_fused_forward_failure_falls_back_to_peft(model_dir: str, adapters: dict[str, str],
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    from agentlab.core.models import multilora

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise multilora.FusedError("a LoRA layer input of shape (6,) for a batch of 2 rows")

    prov = provider(adapters={"alpha": adapters["alpha"], "gamma": adapters["gamma"]}, batch_wait_ms=50)
    warm(prov, model_dir)
    monkeypatch.setattr(multilora, "_concat_forward", refuse)
    monkeypatch.setattr(multilora, "_bmm_forward", refuse)

    async def main() -> list[Completion]:
        return await asyncio.gather(*(prov.generate(model_dir, chat(p), with_adapter(6, a), 30)
                                      for p, a in zip(PROMPTS, ["alpha", "gamma"], strict=False)))

    try:
        with caplog.at_level("WARNING", logger=hf.__name__):
            first, second = run(main()), run(main())
        assert {c.raw["mixed"] for c in first + second} == {"peft"}
        assert sum("fused multi-LoRA forward failed" in r.getMessage() for r in caplog.records) == 1
        loaded = next(e for e in hf._CACHE.values() if e.adapters == ("alpha", "gamma"))
        assert not loaded.fused and not any("forward" in m.__dict__ for m in loaded.model.modules())
    finally:
        hf.unload_all()


def test_sampling_settings_still_split_mixed_adapter_batches(model_dir: str, adapters: dict[str, str]) -> None:
    prov = provider(adapters=adapters, batch_wait_ms=50)
    warm(prov, model_dir)
    hot = GenParams(temperature=0.8, max_tokens=6, seed=3, extra={"adapter": "beta"})

    async def main() -> list[Completion]:
        return await asyncio.gather(prov.generate(model_dir, chat("a"), with_adapter(6, "alpha"), 30),
                                    prov.generate(model_dir, chat("b"), hot, 30),
                                    prov.generate(model_dir, chat("c"), with_adapter(6, None), 30))

    run(main())
    assert sorted(prov.batch_sizes) == [1, 2]


def test_refused_mixed_batch_falls_back_to_one_batch_per_adapter(
        model_dir: str, adapters: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # PEFT cannot mix a DoRA adapter into a batch: it refuses at the first forward, and the provider then generates
    # one batch per adapter (and leaves no adapter_names hook behind on the model).
    dora = make_adapter(model_dir, tmp_path / "dora", 4, ["q_proj", "v_proj"], use_dora=True)
    prov = provider(adapters={"alpha": adapters["alpha"], "dora": dora}, batch_wait_ms=50)
    warm(prov, model_dir)
    names = [None, "alpha", "dora", "alpha"]

    async def main() -> list[Completion]:
        return await asyncio.gather(*(prov.generate(model_dir, chat(p), with_adapter(8, a), 30)
                                      for p, a in zip(PROMPTS[:4], names, strict=True)))

    with caplog.at_level("WARNING", logger=hf.__name__):
        together = run(main())
        run(main())  # the second mixed batch logs nothing new
    assert sorted(prov.batch_sizes) == [1, 1, 1, 1, 2, 2]
    assert [c.raw["batch_size"] for c in together] == [1, 2, 1, 2]
    assert {c.raw["mixed"] for c in together} == {"per-adapter"}
    # DoRA: not covered by the fused forward (one line), then refused by PEFT's mixed path (one line)
    assert [r.getMessage() for r in caplog.records if "fused multi-LoRA" in r.getMessage()] == [
        "the fused multi-LoRA forward does not cover adapter 'dora': DoRA: batches with it use PEFT's mixed-adapter "
        "path"]
    assert any("refused a mixed-adapter batch" in r.getMessage() and "DoRA" in r.getMessage() for r in caplog.records)
    alone = [run(prov.generate(model_dir, chat(p), with_adapter(8, a), 30))
             for p, a in zip(PROMPTS[:4], names, strict=True)]
    assert [c.text for c in together] == [c.text for c in alone]
    loaded = next(e for e in hf._CACHE.values() if "dora" in e.adapters)
    assert not loaded.mixed
    assert not any(m._forward_pre_hooks for m in loaded.model.modules())


def test_penalties_it_cannot_apply_are_a_bad_request(model_dir: str) -> None:
    """A gateway client's presence_penalty reached the transformers backend and was dropped without a word."""
    prov = provider()
    for key in ("presence_penalty", "frequency_penalty"):
        with pytest.raises(LLMError) as err:
            run(prov.generate(model_dir, chat("hi"), greedy(2, **{key: 0.5}), 30))
        assert err.value.kind == "bad_request" and key in err.value.message
    assert run(prov.generate(model_dir, chat("hi"), greedy(2, presence_penalty=0.0), 30)).text is not None


def test_unknown_adapter_is_a_bad_request(model_dir: str, adapters: dict[str, str]) -> None:
    with pytest.raises(LLMError) as err:
        run(provider(adapters=adapters).generate(model_dir, chat("hi"), greedy(4, adapter="delta"), 30))
    assert err.value.kind == "bad_request" and not err.value.retryable
    assert "delta" in err.value.message and "alpha, beta, gamma" in err.value.message

    # Sent beside good requests that share a batch, it fails alone and the others are answered.
    prov = provider(adapters=adapters, batch_wait_ms=50)
    warm(prov, model_dir)

    async def main() -> list[Any]:
        return await asyncio.gather(*(prov.generate(model_dir, chat(p), with_adapter(4, a), 30)
                                      for p, a in zip(PROMPTS[:4], ("alpha", "delta", None, "beta"), strict=True)),
                                    return_exceptions=True)

    answers = run(main())
    assert isinstance(answers[1], LLMError) and answers[1].kind == "bad_request"
    assert [a.raw["batch_size"] for i, a in enumerate(answers) if i != 1] == [3, 3, 3]
    assert list(prov.batch_sizes) == [3]


def test_stream_concatenation_equals_final_text(model_dir: str) -> None:
    prov = provider()

    async def main() -> list[StreamDelta | Completion]:
        return [item async for item in prov.stream(model_dir, chat(PROMPTS[3]), greedy(20), 30)]

    items = run(main())
    final = items[-1]
    assert isinstance(final, Completion) and all(isinstance(i, StreamDelta) for i in items[:-1])
    assert final.text == "".join(i.text for i in items[:-1])
    assert final.text == run(prov.generate(model_dir, chat(PROMPTS[3]), greedy(20), 30)).text
    assert final.ttft_s is not None and 0 < final.ttft_s <= final.latency_s
    assert final.usage.completion_tokens > 0


def test_stream_holds_back_stop_strings(model_dir: str) -> None:
    prov = provider()
    full = run(prov.generate(model_dir, chat(PROMPTS[1]), greedy(24), 30)).text
    stop = full[6:9]

    async def main() -> list[StreamDelta | Completion]:
        params = GenParams(temperature=0, max_tokens=24, stop=[stop])
        return [item async for item in prov.stream(model_dir, chat(PROMPTS[1]), params, 30)]

    items = run(main())
    assert "".join(i.text for i in items[:-1]) == items[-1].text == full[: full.index(stop)]
    assert items[-1].finish_reason == "stop"


def test_timeout(model_dir: str) -> None:
    prov = provider()
    run(prov.generate(model_dir, chat("hi"), greedy(1), 30))  # loaded: the timeout hits generation, not loading
    with pytest.raises(LLMError) as err:
        run(prov.generate(model_dir, chat(PROMPTS[1]), GenParams(temperature=0, max_tokens=400), 0.02))
    assert err.value.kind == "timeout" and err.value.retryable

    async def streamed() -> list[Any]:
        params = GenParams(temperature=0, max_tokens=400)
        return [item async for item in prov.stream(model_dir, chat(PROMPTS[1]), params, 0.02)]

    with pytest.raises(LLMError) as err:
        run(streamed())
    assert err.value.kind == "timeout"


def test_memory_check_refuses_before_loading(model_dir: str) -> None:
    loads = hf.load_count()
    # bfloat16 on CPU: a cache key no other test loads, so the check really runs.
    cfg = HFProviderConfig(device="cpu", dtype="bfloat16")
    prov = HFProvider("local", cfg, ResourceConfig(memory_budget_gb=0.001))
    with pytest.raises(LLMError) as err:
        run(prov.generate(model_dir, chat("hi"), greedy(4), 30))
    assert err.value.kind == "unavailable" and "RAM" in err.value.message
    assert hf.load_count() == loads


def test_missing_folder_is_unavailable(in_tmp: Path) -> None:
    with pytest.raises(LLMError) as err:
        run(provider(models_directory=str(in_tmp)).generate("no-such-model", chat("hi"), greedy(), 5))
    assert err.value.kind == "unavailable" and not err.value.retryable
    assert str(in_tmp / "no-such-model") in err.value.message
    assert "make-tiny" in (err.value.hint or "")


def test_relative_model_resolves_against_models_directory(tiny_model: dict[str, Path]) -> None:
    folder = Path(tiny_model["hf"])
    got = run(provider(models_directory=str(folder.parent)).generate(folder.name, chat("hi"), greedy(4), 30))
    assert got.usage.completion_tokens > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_4bit_on_cpu_is_a_clear_error(model_dir: str) -> None:
    with pytest.raises(LLMError) as err:
        run(provider(device="auto", load_in_4bit=True).generate(model_dir, chat("hi"), greedy(), 5))
    assert err.value.kind == "unavailable"
    assert "CUDA" in err.value.message and "load_in_4bit: false" in (err.value.hint or "")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_and_4bit(model_dir: str, adapters: dict[str, str]) -> None:
    prov = provider(device="auto", adapters=adapters)
    bf16 = run(prov.generate(model_dir, chat("hi"), greedy(8, adapter="alpha"), 60))
    assert bf16.usage.completion_tokens > 0
    loaded = [e for k, e in hf._CACHE.items() if k[1] == "cuda" and k[2] == "bfloat16" and not k[3]]
    assert loaded and next(loaded[0].model.parameters()).dtype == torch.bfloat16
    pytest.importorskip("bitsandbytes")
    prov = provider(device="cuda", load_in_4bit=True, adapters=adapters, batch_wait_ms=50)

    async def main() -> list[Completion]:
        return await asyncio.gather(*(prov.generate(model_dir, chat(p), greedy(8, adapter="beta"), 60)
                                      for p in PROMPTS))

    four = run(main())
    assert list(prov.batch_sizes) == [len(PROMPTS)] and all(c.usage.completion_tokens > 0 for c in four)
    quantized = [e for k, e in hf._CACHE.items() if k[3]]
    assert quantized and getattr(quantized[0].model.get_base_model(), "is_loaded_in_4bit", False)


def test_router_answers_through_hf(model_dir: str, adapters: dict[str, str]) -> None:
    from agentlab.core.llm.router import Router

    config = LLMConfig.model_validate({
        "providers": {"local": {"kind": "hf", "adapters": adapters}},
        "models": {"tiny": {"provider": "local", "model": model_dir, "params": {"max_tokens": 6, "temperature": 0}},
                   "tiny-alpha": {"provider": "local", "model": model_dir,
                                  "params": {"max_tokens": 6, "temperature": 0, "adapter": "alpha"}}},
        "routes": {"default": {"primary": ["tiny"]}},
    })
    assert isinstance(build_provider("local", config.providers["local"]), HFProvider)
    router = Router.from_config(config)

    async def main() -> tuple[Any, Completion, Completion]:
        try:
            routed = await router.generate(chat("hi"))
            alpha = await router.call_model("tiny-alpha", chat("hi"))
            streamed = await router.call_model("tiny", chat("hi"), stream=True)
            return routed, alpha, streamed
        finally:
            await router.aclose()

    routed, alpha, streamed = asyncio.run(main())
    assert routed.model == "tiny" and routed.text and routed.completion.usage.completion_tokens <= 6
    assert alpha.raw["adapter"] == "alpha" and alpha.text != routed.text
    assert streamed.text == routed.text and streamed.ttft_s is not None


def test_closing_the_router_frees_its_models(model_dir: str, adapters: dict[str, str]) -> None:
    """The providers own the models they load: a model two open providers share stays loaded while one of them is
    open, and goes (cache, resource registry, memory) when the last one closes; no unload_all needed."""
    import gc
    import weakref

    from agentlab.core.llm.resources import loaded_estimates
    from agentlab.core.llm.router import Router

    hf.unload_all()
    loads, held = hf.load_count(), len(loaded_estimates())
    one = {"alpha": adapters["alpha"]}
    router = Router.from_config(LLMConfig.model_validate({
        "providers": {"local": {"kind": "hf", "device": "cpu", "adapters": one}},
        "models": {"tiny": {"provider": "local", "model": model_dir, "params": {"max_tokens": 2, "temperature": 0}}},
        "routes": {"default": {"primary": ["tiny"]}},
    }))
    other = provider(adapters=one)

    async def main() -> weakref.ref[Any]:
        await router.generate(chat("hi"))
        await other.generate(model_dir, chat("hi"), greedy(1), 60)  # the router's model, shared
        assert hf.load_count() - loads == 1 and len(loaded_estimates()) == held + 1
        model = weakref.ref(next(iter(hf._CACHE.values())).model)
        await router.aclose()
        assert len(hf._CACHE) == 1 and len(loaded_estimates()) == held + 1  # the other provider still uses it
        await other.aclose()
        with pytest.raises(LLMError) as err:
            await other.generate(model_dir, chat("hi"), greedy(1), 60)
        assert err.value.kind == "unavailable" and "closed" in err.value.message
        return model

    model = run(main())
    gc.collect()
    assert not hf._CACHE and len(loaded_estimates()) == held
    assert model() is None  # freed, not merely forgotten


def test_a_prompt_longer_than_the_context_is_a_context_length_error(model_dir: str) -> None:
    """It was kind bad_request, named the provider ("local: prompt of ...") and said nothing of what to do, where
    llama.cpp's names the model with kind context_length and a hint."""
    with pytest.raises(LLMError) as info:
        run(provider().generate(model_dir, chat("the sea and the sky " * 400), greedy(), 60))
    assert info.value.kind == "context_length" and not info.value.retryable
    assert info.value.message.startswith(f"{model_dir}: prompt of ") and "does not fit the context of" in \
        info.value.message
    assert info.value.hint is not None and "shorten the input" in info.value.hint
