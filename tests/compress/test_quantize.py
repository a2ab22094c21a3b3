"""CPU quantization methods on the tiny model: each really quantizes (int8 tensors appear), the model still runs,
weight-only int8 stays close to the float logits; load-time bitsandbytes is refused off CUDA with the next step."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")

from agentlab.compress.quantize import load_kwargs, quantize_model  # noqa: E402
from agentlab.core.errors import ConfigError  # noqa: E402


@pytest.mark.parametrize("method", ["int8_weight_only", "int8_dynamic", "torch_dynamic_int8"])
def test_cpu_methods_quantize_and_still_run(method: str, tiny_model: dict[str, Path]) -> None:
    from agentlab.core.train.model import load_causal_lm

    model, _ = load_causal_lm(tiny_model["hf"], device="cpu")
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.inference_mode():
        before = model(input_ids=ids).logits
    report = quantize_model(model, method)
    assert report["method"] == method
    layer = model.model.layers[0].mlp.down_proj
    text = repr(layer) + repr(getattr(layer, "weight", ""))
    assert "int8" in text.lower() or "qint8" in text.lower() or "Quantized" in text, text[:300]
    with torch.inference_mode():
        after = model(input_ids=ids).logits
    assert after.shape == before.shape and torch.isfinite(after).all()
    if method == "int8_weight_only":
        assert float((after - before).abs().max()) < 0.05 * float(before.abs().max())


def test_bitsandbytes_needs_cuda() -> None:
    with pytest.raises(ConfigError) as info:
        load_kwargs("bnb_4bit", "cpu")
    assert "CUDA" in info.value.message and info.value.hint
    with pytest.raises(ConfigError):
        quantize_model(object(), "nosuch")
