"""The fused multi-LoRA forward (``core/models/multilora.py``) on the session's tiny random model: every row of a fused
batch equals that row alone through plain PEFT (logits within float tolerance, greedy tokens exactly) for adapters
of different ranks, alphas, rsLoRA and target sets, on both paths (concatenate-and-mask, gather + bmm); what it does
not cover; restacking after adapters are added or removed.

Tiny random models write gibberish: the tests compare tokens and logits, never meaning.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from agentlab.core.models import multilora  # noqa: E402

PROMPTS = ["hello there", "tell me a long story about the sea and the ships on it", "x", "what is two plus two",
           "ok", "one more question, please"]
ROWS = [None, "wide", "rs", "narrow", "wide", "rs"]  # the base model, three adapters (two twice)
# rank, alpha, rsLoRA and target layers differ: the stack pads ranks, folds each scaling into B, and gives a row a
# zero delta at layers its adapter does not target
LORAS = {"wide": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
         "rs": {"r": 8, "lora_alpha": 4, "use_rslora": True, "target_modules": "all-linear"},
         "narrow": {"r": 2, "lora_alpha": 16, "target_modules": ["k_proj", "o_proj", "down_proj"]}}
NEW_TOKENS = 10


def make_adapter(model_dir: str, folder: Path, seed: int, **lora: Any) -> str:
    """A PEFT LoRA adapter folder with random (non-zero) A and B, so it really changes the model's output."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    get_peft_model(base, LoraConfig(init_lora_weights=False, task_type="CAUSAL_LM", **lora)).save_pretrained(
        str(folder))
    return str(folder)


def load(model_dir: str, adapters: dict[str, str], dtype: Any = None, device: str = "cpu") -> tuple[Any, Any]:
    """The base with ``adapters`` loaded through PEFT, as ``load_causal_lm`` does."""
    from agentlab.core.train import load_causal_lm

    return load_causal_lm(model_dir, device=device, dtype=dtype or "float32", adapters=adapters)


@pytest.fixture(scope="module")
def model_dir(tiny_model: dict[str, Path]) -> str:
    return str(tiny_model["hf"])


@pytest.fixture(scope="module")
def adapters(model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("multilora")
    return {name: make_adapter(model_dir, root / name, seed, **lora)
            for seed, (name, lora) in enumerate(LORAS.items(), start=1)}


@pytest.fixture(scope="module")
def loaded(model_dir: str, adapters: dict[str, str]) -> tuple[Any, Any]:
    return load(model_dir, adapters)


def batch(tok: Any, prompts: list[str], device: Any = "cpu") -> tuple[Any, Any, list[list[int]]]:
    ids = [tok(p)["input_ids"] for p in prompts]
    width = max(len(i) for i in ids)
    pad = tok.pad_token_id or 0
    inputs = torch.tensor([[pad] * (width - len(i)) + i for i in ids], device=device)
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids], device=device)
    return inputs, mask, ids


def alone(model: Any, name: str | None, ids: list[int], new: int) -> tuple[list[int], Any]:
    """Plain PEFT, one row: the adapter set model-wide (or disabled); its greedy tokens and last-position logits."""
    x = torch.tensor([ids], device=model.device)
    if name is not None:
        model.set_adapter(name)
    with model.disable_adapter() if name is None else contextlib.nullcontext():
        logits = model(input_ids=x).logits[0, -1]
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, pad_token_id=0)
    return out[0, len(ids):].tolist(), logits


def fused(model: Any, stack: multilora.Stack, rows: list[str | None], inputs: Any, mask: Any, new: int,
          mode: multilora.Mode) -> tuple[list[list[int]], Any, str]:
    """The fused batch: its greedy tokens, its last-position logits and the path it took."""
    width = inputs.shape[1]
    with multilora.fused_rows(stack, rows, mode=mode) as path:
        logits = model(input_ids=inputs, attention_mask=mask).logits[:, -1]
        out = model.generate(input_ids=inputs, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, pad_token_id=0)
    return out[:, width:].tolist(), logits, path


