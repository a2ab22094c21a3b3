"""Quantization of a transformers causal LM in memory, for CPU and CUDA (GGUF quantization goes through llama.cpp).

Methods (``METHODS``):

- ``int8_weight_only`` (torchao ``Int8WeightOnlyConfig``): int8 weights with per-channel scales, float activations;
- ``int8_dynamic`` (torchao ``Int8DynamicActivationInt8WeightConfig``): int8 weights and per-token int8 activations;
- ``torch_dynamic_int8`` (``torch.ao.quantization.quantize_dynamic``, per-tensor int8 weights, deprecated in torch in
  favour of torchao): kept because it is the one with fast CPU kernels here;
- ``bnb_4bit`` (bitsandbytes NF4 with double quantization, QLoRA's) and ``bnb_8bit`` (bitsandbytes LLM.int8()):
  CUDA only. bitsandbytes quantizes while a model loads, so after pruning / recovery the model is saved and loaded
  again with ``load_causal_lm(load_in_4bit=True)`` / ``load_in_8bit=True`` (:func:`reload_quantized`).

The search measures every method rather than assume "int8 is faster" (why: docs/design/measurements.md).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from agentlab.core.errors import ConfigError, missing_package
from agentlab.core.models.convert import quiet_transformers
from agentlab.core.models.device import quiet_imports
from agentlab.core.models.load import load_causal_lm

log = logging.getLogger(__name__)
METHODS = ("int8_weight_only", "int8_dynamic", "torch_dynamic_int8", "bnb_4bit", "bnb_8bit")
LOAD_TIME = ("bnb_4bit", "bnb_8bit")  # applied while loading the model, on CUDA


def quantize_model(model: Any, method: str) -> dict[str, Any]:
    """Quantize ``model`` in place (or return a replaced module tree for ``torch_dynamic_int8``, set on the model);
    returns what was done. ``bnb_*`` methods are applied at load time: see :func:`load_kwargs`."""
    if method not in METHODS:
        raise ConfigError(f"quantization method {method!r}: unknown", hint=f"use one of {', '.join(METHODS)}")
    if method in LOAD_TIME:
        raise ConfigError(f"{method} is applied when the model loads (bitsandbytes on CUDA)",
                          hint="use reload_quantized(model, tokenizer, method, folder, device) instead")
    quiet_imports()
    import torch

    if method == "torch_dynamic_int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's deprecation notice of eager-mode quantization
            model.model = torch.ao.quantization.quantize_dynamic(model.model, {torch.nn.Linear}, dtype=torch.qint8)
        return {"method": method, "backend": "torch.ao", "scope": "decoder linear layers (output head in float)"}
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_
    except ImportError as exc:
        raise missing_package(exc) or exc from None
    config = Int8WeightOnlyConfig() if method == "int8_weight_only" else Int8DynamicActivationInt8WeightConfig()
    quantize_(model, config)
    return {"method": method, "backend": "torchao", "scope": "every linear layer"}


def load_kwargs(method: str, device: str) -> dict[str, Any]:
    """``load_causal_lm`` keyword arguments for the load-time methods; a clear error off CUDA."""
    if method not in LOAD_TIME:
        return {}
    if device != "cuda":
        raise ConfigError(f"{method}: bitsandbytes quantization needs a CUDA GPU (this run is on {device})",
                          hint="use int8_weight_only / int8_dynamic / a GGUF type on CPU")
    return {"load_in_8bit": True} if method == "bnb_8bit" else {"load_in_4bit": True}


def reload_quantized(model: Any, tokenizer: Any, method: str, folder: Path, device: str) -> tuple[Any, dict[str, Any]]:
    """``model`` (pruned / recovered in memory) saved to ``folder`` and loaded again with bitsandbytes ``method``;
    returns the quantized model and what was done. The folder is removed afterwards."""
    import shutil

    kwargs = load_kwargs(method, device)  # refuses a CPU before anything is written
    with quiet_transformers(logs=False):
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    try:
        quantized, _ = load_causal_lm(folder, device=device, **kwargs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    bits = "NF4 4-bit, double quantization" if method == "bnb_4bit" else "LLM.int8() 8-bit"
    return quantized, {"method": method, "backend": "bitsandbytes", "scope": f"every linear layer but the output "
                       f"head ({bits})"}
