"""The flat training builders: device & dtype, seeding, 4-bit config, loading a causal LM (folder, GGUF, adapters),
LoRA config; and that importing them costs nothing until they are used."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from agentlab.core.errors import AgentlabError, ConfigError  # noqa: E402
from agentlab.core.models.device import quiet_library_warnings  # noqa: E402
from agentlab.core.train import (  # noqa: E402
    load_causal_lm,
    lora_config,
    quantization_config,
    resolve_device_dtype,
    seed_everything,
    wants_4bit,
)

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")


def test_importing_the_builders_imports_no_torch() -> None:
    code = ("import sys, agentlab.core.train as t; t.__all__; "
            "print([m for m in ('torch', 'transformers', 'peft', 'trl') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@no_cuda
def test_auto_is_cpu_float32_without_cuda() -> None:
    assert resolve_device_dtype() == (torch.device("cpu"), torch.float32)
    assert resolve_device_dtype("cpu", "bf16") == (torch.device("cpu"), torch.bfloat16)
    assert resolve_device_dtype("cpu", torch.float16)[1] == torch.float16


@no_cuda
def test_cuda_without_cuda_is_a_config_error_with_the_next_step() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_device_dtype("cuda", what="train.device")
    assert "train.device is cuda but CUDA is not available" in err.value.message
    assert "set train.device to auto or cpu" in (err.value.hint or "")


def test_unknown_device_and_dtype_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown dtype"):
        resolve_device_dtype("cpu", "float8")
    with pytest.raises(ConfigError, match="device"):
        resolve_device_dtype("tpu")


@no_cuda
def test_4bit_needs_cuda(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError) as err:
        quantization_config(load_in_4bit=True)
    assert "CUDA" in err.value.message and "load_in_4bit: false" in (err.value.hint or "")
    with pytest.raises(ConfigError):
        resolve_device_dtype("auto", load_in_4bit=True)
    assert quantization_config(load_in_4bit=False) is None
    with caplog.at_level(logging.INFO):
        assert quantization_config(load_in_4bit="auto") is None  # plain LoRA in float32, with one notice at -v
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "no CUDA GPU: plain LoRA on float32 weights instead of 4-bit QLoRA (bitsandbytes needs CUDA)")]
    assert wants_4bit(False) is False


def test_each_process_loads_onto_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentlab.core.models.device import cuda_index

    monkeypatch.setenv("LOCAL_RANK", "3")  # set by accelerate launch / torchrun
    assert cuda_index(torch.device("cuda")) == 3
    assert cuda_index(torch.device("cuda:1")) == 1


def test_seed_everything_repeats_every_generator() -> None:
    import numpy as np

    def draw() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    seed_everything(7)
    first = draw()
    seed_everything(7)
    assert draw() == first
    seed_everything(8)
    assert draw() != first


def test_lora_config_defaults_and_targets() -> None:
    cfg = lora_config()
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, cfg.bias) == (16, 32, 0.05, "all-linear",
                                                                                      "none")
    assert cfg.task_type == "CAUSAL_LM"
    custom = lora_config(r=32, alpha=16, dropout=0.0, target_modules=("q_proj", "v_proj"), modules_to_save=["lm_head"])
    assert (custom.r, custom.lora_alpha, set(custom.target_modules)) == (32, 16, {"q_proj", "v_proj"})
    assert custom.modules_to_save == ["lm_head"]


def test_load_causal_lm_from_a_folder(tiny_model: dict[str, Path]) -> None:
    model, tokenizer = load_causal_lm(tiny_model["hf"], device="cpu")
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert tokenizer.chat_template and model.config.model_type == "llama"
    trainable, _ = load_causal_lm(tiny_model["hf"].name, base=tiny_model["hf"].parent, dtype="bfloat16",
                                  trainable=True)
    assert trainable.training and next(trainable.parameters()).dtype == torch.bfloat16


def test_load_causal_lm_from_a_gguf(tiny_model: dict[str, Path], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTLAB_CACHE", str(tmp_path / "cache"))
    model, tokenizer = load_causal_lm(tiny_model["gguf"])
    reference, _ = load_causal_lm(tiny_model["hf"])
    ids = torch.tensor([tokenizer.encode("The heron stood in the reeds.")])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reference(ids).logits, atol=1e-4)


def test_missing_model_names_what_was_tried(tmp_path: Path) -> None:
    with pytest.raises(AgentlabError, match="not found; tried"):
        load_causal_lm(tmp_path / "nothing-here")


@pytest.fixture(scope="module")
def adapter(tiny_model: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from peft import get_peft_model

    torch.manual_seed(0)
    model, _ = load_causal_lm(tiny_model["hf"])
    cfg = lora_config(r=4, target_modules=["q_proj", "v_proj"])
    cfg.init_lora_weights = False  # random B: the adapter changes the output
    folder = tmp_path_factory.mktemp("adapter") / "persona"
    with quiet_library_warnings():
        get_peft_model(model, cfg).save_pretrained(str(folder))
    return folder


def test_load_causal_lm_with_adapters(tiny_model: dict[str, Path], adapter: Path) -> None:
    base, tokenizer = load_causal_lm(tiny_model["hf"])
    ids = torch.tensor([tokenizer.encode("Hello there")])
    frozen, _ = load_causal_lm(tiny_model["hf"], adapters={"persona": adapter, "again": adapter})
    assert list(frozen.peft_config) == ["persona", "again"] and frozen.active_adapter == "persona"
    assert not any(p.requires_grad for p in frozen.parameters()) and not frozen.training
    with torch.no_grad():
        assert not torch.allclose(frozen(ids).logits, base(ids).logits)
    trainable, _ = load_causal_lm(tiny_model["hf"], adapters={"persona": adapter}, trainable=True)
    names = [n for n, p in trainable.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names) and trainable.training


def test_a_broken_adapter_is_one_error(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": "x"}))
    with pytest.raises(AgentlabError, match="could not load the adapter broken") as err:
        load_causal_lm(tiny_model["hf"], adapters={"broken": tmp_path})
    assert "\n" not in err.value.message


def test_an_adapter_for_another_base_model_is_one_short_line_exit_2(tiny_model: dict[str, Path], adapter: Path,
                                                                    tmp_path: Path) -> None:
    """torch's size-mismatch error lists every tensor (several KB on one line): one short line names the adapter and
    the model it was trained on, as a usage error (exit 2)."""
    from agentlab.core.errors import InputError
    from agentlab.core.train.tiny import make_tiny_model

    wider = make_tiny_model(tmp_path / "wider", hidden_size=96, intermediate=192)
    with pytest.raises(InputError, match="the adapter persona does not fit this model") as err:
        load_causal_lm(wider, adapters={"persona": adapter})
    assert err.value.exit_code == 2 and len(err.value.message) < 300 and "size mismatch" not in err.value.message


# ---------------------------------------------------------------------- CUDA (opt in: pytest -m gpu)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
def test_auto_is_cuda_bf16_and_4bit_is_nf4_double_quant() -> None:
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert resolve_device_dtype() == (torch.device("cuda"), expected)
    cfg = quantization_config(load_in_4bit="auto")
    assert cfg is not None and cfg.load_in_4bit and cfg.bnb_4bit_quant_type == "nf4"
    assert cfg.bnb_4bit_use_double_quant and cfg.bnb_4bit_compute_dtype == expected


@pytest.mark.gpu
@needs_cuda
def test_4bit_base_with_adapters_on_cuda(tiny_model: dict[str, Path], adapter: Path) -> None:
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    model, tokenizer = load_causal_lm(tiny_model["hf"], load_in_4bit=True, adapters={"persona": adapter})
    base = model.get_base_model()
    assert base.is_loaded_in_4bit and any(isinstance(m, bnb.nn.Linear4bit) for m in base.modules())
    ids = torch.tensor([tokenizer.encode("Hello there")], device="cuda")
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
    plain, _ = load_causal_lm(tiny_model["hf"])
    assert next(plain.parameters()).device.type == "cuda" and next(plain.parameters()).dtype == torch.bfloat16
