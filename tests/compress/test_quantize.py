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
    from agentlab.core.models.load import load_causal_lm

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


@pytest.mark.parametrize("method", ["bnb_4bit", "bnb_8bit"])
def test_bitsandbytes_needs_cuda(method: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_kwargs(method, "cpu")
    assert "CUDA" in info.value.message and info.value.hint


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["bnb_4bit", "bnb_8bit"])
def test_bitsandbytes_experiment_after_pruning_on_cuda(method: str, tiny_model: dict[str, Path],
                                                       tmp_path: Path) -> None:
    """A whole experiment: magnitude pruning in memory, then the bitsandbytes reload (save, load quantized); the
    measurements are real and the quantized state on disk is smaller than the float base model's."""
    pytest.importorskip("bitsandbytes")
    from agentlab.compress.config import Experiment, MeasureSettings
    from agentlab.compress.experiment import Inputs, run_experiment
    from agentlab.core.debate.task import as_questions, make_task

    text = (Path(__file__).parents[2] / "agentlab" / "core" / "train" / "corpus.txt").read_text()[:4000]
    inputs = Inputs(model=str(tiny_model["hf"]), device="cuda", eval_text=text[:2000], calib_text=text[2000:],
                    questions=as_questions(make_task(2, "easy", seed=0)),
                    measure=MeasureSettings(context=32, stride=16, max_eval_tokens=160, prompt_tokens=8,
                                            new_tokens=4, repeats=1), seed=0)
    base = run_experiment(None, inputs, tmp_path / "base")
    exp = Experiment.model_validate({"prune": {"method": "magnitude", "sparsity": 0.5},
                                     "quantize": {"method": method}})
    result = run_experiment(exp, inputs, tmp_path / method)
    assert result["steps"]["quantize"]["backend"] == "bitsandbytes"
    m = result["metrics"]
    assert m["perplexity"] > 0 and m["decode_tps"] > 0 and m["size_mb"] < base["metrics"]["size_mb"]
    assert m["nonzero_params"] < base["metrics"]["nonzero_params"]
    with pytest.raises(ConfigError):
        quantize_model(object(), "nosuch")
