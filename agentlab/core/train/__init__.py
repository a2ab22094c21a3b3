"""Flat builders over torch / transformers / peft / trl, shared by every command that loads or trains a model.

- :func:`resolve_device_dtype`, :func:`seed_everything`, :func:`quantization_config` (``device.py``)
- :func:`load_causal_lm` (base + optional 4-bit + optional adapters), :func:`lora_config` (``model.py``)
- :func:`build_sft_trainer` over TRL's ``SFTTrainer``, :class:`LossSummary`, :func:`last_checkpoint` (``sft.py``)
- :class:`ProgressCallback`: a ``TrainerCallback`` reporting to agentlab's ``Progress`` (``callbacks.py``)
- :func:`training_chat_template`: chat templates that mark assistant turns (``chat.py``)
- :func:`share`, :func:`world_size`, :func:`is_main`, :class:`FollowerRun`: one run folder for every process of
  ``accelerate launch`` / ``torchrun`` (``dist.py``)
- :func:`blend_adapters`, :func:`read_parent`, :class:`BlendResult`: exact LoRA blends (``blend.py``)
- ``multilora.stack_adapters`` / ``multilora.fused_rows``: the fused multi-LoRA forward of mixed-adapter batches
  (``multilora.py``; imported as a module)
- tiny local models for tests and demos (``tiny.py``), GGUF -> transformers conversion (``convert.py``)

Names are imported on first use, so ``import agentlab.core.train`` stays cheap (no torch): the CLI's ``--help``
must not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentlab.core.train.blend import BlendResult, blend_adapters, read_parent
    from agentlab.core.train.callbacks import ProgressCallback
    from agentlab.core.train.chat import TrainingTemplate, training_chat_template
    from agentlab.core.train.device import quantization_config, resolve_device_dtype, seed_everything, wants_4bit
    from agentlab.core.train.dist import FollowerRun, is_main, share, world_size
    from agentlab.core.train.model import hf_model_folder, load_causal_lm, lora_config
    from agentlab.core.train.sft import LossSummary, build_sft_trainer, last_checkpoint

_EXPORTS = {
    "resolve_device_dtype": "device", "seed_everything": "device", "quantization_config": "device",
    "wants_4bit": "device",
    "load_causal_lm": "model", "lora_config": "model", "hf_model_folder": "model",
    "build_sft_trainer": "sft", "LossSummary": "sft", "last_checkpoint": "sft",
    "ProgressCallback": "callbacks",
    "share": "dist", "world_size": "dist", "is_main": "dist", "FollowerRun": "dist",
    "training_chat_template": "chat", "TrainingTemplate": "chat",
    "blend_adapters": "blend", "read_parent": "blend", "BlendResult": "blend",
}
__all__ = ["BlendResult", "FollowerRun", "LossSummary", "ProgressCallback", "TrainingTemplate", "blend_adapters",
           "build_sft_trainer", "hf_model_folder", "is_main", "last_checkpoint", "load_causal_lm", "lora_config",
           "quantization_config", "read_parent", "resolve_device_dtype", "seed_everything", "share",
           "training_chat_template", "wants_4bit", "world_size"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
