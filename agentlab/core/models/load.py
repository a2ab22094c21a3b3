"""Loading causal LMs (base + optional 4-bit + optional PEFT adapters): the flat builder shared by the transformers
provider, ``train-persona`` and every command that loads a model.

torch, transformers and peft are imported inside the functions.
"""

from __future__ import annotations

import ast
import functools
import json
import logging
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from agentlab.core.errors import AgentlabError, ConfigError, InputError, missing_package, one_line
from agentlab.core.models.adapters import ADAPTER_CONFIG, check_lora_rank, warn_other_base
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

T = TypeVar("T")
_MISSING_KEYS = "missing adapter keys"  # PEFT's warning: "Found missing adapter keys while loading the checkpoint"


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
        model = _with_adapters(model, adapters, trainable, ref)
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


def _with_adapters(model: Any, adapters: Mapping[str, str | Path], trainable: bool, ref: str | Path) -> Any:
    quiet_imports()
    from peft import PeftModel

    for i, (name, folder) in enumerate(adapters.items()):
        config = _adapter_config(folder)
        if config is not None:
            check_lora_rank(folder, config)
        load = (functools.partial(PeftModel.from_pretrained, model) if i == 0 else model.load_adapter)
        loaded = put_adapter(functools.partial(load, str(folder), adapter_name=name, is_trainable=trainable), folder,
                             name, "this model")
        if config is not None:  # once it loaded: one of another size was refused, with no "it loads" before it
            warn_other_base(folder, config, ref)
        model = loaded if i == 0 else model
    return model


def put_adapter(load: Callable[[], T], folder: str | Path, name: str, model: str) -> T:
    """``load()`` (PEFT putting the adapter in ``folder`` on ``model``), with PEFT's errors as one line
    (:func:`adapter_error`) and its multi-line warning about adapter weights missing from the file made an
    ``InputError`` (exit 2): the model would run with part of the adapter left out (a damaged or edited weights
    file). Used by every command that loads an adapter (eval, the hf backend, ``train-persona export``, ...)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with quiet_library_warnings():
                loaded = load()
        except ImportError:
            raise
        except Exception as exc:  # a folder without adapter_config.json, an adapter for another base model
            raise adapter_error(folder, name, exc, model) from exc
    missing = next((str(w.message) for w in caught if _MISSING_KEYS in str(w.message)), None)
    for other in caught:  # the rest as they would have been shown
        if _MISSING_KEYS not in str(other.message):
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    if missing is not None:
        raise adapter_error(folder, name, ValueError(missing), model)
    return loaded


def _adapter_config(folder: str | Path) -> dict[str, Any] | None:
    """The adapter's config when it can be read (else None: PEFT's own error follows)."""
    try:
        config = json.loads((Path(folder) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def adapter_error(folder: str | Path, name: str, exc: BaseException, model: str) -> AgentlabError:
    """One line for an adapter that PEFT could not put on ``model``. Bad input (``InputError``, exit 2, naming the
    file): one trained on another base (torch lists every tensor's size mismatch), a damaged weights file, weights
    missing from the file (PEFT's "missing adapter keys" warning, made an error by :func:`put_adapter`: tensors
    removed or renamed), ``target_modules`` that the model has none of. Anything else is exit 1."""
    message = one_line(exc)
    config_file = Path(folder) / ADAPTER_CONFIG
    if "size mismatch" in message:
        config = _adapter_config(folder) or {}
        base = config.get("base_model_name_or_path")
        return InputError(f"{folder}: the adapter {name} does not fit {model} (its weights' shapes differ): it was "
                          f"trained on {base or 'another base model'}",
                          hint="use it on the base model it was trained on, or an adapter trained on this one")
    if type(exc).__name__ == "SafetensorError" or "deserializing header" in message:
        return InputError(f"{folder}: the adapter {name}'s weights cannot be read ({message[:200]})",
                          hint="the weights file is damaged or not safetensors: train or copy the adapter again")
    if _MISSING_KEYS in message:
        keys = _listed(message)
        first = keys[0].removeprefix("base_model.model.") if keys else ""
        first = re.sub(r"\.(lora_[AB])\.[^.]+\.weight$", r".\1.weight", first)  # as the file names it: no adapter name
        example = f" (e.g. {first})" if keys else ""
        count = f"{len(keys)} weights" if keys else "weights"
        return InputError(f"{folder}: the adapter {name}'s weights file lacks {count} that its {ADAPTER_CONFIG} "
                          f"asks for{example}", hint="the weights file was damaged or edited (tensors removed or "
                          "renamed): train, copy or save the adapter again")
    targets = re.search(r"Target modules? (.+?) not found in the base model", message)
    if targets is not None:
        return InputError(f"{config_file}: target_modules {targets.group(1)} match no layer of {model}",
                          hint="the adapter was made for another model: use it on the base model it was trained on, "
                          "or fix target_modules in that file")
    return AgentlabError(f"could not load the adapter {name} ({folder}) on {model}: {message[:300]}",
                         hint="check that the adapter folder holds adapter_config.json and was trained on this base "
                         "model")


def _listed(message: str) -> list[str]:
    """The keys PEFT lists in its missing-keys warning ("...: ['a', 'b']."), or [] when the list cannot be read."""
    start, end = message.find("["), message.rfind("]")
    try:
        keys = ast.literal_eval(message[start:end + 1]) if 0 <= start < end else []
    except (ValueError, SyntaxError):
        return []
    return [str(key) for key in keys] if isinstance(keys, list) else []


def logit_changes(base_model: str | Path, adapters: Mapping[str, str | Path], prompt: str, *,
                  device: str = "auto") -> dict[str, float]:
    """For each adapter, the largest absolute change it makes to the base model's next-token logits after the chat
    prompt ``prompt`` (the base loaded once, through the builder the hf provider uses). An adapter whose change is
    ~0 was not applied or holds nothing: lm-evaluation-harness users lost runs to silently unapplied adapters."""
    model, tokenizer = load_causal_lm(base_model, device=device, adapters=adapters)
    changes = adapter_logit_changes(model, tokenizer, list(adapters), prompt)
    del model
    return changes


def adapter_logit_changes(model: Any, tokenizer: Any, names: list[str], prompt: str) -> dict[str, float]:
    """:func:`logit_changes` on a loaded ``PeftModel`` that holds the adapters ``names``; the adapter that was active
    before is active again after."""
    import torch

    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False)
    else:  # a base model without a chat template: the prompt as plain text
        ids = tokenizer(prompt, add_special_tokens=True).input_ids
    batch = torch.tensor([list(ids)], device=model.device)
    active = getattr(model, "active_adapter", None)
    with torch.inference_mode():
        with model.disable_adapter():
            base = model(input_ids=batch).logits[0, -1].float()
        changes = {}
        try:
            for name in names:
                model.set_adapter(name)
                changes[name] = float((model(input_ids=batch).logits[0, -1].float() - base).abs().max())
        finally:
            if isinstance(active, str) and active in names:
                model.set_adapter(active)
    return changes