@pytest.mark.parametrize("mode", ["concat", "bmm", "auto"])
def test_every_fused_row_equals_that_row_alone_through_peft(loaded: tuple[Any, Any], mode: multilora.Mode) -> None:
    model, tok = loaded
    stack = multilora.stack_adapters(model)
    assert stack.adapters == tuple(LORAS) and not stack.uncovered
    inputs, mask, ids = batch(tok, PROMPTS)
    model.set_adapter("narrow")  # a model-wide active adapter must not leak into a fused batch
    with torch.inference_mode():
        tokens, logits, path = fused(model, stack, ROWS, inputs, mask, NEW_TOKENS, mode)
        expected = [alone(model, name, row, NEW_TOKENS) for name, row in zip(ROWS, ids, strict=True)]
        peft_mixed = model(input_ids=inputs, attention_mask=mask,
                           adapter_names=[r or multilora.BASE for r in ROWS]).logits[:, -1]
    assert path == ("concat" if mode == "auto" else mode)  # three adapters: few enough to concatenate
    assert tokens == [t for t, _ in expected]
    torch.testing.assert_close(logits, torch.stack([lg for _, lg in expected]), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits, peft_mixed, rtol=1e-5, atol=1e-5)  # the same padded batch through PEFT
    assert len({tuple(t) for t in tokens[:4]}) == 4  # the base and each adapter really answer differently
    assert not any("forward" in m.__dict__ for m in model.modules())  # PEFT's forwards are back


def test_many_adapters_take_the_gathered_path_and_stay_exact(model_dir: str, tmp_path: Path) -> None:
    n = multilora.CONCAT_MAX + 2
    adapters = {f"p{i}": make_adapter(model_dir, tmp_path / f"p{i}", 10 + i, r=2 + i % 3, lora_alpha=4 + i,
                                      target_modules="all-linear" if i % 2 else ["q_proj", "v_proj"])
                for i in range(n)}
    model, tok = load(model_dir, adapters)
    stack = multilora.stack_adapters(model)
    rows: list[str | None] = [*reversed(adapters), "p1", None]  # not in stack order, one adapter twice, a base row
    prompts = (PROMPTS * 2)[: len(rows)]
    inputs, mask, ids = batch(tok, prompts)
    with torch.inference_mode():
        tokens, logits, path = fused(model, stack, rows, inputs, mask, 6, "auto")
        expected = [alone(model, name, row, 6) for name, row in zip(rows, ids, strict=True)]
    assert path == "bmm"
    assert tokens == [t for t, _ in expected]
    torch.testing.assert_close(logits, torch.stack([lg for _, lg in expected]), rtol=1e-4, atol=1e-4)


def test_rows_grouped_by_adapter_take_the_batched_matmul_without_gather(loaded: tuple[Any, Any]) -> None:
    model, tok = loaded
    stack = multilora.stack_adapters(model)
    rows: list[str | None] = ["narrow", None, "rs", "narrow", "wide", None, "rs", "wide"]  # two rows each
    order = multilora.row_order(stack, rows)
    assert [rows[i] for i in order] == ["wide", "wide", "rs", "rs", "narrow", "narrow", None, None]
    assert order == [4, 7, 2, 6, 0, 3, 1, 5]  # stable within a group
    rows = [rows[i] for i in order]
    prompts = [(PROMPTS * 2)[i] for i in order]
    inputs, mask, ids = batch(tok, prompts)
    with torch.inference_mode():
        tokens, logits, path = fused(model, stack, rows, inputs, mask, 6, "auto")
        expected = [alone(model, name, row, 6) for name, row in zip(rows, ids, strict=True)]
        _, _, unsorted = fused(model, stack, rows[1:], inputs[1:], mask[1:], 1, "auto")
    assert path == "bmm" and unsorted == "concat"  # groups of 1, 2, 2, 2: a gather would be needed
    assert tokens == [t for t, _ in expected]
    torch.testing.assert_close(logits, torch.stack([lg for _, lg in expected]), rtol=1e-4, atol=1e-4)


