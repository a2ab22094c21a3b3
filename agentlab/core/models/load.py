"""Loading causal LMs (base + optional 4-bit + optional PEFT adapters): the flat builder shared by the transformers
provider, ``train-persona`` and every command that loads a model.

torch, transformers and peft are imported inside the functions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentlab.core.errors import AgentlabError, ConfigError, InputError, missing_package, one_line
from agentlab.core.models.convert import gguf_to_hf, quiet_transformers
from agentlab.core.models.device import (
    FourBit,
    cuda_index,
    int8_config,
    quantization_config,
    quiet_imports,
    quiet_library_warnings,
    resolve_device_dtype,
)
from agentlab.core.models.modelref import resolve_model

log = logging.getLogger(__name__)


def hf_model_folder(ref: str | Path, *, base: str | Path = ".", user: str = "this") -> Path:
    """The transformers folder of a model reference (whatever ``modelref.resolve_model`` accepts: a built-in name,
    a GGUF file, a transformers folder, a cached hub id); a GGUF is converted once and cached
    (``core/models/convert.py``). Raises ``ModelNotFound`` / ``MissingPackage`` / ``AgentlabError`` with the next
    step."""
    found = resolve_model(str(ref), base=base, user=user)
    if found.format == "hf":
        return found.path
    try:
        return gguf_to_hf(found.path)
    except ImportError as exc:
        raise missing_package(exc) or exc from None


def check_model_files(ref: str | Path, *, base: str | Path = ".", user: str = "this") -> None:
    """``InputError`` (exit 2) naming the file when the model ``ref`` is damaged, from its files' headers alone (no
    weights read), before anything loads it: a GGUF whose header or tensor data is cut short (transformers would say
    it "could not convert this GGUF", as if its architecture were unsupported), a transformers folder whose
    config.json is not JSON or names no model, a ``*.safetensors`` file cut short, no weights or no tokenizer
    (transformers' messages name neither the file nor the cause). A built-in model is agentlab's own and not read
    here. Used by lm-eval's scoring and by compress before a run folder exists."""
    from agentlab.core.models.modelfiles import check_hf_folder, read_gguf_header

    found = resolve_model(str(ref), base=base, user=user)
    if found.kind == "builtin":
        return
    try:
        if found.format == "gguf":
            read_gguf_header(found.path)
        else:
            check_hf_folder(found.path)
    except AgentlabError as exc:  # a damaged model the user gave: bad input, not a failure of the run
        raise InputError(f"model {ref}: {exc.message}", hint=f"{exc.hint or 'check the model files'} (or choose "
                         "another model)") from None


def load_causal_lm(ref: str | Path, *, device: Any = "auto", dtype: Any = "auto", load_in_4bit: FourBit = False,
                   load_in_8bit: bool = False, adapters: Mapping[str, str | Path] | None = None,
                   trainable: bool = False, base: str | Path = ".",
                   attn_implementation: str | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for the model ``ref`` (see :func:`hf_model_folder`).

    ``device`` / ``dtype`` as in :func:`~agentlab.core.models.device.resolve_device_dtype`. ``load_in_4bit``: True,
    False or ``auto`` (4-bit on CUDA, float weights with a one-line warning elsewhere): NF4 with double
    quantization through bitsandbytes (:func:`~agentlab.core.models.device.quantization_config`); the other weights
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

    for i, (name, folder) in enumerate(adapters.items()):
        try:
            with quiet_library_warnings():
                if i == 0:
                    model = PeftModel.from_pretrained(model, str(folder), adapter_name=name, is_trainable=trainable)
                else:
                    model.load_adapter(str(folder), adapter_name=name, is_trainable=trainable)
        except Exception as exc:  # a folder without adapter_config.json, an adapter for another base model
            raise adapter_error(folder, name, exc, "this model") from exc
    return model


def adapter_error(folder: str | Path, name: str, exc: BaseException, model: str) -> AgentlabError:
    """One line for an adapter that PEFT could not put on ``model``: one trained on another base (torch lists every
    tensor's size mismatch) or with a damaged weights file is bad input (exit 2); anything else exit 1."""
    message = one_line(exc)
    if "size mismatch" in message:
        try:
            base = json.loads((Path(folder) / "adapter_config.json").read_text(encoding="utf-8")).get(
                "base_model_name_or_path")
        except (OSError, ValueError, AttributeError):
            base = None
        return InputError(f"{folder}: the adapter {name} does not fit {model} (its weights' shapes differ): it was "
                          f"trained on {base or 'another base model'}",
                          hint="use it on the base model it was trained on, or an adapter trained on this one")
    if type(exc).__name__ == "SafetensorError" or "deserializing header" in message:
        return InputError(f"{folder}: the adapter {name}'s weights cannot be read ({message[:200]})",
                          hint="the weights file is damaged or not safetensors: train or copy the adapter again")
    return AgentlabError(f"could not load the adapter {name} ({folder}) on {model}: {message[:300]}",
                         hint="check that the adapter folder holds adapter_config.json and was trained on this base "
                         "model")
