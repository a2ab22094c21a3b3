"""A micro-batch of prompts of different lengths never outgrows the model's context.

Rows are left-padded to the longest prompt. A short prompt's max_tokens capped at ``n_ctx - len(prompt)`` used to
take the whole batch past ``n_ctx`` (transformers printed "exceeded the model's predefined maximum length (512)" in
`agentlab debate eval`); now such a row runs in its own call and still gets its full answer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from agentlab.core.llm.config import HFProviderConfig  # noqa: E402
from agentlab.core.llm.providers import hf  # noqa: E402
from agentlab.core.llm.providers.hf import HFProvider  # noqa: E402
from agentlab.core.llm.types import Completion, GenParams  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _unload_at_end() -> Any:
    yield
    hf.unload_all()


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_padded_batch_stays_within_the_context(tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                               one_torch_thread: None) -> None:
    model_dir = str(tiny_model["hf"])
    prov = HFProvider("local", HFProviderConfig(device="cpu", max_batch_size=8, batch_wait_ms=50))
    params = GenParams(temperature=0, max_tokens=10_000)  # capped by the context: n_ctx - len(prompt)
    prompts = ["the sea and the sky " * 40, "hi", "the sea " * 12]
    asyncio.run(prov.generate(model_dir, chat("warm up"), GenParams(temperature=0, max_tokens=1), 60))
    prov.batch_sizes.clear()
    loaded = hf._CACHE[(str(Path(model_dir).resolve()), "cpu", "float32", False, ())]
    n_ctx = loaded.n_ctx
    assert n_ctx is not None
    calls: list[int] = []
    generate = loaded.model.generate

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["input_ids"].shape[1] + kwargs["max_new_tokens"])
        return generate(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "generate", spy)

    async def together() -> list[Completion]:
        return await asyncio.gather(*(prov.generate(model_dir, chat(p), params, 120) for p in prompts))

    batched = asyncio.run(together())
    assert calls and max(calls) <= n_ctx, f"a generate call reached {max(calls)} positions; the context is {n_ctx}"
    assert sum(prov.batch_sizes) == len(prompts) and len(prov.batch_sizes) > 1  # split, not cut short
    alone = [asyncio.run(prov.generate(model_dir, chat(p), params, 120)) for p in prompts]
    for b, a in zip(batched, alone, strict=True):
        assert b.usage.prompt_tokens + b.usage.completion_tokens <= n_ctx
        assert (b.text, b.usage.completion_tokens, b.finish_reason) == (a.text, a.usage.completion_tokens,
                                                                         a.finish_reason)


def test_a_refusal_in_a_later_part_generates_only_the_rows_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fused batch split in two parts whose second is refused: PEFT's path runs that part's rows only (the first
    part's were generated once, and their call is counted)."""
    import time

    loaded = hf._Loaded(model=None, tokenizer=None, device="cpu", adapters=("a", "b"), eos_ids=frozenset(), pad_id=0,
                        n_ctx=100)
    far = time.monotonic() + 60
    long_a, short_a = hf._Request([1] * 60, 40, [], far, "a"), hf._Request([1] * 5, 90, [], far, "a")
    short_b = hf._Request([1] * 5, 90, [], far, "b")
    calls: list[tuple[str | None, list[int]]] = []

    def call(loaded: Any, rows: list[Any], sampling: Any, streamer: Any, *, mixed: str | None = None) -> None:
        calls.append((mixed, [id(r) for r in rows]))
        if mixed == "fused" and len(calls) == 2:
            raise hf._MixedRefused("the second part")
        for r in rows:
            r.finish = "length"

    monkeypatch.setattr(hf, "_generate_call", call)
    monkeypatch.setattr(hf, "_fused_covers", lambda loaded, adapters: True)
    monkeypatch.setattr(hf.multilora, "row_order", lambda stack, adapters: list(range(len(adapters))))
    sizes = hf._generate(loaded, [long_a, short_a, short_b], hf._Sampling(False, None, None, None), None)
    generated = [i for _, rows in calls[:1] + calls[2:] for i in rows]
    assert sorted(generated) == sorted(map(id, (long_a, short_a, short_b))), calls  # each row once
    assert sum(sizes) == 3 and all(r.finish == "length" for r in (long_a, short_a, short_b))
