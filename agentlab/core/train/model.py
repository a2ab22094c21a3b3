"""Loading causal LMs (base + optional 4-bit + optional PEFT adapters) and LoRA configs: flat builders shared by the
transformers provider, ``train-persona`` and the commands after it.

torch, transformers and peft are imported inside the functions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from agentlab.core.errors import AgentlabError, ConfigError, missing_package, one_line
from agentlab.core.train.device import (
    FourBit,
    cuda_index,
    int8_config,
    quantization_config,
    quiet_imports,
    quiet_library_warnings,
    resolve_device_dtype,
)

log = logging.getLogger(__name__)


def hf_model_folder(ref: str | Path, *, base: str | Path = ".", user: str = "this") -> Path:
    """The transformers folder of a model reference (whatever ``modelref.resolve_model`` accepts: a built-in name,
    a GGUF file, a transformers folder, a cached hub id); a GGUF is converted once and cached
    (``core/train/convert.py``). Raises ``ModelNotFound`` / ``MissingPackage`` / ``AgentlabError`` with the next
    step."""
    from agentlab.core.llm.modelref import resolve_model

    found = resolve_model(str(ref), base=base, user=user)
    if found.format == "hf":
        return found.path
    from agentlab.core.train.convert import gguf_to_hf

    try:
        return gguf_to_hf(found.path)
    except ImportError as exc:
        raise missing_package(exc) or exc from None


def load_causal_lm(ref: str | Path, *, device: Any = "auto", dtype: Any = "auto", load_in_4bit: FourBit = False,
                   load_in_8bit: bool = False, adapters: Mapping[str, str | Path] | None = None,
                   trainable: bool = False, base: str | Path = ".",
                   attn_implementation: str | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for the model ``ref`` (see :func:`hf_model_folder`).

    ``device`` / ``dtype`` as in :func:`~agentlab.core.train.device.resolve_device_dtype`. ``load_in_4bit``: True,
    False or ``auto`` (4-bit on CUDA, float weights with a one-line warning elsewhere): NF4 with double
    quantization through bitsandbytes (:func:`~agentlab.core.train.device.quantization_config`); the other weights
    stay in ``dtype``. ``load_in_8bit``: bitsandbytes LLM.int8() linear layers instead (CUDA only). On CUDA the
    weights load straight onto the GPU of this process (the local rank under ``accelerate launch``), never through a
    CPU copy. ``adapters``: PEFT adapter folders by name, loaded onto the base in order (the first is active); the
    model is then a ``PeftModel``. ``trainable``: adapters load trainable and the model is left in train mode;
    otherwise it is in eval mode. ``attn_implementation``: e.g. ``flash_attention_2`` (transformers picks sdpa by
    default). Errors are ``AgentlabError``s with the next step.
    """
    folder = hf_model_folder(ref, base=base)
    if load_in_8bit and load_in_4bit is True:
        raise ConfigError("load_in_4bit and load_in_8bit are both set", hint="choose one bitsandbytes precision")
    dev, dt = resolve_device_dtype(device, dtype, load_in_4bit=load_in_4bit is True or load_in_8bit)
    kwargs: dict[str, Any] = {"dtype": dt}
    quant = (int8_config() if load_in_8bit else quantization_config(load_in_4bit=load_in_4bit, device=dev))
    if quant is not None:
        kwargs["quantization_config"] = quant
    if dev.type == "cuda":
        # Straight onto the GPU (accelerate): a CPU copy first would need the whole model in RAM too.
        kwargs["device_map"] = {"": cuda_index(dev)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model, tokenizer = _from_pretrained(folder, kwargs)
    if dev.type != "cuda":
        model = model.to(dev)
    if adapters:
        model = _with_adapters(model, adapters, trainable)
    model.train(trainable)
    return model, tokenizer


def _from_pretrained(folder: Path, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    quiet_imports()
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise missing_package(exc) or exc from None
    from agentlab.core.train.convert import quiet_transformers

    try:
        with quiet_transformers(logs=False):  # no progress bars over the CLI's own
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except ImportError as exc:  # bitsandbytes / accelerate missing for 4-bit or device_map
        raise missing_package(exc) or exc from None
    except Exception as exc:  # transformers raises many types for unreadable or mismatched weights
        raise AgentlabError(f"could not load {folder}: {one_line(exc)}",
                            hint="check the folder loads with AutoModelForCausalLM.from_pretrained") from exc
    return model, tokenizer


def _with_adapters(model: Any, adapters: Mapping[str, str | Path], trainable: bool) -> Any:
    quiet_imports()
    from peft import PeftModel

    (first, first_path), *rest = adapters.items()
    try:
        with quiet_library_warnings():
            model = PeftModel.from_pretrained(model, str(first_path), adapter_name=first, is_trainable=trainable)
            for name, folder in rest:
                model.load_adapter(str(folder), adapter_name=name, is_trainable=trainable)
    except Exception as exc:  # a folder without adapter_config.json, an adapter for another base model
        raise AgentlabError(f"could not load the adapters {', '.join(adapters)}: {one_line(exc)}",
                            hint="check that each adapter folder holds adapter_config.json and was trained on this "
                            "base model") from exc
    return model


def lora_config(*, r: int = 16, alpha: int | None = None, dropout: float = 0.05,
                target_modules: str | Sequence[str] = "all-linear", bias: Literal["none", "all", "lora_only"] = "none",
                modules_to_save: Sequence[str] | None = None, use_rslora: bool = False,
                use_dora: bool = False) -> Any:
    """A PEFT ``LoraConfig`` for a causal LM: rank ``r``, scale ``alpha`` (default ``2 * r``), ``dropout`` on the
    adapter input, ``target_modules`` (``all-linear``: every linear layer but the output head, as in QLoRA; or
    module names such as ``["q_proj", "v_proj"]``). ``modules_to_save``: modules trained in full and saved with
    the adapter (e.g. ``["lm_head"]`` after adding tokens)."""
    quiet_imports()
    from peft import LoraConfig

    targets: str | list[str] = target_modules if isinstance(target_modules, str) else list(target_modules)
    return LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha if alpha is not None else 2 * r,
                      lora_dropout=dropout, target_modules=targets, bias=bias,
                      modules_to_save=list(modules_to_save) if modules_to_save else None,
                      use_rslora=use_rslora, use_dora=use_dora)