def test_adding_or_removing_an_adapter_restacks(model_dir: str, adapters: dict[str, str]) -> None:
    model, tok = load(model_dir, {"wide": adapters["wide"]})
    stack = multilora.current_stack(model, None)
    assert stack.adapters == ("wide",) and multilora.current_stack(model, stack) is stack  # nothing changed
    assert stack.covers(["wide", "rs"]) == "'rs': not loaded"

    model.load_adapter(adapters["rs"], adapter_name="rs")
    restacked = multilora.current_stack(model, stack)
    assert restacked is not stack and restacked.adapters == ("wide", "rs")
    rows: list[str | None] = ["rs", None, "wide"]
    inputs, mask, ids = batch(tok, PROMPTS[:3])
    with torch.inference_mode():
        tokens, _, _ = fused(model, restacked, rows, inputs, mask, 6, "auto")
        expected = [alone(model, name, row, 6)[0] for name, row in zip(rows, ids, strict=True)]
    assert tokens == expected

    model.delete_adapter("wide")
    again = multilora.current_stack(model, restacked)
    assert again.adapters == ("rs",) and all("wide" not in layer.slot for layer in again.layers)


def test_uncovered_adapters_are_named_and_refused(model_dir: str, adapters: dict[str, str], tmp_path: Path) -> None:
    dora = make_adapter(model_dir, tmp_path / "dora", 7, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                        use_dora=True)
    embed = make_adapter(model_dir, tmp_path / "embed", 8, r=4, lora_alpha=8, target_modules=["embed_tokens", "q_proj"])
    model, tok = load(model_dir, {"wide": adapters["wide"], "dora": dora, "embed": embed, "rs": adapters["rs"]})
    stack = multilora.stack_adapters(model)
    assert stack.adapters == ("wide", "rs")
    assert stack.uncovered == {"dora": "DoRA", "embed": "LoRA on Embedding layers, not Linear"}
    assert stack.covers(["wide", None, "dora"]) == "'dora': DoRA"
    with pytest.raises(ValueError, match="does not cover adapter 'embed'"), multilora.fused_rows(stack, ["embed"]):
        pass
    # The covered adapters still fuse, and the uncovered ones loaded beside them change nothing, even active.
    model.set_adapter("embed")
    rows: list[str | None] = ["rs", None, "wide"]
    inputs, mask, ids = batch(tok, PROMPTS[:3])
    with torch.inference_mode():
        tokens, _, _ = fused(model, stack, rows, inputs, mask, 6, "auto")
        expected = [alone(model, name, row, 6)[0] for name, row in zip(rows, ids, strict=True)]
    assert tokens == expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("layout", ["concat", "gathered", "grouped"])
def test_fused_rows_equal_peft_in_bfloat16_on_cuda(model_dir: str, adapters: dict[str, str], layout: str) -> None:
    # bfloat16 base weights and float32 adapters (PEFT's autocast_adapter_dtype), as the hf provider loads on a GPU.
    # A bfloat16 batch rounds differently from a row alone, so the fused batch is held to PEFT's own mixed batch of
    # the same rows token for token, and to each row alone wherever PEFT's batch equals it.
    model, tok = load(model_dir, adapters, dtype="bfloat16", device="cuda")
    stack = multilora.stack_adapters(model)
    rows, prompts = list(ROWS), list(PROMPTS)
    if layout == "grouped":
        order = multilora.row_order(stack, rows)
        rows, prompts = [rows[i] for i in order], [prompts[i] for i in order]
    inputs, mask, ids = batch(tok, prompts, device=model.device)
    with torch.inference_mode():
        tokens, logits, path = fused(model, stack, rows, inputs, mask, NEW_TOKENS,
                                     "concat" if layout == "concat" else "bmm")
        names = [r or multilora.BASE for r in rows]
        peft_logits = model(input_ids=inputs, attention_mask=mask, adapter_names=names).logits[:, -1]
        peft_out = model.generate(input_ids=inputs, attention_mask=mask, adapter_names=names,
                                  max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                  pad_token_id=0)[:, inputs.shape[1]:].tolist()
        expected = [alone(model, name, row, NEW_TOKENS)[0] for name, row in zip(rows, ids, strict=True)]
    assert tokens == peft_out
    # within bfloat16's resolution: its step is 2^-5 for logits of magnitude 4 to 8 (PEFT's adapter_names batch and
    # the fused one add the same products in another order; 1e-2 / 2e-2 asked for less than one step)
    torch.testing.assert_close(logits.float(), peft_logits.float(), rtol=1.6e-2, atol=4e-2)
    same_alone = [i for i in range(len(rows)) if peft_out[i] == expected[i]]
    assert len(same_alone) >= len(rows) // 2 and all(tokens[i] == expected[i] for i in same_alone)
